// Dataset I/O speed: load_dataset of the real sample .hf (Arrow) and its JSON twin, save_to_disk, and
// a synthetic 100k-row dataset written and read back. Prints figures; not a test.
// Usage (from the repo root): build/bench_dataset [TESTDATA_DIR, default ../shared/testdata]
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "dataset.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

template <class F>
static double seconds(F&& f, int reps = 1) {
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

static double mib(const fs::path& p) {
  uintmax_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(p))
    if (e.is_regular_file()) n += e.file_size();
  return n / 1048576.0;
}

int main(int argc, char** argv) {
  fs::path tmp = fs::temp_directory_path() / ("mor-bench-dataset-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  fs::path sample = fs::path(argc > 1 ? argv[1] : "../shared/testdata") / "sampled_scienceqa_train_all.hf";
  if (fs::exists(sample)) {
    mor::DatasetDict dd;
    double t = seconds([&] { dd = mor::load_dataset(sample.string()); }, 5);
    std::cout << "load sample .hf (3x200 rows, " << mib(sample) << " MiB): " << t * 1e3 << " ms, " << mib(sample) / t << " MiB/s\n";
    fs::path js = sample.parent_path() / "sampled_scienceqa_json/train.json";
    t = seconds([&] { mor::load_dataset(js.string()); }, 5);
    std::cout << "load sample train.json (200 rows): " << t * 1e3 << " ms\n";
    t = seconds([&] { mor::save_to_disk(dd, (tmp / "sample.hf").string()); }, 5);
    std::cout << "save_to_disk sample: " << t * 1e3 << " ms\n";
  }
  mor::DatasetDict big;
  big.split_names = {"train"};
  for (int i = 0; i < 100000; ++i)
    big.splits["train"].rows.push_back(json{{"instruction", "Question number " + std::to_string(i) + std::string(200, 'x')},
                                            {"choices", {"alpha", "beta", "gamma"}}, {"label", i % 5}, {"score", 0.5 * i}});
  double t = seconds([&] { mor::save_to_disk(big, (tmp / "big.hf").string()); });
  double size = mib(tmp / "big.hf");
  std::cout << "save_to_disk 100k rows (" << size << " MiB): " << t << " s, " << size / t << " MiB/s\n";
  t = seconds([&] { mor::load_dataset((tmp / "big.hf").string()); });
  std::cout << "load_dataset 100k rows: " << t << " s, " << size / t << " MiB/s\n";
  fs::remove_all(tmp);
}
