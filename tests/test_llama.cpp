// The LLaMA model against the independent PyTorch twin (scripts/twin_llama.py -> tests/golden/twin_llama):
// GQA, rope_theta 500000, untied head, a left-padded batch of unequal prompts, float32 logits within
// 1e-4 relative; fast RMSNorm/RoPE against their references; KV-cache chunks against one pass;
// save/load and sharded round trips; load errors naming the tensor.
// Loading peaks at the model in the compute dtype plus one tensor.
#include <gtest/gtest.h>
#include <malloc.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "helpers.h"
#include "kernels.h"
#include "llama.h"
#include "safetensors.h"

namespace fs = std::filesystem;
using namespace mor;

static std::string twin_dir() { return test::source_dir() + "/tests/golden/twin_llama"; }

// max |a - b| / max |b|, printed for the report.
static double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

TEST(Llama, TwinLogitsGenerationPositions) {
  auto m = load_llama(twin_dir(), torch::kFloat32, torch::kCPU);
  auto g = SafeTensorsFile::open(twin_dir() + "/golden.safetensors");
  ForwardArgs a;
  a.input_ids = g->get("input_ids");
  a.attention_mask = g->get("attention_mask");
  a.position_ids = g->get("position_ids");
  torch::NoGradGuard ng;
  auto logits = m->forward(a);
  auto ref = g->get("logits_gen_positions");
  ASSERT_EQ(logits.sizes(), ref.sizes());
  const double d = rel_diff(logits, ref);
  std::cout << "twin logits (generation positions): max |diff| / max |ref| = " << d << "\n";
  EXPECT_LT(d, 1e-4);
  EXPECT_TRUE(torch::allclose(logits, ref, 1e-4, 1e-5));
  // The pad rows (uniform attention over the whole row) are compared too: row 2 has 8 pads.
  EXPECT_EQ(a.attention_mask[2].sum().item<int64_t>(), 1);
}

TEST(Llama, TwinLogitsTrainerPositions) {
  auto m = load_llama(twin_dir(), torch::kFloat32, torch::kCPU);
  auto g = SafeTensorsFile::open(twin_dir() + "/golden.safetensors");
  ForwardArgs a;
  a.input_ids = g->get("input_ids");
  a.attention_mask = g->get("attention_mask");  // position_ids undefined: arange(T) like the HF Trainer
  torch::NoGradGuard ng;
  auto logits = m->forward(a);
  auto ref = g->get("logits_arange_positions");
  const double d = rel_diff(logits, ref);
  std::cout << "twin logits (arange positions): max |diff| / max |ref| = " << d << "\n";
  EXPECT_LT(d, 1e-4);
  // RoPE is relative and pad rows attend uniformly (v carries no rotation), so a constant shift of the
  // positions changes nothing here; the two goldens agree with each other as well.
}

TEST(Llama, Bfloat16CloseToFloat32) {
  auto m32 = load_llama(twin_dir(), torch::kFloat32, torch::kCPU);
  auto m16 = load_llama(twin_dir(), torch::kBFloat16, torch::kCPU);
  auto g = SafeTensorsFile::open(twin_dir() + "/golden.safetensors");
  ForwardArgs a;
  a.input_ids = g->get("input_ids");
  a.attention_mask = g->get("attention_mask");
  a.position_ids = g->get("position_ids");
  torch::NoGradGuard ng;
  auto l16 = m16->forward(a);
  EXPECT_EQ(l16.scalar_type(), torch::kFloat32);
  const double d = rel_diff(l16, m32->forward(a));
  std::cout << "bf16 vs f32 logits: " << d << "\n";
  EXPECT_LT(d, 0.05);
}

TEST(Llama, RmsNormAndRopeMatchReferences) {
  torch::manual_seed(0);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto x = torch::randn({2, 5, 64}).to(dt);
    auto w = (1 + 0.1 * torch::randn({64})).to(dt);
    RMSNorm norm(64, 1e-5, dt, torch::kCPU);
    norm->weight.copy_(w);
    // The op path (MOR_FUSED=0, float64) is the reference bit for bit; with the switch on, training
    // mode takes the autograd kernel (tests/test_kernels_train.cpp holds it to the reference).
    set_fused_enabled(false);
    EXPECT_TRUE(torch::equal(norm->forward(x), rms_norm_reference(x, w, 1e-5)));
    set_fused_enabled(true);
    auto pos = torch::tensor({0, 1, 2, 7, 300}, torch::kLong).view({1, 5}).expand({2, 5});
    auto cs = rope_cos_sin(pos, 16, 500000.0);
    auto c = cs.first.to(dt), s = cs.second.to(dt);
    auto q = torch::randn({2, 5, 4, 16}).to(dt);  // [B, T, H, D]
    auto fast = apply_rope(q, c, s).transpose(1, 2);
    auto ref = apply_rope_reference(q.transpose(1, 2), c, s);
    EXPECT_TRUE(torch::equal(fast, ref)) << c10::toString(dt);
  }
}

static ModelConfig tiny_cfg(bool tied) {
  ModelConfig c = ModelConfig::llama(32, 48, 2, 4, 2, 50);
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  return c;
}

TEST(Llama, KvCacheChunksEqualOnePass) {
  auto m = random_llama(tiny_cfg(false), 7, torch::kFloat32, torch::kCPU);
  torch::NoGradGuard ng;
  auto ids = torch::randint(3, 50, {3, 9}, torch::kLong);
  auto mask = torch::ones({3, 9}, torch::kLong);
  mask.index_put_({1, torch::indexing::Slice(0, 4)}, 0);  // left pads
  mask.index_put_({2, torch::indexing::Slice(0, 7)}, 0);
  ForwardArgs full;
  full.input_ids = ids;
  full.attention_mask = mask;
  auto ref = m->forward(full);
  KVCache cache = m->make_cache(3, 12);
  std::vector<torch::Tensor> parts;
  for (auto [s, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 5}, {5, 1}, {6, 3}}) {
    ForwardArgs a;
    a.input_ids = ids.narrow(1, s, n);
    a.attention_mask = mask.narrow(1, 0, s + n);
    a.cache = &cache;
    parts.push_back(m->forward(a));
  }
  EXPECT_EQ(cache.len, 9);
  // Real tokens only: a pad query attends to every key of its row, and a chunk sees fewer keys
  // than the whole sequence (HF behaves the same way with a cache).
  auto real = (mask == 1).unsqueeze(-1).expand_as(ref);
  auto got = torch::cat(parts, 1).masked_select(real), want = ref.masked_select(real);
  std::cout << "cache chunks vs one pass (real tokens): " << rel_diff(got, want) << "\n";
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6));
}

TEST(Llama, PadRowAttendsUniformly) {
  // With one layer and v = identity-like weights this is hard to isolate; instead check the defining
  // property: a row of all-pad keys gives the same output as attention with no mask at all.
  auto m = random_llama(tiny_cfg(false), 3, torch::kFloat32, torch::kCPU);
  torch::NoGradGuard ng;
  auto ids = torch::randint(3, 50, {1, 4}, torch::kLong);
  ForwardArgs a;
  a.input_ids = ids;
  a.attention_mask = torch::tensor({0, 0, 0, 1}, torch::kLong).view({1, 4});
  auto masked = m->forward(a);
  // Reference: the first query position (a pad) sees all 4 keys with equal weights: emulate by a
  // non-causal pass is not available, so compare against the twin semantics via a hand computation
  // of layer 0 attention for that row.
  auto L = m->model->layer_list[0];
  auto x = L->input_layernorm->forward(m->model->embed_tokens->forward(ids));
  auto v = L->self_attn->v_proj->forward(x).view({1, 4, 2, 8});  // [B, T, Hkv, D]
  auto mean_v = v.mean(1);                                          // uniform over all 4 keys
  AttentionContext ctx;
  auto pos = torch::arange(4).view({1, 4});
  auto cs = rope_cos_sin(pos, 8, 10000.0);
  ctx.cos = cs.first;
  ctx.sin = cs.second;
  ctx.mask = (torch::arange(4).view({1, 1, 1, 4}) > torch::arange(4).view({1, 1, 4, 1})) |
             (a.attention_mask == 0).view({1, 1, 1, 4});
  auto attn_out = L->self_attn->forward(x, ctx, nullptr, 0, nullptr);  // [1, 4, 32]
  // o_proj^-1 is not needed: compare o_proj(mean_v repeated per head group) directly.
  auto heads = mean_v.repeat_interleave(2, 1).reshape({1, 32});
  auto expect = L->self_attn->o_proj->forward(heads);
  EXPECT_TRUE(torch::allclose(attn_out[0][0], expect[0], 1e-5, 1e-6));
  EXPECT_TRUE(masked.isfinite().all().item<bool>());
}

TEST(Llama, RouterLogitSinkHasOneEntryPerLayer) {
  auto m = random_llama(tiny_cfg(true), 1, torch::kFloat32, torch::kCPU);
  RouterLogits rl = {{torch::zeros({1})}};  // stale content is cleared
  ForwardArgs a;
  a.input_ids = torch::tensor({1, 5, 6}, torch::kLong).view({1, 3});
  a.router_logits = &rl;
  m->forward(a);
  ASSERT_EQ(rl.size(), 2u);
  EXPECT_TRUE(rl[0].empty());  // no adapters: nothing pushed
  EXPECT_EQ(m->module_names().size(), 14u);
  EXPECT_EQ(m->module_names()[13], "model.layers.1.mlp.down_proj");
  EXPECT_EQ(m->layer_modules(1)[6].get(), m->model->layer_list[1]->mlp->down_proj.get());
}

TEST(Llama, NamedAfterHuggingFaceKeys) {
  auto m = random_llama(tiny_cfg(false), 1, torch::kFloat32, torch::kCPU);
  std::vector<std::string> names;
  for (auto& [k, v] : m->base_weights()) names.push_back(k);
  EXPECT_EQ(names.front(), "model.embed_tokens.weight");
  EXPECT_EQ(names[1], "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(names.back(), "lm_head.weight");
  EXPECT_EQ(names.size(), 2u + 2 * 9 + 1);
  for (auto& p : m->parameters()) EXPECT_FALSE(p.requires_grad());
}

TEST(Llama, SaveLoadRoundTripAndShards) {
  for (bool tied : {false, true}) {
    auto m = random_llama(tiny_cfg(tied), 11, torch::kFloat32, torch::kCPU);
    const std::string dir = test::scratch_dir(tied ? "save_tied" : "save_untied");
    save_llama(m, dir);
    auto m2 = load_llama(dir, torch::kFloat32, torch::kCPU);
    auto w1 = m->base_weights(), w2 = m2->base_weights();
    ASSERT_EQ(w1.size(), w2.size());
    for (size_t i = 0; i < w1.size(); ++i) EXPECT_TRUE(torch::equal(w1[i].second, w2[i].second)) << w1[i].first;
    // Re-shard into two files + index: same weights.
    auto f = SafeTensorsFile::open(dir + "/model.safetensors");
    std::vector<std::pair<std::string, torch::Tensor>> a, b;
    nlohmann::json wm;
    for (const auto& k : f->keys()) {
      bool first = k.find("layers.1.") == std::string::npos;
      (first ? a : b).emplace_back(k, f->get(k).clone());
      wm[k] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    f.reset();
    save_safetensors(dir + "/model-00001-of-00002.safetensors", a);
    save_safetensors(dir + "/model-00002-of-00002.safetensors", b);
    fs::remove(dir + "/model.safetensors");
    test::write_file(dir + "/model.safetensors.index.json", nlohmann::json({{"metadata", {}}, {"weight_map", wm}}).dump());
    auto m3 = load_llama(dir, torch::kBFloat16, torch::kCPU);
    auto w3 = m3->base_weights();
    for (size_t i = 0; i < w1.size(); ++i) EXPECT_TRUE(torch::equal(w1[i].second.to(torch::kBFloat16), w3[i].second));
  }
}

// Writes a copy of the twin model with `edit` applied to its tensors / config, then expects load_llama
// to fail with a message containing `needle`.
static void expect_load_error(const std::string& name,
                              const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit,
                              const std::string& needle) {
  const std::string dir = test::scratch_dir("bad_" + name);
  fs::copy_file(twin_dir() + "/config.json", dir + "/config.json");
  auto f = SafeTensorsFile::open(twin_dir() + "/model.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (const auto& k : f->keys()) t.emplace_back(k, f->get(k));
  edit(t);
  save_safetensors(dir + "/model.safetensors", t);
  try {
    load_llama(dir, torch::kFloat32, torch::kCPU);
    FAIL() << "no error for " << name;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Llama, LoadErrorsNameTheTensor) {
  using V = std::vector<std::pair<std::string, torch::Tensor>>;
  expect_load_error("missing", [](V& t) { t.erase(t.begin() + 3); },
                    "missing tensor 'model.layers.0.mlp.down_proj.weight'");
  expect_load_error("unused", [](V& t) { t.emplace_back("model.layers.0.self_attn.q_proj.bias", torch::zeros({64})); },
                    "unused tensor 'model.layers.0.self_attn.q_proj.bias'");
  expect_load_error("shape", [](V& t) { t[0].second = torch::zeros({101, 63}); },
                    "tensor 'lm_head.weight' has shape [101, 63], config.json needs [101, 64]");
  expect_load_error("dtype", [](V& t) { t[0].second = t[0].second.to(torch::kInt32); },
                    "tensor 'lm_head.weight' has dtype I32");
  expect_load_error("inv_freq_ok_but_missing", [](V& t) {
    t.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", torch::zeros({4}));
    t.erase(t.begin());
  }, "missing tensor 'lm_head.weight'");
}

TEST(Llama, LoadErrorsForFiles) {
  const std::string dir = test::scratch_dir("nocfg");
  try {
    load_llama(dir, torch::kFloat32, torch::kCPU);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing config.json"), std::string::npos) << e.what();
  }
  fs::copy_file(twin_dir() + "/config.json", dir + "/config.json");
  try {
    load_llama(dir, torch::kFloat32, torch::kCPU);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no model.safetensors or model.safetensors.index.json"), std::string::npos) << e.what();
  }
}

TEST(Llama, GradientsThroughAttentionMatchFiniteDifferences) {
  // Training backpropagates through the model (into adapters); the in-place scaling and masking of the
  // scores must keep autograd exact. float64, a padded batch, gradient w.r.t. one base weight.
  auto m = random_llama(tiny_cfg(false), 21, torch::kFloat64, torch::kCPU);
  auto w = m->model->layer_list[0]->self_attn->q_proj->weight;
  {
    torch::NoGradGuard ng;
    w.mul_(20);  // sharper attention, so the q weights matter
  }
  w.set_requires_grad(true);
  auto ids = torch::randint(3, 50, {2, 6}, torch::kLong);
  auto mask = torch::ones({2, 6}, torch::kLong);
  mask.index_put_({1, torch::indexing::Slice(0, 2)}, 0);
  auto probe = torch::randn({2, 6, 50}, torch::kFloat64);
  auto loss_of = [&]() {
    ForwardArgs a;
    a.input_ids = ids;
    a.attention_mask = mask;
    // forward() returns float32 logits; stay in float64 for the finite differences.
    return (torch::matmul(m->forward_hidden(a), m->lm_head_weight().t()) * probe).sum();
  };
  auto loss = loss_of();
  loss.backward();
  auto g = w.grad().clone();
  torch::NoGradGuard ng;
  const double eps = 1e-6;
  for (auto [i, j] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {5, 17}, {31, 31}}) {
    const double orig = w[i][j].item<double>();
    w[i][j] = orig + eps;
    const double up = loss_of().item<double>();
    w[i][j] = orig - eps;
    const double down = loss_of().item<double>();
    w[i][j] = orig;
    const double fd = (up - down) / (2 * eps);
    EXPECT_NEAR(g[i][j].item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd))) << i << "," << j;
  }
  EXPECT_GT(g.abs().sum().item<double>(), 0);
}

TEST(Llama, BaseWeightsExcludeAdapterParameters) {
  auto m = random_llama(tiny_cfg(true), 2, torch::kFloat32, torch::kCPU);
  const size_t n = m->base_weights().size();
  // Parameters an adapter might register on a projection are not base weights.
  auto q = m->model->layer_list[0]->self_attn->q_proj;
  q->register_parameter("router_test", torch::zeros({2, 32}));
  q->register_module("router", torch::nn::Linear(torch::nn::LinearOptions(32, 2).bias(false)));
  EXPECT_EQ(m->base_weights().size(), n);
  const std::string dir = test::scratch_dir("save_with_adapter_params");
  save_llama(m, dir);
  EXPECT_FALSE(SafeTensorsFile::open(dir + "/model.safetensors")->contains("model.layers.0.self_attn.q_proj.router.weight"));
}

// kB value of a "VmRSS:"/"VmHWM:" line of /proc/self/status, -1 when absent.
static long proc_status_kb(const std::string& key) {
  std::istringstream in(test::read_file("/proc/self/status"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
  return -1;
}

// The memory rule: loading float32 files into bfloat16 peaks at about the bfloat16 model plus one
// tensor, because each tensor's mapped pages are dropped once it is converted. Without that release the
// peak would be the bfloat16 model plus the whole float32 file (~3x the bound's model part).
TEST(Llama, LoadPeakIsModelInComputeDtypePlusOneTensor) {
  ModelConfig c = ModelConfig::llama(512, 1408, 4, 8, 8, 8192);
  const std::string dir = test::scratch_dir("load_peak");
  int64_t n_params = 0, largest = 0;
  {
    auto m = random_llama(c, 5, torch::kFloat32, torch::kCPU);
    save_llama(m, dir);
    for (auto& [name, p] : m->base_weights()) {
      n_params += p.numel();
      largest = std::max<int64_t>(largest, p.numel());
    }
  }
  // The float32 model's freed memory may still be resident in malloc's heap (glibc raises its mmap threshold
  // after freeing large blocks); hand it back so the baseline holds no memory that loading could reuse.
  malloc_trim(0);
  const double mb = 1024.0 * 1024.0;
  const double model_bf16 = n_params * 2 / mb, largest_f32 = largest * 4 / mb;
  {
    std::ofstream reset("/proc/self/clear_refs");
    reset << "5";  // resets VmHWM to the current RSS (Linux >= 4.0)
    reset.close();
    if (!reset) GTEST_SKIP() << "cannot reset the peak RSS through /proc/self/clear_refs";
  }
  const long before_kb = proc_status_kb("VmRSS:");
  ASSERT_GT(before_kb, 0);
  ASSERT_LE(proc_status_kb("VmHWM:") - before_kb, 1024) << "peak not reset";
  auto m = load_llama(dir, torch::kBFloat16, torch::kCPU);
  const double peak = (proc_status_kb("VmHWM:") - before_kb) / 1024.0;
  std::cout << "load float32 file (" << n_params * 4 / mb << " MB) as bfloat16: peak RSS +" << peak
            << " MB; bfloat16 model " << model_bf16 << " MB, largest float32 tensor " << largest_f32 << " MB\n";
  EXPECT_GT(peak, 0.9 * model_bf16);                // the measurement sees the model itself
  EXPECT_LT(peak, model_bf16 + largest_f32 + 8.0);  // + one tensor, + a little allocator slack
  EXPECT_EQ(m->base_weights().size(), 2u + 9u * c.n_layer + 1u);
}
