// Tokenizer: ids equal sentencepiece's own (python) encoding with BOS for ScienceQA texts
// (tests/golden/tokenizer_scienceqa.json from scripts/tokenizer_golden.py), decode round trips,
// transformers-style decoding with special tokens, the alpaca template, and errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "helpers.h"
#include "tokenizer.h"

using namespace mor;

static Tokenizer llama2() { return Tokenizer::load(test::testdata_dir() + "/llama2-tokenizer/tokenizer.model"); }

TEST(Tokenizer, HelloWorld) {
  MOR_REQUIRE_TESTDATA();
  auto t = llama2();
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int64_t>{1, 15043, 3186}));
  EXPECT_EQ(t.encode(""), (std::vector<int64_t>{1}));
  EXPECT_EQ(t.encode("Hello world", true, true), (std::vector<int64_t>{1, 15043, 3186, 2}));
  EXPECT_EQ(t.vocab_size(), 32000);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.unk_id(), 0);
}

TEST(Tokenizer, ScienceQaIdsEqualSentencepiece) {
  MOR_REQUIRE_TESTDATA();
  auto t = llama2();
  auto g = nlohmann::json::parse(test::read_file(test::source_dir() + "/tests/golden/tokenizer_scienceqa.json"));
  int n = 0;
  for (const auto& c : g["cases"]) {
    const std::string text = c["text"];
    auto ids = t.encode(text);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int64_t>>()) << text;
    EXPECT_EQ(t.decode(ids), text);
    ++n;
  }
  EXPECT_GE(n, 12);
}

TEST(Tokenizer, DecodeHfKeepsSpecialTokensAndCleansSpaces) {
  MOR_REQUIRE_TESTDATA();
  auto t = llama2();
  auto ids = t.encode("The answer is A.");
  ids.push_back(2);
  ids.push_back(0);
  ids.push_back(0);
  EXPECT_EQ(t.decode_hf(ids), "<s> The answer is A.</s><unk><unk>");
  EXPECT_EQ(t.decode(ids), "The answer is A.");  // special tokens skipped
  std::vector<int64_t> left = {0, 0};
  for (auto i : t.encode("Hi")) left.push_back(i);
  // transformers 4.3x: a special token gets a space before it unless it follows another special token
  // or starts the text; a run of pieces after special tokens is decoded alone (no leading space).
  EXPECT_EQ(t.decode_hf(left), "<unk><unk><s>Hi");
  EXPECT_EQ(Tokenizer::clean_up_tokenization("a . b , c ? d ! I do n't , he 's we 've you 're I 'm x ' y"),
            "a. b, c? d! I don't, he's we've you're I'm x'y");
}

TEST(Tokenizer, StoriesTokenizerRoundTrip) {
  MOR_REQUIRE_TESTDATA();
  auto t = Tokenizer::load(test::testdata_dir() + "/stories260K");
  EXPECT_EQ(t.vocab_size(), 512);
  const std::string s = "Lily and her mom went to the park.";
  EXPECT_EQ(t.decode(t.encode(s)), s);
  EXPECT_EQ(t.encode(s)[0], 1);
}

TEST(Tokenizer, MissingModelIsAClearError) {
  const std::string d = test::scratch_dir("tok_missing");
  try {
    Tokenizer::load(d);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), d + ": missing tokenizer.model");
  }
  test::write_file(d + "/tokenizer.model", "not a model");
  try {
    Tokenizer::load(d);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(d + "/tokenizer.model: cannot load sentencepiece model"), std::string::npos) << e.what();
  }
}

TEST(PromptTemplate, AlpacaAndResponse) {
  auto p = PromptTemplate::alpaca();
  EXPECT_EQ(p.generate_prompt("Say hi"),
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nSay hi\n\n### Response:\n");
  EXPECT_EQ(p.generate_prompt("Add", "1 2", "3"),
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
            "response that appropriately completes the request.\n\n### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n3");
  EXPECT_EQ(p.get_response("x ### Response:\n  The answer is B. \n### Response: again"), "The answer is B.");
  EXPECT_EQ(p.get_response("no split"), "");
  auto none = PromptTemplate::from_name_or_file("none");
  EXPECT_EQ(none.generate_prompt("raw text"), "raw text");
  EXPECT_THROW(PromptTemplate::from_name_or_file("nosuch"), std::runtime_error);
}

TEST(Tokenizer, TrainsALlamaStyleModel) {
  const std::string d = test::scratch_dir("tok_train");
  std::string corpus;
  for (int i = 0; i < 200; ++i)
    corpus += "Question " + std::to_string(i) + ": which is warmer, ice or tea? The answer is B.\n";
  test::write_file(d + "/corpus.txt", corpus);
  Tokenizer::train(d + "/corpus.txt", d, 300);
  auto t = Tokenizer::load(d);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.unk_id(), 0);
  const std::string s = "The answer is B. Zebra 42 ✓";  // unseen characters go through byte fallback
  auto ids = t.encode(s);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(t.decode(ids), s);
  EXPECT_LE(t.vocab_size(), 300);
}
