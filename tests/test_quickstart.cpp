// The README's main job: `mor quickstart` from nothing — tiny model, synthetic data, MoLA training,
// evaluation before and after. After training the accuracy must beat chance by a wide margin and
// every answer must parse.
#include <gtest/gtest.h>

#include <filesystem>

#include "evaluate.h"
#include "helpers.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

TEST(Quickstart, TrainsAdaptersThatBeatChance) {
  std::string dir = mor::test::scratch_dir("quickstart");
  auto r = mor::test::run_mor("quickstart --output_dir " + dir + "/out --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("quickstart: accuracy before training"), std::string::npos) << r.out;
  for (auto f : {"tiny-llama/config.json", "tiny-llama/model.safetensors", "tiny-llama/tokenizer.model",
                 "data/science_qa.hf/dataset_dict.json", "data/scienceq_test.json", "mola/adapter_model.safetensors",
                 "mola/adapter_config.json", "mola/mola_config.json", "results/before.json", "results/after.json"})
    EXPECT_TRUE(fs::exists(dir + "/out/" + f)) << f;

  auto before = ordered_json::parse(mor::test::read_file(dir + "/out/results/before.json"));
  auto after = ordered_json::parse(mor::test::read_file(dir + "/out/results/after.json"));
  ASSERT_EQ(after["len"].get<int64_t>(), 200);
  // Three kinds of question with 3, 4 and 4 options: chance is about 28%.
  EXPECT_LT(before["acc"].get<double>(), 40.0);
  EXPECT_GE(after["acc"].get<double>(), 80.0) << "the adapters did not learn the task";
  int parsed = 0;
  for (auto& m : after["results"]) parsed += m.size() == 1;
  EXPECT_EQ(parsed, 200) << "every answer must parse after training";
  std::cout << "quickstart accuracy: before " << before["acc"].get<double>() << "%, after "
            << after["acc"].get<double>() << "%\n";
}

// The README's promise: for a given seed and thread count the quickstart gives the same result on every
// run (model, data, adapters, answers), so the accuracy it prints is reproducible. A short version twice.
TEST(Quickstart, SameResultEveryRunForSeedAndThreads) {
  std::string dir = mor::test::scratch_dir("quickstart_det");
  for (const char* run : {"a", "b"}) {
    auto r = mor::test::run_mor("quickstart --output_dir " + dir + "/" + run + " --num_epochs 1 --n_train 160 --seed 7");
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  }
  // tokenizer.model is left out: sentencepiece's trainer writes different bytes on each run (the same
  // pieces, as the identical adapters and answers show).
  for (auto f : {"tiny-llama/model.safetensors", "mola/adapter_model.safetensors", "results/before.json",
                 "results/after.json"})
    EXPECT_TRUE(mor::test::read_file(dir + "/a/" + f) == mor::test::read_file(dir + "/b/" + f)) << f << " differs between runs";
}
