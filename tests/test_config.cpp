// config.json parsing and validation, and --base_model resolution through the Hugging Face cache.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "config.h"
#include "helpers.h"

namespace fs = std::filesystem;
using namespace mor;

static nlohmann::json base() {
  return nlohmann::json::parse(R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,
    "intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":8,"vocab_size":101,"rms_norm_eps":1e-5,
    "hidden_act":"silu","rope_scaling":null,"bos_token_id":1,"eos_token_id":2})");
}

TEST(Config, ParsesAndDefaults) {
  auto c = ModelConfig::from_json(base(), "cfg");
  EXPECT_EQ(c.n_head_kv, 8);  // default = heads
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.head_dim(), 8);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.pad_token_id, 0);
  auto j = base();
  j["num_key_value_heads"] = 2;
  j["rope_theta"] = 500000.0;
  j["tie_word_embeddings"] = true;
  j["pad_token_id"] = nullptr;
  c = ModelConfig::from_json(j, "cfg");
  EXPECT_EQ(c.n_head_kv, 2);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  // to_json round trip
  auto c2 = ModelConfig::from_json(c.to_json(), "again");
  EXPECT_EQ(c2.to_json(), c.to_json());
}

TEST(Config, StoriesConfigLoads) {
  MOR_REQUIRE_TESTDATA();
  auto c = ModelConfig::from_file(test::testdata_dir() + "/stories260K/config.json");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.n_head_kv, 4);
  EXPECT_TRUE(c.tie_word_embeddings);
}

static std::string error_of(const nlohmann::json& j) {
  try {
    ModelConfig::from_json(j, "/m/config.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Config, RejectsWhatIsNotImplemented) {
  auto j = base();
  j["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_EQ(error_of(j), "/m/config.json: unsupported architecture 'GPT2LMHeadModel' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
  j = base();
  // linear, dynamic and llama3 are implemented now (tests/test_arch.cpp); yarn is not.
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  EXPECT_NE(error_of(j).find("rope_scaling {\"factor\":2.0,\"type\":\"yarn\"} is not supported"), std::string::npos) << error_of(j);
  j = base();
  j["hidden_act"] = "gelu";
  EXPECT_EQ(error_of(j), "/m/config.json: hidden_act \"gelu\" is not supported (only \"silu\")");
  j = base();
  j.erase("hidden_size");
  EXPECT_EQ(error_of(j), "/m/config.json: missing required key \"hidden_size\"");
  j = base();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("not a multiple of num_key_value_heads 3"), std::string::npos);
  j = base();
  j["attention_bias"] = true;
  EXPECT_NE(error_of(j).find("\"attention_bias\": true is not supported"), std::string::npos);
  j = base();
  j["model_type"] = "gemma";
  EXPECT_NE(error_of(j).find("unsupported model_type 'gemma'"), std::string::npos);
  j = base();
  j["hidden_size"] = "64";
  EXPECT_EQ(error_of(j), "/m/config.json: \"hidden_size\" must be an integer");
}

TEST(Config, BadJsonAndMissingFile) {
  const std::string d = test::scratch_dir("cfg_bad");
  test::write_file(d + "/config.json", "{\"hidden_size\": 64,");
  try {
    ModelConfig::from_file(d + "/config.json");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(d + "/config.json: bad JSON"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ModelConfig::from_file(d + "/nope.json"), std::runtime_error);
}

TEST(Config, ResolvesHubIdsThroughTheCache) {
  const std::string cache = test::scratch_dir("hfcache");
  const fs::path repo = fs::path(cache) / "hub" / "models--NousResearch--Llama-2-7b-hf";
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots" / "abc123");
  test::write_file((repo / "refs" / "main").string(), "abc123\n");
  ::unsetenv("HF_HUB_CACHE");
  ::setenv("HF_HOME", cache.c_str(), 1);
  EXPECT_EQ(resolve_model_dir("NousResearch/Llama-2-7b-hf"), (repo / "snapshots" / "abc123").string());
  ::setenv("HF_HUB_CACHE", (fs::path(cache) / "hub").c_str(), 1);
  ::setenv("HF_HOME", "/nonexistent", 1);
  EXPECT_EQ(resolve_model_dir("NousResearch/Llama-2-7b-hf"), (repo / "snapshots" / "abc123").string());
  // A directory is taken as is.
  EXPECT_EQ(resolve_model_dir(cache), cache);
  try {
    resolve_model_dir("meta-llama/Nope");
    FAIL();
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cannot find model 'meta-llama/Nope'"), std::string::npos) << m;
    EXPECT_NE(m.find((fs::path(cache) / "hub" / "models--meta-llama--Nope" / "refs" / "main").string()), std::string::npos) << m;
  }
  ::unsetenv("HF_HUB_CACHE");
  ::unsetenv("HF_HOME");
  ::setenv("HOME", cache.c_str(), 1);
  EXPECT_EQ(hf_cache_dir(), cache + "/.cache/huggingface/hub");
}
