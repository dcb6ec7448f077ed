// Generation: the real stories260K model reproduces llama2.c's greedy text, the KV-cache loop equals
// recomputing the whole sequence for a left-padded batch, sampling is seeded and respects top-k/top-p.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <set>

#include "adapter.h"
#include "allocation.h"
#include "cli.h"
#include "generate.h"
#include "helpers.h"
#include "llama.h"
#include "tokenizer.h"

namespace fs = std::filesystem;
using namespace mor;

TEST(Generate, Stories260KGreedy200MatchesLlama2c) {
  MOR_REQUIRE_TESTDATA();
  const std::string dir = test::testdata_dir() + "/stories260K";
  auto m = load_llama(dir, torch::kFloat32, torch::kCPU);
  auto tok = Tokenizer::load(dir);
  GenerateOptions o;
  // 200 greedy tokens after BOS; llama2.c stops when it samples BOS (and prints nothing for it).
  o.max_new_tokens = 200;
  o.stop_ids = {tok.bos_id()};
  auto out = generate(m, {tok.encode("")}, o);
  auto ids = out.new_tokens[0];
  if (!ids.empty() && ids.back() == tok.bos_id()) ids.pop_back();
  const std::string expected = test::read_file(dir + "/expected_greedy200.txt");
  EXPECT_EQ(tok.decode(ids), expected);
}

static ModelConfig tiny_cfg() {
  return ModelConfig::llama(32, 48, 2, 4, 2, 40);
}

TEST(Generate, KvCacheEqualsRecomputeForLeftPaddedBatch) {
  auto m = random_llama(tiny_cfg(), 5, torch::kFloat32, torch::kCPU);
  // Larger weights so that greedy outputs vary from token to token.
  {
    torch::NoGradGuard ng;
    for (auto& [n, p] : m->base_weights())
      if (p.dim() == 2) p.mul_(40);
  }
  std::vector<std::vector<int64_t>> prompts = {{1, 5, 9, 12, 7, 3}, {1, 8}, {1}, {1, 20, 21, 22}};
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.stop_ids = {39};  // unlikely: first pass finds a token that does occur, to exercise stopping
  auto free_run = generate(m, prompts, o);
  o.stop_ids = {free_run.new_tokens[1][3]};
  auto cached = generate(m, prompts, o);
  o.use_cache = false;
  auto recomputed = generate(m, prompts, o);
  EXPECT_EQ(cached.new_tokens, recomputed.new_tokens);
  EXPECT_TRUE(torch::equal(cached.sequences, recomputed.sequences));
  EXPECT_EQ(cached.new_tokens[1].size(), 4u);  // stopped at the stop token, which is kept
  EXPECT_EQ(cached.sequences.size(1), 6 + 12);
  EXPECT_EQ(cached.sequences[1][6 + 4].item<int64_t>(), 0);  // padded after stopping
  std::set<int64_t> distinct(free_run.new_tokens[0].begin(), free_run.new_tokens[0].end());
  EXPECT_GT(distinct.size(), 2u);  // the comparison is not trivially constant
  // Batched equals one-by-one (float32).
  o.use_cache = true;
  for (size_t b = 0; b < prompts.size(); ++b) EXPECT_EQ(generate(m, {prompts[b]}, o).new_tokens[0], cached.new_tokens[b]);
}

// The packed prefill (llama.h: a left-padded batch's projections and MLPs on its real rows only)
// against the same prefill in the padded layout (collecting router logits keeps it padded): the
// last logits and every real position of the KV cache agree, pad positions hold zeros; with MoLA
// adapters in float32 and bf16, and with the q/k/v biases of a Qwen2-shaped model.
static void expect_packed_prefill_matches_padded(LlamaForCausalLM& m, double tol) {
  torch::NoGradGuard ng;
  m->eval();
  auto [ids, mask] = left_pad({{1, 5, 9, 12, 7, 3, 4}, {1, 8}, {1, 2, 3, 4, 5, 6, 7}, {1, 20, 21}}, 0);
  const int64_t B = ids.size(0), P = ids.size(1);
  GenState packed = prefill(m, ids, mask, P + 2);
  KVCache cache = m->make_cache(B, P + 2);
  RouterLogits rl;
  ForwardArgs a;
  a.input_ids = ids;
  a.attention_mask = mask;
  a.position_ids = positions_from_mask(mask);
  a.cache = &cache;
  a.last_only = true;
  a.router_logits = &rl;  // keeps the padded layout
  auto padded = m->forward(a).select(1, 0);
  EXPECT_EQ(packed.cache.len, P);
  EXPECT_LE((packed.logits - padded).abs().max().item<double>(), tol * padded.abs().max().item<double>());
  EXPECT_GT(padded.std().item<double>(), 0.0);
  auto real = (mask != 0).view({B, 1, P, 1});
  for (int64_t il = 0; il < m->cfg.n_layer; ++il)
    for (auto [pk, pd] : {std::pair{packed.cache.k[il], cache.k[il]}, std::pair{packed.cache.v[il], cache.v[il]}}) {
      auto pkf = pk.narrow(2, 0, P).to(torch::kFloat32), pdf = pd.narrow(2, 0, P).to(torch::kFloat32);
      EXPECT_LE((pkf - pdf).masked_fill(~real, 0).abs().max().item<double>(), tol * pdf.abs().max().item<double>());
      EXPECT_EQ(pkf.masked_fill(real, 0).abs().max().item<double>(), 0.0);  // pad keys/values: zeros
    }
}

TEST(Generate, PackedPrefillMatchesPaddedLayout) {
  {
    auto m = random_llama(tiny_cfg(), 5, torch::kFloat32, torch::kCPU);
    expect_packed_prefill_matches_padded(m, 1e-5);
  }
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    SCOPED_TRACE(torch::toString(dt));
    auto m = random_llama(tiny_cfg(), 6, dt, torch::kCPU);
    auto alloc = Allocation::from_flags(m->cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "2,4",
                                        "4", "2", 16.0, 0.05);
    attach_adapters(m, alloc, 3);
    for (auto& [name, p] : trainable_params(m))
      if (name.find("lora_B") != std::string::npos) p.detach().normal_(0.0, 0.05);
    // bf16: the GEMMs of N packed rows and of B*T padded ones may sum in another order.
    expect_packed_prefill_matches_padded(m, dt == torch::kFloat32 ? 1e-5 : 2e-2);
  }
  {
    auto cfg = tiny_cfg();
    cfg.architecture = "Qwen2ForCausalLM";
    cfg.model_type = "qwen2";
    auto m = random_llama(cfg, 7, torch::kFloat32, torch::kCPU);
    {
      torch::NoGradGuard ng;
      for (auto& [n, p] : m->base_weights())
        if (n.find("bias") != std::string::npos) p.normal_(0.0, 0.5);
    }
    expect_packed_prefill_matches_padded(m, 1e-5);
  }
}

TEST(Generate, SamplingIsSeededAndFiltersWork) {
  auto m = random_llama(tiny_cfg(), 9, torch::kFloat32, torch::kCPU);
  std::vector<std::vector<int64_t>> prompts = {{1, 4, 5}, {1}};
  GenerateOptions g;
  g.max_new_tokens = 8;
  g.stop_ids = {-1};
  auto greedy = generate(m, prompts, g);
  GenerateOptions s = g;
  s.temperature = 1.0;
  s.top_p = 1.0;
  s.top_k = 0;
  s.seed = 3;
  auto a = generate(m, prompts, s), b = generate(m, prompts, s);
  EXPECT_EQ(a.new_tokens, b.new_tokens);
  s.seed = 4;
  EXPECT_NE(generate(m, prompts, s).new_tokens, a.new_tokens);
  s.top_k = 1;
  EXPECT_EQ(generate(m, prompts, s).new_tokens, greedy.new_tokens);
  s.top_k = 0;
  s.top_p = 1e-6;
  EXPECT_EQ(generate(m, prompts, s).new_tokens, greedy.new_tokens);
  // top-k keeps exactly k candidates
  auto logits = torch::tensor({{1.0f, 5.0f, 3.0f, 4.0f}});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  GenerateOptions k2;
  k2.temperature = 1;
  k2.top_k = 2;
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(select_next(logits, k2, gen).item<int64_t>());
  EXPECT_EQ(seen, (std::set<int64_t>{1, 3}));
}

static std::string stories_copy(const std::string& name) {
  const std::string d = test::scratch_dir(name);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
    fs::copy_file(test::testdata_dir() + "/stories260K/" + f, d + "/" + f);
  return d;
}

TEST(GenerateCli, GreedyTextAndJson) {
  MOR_REQUIRE_TESTDATA();
  const std::string d = stories_copy("cli_ok");
  auto r = test::run_mor("generate --base_model " + d + " --template none --prompt '' --max_new_tokens 30 --threads 1 --dtype float32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string expected = test::read_file(test::testdata_dir() + "/stories260K/expected_greedy200.txt");
  EXPECT_EQ(expected.rfind(r.out.substr(0, r.out.size() - 1), 0), 0u) << r.out;
  EXPECT_NE(r.err.find("dtype float32"), std::string::npos) << r.err;
  r = test::run_mor("generate --base-model " + d + " --template none --prompt 'Once upon a time' --max-new-tokens 5 --json --dtype float32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt"], "Once upon a time");
  EXPECT_EQ(j["prompt_ids"][0], 1);
  EXPECT_EQ(j["generated_ids"].size(), 5u);
  EXPECT_EQ(j["text"], ", there was a little");
}

TEST(GenerateCli, BadInputFailsWithOneClearLine) {
  MOR_REQUIRE_TESTDATA();
  auto expect_fail = [](const std::string& args, const std::string& needle) {
    auto r = test::run_mor("generate " + args + " --prompt hi --max_new_tokens 2");
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_EQ(r.err.rfind("mor generate: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "");
  };
  std::string d = stories_copy("cli_nocfg");
  fs::remove(d + "/config.json");
  expect_fail("--base_model " + d, "missing config.json");
  d = stories_copy("cli_arch");
  test::write_file(d + "/config.json", "{\"architectures\": [\"FalconForCausalLM\"], \"hidden_size\": 64}");
  expect_fail("--base_model " + d, "unsupported architecture 'FalconForCausalLM'");
  d = stories_copy("cli_badjson");
  test::write_file(d + "/config.json", "{\"architectures\": [");
  expect_fail("--base_model " + d, "config.json: bad JSON");
  d = stories_copy("cli_notok");
  fs::remove(d + "/tokenizer.model");
  expect_fail("--base_model " + d, "missing tokenizer.model");
  d = stories_copy("cli_trunc");
  fs::resize_file(d + "/model.safetensors", fs::file_size(d + "/model.safetensors") - 100);
  expect_fail("--base_model " + d, "truncated file");
  d = stories_copy("cli_hdr");
  {
    std::string b = test::read_file(d + "/model.safetensors");
    b[6] = 1;  // header length now ~2^48
    test::write_file(d + "/model.safetensors", b);
  }
  expect_fail("--base_model " + d, "is past the end of the file");
  expect_fail("--base_model /nonexistent/model", "cannot find model '/nonexistent/model'");
  expect_fail("--base_model " + stories_copy("cli_dtype") + " --dtype float16", "--dtype float16 is only supported on CUDA");
}

TEST(Runtime, DeviceDtypeThreads) {
  EXPECT_EQ(parse_device("cpu"), torch::Device(torch::kCPU));
  EXPECT_THROW(parse_device("tpu"), std::runtime_error);
  if (!torch::cuda::is_available()) {
    try {
      parse_device("cuda");
      FAIL();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA is not available"), std::string::npos);
    }
  }
  EXPECT_EQ(parse_dtype("float32", torch::kCPU), torch::kFloat32);
  EXPECT_EQ(parse_dtype("bf16", torch::kCPU), torch::kBFloat16);
  EXPECT_EQ(parse_dtype("auto", torch::kCPU), cpu_has_fast_bf16() ? torch::kBFloat16 : torch::kFloat32);
  EXPECT_EQ(parse_dtype("auto", torch::Device(torch::kCUDA)), torch::kBFloat16);
  EXPECT_THROW(parse_dtype("float16", torch::kCPU), std::runtime_error);
  EXPECT_THROW(parse_dtype("int8", torch::kCPU), std::runtime_error);
  // /proc/cpuinfo agrees with cpuid
  const std::string info = test::read_file("/proc/cpuinfo");
  EXPECT_EQ(cpu_has_fast_bf16(), info.find(" avx512_bf16") != std::string::npos);
  const int before = torch::get_num_threads();
  set_threads(1);
  EXPECT_EQ(torch::get_num_threads(), 1);
  set_threads(before);
  EXPECT_THROW(set_threads(-1), std::runtime_error);
  EXPECT_NE(describe_runtime(torch::kCPU, torch::kBFloat16, "auto").find("dtype bfloat16 (auto:"), std::string::npos);
  // an explicit bf16 on a CPU without AVX512-BF16 runs, with a warning; auto and float32 say nothing
  for (const char* flag : {"bf16", "auto", "float32"}) {
    testing::internal::CaptureStderr();
    const Runtime r = apply_runtime(RuntimeOptions{"cpu", flag, before});
    const std::string err = testing::internal::GetCapturedStderr();
    const bool warned = err.find("mor: warning: --dtype bf16 on a CPU without AVX512-BF16") != std::string::npos;
    EXPECT_EQ(warned, std::string(flag) == "bf16" && !cpu_has_fast_bf16()) << flag << ": " << err;
    if (std::string(flag) == "bf16") {
      EXPECT_EQ(r.dtype, torch::kBFloat16);
    }
  }
}
