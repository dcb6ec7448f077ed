// The torch-free parsers' mutation fuzz loops (tests/parsers_fuzz.h) built with AddressSanitizer and
// UndefinedBehaviorSanitizer: the safetensors header and offsets (src/safetensors_header.cpp),
// config.json (src/config.cpp) and JSON/JSONL datasets (src/dataset.cpp, arrow.cpp, pyjson.cpp,
// files.cpp). Registered with CTest as ParsersFuzzAsan. The readers that need LibTorch (adapter .bin
// pickles, mola_config.json/adapter_config.json through load_adapter, the eval resume file,
// trainer_state.json) have their loops in the suite only (tests/test_fuzz_parsers.cpp).
// Usage: [MOR_FUZZ_SEED=N] fuzz_parsers_asan SECONDS_PER_TARGET [seed files: *.safetensors, *.json]
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "parsers_fuzz.h"

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  std::vector<std::string> st_seeds = {mor::test::small_safetensors_seed()}, cfg_seeds = {mor::test::small_config_seed()};
  for (int i = 2; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    if (!f) {
      std::cout << "skipping missing seed " << argv[i] << "\n";
      continue;
    }
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string p = argv[i];
    if (p.size() > 12 && p.substr(p.size() - 12) == ".safetensors") {
      st_seeds.push_back(ss.str());
    } else {
      cfg_seeds.push_back(ss.str());
    }
  }
  const char* rng_seed = std::getenv("MOR_FUZZ_SEED");
  const uint64_t seed = rng_seed ? std::strtoull(rng_seed, nullptr, 10) : 20261201;
  const std::string tmp = (std::filesystem::temp_directory_path() / ("mor-fuzz-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(tmp);
  int rc = 0;
  auto report = [&](const char* what, const mor::test::ParserFuzzStats& s) {
    std::cout << "fuzz_parsers_asan " << what << ": " << s.rounds << " rounds, " << s.parsed << " parsed, " << s.rejected
              << " rejected, no crash\n";
    if (s.rejected == 0) rc = 1;  // a loop that never reaches an error tests nothing
  };
  try {
    report("safetensors header", mor::test::fuzz_safetensors_header(st_seeds, seconds, seed));
    report("config.json", mor::test::fuzz_config_json(cfg_seeds, tmp, seconds, seed + 1));
    report("dataset .json", mor::test::fuzz_dataset_json({mor::test::small_dataset_seed(false)}, tmp, ".json", seconds, seed + 2));
    report("dataset .jsonl", mor::test::fuzz_dataset_json({mor::test::small_dataset_seed(true)}, tmp, ".jsonl", seconds, seed + 3));
  } catch (const std::exception& e) {
    std::cout << "fuzz_parsers_asan: FAILED: " << e.what() << "\n";
    rc = 1;
  }
  std::filesystem::remove_all(tmp);
  return rc;
}
