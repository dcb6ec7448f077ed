// Example building and collation against the PyTorch/sentencepiece twin (scripts/twin_tokenize.py ->
// tests/golden/examples_scienceqa.json): both train_on_inputs settings, both add_eos_token settings,
// rows longer than cutoff_len; plus clear errors for missing columns.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "examples.h"
#include "helpers.h"

using namespace mor;
using nlohmann::json;

namespace {
json golden() {
  std::ifstream f(test::source_dir() + "/tests/golden/examples_scienceqa.json");
  return json::parse(f);
}
std::vector<int64_t> row_of(const torch::Tensor& t, int64_t b) {
  auto r = t[b].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}
}  // namespace

TEST(Examples, MatchTwinTokenizationAndMasking) {
  MOR_REQUIRE_TESTDATA();
  auto tok = Tokenizer::load(test::testdata_dir() + "/llama2-tokenizer/tokenizer.model");
  auto tmpl = PromptTemplate::alpaca();
  json g = golden();
  int n_checked = 0;
  for (const auto& c : g["cases"]) {
    ExampleOptions opt;
    opt.cutoff_len = c["cutoff_len"];
    opt.train_on_inputs = c["train_on_inputs"];
    opt.add_eos_token = c["add_eos_token"];
    for (size_t i = 0; i < g["rows"].size(); ++i) {
      Row row = Row::parse(g["rows"][i].dump());
      auto ex = tokenize_example(row, tok, tmpl, opt);
      SCOPED_TRACE("cutoff " + std::to_string(opt.cutoff_len) + " train_on_inputs " +
                   std::to_string(opt.train_on_inputs) + " add_eos " + std::to_string(opt.add_eos_token) +
                   " row " + std::to_string(i));
      EXPECT_EQ(ex.input_ids, c["examples"][i]["input_ids"].get<std::vector<int64_t>>());
      EXPECT_EQ(ex.labels, c["examples"][i]["labels"].get<std::vector<int64_t>>());
      ++n_checked;
    }
  }
  EXPECT_EQ(n_checked, 3 * 2 * 2 * 8);  // cutoffs x train_on_inputs x add_eos_token x rows
}

TEST(Examples, CollateLeftPadsToMultipleOf8) {
  MOR_REQUIRE_TESTDATA();
  auto tok = Tokenizer::load(test::testdata_dir() + "/llama2-tokenizer/tokenizer.model");
  json g = golden();
  const auto& c = g["cases"][g["collate_case"].get<int>()];
  ExampleOptions opt;
  opt.cutoff_len = c["cutoff_len"];
  opt.train_on_inputs = c["train_on_inputs"];
  opt.add_eos_token = c["add_eos_token"];
  std::vector<TokenizedExample> exs;
  for (int i = 0; i < g["collate_n"].get<int>(); ++i)
    exs.push_back(tokenize_example(Row::parse(g["rows"][i].dump()), tok, PromptTemplate::alpaca(), opt));
  std::vector<const TokenizedExample*> ptrs;
  for (auto& e : exs) ptrs.push_back(&e);
  Batch b = collate(ptrs);
  const auto& want = g["collated"];
  ASSERT_EQ(b.input_ids.size(0), (int64_t)exs.size());
  ASSERT_EQ(b.input_ids.size(1) % 8, 0);
  for (int64_t i = 0; i < b.input_ids.size(0); ++i) {
    EXPECT_EQ(row_of(b.input_ids, i), want["input_ids"][i].get<std::vector<int64_t>>());
    EXPECT_EQ(row_of(b.attention_mask, i), want["attention_mask"][i].get<std::vector<int64_t>>());
    EXPECT_EQ(row_of(b.labels, i), want["labels"][i].get<std::vector<int64_t>>());
  }
}

TEST(Examples, CollateHandComputed) {
  TokenizedExample a{{1, 5, 6}, {-100, 5, 6}}, b{{1, 7, 8, 9, 10, 11, 12, 13, 14}, {1, 7, 8, 9, 10, 11, 12, 13, 14}};
  Batch bt = collate({&a, &b});
  ASSERT_EQ(bt.input_ids.sizes(), torch::IntArrayRef({2, 16}));
  std::vector<int64_t> ids0(16, 0), att0(16, 0), lab0(16, -100);
  ids0[13] = 1; ids0[14] = 5; ids0[15] = 6;
  att0[13] = att0[14] = att0[15] = 1;
  lab0[14] = 5; lab0[15] = 6;
  EXPECT_EQ(row_of(bt.input_ids, 0), ids0);
  EXPECT_EQ(row_of(bt.attention_mask, 0), att0);
  EXPECT_EQ(row_of(bt.labels, 0), lab0);
  EXPECT_EQ(row_of(bt.input_ids, 1)[7], 1);
  EXPECT_EQ(row_of(bt.attention_mask, 1)[6], 0);
  // exactly a multiple of 8 stays as is
  TokenizedExample c{std::vector<int64_t>(8, 3), std::vector<int64_t>(8, 3)};
  EXPECT_EQ(collate({&c}).input_ids.size(1), 8);
}

TEST(Examples, MissingColumnsNamed) {
  MOR_REQUIRE_TESTDATA();
  auto tok = Tokenizer::load(test::testdata_dir() + "/llama2-tokenizer/tokenizer.model");
  auto tmpl = PromptTemplate::alpaca();
  ExampleOptions opt;
  try {
    tokenize_example(Row::parse(R"({"output": "x"})"), tok, tmpl, opt);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'instruction'"), std::string::npos) << e.what();
  }
  try {
    tokenize_example(Row::parse(R"({"instruction": "x", "input": ""})"), tok, tmpl, opt);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'output'"), std::string::npos) << e.what();
  }
  // `input` is optional
  auto ex = tokenize_example(Row::parse(R"({"instruction": "Say hi.", "output": "hi"})"), tok, tmpl, opt);
  EXPECT_EQ(ex.input_ids.front(), 1);
  EXPECT_EQ(ex.input_ids.back(), 2);
}
