// mor quickstart: the README's main job on the embedded default, offline — a tiny random LLaMA and a
// synthetic ScienceQA-style dataset made here, MoLA adapters trained with a per-layer allocation, and
// the accuracy before and after, each step run as the same `mor` command a user would type.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "commands.h"
#include "dataset.h"
#include "evaluate.h"
#include "files.h"
#include "pyjson.h"
#include "quickstart.h"

namespace fs = std::filesystem;

namespace {
int run_step(int (*fn)(int, char**), std::vector<std::string> args) {
  std::cout << "\n$ mor";
  for (auto& a : args) std::cout << " " << (a.find_first_of(" ,") == std::string::npos ? a : "\"" + a + "\"");
  std::cout << "\n" << std::flush;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return fn(static_cast<int>(args.size()), argv.data());
}

double read_acc(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f).at("acc").get<double>();
}
}  // namespace

int mor::cmd_quickstart(int argc, char** argv) {
  std::string out = "./mor_quickstart";
  // One thread by default: a hidden-64 model's matmuls are too small to split, and on 2 threads half the
  // CPU time went to OpenMP futex/sched_yield (issue 15). For a given seed and thread count every run gives
  // the same files and accuracy (the float32 summation order depends on the thread count).
  int64_t steps_epochs = 8, n_train = 1200, threads = 1;
  uint64_t seed = 1234;
  return run_command(
      "quickstart", "Make a tiny LLaMA and a synthetic ScienceQA-style dataset, train MoLA adapters, evaluate.",
      argc, argv,
      [&](CLI::App& app) {
        add_opt(app, "output_dir", out, "where the model, data, adapters and results go");
        add_opt(app, "num_epochs", steps_epochs, "training epochs");
        add_opt(app, "n_train", n_train, "synthetic training examples");
        add_opt(app, "seed", seed, "seed of the model, the data and training");
        add_opt(app, "threads", threads, "CPU threads (0 = all cores; 1 is fastest for this tiny model)");
      },
      [&]() -> int {
        const fs::path root(out);
        const std::string model_dir = (root / "tiny-llama").string();
        const std::string data_dir = (root / "data").string();
        const std::string hf = (root / "data" / "science_qa.hf").string();
        const std::string test_json = (root / "data" / "scienceq_test.json").string();
        const std::string adapter_dir = (root / "mola").string();
        const std::string before = (root / "results" / "before.json").string();
        const std::string after = (root / "results" / "after.json").string();
        fs::create_directories(data_dir);

        std::cout << "[1/4] synthetic ScienceQA-style data and a tiny random LLaMA (seed " << seed << ")\n";
        DatasetDict data = make_synthetic_scienceqa(seed, n_train, 100, 200);
        save_to_disk(data, hf);
        write_file_atomic(test_json, py_json_dumps(nlohmann::ordered_json(data.split("test").rows)));
        write_quickstart_model(data, model_dir, seed);
        std::cout << "  data  " << hf << " (" << n_train << " train / 100 validation / 200 test)\n"
                  << "  model " << model_dir << " (4 layers, hidden 64)\n" << std::flush;

        const std::string th = std::to_string(threads);
        std::cout << "\n[2/4] accuracy of the base model";
        if (int rc = run_step(cmd_eval_scienceqa, {"eval-scienceqa", "--test_dataset", test_json, "--base_model", model_dir,
                                                   "--save_path", before, "--batch_size", "8", "--max_new_tokens", "16",
                                                   "--dtype", "float32", "--threads", th}))
          return rc;
        std::cout << "\n[3/4] train MoLA adapters: experts 2,4,6,8 over the 4 layers, top-2, rank 8";
        if (int rc = run_step(cmd_train, {"train", "--base_model", model_dir, "--data_path", hf, "--output_dir", adapter_dir,
                                          "--batch_size", "16", "--micro_batch_size", "16", "--num_epochs",
                                          std::to_string(steps_epochs), "--learning_rate", "3e-3", "--cutoff_len", "256",
                                          "--val_set_size", "64", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.0",
                                          "--number_experts", "2,4,6,8", "--top_k", "2,2,2,2", "--warmup_steps", "20",
                                          "--logging_steps", "20", "--save_steps", "1000", "--train_on_inputs", "False",
                                          "--obalance", "--dtype", "float32", "--seed", std::to_string(seed), "--threads", th,
                                          "--overwrite_output_dir"}))  // quickstart owns its folder
          return rc;
        std::cout << "\n[4/4] accuracy with the adapters";
        if (int rc = run_step(cmd_eval_scienceqa, {"eval-scienceqa", "--test_dataset", test_json, "--base_model", model_dir,
                                                   "--mola_weights", adapter_dir, "--save_path", after, "--batch_size", "8",
                                                   "--max_new_tokens", "16", "--dtype", "float32", "--threads", th}))
          return rc;
        double a0 = read_acc(before), a1 = read_acc(after);
        std::printf("\nquickstart: accuracy before training %.2f%%, after %.2f%% (chance about 30%%)\n", a0, a1);
        std::printf("  model    %s\n  dataset  %s\n  adapters %s\n  results  %s, %s\n", model_dir.c_str(), hf.c_str(),
                    adapter_dir.c_str(), before.c_str(), after.c_str());
        return 0;
      });
}
