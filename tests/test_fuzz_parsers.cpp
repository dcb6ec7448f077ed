// Seeded mutation fuzz loops over mor's readers (issue 15), bounded to a few seconds each: the
// torch-free ones of tests/parsers_fuzz.h (also run under ASan+UBSan as fuzz_parsers_asan) and those that
// need LibTorch: a whole safetensors file through SafeTensorsFile (header, offsets, then every tensor
// read), the .bin pickle reader, an adapter folder's mola_config.json / adapter_config.json through
// load_adapter, the eval --resume file through evaluate_scienceqa, and a checkpoint's trainer_state.json
// and data_state.json through what a resume reads of them. Every round must succeed or
// throw std::runtime_error naming the file on one line; a crash or a leaked library exception fails.
#include <gtest/gtest.h>

#include <filesystem>

#include "adapter.h"
#include "checkpoint.h"
#include "evaluate.h"
#include "helpers.h"
#include "helpers_bad.h"
#include "llama.h"
#include "parsers_fuzz.h"
#include "safetensors.h"

namespace fs = std::filesystem;
using namespace mor;
using namespace mor::test;

namespace {

constexpr double kSeconds = 2.0;

void expect_rejects_some(const ParserFuzzStats& s, const char* what) {
  EXPECT_GT(s.rounds, 0u) << what;
  EXPECT_GT(s.rejected, 0u) << what << ": no round was rejected, the loop tests nothing";
  std::cout << what << ": " << s.rounds << " rounds, " << s.parsed << " parsed, " << s.rejected << " rejected\n";
}

TEST(FuzzParsers, SafetensorsHeaderConfigDatasets) {
  std::vector<std::string> st = {small_safetensors_seed()}, cfg = {small_config_seed()};
  if (!testdata_dir().empty()) {
    st.push_back(read_file(testdata_dir() + "/stories260K/model.safetensors"));
    cfg.push_back(read_file(testdata_dir() + "/stories260K/config.json"));
  }
  const std::string d = scratch_dir("fuzz_torchfree");
  try {
    expect_rejects_some(fuzz_safetensors_header(st, kSeconds, 1), "safetensors header");
    expect_rejects_some(fuzz_config_json(cfg, d, kSeconds, 2), "config.json");
    expect_rejects_some(fuzz_dataset_json({small_dataset_seed(false)}, d, ".json", kSeconds, 3), "dataset .json");
    expect_rejects_some(fuzz_dataset_json({small_dataset_seed(true)}, d, ".jsonl", kSeconds, 4), "dataset .jsonl");
  } catch (const std::logic_error& e) {
    FAIL() << e.what();
  }
}

TEST(FuzzParsers, SafetensorsFileReadEveryTensor) {
  const std::string d = scratch_dir("fuzz_st"), path = d + "/f.safetensors";
  std::vector<std::string> seeds = {small_safetensors_seed()};
  try {
    auto s = fuzz_loop("safetensors file", seeds, path, [&](const std::string& in) {
      write_bytes(path, in);
      auto f = SafeTensorsFile::open(path);
      for (const auto& k : f->keys()) f->get(k).sum();
    }, kSeconds, 5);
    expect_rejects_some(s, "safetensors file");
  } catch (const std::logic_error& e) {
    FAIL() << e.what();
  }
}

TEST(FuzzParsers, AdapterBinPickle) {
  const std::string d = scratch_dir("fuzz_bin"), path = d + "/adapter_model.bin";
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  dict.insert("base_model.model.model.layers.0.self_attn.q_proj.lora_A_0.weight", torch::randn({2, 8}));
  dict.insert("base_model.model.model.layers.0.self_attn.q_proj.router.router.weight", torch::randn({2, 8}));
  auto bytes = torch::pickle_save(dict);
  try {
    auto s = fuzz_loop("adapter .bin", {std::string(bytes.begin(), bytes.end())}, path, [&](const std::string& in) {
      write_bytes(path, in);
      for (auto& [k, t] : read_adapter_weights(path)) t.sum();
    }, kSeconds, 6);
    expect_rejects_some(s, "adapter .bin");
  } catch (const std::logic_error& e) {
    FAIL() << e.what();
  }
}

TEST(FuzzParsers, AdapterConfigs) {
  MOR_REQUIRE_TESTDATA();
  const std::string d = scratch_dir("fuzz_adapter");
  const std::string a = bad::copy_adapter(d);
  const std::string model_dir = testdata_dir() + "/stories260K";
  for (const char* file : {"mola_config.json", "adapter_config.json"}) {
    const std::string path = a + "/" + file, seed = read_file(path);
    if (std::string(file) == "adapter_config.json") fs::remove(a + "/mola_config.json");  // the reference layout reads it
    try {
      auto s = fuzz_loop(file, {seed}, a, [&](const std::string& in) {
        write_bytes(path, in);
        auto model = load_llama(model_dir, torch::kFloat32, torch::kCPU);
        if (std::string(file) == "mola_config.json") {
          load_adapter(model, a);
        } else {
          AllocationFlags f;
          f.target_modules = "q_proj,v_proj", f.number_experts = "2", f.lora_r = "2", f.top_k = "1";
          Allocation given = f.build(model->cfg);
          load_adapter(model, a, &given);
        }
      }, kSeconds, 7);
      std::cout << file << ": " << s.rounds << " rounds, " << s.parsed << " parsed, " << s.rejected << " rejected\n";
      EXPECT_GT(s.rounds, 0u);
    } catch (const std::logic_error& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

TEST(FuzzParsers, EvalResumeFile) {
  MOR_REQUIRE_TESTDATA();
  const std::string d = scratch_dir("fuzz_resume");
  bad::write_test_json(d + "/test.json", 2);
  EvalOptions o;
  o.test_dataset = d + "/test.json";
  o.base_model = testdata_dir() + "/stories260K";
  o.save_path = d + "/r.json";
  o.batch_size = 2;
  o.max_new_tokens = 1;
  o.dtype = "float32";
  o.threads = 1;
  o.quiet = true;
  o.resume = true;
  evaluate_scienceqa(o);  // a real result file as the seed
  const std::string seed = read_file(o.save_path);
  try {
    auto s = fuzz_loop("eval resume file", {seed}, o.save_path, [&](const std::string& in) {
      write_bytes(o.save_path, in);
      evaluate_scienceqa(o);
    }, kSeconds, 8, 20);
    expect_rejects_some(s, "eval resume file");
  } catch (const std::logic_error& e) {
    FAIL() << e.what();
  }
}

// A real checkpoint (a 1-step run of `mor train`) as the seed; each round rewrites one of its two
// state files and reads the folder as `--resume_from_checkpoint` does.
TEST(FuzzParsers, TrainerStateAndDataState) {
  MOR_REQUIRE_TESTDATA();
  const std::string d = scratch_dir("fuzz_trainer_state");
  bad::write_train_json(d + "/train.json", 4);
  auto r = run_mor("train --base_model " + q(testdata_dir() + "/stories260K") + " --data_path " +
                   q(d + "/train.json") + " --output_dir " + q(d + "/out") +
                   " --batch_size 2 --micro_batch_size 2 --max_steps 1 --save_steps 1 --cutoff_len 32 --val_set_size 0"
                   " --warmup_steps 0 --lora_r 2 --number_experts 2 --top_k 1 --dtype float32 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string ck = d + "/out/checkpoint-1";
  ResumeState fallback;
  fallback.micro_batch_size = 2;
  fallback.n_train = 4;
  for (const char* file : {"trainer_state.json", "data_state.json"}) {
    const std::string path = ck + "/" + file, seed = read_file(path);
    const ResumeState good = parse_resume_state(read_checkpoint_state(ck), ck, fallback);
    EXPECT_EQ(good.global_step, 1);
    EXPECT_EQ(good.batch_size, 2);
    try {
      auto st = fuzz_loop(file, {seed}, path, [&](const std::string& in) {
        write_bytes(path, in);
        parse_resume_state(read_checkpoint_state(ck), ck, fallback);
      }, kSeconds, 11, 200);
      expect_rejects_some(st, file);
    } catch (const std::logic_error& e) {
      ADD_FAILURE() << e.what();
    }
    write_bytes(path, seed);
  }
}

}  // namespace
