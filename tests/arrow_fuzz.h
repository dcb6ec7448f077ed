// A seeded mutation fuzz loop for the Arrow stream reader, shared by tests/test_arrow.cpp and the
// sanitizer build tests/fuzz_arrow_asan.cpp. Each round mutates a copy of one seed file (byte flips,
// interesting 32/64-bit values written over aligned words, truncation, splices) and parses it: the
// reader must either succeed or throw std::runtime_error; anything else (a crash, another exception,
// a sanitizer report) is a failure.
#pragma once
#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "arrow.h"

namespace mor::test {

struct FuzzStats {
  size_t rounds = 0, parsed = 0, rejected = 0;
};

inline std::string mutate(const std::string& seed, std::mt19937_64& rng) {
  std::string s = seed;
  if (s.empty()) return s;
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  // Most structure lives in the first few KiB (metadata, offsets): aim there half of the time.
  auto pos = [&]() { return pick(2) ? pick(std::min<size_t>(s.size(), 4096)) : pick(s.size()); };
  static const int64_t interesting[] = {0, 1, -1, 2, 7, 8, 16, 255, 0x7fff, 0xffff, 0x7fffffff, -0x7fffffffLL - 1,
                                        0x80000000LL, 0x7fffffffffffffffLL, 1LL << 40};
  int edits = 1 + static_cast<int>(pick(4));
  for (int e = 0; e < edits && !s.empty(); ++e) {
    switch (pick(6)) {
      case 0: s[pos()] ^= static_cast<char>(1 << pick(8)); break;
      case 1: s[pos()] = static_cast<char>(rng()); break;
      case 2: {  // interesting int32 at a 4-aligned position
        size_t at = pos() & ~size_t{3};
        int32_t v = static_cast<int32_t>(interesting[pick(sizeof interesting / sizeof *interesting)]);
        if (at + 4 <= s.size()) std::memcpy(&s[at], &v, 4);
        break;
      }
      case 3: {  // interesting int64 at an 8-aligned position
        size_t at = pos() & ~size_t{7};
        int64_t v = interesting[pick(sizeof interesting / sizeof *interesting)];
        if (at + 8 <= s.size()) std::memcpy(&s[at], &v, 8);
        break;
      }
      case 4: s.resize(pick(s.size())); break;
      case 5: {  // copy a chunk elsewhere
        size_t from = pos(), to = pos(), len = std::min({pick(64) + 1, s.size() - from, s.size() - to});
        std::memmove(&s[to], &s[from], len);
        break;
      }
    }
  }
  return s;
}

// Runs for about `seconds`, at least `min_rounds` rounds. Throws std::logic_error describing the
// input on any exception other than std::runtime_error.
inline FuzzStats fuzz_arrow(const std::vector<std::string>& seeds, double seconds, uint64_t seed = 12345,
                            size_t min_rounds = 50) {
  std::mt19937_64 rng(seed);
  FuzzStats st;
  auto start = std::chrono::steady_clock::now();
  while (st.rounds < min_rounds ||
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    const std::string& base = seeds[st.rounds % seeds.size()];
    std::string input = mutate(base, rng);
    ++st.rounds;
    try {
      mor::arrow::Table t = mor::arrow::read_stream(input, "fuzz");
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
