// The Parquet reader's mutation fuzz loop (tests/parquet_fuzz.h) built with AddressSanitizer and
// UndefinedBehaviorSanitizer, on src/parquet*.cpp alone (no torch). Registered with CTest as
// ParquetFuzzAsan. Usage: [MOR_FUZZ_SEED=N] fuzz_parquet_asan SECONDS [seed .parquet files...]
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "parquet_fuzz.h"

int main(int argc, char** argv) {
  double seconds = argc > 1 ? std::atof(argv[1]) : 10.0;
  std::vector<std::string> seeds;
  for (int i = 2; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    if (!f) {
      std::cout << "skipping missing seed " << argv[i] << "\n";
      continue;
    }
    std::stringstream ss;
    ss << f.rdbuf();
    seeds.push_back(ss.str());
  }
  if (seeds.empty()) {
    std::cout << "fuzz_parquet_asan: no seed files given (tests/fixtures/parquet/*.parquet)\n";
    return 1;
  }
  try {
    const char* rng_seed = std::getenv("MOR_FUZZ_SEED");
    auto st = mor::test::fuzz_parquet(seeds, seconds, rng_seed ? std::strtoull(rng_seed, nullptr, 10) : 12345);
    std::cout << "fuzz_parquet_asan: " << st.rounds << " rounds over " << seeds.size() << " seeds, " << st.parsed
              << " parsed, " << st.rejected << " rejected, no crash\n";
    return st.rejected > 0 && st.parsed > 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cout << "fuzz_parquet_asan: FAILED: " << e.what() << "\n";
    return 1;
  }
}
