// The Arrow reader's mutation fuzz loop (tests/arrow_fuzz.h) built with AddressSanitizer and
// UndefinedBehaviorSanitizer, on src/arrow.cpp alone (no torch). Registered with CTest as
// ArrowFuzzAsan. Usage: [MOR_FUZZ_SEED=N] fuzz_arrow_asan SECONDS [seed .arrow files...]
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "arrow_fuzz.h"

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
  // A small stream of every type as a seed too, so the run is useful without the test data.
  using json = nlohmann::ordered_json;
  mor::arrow::Schema s;
  auto fld = [](std::string n, mor::arrow::Type t, std::vector<mor::arrow::Field> c = {}) {
    mor::arrow::Field f;
    f.name = std::move(n), f.type = t, f.children = std::move(c);
    return f;
  };
  using T = mor::arrow::Type;
  s.fields = {fld("n", T::Null), fld("b", T::Bool), fld("i", T::Int16), fld("u", T::UInt64), fld("f", T::Float32),
              fld("s", T::Utf8), fld("ls", T::LargeUtf8), fld("bin", T::Binary),
              fld("l", T::List, {fld("item", T::Utf8)}), fld("ll", T::LargeList, {fld("item", T::Int64)}),
              fld("st", T::Struct, {fld("bytes", T::LargeBinary), fld("path", T::Utf8)})};
  std::vector<json> rows;
  for (int i = 0; i < 20; ++i)
    rows.push_back(i % 5 == 4 ? json::object()
                              : json{{"b", i % 2 == 0}, {"i", -i}, {"u", i}, {"f", 0.25 * i}, {"s", std::string(i, 's')},
                                     {"ls", "x"}, {"bin", json::binary({1, 2, 3})}, {"l", {"a", "bc"}}, {"ll", {i, i}},
                                     {"st", {{"bytes", json::binary({9})}, {"path", "p"}}}});
  seeds.push_back(mor::arrow::write_stream(s, rows));
  try {
    const char* rng_seed = std::getenv("MOR_FUZZ_SEED");
    auto st = mor::test::fuzz_arrow(seeds, seconds, rng_seed ? std::strtoull(rng_seed, nullptr, 10) : 12345);
    std::cout << "fuzz_arrow_asan: " << st.rounds << " rounds over " << seeds.size() << " seeds, " << st.parsed
              << " parsed, " << st.rejected << " rejected, no crash\n";
    return st.rejected > 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cout << "fuzz_arrow_asan: FAILED: " << e.what() << "\n";
    return 1;
  }
}
