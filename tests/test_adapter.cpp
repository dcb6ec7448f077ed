// Adapter files and loss: save -> load is exact, our files have the reference's keys and PEFT's
// adapter_config.json, the reference's torch.save adapter_model.bin (made by scripts/twin_mola.py)
// loads to the same tensors as the safetensors copy, every mismatch is one clear error, and the loss
// (ce + 0.001 * aux) matches an independent computation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "adapter.h"
#include "helpers.h"

using mor::test::error_of;
#include "safetensors.h"

using namespace mor;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny_cfg() {
  return ModelConfig::llama(32, 48, 3, 4, 2, 64);
}

std::string golden() { return test::source_dir() + "/tests/golden/mola_tiny"; }

// The golden allocation: experts 2,3,4; ranks [4,4], [2,4,2] (a mixture), [8,8,8,8]; top-k 1,2,3.
Allocation golden_alloc(const ModelConfig& cfg) {
  auto dir = test::scratch_dir("golden_alloc");
  test::write_file(dir + "/r.json", "[[4, 4], [2, 4, 2], [8, 8, 8, 8]]");
  return Allocation::from_flags(cfg, "q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj", "2,3,4",
                                dir + "/r.json", "1,2,3", 16, 0.05);
}

void randomize_B(LlamaForCausalLM& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard ng;
  for (auto& [name, t] : trainable_params(m))
    if (name.size() > 7 && name.substr(name.size() - 7) == ".lora_B") t.normal_(0, 0.3);
}

}  // namespace

TEST(Adapter, AttachNamesAndTrainableParams) {
  auto cfg = tiny_cfg();
  auto m = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  auto alloc = Allocation::from_flags(cfg, "q_proj,down_proj", "2,3,4", "4", "1,2,2", 16, 0.05);
  attach_adapters(m, alloc, 7);
  auto tp = trainable_params(m);
  ASSERT_EQ(tp.size(), 3u * 2 * 3);
  EXPECT_EQ(tp[0].first, "model.layers.0.self_attn.q_proj.router");
  EXPECT_EQ(tp[4].first, "model.layers.0.mlp.down_proj.lora_A");
  int64_t n = 0;
  for (auto& [k, t] : tp) {
    EXPECT_TRUE(t.requires_grad()) << k;
    EXPECT_EQ(t.scalar_type(), torch::kFloat32);
    n += t.numel();
  }
  EXPECT_EQ(n, alloc.trainable_parameters());
  // Only adapters train: every base weight stays frozen.
  int64_t n_grad = 0;
  for (auto& p : m->parameters()) n_grad += p.requires_grad() ? p.numel() : 0;
  EXPECT_EQ(n_grad, n);
  auto st = adapter_state(m);
  EXPECT_EQ(st[0].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_A_0.weight");
  EXPECT_EQ(st[2].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_B_0.weight");
  EXPECT_EQ(st[4].first, "base_model.model.model.layers.0.self_attn.q_proj.router.router.weight");
  // Seeded: the same seed gives the same adapter.
  auto m2 = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  attach_adapters(m2, alloc, 7);
  EXPECT_TRUE(torch::equal(trainable_params(m2)[1].second, tp[1].second));
  EXPECT_NE(error_of([&] { attach_adapters(m2, alloc, 7); }).find("already attached"), std::string::npos);
}

TEST(Adapter, SaveLoadRoundTripIsExactWithReferenceLayout) {
  auto cfg = tiny_cfg();
  auto alloc = golden_alloc(cfg);
  auto m = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  attach_adapters(m, alloc, 3);
  randomize_B(m, 4);
  auto dir = test::scratch_dir("adapter_rt");
  save_adapter(m, alloc, dir, "NousResearch/Llama-2-7b-hf");
  for (auto f : {"adapter_model.safetensors", "adapter_config.json", "mola_config.json"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  for (auto& e : fs::directory_iterator(dir)) EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  // PEFT's adapter_config.json byte for byte (sorted keys, indent 2, no trailing newline).
  EXPECT_EQ(test::read_file(dir + "/adapter_config.json"),
            "{\n  \"auto_mapping\": null,\n  \"base_model_name_or_path\": \"NousResearch/Llama-2-7b-hf\",\n"
            "  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n  \"inference_mode\": true,\n"
            "  \"init_lora_weights\": true,\n  \"layers_pattern\": null,\n  \"layers_to_transform\": null,\n"
            "  \"lora_alpha\": 16,\n  \"lora_dropout\": 0.05,\n  \"modules_to_save\": null,\n"
            "  \"peft_type\": \"LORA\",\n  \"r\": [\n    4,\n    2,\n    8\n  ],\n  \"revision\": null,\n"
            "  \"target_modules\": [\n    \"q_proj\",\n    \"v_proj\",\n    \"k_proj\",\n    \"o_proj\",\n"
            "    \"gate_proj\",\n    \"down_proj\",\n    \"up_proj\"\n  ],\n  \"task_type\": \"CAUSAL_LM\"\n}");
  // The same bytes as the twin writes with json.dumps(indent=2, sort_keys=True).
  auto twin_cfg = test::read_file(golden() + "/adapter/adapter_config.json");
  EXPECT_EQ(adapter_config_json(alloc, "mola_tiny"), twin_cfg);
  auto f = SafeTensorsFile::open(dir + "/adapter_model.safetensors");
  EXPECT_EQ(f->metadata().at("format"), "pt");
  auto ref_keys = SafeTensorsFile::open(golden() + "/adapter/adapter_model.safetensors")->keys();
  EXPECT_EQ(f->keys(), ref_keys);  // exactly the reference's key set
  EXPECT_EQ(f->info("base_model.model.model.layers.1.mlp.down_proj.lora_A_1.weight").shape,
            (std::vector<int64_t>{4, 48}));
  EXPECT_EQ(f->info("base_model.model.model.layers.1.mlp.down_proj.lora_B_2.weight").shape,
            (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(f->info("base_model.model.model.layers.2.self_attn.k_proj.router.router.weight").shape,
            (std::vector<int64_t>{4, 32}));
  // Load into a fresh model (no flags: the allocation comes from mola_config.json).
  auto m2 = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  auto got = load_adapter(m2, dir);
  EXPECT_EQ(got.difference(alloc), "");
  auto a = adapter_state(m), b = adapter_state(m2);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
  // Agreeing flags are accepted; disagreeing flags fail clearly.
  auto m3 = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  EXPECT_NO_THROW(load_adapter(m3, dir, &alloc));
  auto other = Allocation::from_flags(cfg, "q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj", "2,3,3", "4",
                                      "1,2,3", 16, 0.05);
  auto m4 = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  EXPECT_EQ(error_of([&] { load_adapter(m4, dir, &other); }),
            "the allocation flags disagree with " + dir + "/mola_config.json: model.layers.1.self_attn.q_proj: ranks "
            "[2,4,2] vs [4,4,4] (saved vs flags); drop the flags or fix them");
}

TEST(Adapter, ReferenceBinLoadsSameTensorsAsSafetensors) {
  auto cfg = ModelConfig::from_file(golden() + "/model/config.json");
  auto alloc = golden_alloc(cfg);
  auto a = load_llama(golden() + "/model", torch::kFloat32, torch::kCPU);
  load_adapter(a, golden() + "/adapter");
  auto b = load_llama(golden() + "/model", torch::kFloat32, torch::kCPU);
  // The reference's folder carries no expert counts or top-k: flags are required.
  EXPECT_EQ(error_of([&] { load_adapter(b, golden() + "/adapter_ref"); }),
            golden() + "/adapter_ref has no mola_config.json (a reference adapter stores no expert counts or top-k): "
                       "pass --number_experts, --lora_r, --top_k and --lora_target_modules");
  load_adapter(b, golden() + "/adapter_ref", &alloc);
  auto sa = adapter_state(a), sb = adapter_state(b);
  ASSERT_EQ(sa.size(), sb.size());
  double maxabs = 0;
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
    maxabs = std::max(maxabs, sa[i].second.abs().max().item<double>());
  }
  EXPECT_GT(maxabs, 0.1);  // B is nonzero in the fixture
  // The raw .bin reads as name -> tensor with the reference's keys.
  auto w = read_adapter_weights(golden() + "/adapter_ref/adapter_model.bin");
  EXPECT_EQ(w.size(), sa.size());
}

TEST(Adapter, MismatchesAreClearErrors) {
  auto cfg = tiny_cfg();
  auto alloc = Allocation::from_flags(cfg, "q_proj,up_proj", "2", "4", "1", 16, 0.05);
  auto m = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  attach_adapters(m, alloc, 3);
  auto dir = test::scratch_dir("adapter_err");
  save_adapter(m, alloc, dir, "x");
  auto st = adapter_state(m);
  auto write_variant = [&](const std::string& name, auto edit) {
    auto d = test::scratch_dir(name);
    std::vector<std::pair<std::string, torch::Tensor>> t(st.begin(), st.end());
    edit(t);
    save_safetensors(d + "/adapter_model.safetensors", t, {{"format", "pt"}});
    fs::copy_file(dir + "/mola_config.json", d + "/mola_config.json");
    return d;
  };
  const std::string k0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A_1.weight";
  auto d1 = write_variant("wrong_shape", [&](auto& t) { t[1].second = torch::zeros({5, 32}); });
  auto d2 = write_variant("missing", [&](auto& t) { t.erase(t.begin() + 1); });
  auto d3 = write_variant("extra", [&](auto& t) { t.emplace_back("base_model.model.lm_head.lora_A_0.weight", torch::zeros({1})); });
  auto fresh = [&] { return random_llama(cfg, 1, torch::kFloat32, torch::kCPU); };
  {
    auto x = fresh();
    EXPECT_EQ(error_of([&] { load_adapter(x, d1); }),
              d1 + "/adapter_model.safetensors: key '" + k0 + "' has shape [5, 32], expected [4, 32]");
  }
  {
    auto x = fresh();
    EXPECT_EQ(error_of([&] { load_adapter(x, d2); }), d2 + "/adapter_model.safetensors: missing key '" + k0 + "'");
  }
  {
    auto x = fresh();
    EXPECT_EQ(error_of([&] { load_adapter(x, d3); }),
              d3 + "/adapter_model.safetensors: unexpected key 'base_model.model.lm_head.lora_A_0.weight' (not in the "
                   "allocation)");
  }
  {
    auto x = fresh();
    EXPECT_EQ(error_of([&] { load_adapter(x, dir + "/nope"); }), "adapter folder " + dir + "/nope does not exist");
  }
  {
    // Adapters already attached (a trainer resuming) must match the saved ones; dropout may differ.
    auto x = fresh();
    attach_adapters(x, Allocation::from_flags(cfg, "q_proj,up_proj", "2", "4", "1", 16, 0.1), 1);
    EXPECT_NO_THROW(load_adapter(x, dir));
    EXPECT_TRUE(torch::equal(adapter_state(x)[0].second, st[0].second));
    auto y = fresh();
    attach_adapters(y, Allocation::from_flags(cfg, "q_proj,up_proj", "2", "4", "2", 16, 0.05), 1);
    EXPECT_EQ(error_of([&] { load_adapter(y, dir); }),
              dir + "/adapter_model.safetensors: model.layers.0.self_attn.q_proj: the model's adapter (experts 2, "
                    "top_k 2, lora_alpha 16.000000) differs from the saved one (experts 2, top_k 1, lora_alpha 16.000000)");
  }
  // A per-layer list of the wrong length, as when flags describe a reference adapter.
  EXPECT_EQ(error_of([&] { Allocation::from_flags(cfg, "q_proj", "2,2", "4", "1", 16, 0.05); }),
            "--number_experts: expected one integer or 3 comma-separated integers (one per layer), got 2");
}

TEST(Adapter, LossIsCrossEntropyPlusBalance) {
  auto cfg = tiny_cfg();
  auto alloc = Allocation::from_flags(cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "2,3,4", "4",
                                      "1,2,2", 16, 0.0);
  auto m = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  attach_adapters(m, alloc, 3);
  randomize_B(m, 5);
  m->eval();
  auto ids = torch::randint(3, 64, {2, 8});
  auto att = torch::ones({2, 8}, torch::kInt64);
  att[0][0] = 0;
  att[0][1] = 0;
  auto labels = ids.clone();
  labels[0][0] = -100;
  labels[0][1] = -100;
  labels[1][3] = -100;
  RouterLogits rl;
  ForwardArgs fa;
  fa.input_ids = ids;
  fa.attention_mask = att;
  fa.router_logits = &rl;
  auto logits = m->forward(fa);
  ASSERT_EQ(rl.size(), 3u);
  ASSERT_EQ(rl[0].size(), 7u);
  auto lp = compute_loss(m, logits, labels, rl, true);
  // ce by hand: mean of -log softmax at the shifted label over unmasked positions.
  double sum = 0;
  int n = 0;
  auto logp = torch::log_softmax(logits.to(torch::kFloat64), -1);
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 7; ++t) {
      int64_t l = labels[b][t + 1].item<int64_t>();
      if (l == -100) continue;
      sum -= logp[b][t][l].item<double>();
      ++n;
    }
  EXPECT_NEAR(lp.ce.item<double>(), sum / n, 1e-5);
  double aux = 0;
  const int64_t topk[3] = {1, 2, 2};
  for (int il = 0; il < 3; ++il) aux += balance_loss_reference(rl[il], topk[il]);
  EXPECT_NEAR(lp.aux.item<double>(), aux, 1e-5);
  EXPECT_NEAR(lp.loss.item<double>(), sum / n + 0.001 * aux, 1e-5);
  auto lp2 = compute_loss(m, logits, labels, rl, false);
  EXPECT_NEAR(lp2.loss.item<double>(), sum / n, 1e-5);
  EXPECT_NEAR(lp2.aux.item<double>(), aux, 1e-5);
  auto pe = per_example_ce(logits, labels);
  EXPECT_EQ(pe.sizes(), (std::vector<int64_t>{2}));
  // Gradients reach every adapter parameter, routers included (through the balance loss too).
  lp.loss.backward();
  for (auto& [k, t] : trainable_params(m)) {
    ASSERT_TRUE(t.grad().defined()) << k;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0) << k;
  }
}
