// Generation stops at any of the tokenizer's EOS ids (generation_config.json's eos_token_id list, as
// LLaMA-3.1's [128001, 128008, 128009]): each row ends at the first token of the list it produces,
// computed independently from a run without stop tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "generate.h"
#include "helpers.h"
#include "llama.h"
#include "tokenizer.h"

using namespace mor;

namespace {

// A byte-level tokenizer.json over 40 ids (enough for the tiny model's vocabulary).
std::string tiny_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < 40; ++i) vocab[std::string(1, static_cast<char>('A' + i))] = i;
  return nlohmann::json{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
                        {"decoder", {{"type", "Fuse"}}}}
      .dump();
}

}  // namespace

TEST(GenerateEos, StopsAtAnyEosIdOfGenerationConfig) {
  auto m = random_llama(ModelConfig::llama(32, 48, 2, 4, 2, 40), 5, torch::kFloat32, torch::kCPU);
  {
    torch::NoGradGuard ng;
    for (auto& [n, p] : m->base_weights())
      if (p.dim() == 2) p.mul_(40);  // greedy outputs that vary from token to token
  }
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9, 12, 7, 3}, {1, 8}, {1, 20, 21, 22}};
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.stop_ids = {-1};
  const auto free_run = generate(m, prompts, o);
  // Two stop tokens taken from different rows of the free run.
  const int64_t a = free_run.new_tokens[0][3], b = free_run.new_tokens[1][5];
  ASSERT_NE(a, b);
  const std::string d = test::scratch_dir("generate_eos");
  test::write_file(d + "/tokenizer.json", tiny_tokenizer_json());
  test::write_file(d + "/generation_config.json", nlohmann::json{{"eos_token_id", {a, b}}}.dump());
  const Tokenizer tok = Tokenizer::load(d);
  ASSERT_EQ(tok.eos_ids(), (std::vector<int64_t>{a, b}));
  o.stop_ids = tok.eos_ids();
  const auto out = generate(m, prompts, o);
  int stopped_early = 0;
  for (size_t r = 0; r < prompts.size(); ++r) {
    const auto& full = free_run.new_tokens[r];
    auto hit = std::find_if(full.begin(), full.end(), [&](int64_t t) { return t == a || t == b; });
    const size_t want = hit == full.end() ? full.size() : static_cast<size_t>(hit - full.begin()) + 1;
    EXPECT_EQ(out.new_tokens[r], std::vector<int64_t>(full.begin(), full.begin() + want)) << "row " << r;
    stopped_early += want < full.size();
  }
  EXPECT_GE(stopped_early, 2);
}
