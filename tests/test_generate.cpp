// Generation: the real stories260K model reproduces llama2.c's greedy text, the KV-cache loop equals
// recomputing the whole sequence for a left-padded batch, sampling is seeded and respects top-k/top-p.
#include <gtest/gtest.h>

#include <filesystem>

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
