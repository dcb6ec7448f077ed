// A seeded mutation fuzz loop for the Parquet reader, shared by tests/test_parquet.cpp and the
// sanitizer build tests/fuzz_parquet_asan.cpp. Each round mutates a copy of one seed file with the
// Arrow fuzzer's edits (tests/arrow_fuzz.h), half of the time aimed at the Thrift footer at the end of
// the file, where most of a Parquet file's structure lives, and parses it: the reader must either
// succeed or throw std::runtime_error whose message starts with the file name.
#pragma once
#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "arrow_fuzz.h"
#include "parquet.h"

namespace mor::test {

inline std::string mutate_parquet(const std::string& seed, std::mt19937_64& rng) {
  if (seed.size() < 12 || rng() % 2) return mutate(seed, rng);
  uint32_t meta_len;
  std::memcpy(&meta_len, seed.data() + seed.size() - 8, 4);
  size_t tail = std::min<size_t>(seed.size(), size_t{meta_len} + 8);
  std::string head = seed.substr(0, seed.size() - tail), footer = seed.substr(seed.size() - tail);
  std::string m = mutate(footer, rng);
  if (m.size() < footer.size() && rng() % 2) m += footer.substr(m.size());  // keep the length + magic often
  return head + m;
}

inline FuzzStats fuzz_parquet(const std::vector<std::string>& seeds, double seconds, uint64_t seed = 12345,
                              size_t min_rounds = 50) {
  std::mt19937_64 rng(seed);
  FuzzStats st;
  auto start = std::chrono::steady_clock::now();
  while (st.rounds < min_rounds ||
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    std::string input = mutate_parquet(seeds[st.rounds % seeds.size()], rng);
    ++st.rounds;
    try {
      mor::parquet::Table t = mor::parquet::read_parquet(input, "fuzz");
      ++st.parsed;
    } catch (const std::runtime_error& e) {
      ++st.rejected;
      if (std::strncmp(e.what(), "fuzz: ", 6) != 0)
        throw std::logic_error("round " + std::to_string(st.rounds) + ": error without the file name: " + e.what());
    }
  }
  return st;
}

}  // namespace mor::test
