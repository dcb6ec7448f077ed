// MoLA allocation: flag parsing (lists, single values, JSON lists and per-module objects, mixtures
// of ranks), one clear error per problem, parameter counts at LLaMA-2-7B shapes, mola_config.json
// round trip, and `mor params` from a config.json alone.
#include <gtest/gtest.h>

#include <filesystem>

#include "allocation.h"
#include "helpers.h"

using mor::test::error_of;

using namespace mor;

namespace {

ModelConfig llama7b() {
  return ModelConfig::llama(4096, 11008, 32, 32, 32, 32000);
}

ModelConfig tiny(int64_t layers = 4) {
  return ModelConfig::llama(16, 40, layers, 4, 2, 50);
}

const char* kAll = "q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj";

std::string per_block(const std::vector<int>& vals, int each) {
  std::string s;
  for (int v : vals)
    for (int i = 0; i < each; ++i) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

}  // namespace

TEST(Allocation, Llama7bParameterCounts) {
  auto cfg = llama7b();
  auto a = Allocation::from_flags(cfg, kAll, "8", "8", "2", 16, 0.05);
  EXPECT_EQ(a.trainable_parameters(), 169017344);
  auto b = Allocation::from_flags(cfg, kAll, per_block({2, 4, 6, 8}, 8), per_block({8}, 32), "2", 16, 0.05);
  EXPECT_EQ(b.trainable_parameters(), 105635840);
  EXPECT_EQ(b.n_expert(0, "q_proj"), 2);
  EXPECT_EQ(b.n_expert(15, "down_proj"), 4);
  EXPECT_EQ(b.n_expert(31, "up_proj"), 8);
  EXPECT_EQ(base_parameters(cfg), 6738415616);
  EXPECT_EQ(with_commas(105635840), "105,635,840");
}

TEST(Allocation, CommaListsWithSpacesAndAccessors) {
  auto cfg = tiny(4);
  auto a = Allocation::from_flags(cfg, "q_proj, down_proj", "2, 3, 4, 5", "8,4 ,2,1", "1,2,2,5", 16, 0.1);
  EXPECT_EQ(a.target_modules, (std::vector<std::string>{"q_proj", "down_proj"}));
  EXPECT_TRUE(a.targets(2, "q_proj"));
  EXPECT_FALSE(a.targets(2, "k_proj"));
  EXPECT_EQ(a.n_expert(3, "down_proj"), 5);
  EXPECT_EQ(a.top_k(1, "q_proj"), 2);
  EXPECT_EQ(a.rank(1, "q_proj", 2), 4);
  EXPECT_EQ(a.spec("model.layers.3.mlp.down_proj").ranks, (std::vector<int64_t>{1, 1, 1, 1, 1}));
  EXPECT_DOUBLE_EQ(a.spec("model.layers.0.self_attn.q_proj").lora_dropout, 0.1);
  EXPECT_EQ(a.module_paths(), (std::vector<std::string>{
                                  "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
                                  "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj",
                                  "model.layers.2.self_attn.q_proj", "model.layers.2.mlp.down_proj",
                                  "model.layers.3.self_attn.q_proj", "model.layers.3.mlp.down_proj"}));
  // q: in 16, out 16; down: in 40, out 16. Layer 0: 2 experts rank 8.
  EXPECT_EQ(a.module_parameters("model.layers.0.self_attn.q_proj"), 2 * 16 + 16 * (16 + 16));
  EXPECT_EQ(a.module_parameters("model.layers.0.mlp.down_proj"), 2 * 40 + 16 * (40 + 16));
  // k/v use the kv heads: 2 heads * 4 = 8 outputs.
  EXPECT_EQ(Allocation::module_shape(cfg, "k_proj"), (std::pair<int64_t, int64_t>{16, 8}));
  EXPECT_EQ(a.layer_ranks(), (std::vector<int64_t>{8, 4, 2, 1}));
}

TEST(Allocation, JsonFilesListsObjectsAndMixtureOfRanks) {
  auto cfg = tiny(2);
  auto dir = test::scratch_dir("alloc_json");
  test::write_file(dir + "/experts.json", "[2, 4]");
  test::write_file(dir + "/ranks.json", "[[8, 4], 2]");
  auto a = Allocation::from_flags(cfg, "q_proj,up_proj", dir + "/experts.json", dir + "/ranks.json", "1", 16, 0.05);
  EXPECT_EQ(a.spec("model.layers.0.mlp.up_proj").ranks, (std::vector<int64_t>{8, 4}));
  EXPECT_EQ(a.spec("model.layers.1.self_attn.q_proj").ranks, (std::vector<int64_t>{2, 2, 2, 2}));
  test::write_file(dir + "/topk.json", R"({"model.layers.0.self_attn.q_proj": 1, "model.layers.0.mlp.up_proj": 2,
      "model.layers.1.self_attn.q_proj": 3, "model.layers.1.mlp.up_proj": 4})");
  auto b = Allocation::from_flags(cfg, "q_proj,up_proj", "2,4", "8", dir + "/topk.json", 16, 0.05);
  EXPECT_EQ(b.top_k(0, "up_proj"), 2);
  EXPECT_EQ(b.top_k(1, "q_proj"), 3);
  // Mixture of ranks: parameters count each expert's own rank.
  EXPECT_EQ(a.module_parameters("model.layers.0.mlp.up_proj"), 2 * 16 + 12 * (16 + 40));
}

TEST(Allocation, OneClearErrorPerProblem) {
  auto cfg = tiny(4);
  auto dir = test::scratch_dir("alloc_err");
  auto err = [&](const std::string& tm, const std::string& e, const std::string& r, const std::string& k) {
    return error_of([&] { Allocation::from_flags(cfg, tm, e, r, k, 16, 0.05); });
  };
  EXPECT_EQ(err("q_proj", "2,2,2", "8", "1"),
            "--number_experts: expected one integer or 4 comma-separated integers (one per layer), got 3");
  EXPECT_EQ(err("q_proj", "2", "8,8,x8,8", "1"), "--lora_r: 'x8' is not an integer (item 3 of '8,8,x8,8'), nor is "
                                                 "'8,8,x8,8' a JSON file");
  EXPECT_EQ(err("q_proj", "2", "8", "1.5"), "--top_k: '1.5' is not an integer (item 1 of '1.5'), nor is '1.5' a JSON file");
  EXPECT_EQ(err("q_proj", "2,0,2,2", "8", "1"), "--number_experts: model.layers.1.self_attn.q_proj: 0 experts, must be >= 1");
  EXPECT_EQ(err("q_proj", "2", "8,8,0,8", "1"), "--lora_r: model.layers.2.self_attn.q_proj: rank 0, must be >= 1");
  EXPECT_EQ(err("q_proj", "2", "8", "0"), "--top_k: model.layers.0.self_attn.q_proj: 0, must be >= 1");
  EXPECT_EQ(err("q_proj", "2,2,2,2", "8", "1,1,3,1"),
            "--top_k: model.layers.2.self_attn.q_proj: top_k 3 exceeds its 2 experts");
  EXPECT_EQ(err("q_proj,qk_proj", "2", "8", "1"),
            "--lora_target_modules: unknown module 'qk_proj' (known: q_proj, k_proj, v_proj, o_proj, gate_proj, "
            "up_proj, down_proj)");
  EXPECT_EQ(err("q_proj,q_proj", "2", "8", "1"), "--lora_target_modules: 'q_proj' given twice");
  test::write_file(dir + "/bad_key.json", R"({"model.layers.0.self_attn.k_proj": 2})");
  EXPECT_EQ(err("q_proj", dir + "/bad_key.json", "8", "1"),
            "--number_experts: " + dir + "/bad_key.json: key 'model.layers.0.self_attn.k_proj' matches no target "
            "module (expected e.g. 'model.layers.0.self_attn.q_proj')");
  test::write_file(dir + "/short.json", "[2, 2]");
  EXPECT_EQ(err("q_proj", dir + "/short.json", "8", "1"),
            "--number_experts: " + dir + "/short.json: the list has 2 values, the model has 4 layers");
  test::write_file(dir + "/mix.json", "[[8, 4, 2], 8, 8, 8]");
  EXPECT_EQ(err("q_proj", "2", dir + "/mix.json", "1"),
            "--lora_r: model.layers.0.self_attn.q_proj: 3 per-expert ranks for 2 experts");
  EXPECT_EQ(err("q_proj", dir + "/mix.json", "8", "1"),
            "--number_experts: " + dir + "/mix.json layer 0: expected an integer, got a list [8,4,2] (only --lora_r "
            "takes per-expert lists)");
  test::write_file(dir + "/missing.json", R"({"model.layers.0.self_attn.q_proj": 2})");
  EXPECT_EQ(err("q_proj", dir + "/missing.json", "8", "1"),
            "--number_experts: " + dir + "/missing.json: no value for target module 'model.layers.1.self_attn.q_proj'");
  EXPECT_NE(error_of([&] { Allocation::from_flags(cfg, "q_proj", "2", "8", "1", 16, 1.5); }).find("--lora_dropout"),
            std::string::npos);
}

TEST(Allocation, JsonRoundTripAndDifference) {
  auto cfg = tiny(3);
  auto a = Allocation::from_flags(cfg, kAll, "2,3,4", "8", "1,2,3", 32, 0.1);
  auto j = a.to_json();
  auto b = Allocation::from_json(nlohmann::json::parse(j.dump()), "mola_config.json");
  EXPECT_EQ(a.difference(b), "");
  EXPECT_EQ(b.trainable_parameters(), a.trainable_parameters());
  EXPECT_EQ(b.target_modules, a.target_modules);
  EXPECT_EQ(b.spec("model.layers.2.mlp.down_proj"), a.spec("model.layers.2.mlp.down_proj"));
  auto c = Allocation::from_flags(cfg, kAll, "2,3,2", "8", "1,2,2", 32, 0.1);
  EXPECT_EQ(a.difference(c), "model.layers.2.self_attn.q_proj: experts 4 vs 2");
  EXPECT_NE(a.table().find("trainable parameters: " + with_commas(a.trainable_parameters())), std::string::npos);
}

TEST(ParamsCommand, Llama7bFromConfigJsonAlone) {
  auto dir = test::scratch_dir("params7b");
  test::write_file(dir + "/config.json", R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float16"})");
  auto r = test::run_mor("params --base_model " + dir + " --number_experts 8 --lora_r 8 --top_k 2");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("trainable parameters: 169,017,344"), std::string::npos) << r.out;
  r = test::run_mor("params --base-model " + dir + " --number-experts " + per_block({2, 4, 6, 8}, 8) +
                    " --lora_r \"" + per_block({8}, 32) + "\" --top_k 2 --lora_target_modules " + kAll);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("trainable parameters: 105,635,840"), std::string::npos) << r.out;
  r = test::run_mor("params --base_model " + dir + " --number_experts 2,2 --lora_r 8 --top_k 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err, "mor params: error: --number_experts: expected one integer or 32 comma-separated integers (one per "
                   "layer), got 2\n");
  EXPECT_EQ(r.out, "");
}
