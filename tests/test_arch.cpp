// The architecture table and the families it adds: LLaMA-3.x (llama3/linear/dynamic rope scaling, tied
// embeddings, head_dim from config, eos lists), Qwen2/Qwen2.5 (q/k/v bias, no sliding window) and
// Mistral v0.3 (vocab 32768), each against the PyTorch twin (scripts/twin_llama.py --families ->
// tests/golden/twin_{llama3,qwen2,mistral_v03,rope}): left-padded batch logits within 1e-4 relative in
// float32 and equal greedy generations; inverse frequencies against transformers' formulas; `mor params`
// on the published LLaMA-3.1-8B / Qwen2.5-7B config.json shapes against hand counts; config errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "adapter.h"
#include "allocation.h"
#include "arch.h"
#include "config.h"
#include "generate.h"
#include "helpers.h"
#include "llama.h"
#include "safetensors.h"

namespace fs = std::filesystem;
using namespace mor;
using nlohmann::json;

namespace {

std::string golden(const std::string& name) { return test::source_dir() + "/tests/golden/" + name; }
std::string fixture(const std::string& name) { return test::source_dir() + "/tests/fixtures/" + name; }

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

std::string config_error(const json& j) {
  return test::error_of([&] { ModelConfig::from_json(j, "/m/config.json"); });
}

json llama3_json() {
  return json::parse(test::read_file(fixture("llama-3.1-8b/config.json")));
}

}  // namespace

// ---- the table -------------------------------------------------------------------------------------

TEST(ArchTable, FamiliesModulesShapesAndBiases) {
  ASSERT_EQ(architectures().size(), 3u);
  const auto& q = find_arch("Qwen2ForCausalLM", "qwen2", "x");
  const auto& l = find_arch("", "llama", "x");
  const auto& m = find_arch("MistralForCausalLM", "", "x");
  EXPECT_EQ(l.architecture, "LlamaForCausalLM");
  EXPECT_EQ(m.model_type, "mistral");
  for (const auto* a : {&q, &l, &m})
    EXPECT_EQ(a->projection_names(), (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                "up_proj", "down_proj"}));
  std::vector<std::string> biased;
  for (const auto& p : q.projections)
    if (p.bias) biased.push_back(p.name);
  EXPECT_EQ(biased, (std::vector<std::string>{"q_proj", "k_proj", "v_proj"}));
  for (const auto& p : l.projections) EXPECT_FALSE(p.bias) << p.name;
  // head_dim given: q_proj out = heads * head_dim (96), not hidden (64); o_proj in the same.
  auto j = llama3_json();
  j["hidden_size"] = 64;
  j["intermediate_size"] = 96;
  j["num_attention_heads"] = 4;
  j["num_key_value_heads"] = 2;
  j["head_dim"] = 24;
  j["vocab_size"] = 128;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  auto cfg = ModelConfig::from_json(j, "cfg");
  EXPECT_EQ(cfg.head_dim(), 24);
  EXPECT_EQ(Allocation::module_shape(cfg, "q_proj"), (std::pair<int64_t, int64_t>{64, 96}));
  EXPECT_EQ(Allocation::module_shape(cfg, "k_proj"), (std::pair<int64_t, int64_t>{64, 48}));
  EXPECT_EQ(Allocation::module_shape(cfg, "o_proj"), (std::pair<int64_t, int64_t>{96, 64}));
  EXPECT_EQ(Allocation::module_path(3, "up_proj"), "model.layers.3.mlp.up_proj");
  EXPECT_EQ(test::error_of([] { find_arch("GemmaForCausalLM", "", "/m/config.json"); }),
            "/m/config.json: unsupported architecture 'GemmaForCausalLM' (supported: LlamaForCausalLM, "
            "MistralForCausalLM, Qwen2ForCausalLM)");
  EXPECT_EQ(test::error_of([] { find_arch("Qwen2ForCausalLM", "llama", "/m/config.json"); }),
            "/m/config.json: model_type 'llama' does not match architecture Qwen2ForCausalLM (which has model_type "
            "'qwen2')");
}

TEST(ArchConfig, Llama31AndQwen25ConfigsParse) {
  auto l = ModelConfig::from_file(fixture("llama-3.1-8b/config.json"));
  EXPECT_EQ(l.rope_scaling.type, "llama3");
  EXPECT_EQ(l.rope_scaling.factor, 8.0);
  EXPECT_EQ(l.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(l.eos_token_ids, (std::vector<int64_t>{128001}));
  EXPECT_EQ(l.head_dim(), 128);
  auto q = ModelConfig::from_file(fixture("qwen2.5-7b/config.json"));
  EXPECT_EQ(q.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(q.rope_theta, 1e6);
  EXPECT_EQ(q.rms_norm_eps, 1e-6);
  EXPECT_EQ(q.sliding_window, 0);  // inert with use_sliding_window false: no length limit
  EXPECT_FALSE(q.tie_word_embeddings);
  // Round trips through to_json (what save_llama writes).
  for (const auto& c : {l, q}) {
    auto c2 = ModelConfig::from_json(c.to_json(), "again");
    EXPECT_EQ(c2.to_json(), c.to_json());
    EXPECT_TRUE(c2.rope_scaling == c.rope_scaling);
  }
}

TEST(ArchConfig, EosListsHeadDimAndQwenWindowKeys) {
  auto j = llama3_json();
  j["eos_token_id"] = {128001, 128008, 128009};
  j["head_dim"] = 64;  // LLaMA-3.2-3B style: differs from 4096 / 32
  auto c = ModelConfig::from_json(j, "cfg");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_EQ(c.head_dim(), 64);
  EXPECT_EQ(ModelConfig::from_json(c.to_json(), "again").eos_token_ids, c.eos_token_ids);
  j["eos_token_id"] = {128001, 200000};
  EXPECT_EQ(config_error(j), "/m/config.json: \"eos_token_id\" 200000 is outside the vocabulary");
  auto qj = json::parse(test::read_file(fixture("qwen2.5-7b/config.json")));
  qj["sliding_window"] = 4096;  // inert: Qwen2 ignores it without use_sliding_window
  qj["max_window_layers"] = 21;
  EXPECT_EQ(ModelConfig::from_json(qj, "q").sliding_window, 0);
  qj["use_sliding_window"] = true;
  EXPECT_EQ(config_error(qj),
            "/m/config.json: \"use_sliding_window\": true is not supported (sliding-window attention is not "
            "implemented; Qwen2 attends to every key when it is false)");
  // Mistral v0.3: sliding_window null -> no window; absent -> MistralConfig's 4096.
  json mj = {{"architectures", {"MistralForCausalLM"}}, {"model_type", "mistral"}, {"hidden_size", 64},
             {"intermediate_size", 96}, {"num_hidden_layers", 1}, {"num_attention_heads", 4},
             {"num_key_value_heads", 2}, {"vocab_size", 32768}, {"sliding_window", nullptr}};
  EXPECT_EQ(ModelConfig::from_json(mj, "m").sliding_window, 0);
  mj.erase("sliding_window");
  EXPECT_EQ(ModelConfig::from_json(mj, "m").sliding_window, 4096);
}

// Must show 5 (the model side): an unknown rope_scaling type is one clear error naming the file and type.
TEST(ArchConfig, UnknownRopeScalingTypeIsOneClearError) {
  auto j = llama3_json();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_EQ(config_error(j), "/m/config.json: rope_scaling {\"factor\":4.0,\"rope_type\":\"yarn\"} is not supported: "
                             "type 'yarn' (supported: linear, dynamic, llama3)");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_NE(config_error(j).find("type 'llama3' needs \"low_freq_factor\""), std::string::npos) << config_error(j);
  j["rope_scaling"] = {{"factor", 8.0}};
  EXPECT_NE(config_error(j).find("no \"rope_type\" (or \"type\") string"), std::string::npos) << config_error(j);
  // Through the CLI: one line naming config.json.
  auto dir = test::scratch_dir("arch_yarn");
  j["rope_scaling"] = {{"type", "longrope"}, {"factor", 4.0}};
  test::write_file(dir + "/config.json", j.dump());
  auto r = test::run_mor("params --base_model " + dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err, "mor params: error: " + dir + "/config.json: rope_scaling {\"factor\":4.0,\"type\":\"longrope\"} is "
                   "not supported: type 'longrope' (supported: linear, dynamic, llama3)\n");
  EXPECT_EQ(r.out, "");
}

// ---- RoPE inverse frequencies ------------------------------------------------------------------------

TEST(ArchRope, InverseFrequenciesEqualTransformersFormulas) {
  auto f = SafeTensorsFile::open(golden("twin_rope/inv_freq.safetensors"));
  auto cases = json::parse(f->metadata().at("cases"));
  ASSERT_EQ(cases.size(), 7u);
  for (const auto& c : cases) {
    json j = c["config"];
    j["model_type"] = "llama";
    j["intermediate_size"] = 8;
    j["num_hidden_layers"] = 1;
    j["vocab_size"] = 8;
    auto cfg = ModelConfig::from_json(j, c["name"].get<std::string>());
    auto got = rope_inv_freq(cfg, c["seq_len"].get<int64_t>());
    auto want = f->get(c["name"].get<std::string>());
    ASSERT_EQ(got.sizes(), want.sizes()) << c["name"];
    const double d = rel_diff(got, want);
    std::cout << c["name"].get<std::string>() << ": max |diff| / max = " << d << "\n";
    EXPECT_TRUE(torch::allclose(got, want, 1e-6, 0)) << c["name"];
  }
  // The llama3 bands themselves (LLaMA-3.1-8B): wavelength < 8192/4 unchanged, > 8192/1 divided by 8,
  // in between smoothly interpolated.
  auto cfg = ModelConfig::from_file(fixture("llama-3.1-8b/config.json"));
  auto plain = cfg;
  plain.rope_scaling = RopeScaling{};
  auto s = rope_inv_freq(cfg, 0), p = rope_inv_freq(plain, 0);
  auto wavelen = 2 * M_PI / p;
  auto high = wavelen < 2048, low = wavelen > 8192, mid = ~(high | low);
  EXPECT_TRUE(torch::equal(s.masked_select(high), p.masked_select(high)));
  EXPECT_TRUE(torch::allclose(s.masked_select(low), p.masked_select(low) / 8, 1e-6, 0));
  ASSERT_GT(mid.sum().item<int64_t>(), 0);
  EXPECT_TRUE((s.masked_select(mid) < p.masked_select(mid)).all().item<bool>());
  EXPECT_TRUE((s.masked_select(mid) > p.masked_select(mid) / 8).all().item<bool>());
  // dynamic leaves short sequences alone.
  auto dyn = plain;
  dyn.rope_scaling.type = "dynamic";
  dyn.rope_scaling.factor = 2;
  EXPECT_TRUE(torch::equal(rope_inv_freq(dyn, 100), p));
  EXPECT_FALSE(torch::equal(rope_inv_freq(dyn, 200000), p));
}

// ---- the families against the twin ---------------------------------------------------------------

namespace {

struct FamilyGolden {
  LlamaForCausalLM model{nullptr};
  std::shared_ptr<SafeTensorsFile> g;
};

FamilyGolden load_family(const std::string& name) {
  FamilyGolden f;
  f.model = load_llama(golden("twin_" + name), torch::kFloat32, torch::kCPU);
  f.g = SafeTensorsFile::open(golden("twin_" + name) + "/golden.safetensors");
  return f;
}

torch::Tensor logits_at(LlamaForCausalLM& m, const SafeTensorsFile& g, int64_t shift) {
  ForwardArgs a;
  a.input_ids = g.get("input_ids");
  a.attention_mask = g.get("attention_mask");
  a.position_ids = g.get("position_ids") + shift;
  torch::NoGradGuard ng;
  return m->forward(a);
}

// Logits at generation positions and 20000 further (where the llama3 bands matter), all of V or the
// golden's column sample; argmax over all of V either way.
void expect_logits_match(const std::string& name) {
  auto f = load_family(name);
  auto& g = *f.g;
  for (auto [shift, key] : {std::pair<int64_t, std::string>{0, ""}, {20000, "far_"}}) {
    auto logits = logits_at(f.model, g, shift);
    torch::Tensor got = logits, want;
    if (g.contains("columns")) {
      got = logits.index_select(-1, g.get("columns"));
      want = g.get(key + "logits_columns");
    } else {
      want = g.get(key + "logits");
    }
    ASSERT_EQ(got.sizes(), want.sizes());
    const double d = rel_diff(got, want);
    std::cout << name << " " << (shift ? "far " : "") << "logits vs twin: max |diff| / max |ref| = " << d << "\n";
    EXPECT_LT(d, 1e-4);
    EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-5));
    EXPECT_TRUE(torch::equal(logits.argmax(-1), g.get(key + "argmax")));
  }
  // Pad rows are compared too: row 2 of the batch has one real token.
  EXPECT_EQ(g.get("attention_mask")[2].sum().item<int64_t>(), 1);
}

void expect_greedy_match(const std::string& name) {
  auto f = load_family(name);
  auto ids = f.g->get("input_ids"), mask = f.g->get("attention_mask"), want = f.g->get("greedy_new_tokens");
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < ids.size(0); ++b) {
    std::vector<int64_t> p;
    for (int64_t t = 0; t < ids.size(1); ++t)
      if (mask[b][t].item<int64_t>()) p.push_back(ids[b][t].item<int64_t>());
    prompts.push_back(p);
  }
  GenerateOptions o;
  o.max_new_tokens = want.size(1);
  o.stop_ids = f.model->cfg.eos_token_ids;  // every eos of the list, as transformers stops
  auto out = generate(f.model, prompts, o);
  for (int64_t b = 0; b < want.size(0); ++b) {
    std::vector<int64_t> w;
    for (int64_t t = 0; t < want.size(1) && want[b][t].item<int64_t>() >= 0; ++t) w.push_back(want[b][t].item<int64_t>());
    EXPECT_EQ(out.new_tokens[b], w) << name << " row " << b;
  }
}

}  // namespace

TEST(ArchTwin, Llama3RopeScalingTiedHeadDimLogits) {
  expect_logits_match("llama3");
  auto f = load_family("llama3");
  EXPECT_TRUE(f.model->cfg.tie_word_embeddings);
  EXPECT_FALSE(f.model->lm_head);
  EXPECT_EQ(f.model->cfg.head_dim(), 24);
  EXPECT_EQ(f.model->cfg.eos_token_ids, (std::vector<int64_t>{2, 3, 4}));
  // The same weights under linear and dynamic scaling (positions + 3, dynamic past max_position 8).
  for (auto [type, maxpos] : {std::pair<std::string, int64_t>{"linear", 131072}, {"dynamic", 8}}) {
    f.model->cfg.rope_scaling = RopeScaling{};
    f.model->cfg.rope_scaling.type = type;
    f.model->cfg.rope_scaling.factor = 4.0;
    f.model->cfg.max_position_embeddings = maxpos;
    auto got = logits_at(f.model, *f.g, 3), want = f.g->get("logits_" + type);
    const double d = rel_diff(got, want);
    std::cout << "llama3 weights, " << type << " scaling: " << d << "\n";
    EXPECT_LT(d, 1e-4) << type;
  }
  // Without the scaling the far logits miss the twin's by more than the tolerance: the test sees the bands.
  f.model->cfg.rope_scaling = RopeScaling{};
  EXPECT_GT(rel_diff(logits_at(f.model, *f.g, 20000), f.g->get("far_logits")), 2e-4);
}

TEST(ArchTwin, Llama3GreedyGenerationStopsAtAnyEos) {
  expect_greedy_match("llama3");
  // Row 3 of the golden stops at eos 4, the last of the list.
  auto g = SafeTensorsFile::open(golden("twin_llama3/golden.safetensors"));
  EXPECT_EQ(g->get("greedy_new_tokens")[3][3].item<int64_t>(), 4);
}

TEST(ArchTwin, Qwen2QkvBiasLogitsAndGreedy) {
  expect_logits_match("qwen2");
  expect_greedy_match("qwen2");
  auto f = load_family("qwen2");
  auto L = f.model->model->layer_list[0];
  ASSERT_TRUE(L->self_attn->q_proj->bias.defined());
  EXPECT_FALSE(L->self_attn->o_proj->bias.defined());
  EXPECT_FALSE(L->mlp->down_proj->bias.defined());
  EXPECT_FALSE(L->self_attn->q_proj->bias.requires_grad());
  // Without the biases the logits differ: the test sees them.
  torch::NoGradGuard ng;
  for (auto& l : f.model->model->layer_list)
    for (auto* p : {&l->self_attn->q_proj, &l->self_attn->k_proj, &l->self_attn->v_proj}) (*p)->bias.zero_();
  EXPECT_GT(rel_diff(logits_at(f.model, *f.g, 0), f.g->get("logits")), 1e-3);
}

TEST(ArchTwin, MistralV03LogitsAndGreedy) {
  expect_logits_match("mistral_v03");
  expect_greedy_match("mistral_v03");
  auto f = load_family("mistral_v03");
  EXPECT_EQ(f.model->cfg.vocab_size, 32768);
  EXPECT_EQ(f.model->cfg.sliding_window, 0);
}

TEST(ArchTwin, QwenBiasesLoadSaveAndNamedLikeHuggingFace) {
  auto f = load_family("qwen2");
  std::vector<std::string> names;
  for (auto& [k, v] : f.model->base_weights()) names.push_back(k);
  EXPECT_EQ(names[1], "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(names[2], "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(names.size(), 1u + 2 * (7 + 3 + 2) + 1);  // tied: no lm_head
  const std::string dir = test::scratch_dir("arch_qwen_save");
  save_llama(f.model, dir);
  auto m2 = load_llama(dir, torch::kFloat32, torch::kCPU);
  auto w1 = f.model->base_weights(), w2 = m2->base_weights();
  ASSERT_EQ(w1.size(), w2.size());
  for (size_t i = 0; i < w1.size(); ++i) EXPECT_TRUE(torch::equal(w1[i].second, w2[i].second)) << w1[i].first;
  // A missing bias is named.
  auto st = SafeTensorsFile::open(dir + "/model.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (const auto& k : st->keys())
    if (k != "model.layers.1.self_attn.v_proj.bias") t.emplace_back(k, st->get(k).clone());
  st.reset();
  save_safetensors(dir + "/model.safetensors", t);
  EXPECT_NE(test::error_of([&] { load_llama(dir, torch::kFloat32, torch::kCPU); })
                .find("missing tensor 'model.layers.1.self_attn.v_proj.bias' (shape [32])"),
            std::string::npos);
}

// ---- mor params on the published shapes -----------------------------------------------------------

namespace {

// Trainable parameters with E experts of rank r on every module: per module E*in (router) + E*r*(in+out),
// shapes typed from the published config.json values (not from the table).
int64_t hand_count(const std::vector<std::pair<int64_t, int64_t>>& shapes, const std::vector<int64_t>& experts, int64_t r) {
  int64_t n = 0;
  for (auto e : experts)
    for (auto [in, out] : shapes) n += e * in + e * r * (in + out);
  return n;
}

std::vector<int64_t> quarters(int64_t layers) {
  std::vector<int64_t> e;
  for (int64_t i = 0; i < layers; ++i) e.push_back(2 + 2 * (4 * i / layers));
  return e;
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

}  // namespace

TEST(ArchParams, Llama31AndQwen25CountsAgainstHandComputation) {
  struct Case {
    std::string dir;
    int64_t layers;
    std::vector<std::pair<int64_t, int64_t>> shapes;  // q, k, v, o, gate, up, down (in, out)
    int64_t base;                                      // the published parameter count
  };
  // LLaMA-3.1-8B: C 4096, F 14336, 32 heads, 8 kv heads (D 128 -> k/v out 1024).
  // Qwen2.5-7B: C 3584, F 18944, 28 heads, 4 kv heads (D 128 -> k/v out 512), q/k/v biases.
  const std::vector<Case> cases = {
      {"llama-3.1-8b", 32,
       {{4096, 4096}, {4096, 1024}, {4096, 1024}, {4096, 4096}, {4096, 14336}, {4096, 14336}, {14336, 4096}},
       8030261248},
      {"qwen2.5-7b", 28,
       {{3584, 3584}, {3584, 512}, {3584, 512}, {3584, 3584}, {3584, 18944}, {3584, 18944}, {18944, 3584}},
       7615616512},
  };
  for (const auto& c : cases) {
    const auto e = quarters(c.layers);  // experts 2/4/6/8 over the four quarters of the layers
    EXPECT_EQ(e.front(), 2);
    EXPECT_EQ(e.back(), 8);
    const int64_t want = hand_count(c.shapes, e, 8);
    auto r = test::run_mor("params --base_model " + fixture(c.dir) + " --number_experts " + join(e) +
                           " --lora_r 8 --top_k 2 --lora_target_modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::cout << c.dir << ": trainable " << with_commas(want) << "\n";
    EXPECT_NE(r.out.find("trainable parameters: " + with_commas(want) + "\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("base parameters: " + with_commas(c.base) + " "), std::string::npos) << r.out;
    auto cfg = ModelConfig::from_file(fixture(c.dir) + "/config.json");
    EXPECT_EQ(base_parameters(cfg), c.base);
  }
  // The figures themselves, for the record.
  EXPECT_EQ(hand_count(cases[0].shapes, quarters(32), 8), 111083520);
  EXPECT_EQ(hand_count(cases[1].shapes, quarters(28), 8), 106588160);
  auto r = test::run_mor("params --base_model " + fixture("qwen2.5-7b"));
  EXPECT_NE(r.out.find("architecture: Qwen2ForCausalLM (qwen2), RMSNorm eps 1e-06, silu, head_dim 128, RoPE theta "
                       "1e+06, q_proj/k_proj/v_proj bias, untied embeddings"),
            std::string::npos)
      << r.out;
}

// ---- Must show 4: train and eval-scienceqa end to end on a random tiny model of each family ---------

namespace {

// A tiny random model of the family in HF layout with the stories260K sentencepiece tokenizer (vocab
// 512; the tokenizer kind is orthogonal to the architecture).
std::string tiny_family_model(const std::string& family) {
  json j = {{"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
            {"num_key_value_heads", 2}, {"vocab_size", 512}, {"bos_token_id", 1}, {"eos_token_id", 2},
            {"rms_norm_eps", 1e-5}};
  if (family == "llama3") {
    j["architectures"] = {"LlamaForCausalLM"};
    j["model_type"] = "llama";
    j["head_dim"] = 12;
    j["tie_word_embeddings"] = true;
    j["eos_token_id"] = {2, 3};
    j["rope_theta"] = 500000.0;
    j["max_position_embeddings"] = 131072;
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  } else if (family == "qwen2") {
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["model_type"] = "qwen2";
    j["rope_theta"] = 1e6;
    j["tie_word_embeddings"] = true;
    j["use_sliding_window"] = false;
    j["sliding_window"] = 32768;
  } else {
    j["architectures"] = {"MistralForCausalLM"};
    j["model_type"] = "mistral";
    j["rope_theta"] = 1e6;
    j["sliding_window"] = nullptr;
  }
  auto cfg = ModelConfig::from_json(j, family);
  const std::string dir = test::scratch_dir("arch_e2e_model_" + family);
  auto m = random_llama(cfg, 5, torch::kFloat32, torch::kCPU);
  save_llama(m, dir);
  for (auto f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(test::testdata_dir() + "/stories260K/" + f, dir + "/" + f);
  return dir;
}

}  // namespace

TEST(ArchEndToEnd, TrainAndEvalScienceQAOnEveryFamily) {
  MOR_REQUIRE_TESTDATA();
  std::map<std::string, std::string> adapters;
  for (const std::string family : {"llama3", "qwen2", "mistral"}) {
    const std::string model = tiny_family_model(family);
    const std::string out = test::scratch_dir("arch_e2e_out_" + family);
    auto r = test::run_mor("train --base_model " + model + " --data_path " + test::testdata_dir() +
                           "/sampled_scienceqa_train_all.hf --output_dir " + out +
                           " --batch_size 4 --micro_batch_size 2 --max_steps 3 --learning_rate 1e-2 --warmup_steps 1"
                           " --cutoff_len 64 --val_set_size 0 --lora_r 4 --number_experts 2,3 --top_k 1,2"
                           " --logging_steps 1 --save_steps 1000 --obalance --dtype float32 --threads 1");
    ASSERT_EQ(r.exit_code, 0) << family << ": " << r.out << r.err;
    auto st = json::parse(test::read_file(out + "/trainer_state.json"));
    EXPECT_EQ(st["global_step"], 3) << family;
    auto mc = json::parse(test::read_file(out + "/mola_config.json"));
    EXPECT_EQ(mc["model_type"], ModelConfig::from_file(model + "/config.json").model_type) << family;
    const std::string res = out + "/eval.json";
    r = test::run_mor("eval-scienceqa --test_dataset " + test::testdata_dir() + "/sampled_scienceqa_json/test.json" +
                      " --base_model " + model + " --mola_weights " + out + " --save_path " + res +
                      " --batch_size 4 --limit 4 --max_new_tokens 4 --dtype float32 --quiet");
    ASSERT_EQ(r.exit_code, 0) << family << ": " << r.out << r.err;
    auto j = json::parse(test::read_file(res));
    EXPECT_EQ(j["len"], 4) << family;
    EXPECT_EQ(j["outputs"].size(), 4u) << family;
    adapters[family] = out;
    if (family == "qwen2") {
      // The adapter records its base's model_type: a llama adapter on this Qwen2 base is refused.
      auto m = load_llama(model, torch::kFloat32, torch::kCPU);
      EXPECT_NE(test::error_of([&] { load_adapter(m, adapters["llama3"]); }).find("the adapter was made for a llama base, "
                                                                                 "the model is qwen2"),
                std::string::npos);
    }
  }
}
