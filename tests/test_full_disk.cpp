// Full disks (issue 15): the disk fills at a chosen moment of training start, a checkpoint save, the
// final adapter, an eval result and prepare-scienceqa. Each must end with one error line naming the file
// and the free space, leave no temporary file, and leave every earlier checkpoint complete (equal to an
// uninterrupted run's). The disk is the write shim libmor_enospc.so (tests/enospc_shim.cpp: ENOSPC after
// N bytes under a folder, N chosen from a logged reference run, so the failure lands mid-write in the
// file named); where the test may mount one (root with CAP_SYS_ADMIN), also a real small tmpfs.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "helpers.h"
#include "helpers_bad.h"

namespace fs = std::filesystem;
using namespace mor::test;
using namespace mor::test::bad;

namespace {

struct LoggedWrite {
  std::string path;
  long long before = 0;
  long long n = 0;
};

std::vector<LoggedWrite> read_log(const std::string& path) {
  std::vector<LoggedWrite> w;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream is(line);
    LoggedWrite x;
    std::getline(is, x.path, '\t');
    is >> x.before >> x.n;
    w.push_back(x);
  }
  return w;
}

std::string shim_env(const std::string& dir, const std::string& extra) {
  return "env LD_PRELOAD=" + q(MOR_ENOSPC_SHIM) + " MOR_ENOSPC_DIR=" + q(dir) + " " + extra + " " + MOR_BINARY + " ";
}

// Runs `mor <args>` with writes under `dir` logged; returns the log.
std::vector<LoggedWrite> logged_run(const std::string& dir, const std::string& args) {
  const std::string log = dir + ".writes.log";
  fs::remove(log);
  const std::string cmd = shim_env(dir, "MOR_ENOSPC_LOG=" + q(log)) + args + " >/dev/null 2>&1 </dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return read_log(log);
}

RunResult run_with_budget(const std::string& dir, long long budget, const std::string& args) {
  const std::string out = dir + ".out", err = dir + ".err";
  const std::string cmd = shim_env(dir, "MOR_ENOSPC_AFTER=" + std::to_string(budget)) + args + " >" + out + " 2>" + err +
                          " </dev/null";
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

// Budget landing in the middle of the first write whose path contains every needle (last match when `last`).
long long budget_inside(const std::vector<LoggedWrite>& log, const std::vector<std::string>& needles, bool last = false) {
  long long b = -1;
  for (const auto& w : log) {
    bool all = w.n > 1;
    for (const auto& n : needles) all = all && w.path.find(n) != std::string::npos;
    if (all) {
      b = w.before + w.n / 2;
      if (!last) break;
    }
  }
  return b;
}

std::vector<std::string> temporaries(const std::string& dir) {
  std::vector<std::string> t;
  if (!fs::exists(dir)) return t;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) t.push_back(e.path().string());
  return t;
}

// Every checkpoint-N left in `out` equals the reference run's checkpoint-N, file by file.
void expect_checkpoints_intact(const std::string& out, const std::string& ref_out) {
  if (!fs::exists(out)) return;
  for (auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0) continue;
    ASSERT_TRUE(fs::exists(ref_out + "/" + name)) << name;
    for (auto& f : fs::directory_iterator(ref_out + "/" + name)) {
      const std::string mine = e.path().string() + "/" + f.path().filename().string();
      ASSERT_TRUE(fs::exists(mine)) << "incomplete " << mine;
      // trainer_state.json holds wall-clock figures, training_args.json the output_dir, and LibTorch keys
      // optimizer.pt's state by tensor addresses (different bytes every run): present is what counts there.
      const std::string fn = f.path().filename().string();
      if (fn == "trainer_state.json" || fn == "training_args.json" || fn == "optimizer.pt") {
        EXPECT_GT(fs::file_size(mine), 0u) << mine;
        continue;
      }
      EXPECT_TRUE(read_file(mine) == read_file(f.path().string())) << "changed: " << mine;
    }
  }
}

void expect_clean_failure(const RunResult& r, const std::string& cmd, const std::string& dir) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << "killed by a signal";
  EXPECT_EQ(check_one_line_error(r.err, cmd, dir), "");
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("free"), std::string::npos) << "the message must say the free space: " << r.err;
  EXPECT_EQ(temporaries(dir), std::vector<std::string>{}) << "temporary files left";
}

std::string train_cmd(const std::string& model, const std::string& data, const std::string& out,
                      const std::string& shape = " --lora_r 4 --number_experts 2 --top_k 1 --max_steps 3") {
  // --warmup_steps 1: no warm-up warning, so stderr is the one error line.
  return "train --base_model " + q(model) + " --data_path " + q(data) + " --output_dir " + q(out) +
         " --batch_size 2 --micro_batch_size 2 --save_steps 1 --save_total_limit 0 --cutoff_len 32"
         " --val_set_size 0 --dtype float32 --threads 1 --seed 3 --warmup_steps 1" + shape;
}

class FullDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testdata_dir().empty()) GTEST_SKIP() << "../shared/testdata not found beside the repo root (set MOR_TESTDATA)";
    base_ = scratch_dir("full_disk");
    model_ = copy_model(base_);
    write_train_json(base_ + "/train.json", 8);
  }
  std::string base_, model_;
};

TEST_F(FullDisk, TrainingStartCheckpointAndFinalAdapter) {
  const std::string ref = base_ + "/ref";
  auto log = logged_run(ref, train_cmd(model_, base_ + "/train.json", ref + "/out"));
  ASSERT_FALSE(log.empty());
  ASSERT_TRUE(fs::exists(ref + "/out/checkpoint-2/adapter_model.safetensors"));
  struct Scenario {
    const char* name;
    long long budget;
  };
  const Scenario scenarios[] = {
      {"training start", 0},
      {"training start, first file half written", log.front().n > 1 ? log.front().n / 2 : 0},
      {"checkpoint-2 save", budget_inside(log, {"checkpoint-2", "optimizer"})},
      {"checkpoint-2 adapter", budget_inside(log, {"checkpoint-2", "adapter_model"})},
      {"final adapter", budget_inside(log, {"/out/adapter_model.safetensors"}, true)},
  };
  for (const auto& s : scenarios) {
    SCOPED_TRACE(s.name);
    ASSERT_GE(s.budget, 0) << "no such write in the reference run";
    const std::string dir = base_ + "/run" + std::to_string(&s - scenarios);
    fs::create_directories(dir);
    auto r = run_with_budget(dir, s.budget, train_cmd(model_, base_ + "/train.json", dir + "/out"));
    expect_clean_failure(r, "train", dir);
    expect_checkpoints_intact(dir + "/out", ref + "/out");
  }
}

TEST_F(FullDisk, EvalResultAndPrepareScienceqa) {
  write_test_json(base_ + "/test.json", 4);
  const std::string eval = "eval-scienceqa --test_dataset " + q(base_ + "/test.json") + " --base_model " + q(model_) +
                           " --batch_size 4 --max_new_tokens 2 --dtype float32 --threads 1 --quiet --save_path ";
  const std::string ref = base_ + "/eval_ref";
  auto log = logged_run(ref, eval + q(ref + "/res/r.json"));
  const long long b = budget_inside(log, {"r.json"});
  ASSERT_GE(b, 0);
  const std::string dir = base_ + "/eval";
  fs::create_directories(dir);
  auto r = run_with_budget(dir, b, eval + q(dir + "/res/r.json"));
  expect_clean_failure(r, "eval-scienceqa", dir);
  EXPECT_FALSE(fs::exists(dir + "/res/r.json"));

  const std::string prep = "prepare-scienceqa --dataset " + q(source_dir() + "/tests/fixtures/scienceqa") + " --save_path ";
  const std::string pref = base_ + "/prep_ref";
  auto plog = logged_run(pref, prep + q(pref + "/sqa"));
  for (const auto& needles : std::vector<std::vector<std::string>>{{".arrow"}, {"scienceq_train.json"}, {"scienceq_test.json"}}) {
    const long long pb = budget_inside(plog, needles);
    ASSERT_GE(pb, 0) << needles[0];
    const std::string pdir = base_ + "/prep_" + std::to_string(pb);
    fs::create_directories(pdir);
    auto pr = run_with_budget(pdir, pb, prep + q(pdir + "/sqa"));
    SCOPED_TRACE(needles[0]);
    expect_clean_failure(pr, "prepare-scienceqa", pdir);
    EXPECT_FALSE(fs::exists(pdir + "/sqa")) << "a partial output folder was left";
  }
}

// The real thing where the test may mount it: a 2 MiB tmpfs, training with checkpoints until it is full.
TEST_F(FullDisk, RealTmpfsTraining) {
  const std::string mnt = base_ + "/tmpfs";
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=2m") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << "); the write-shim tests cover full disks";
  struct Unmount {
    std::string p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  const std::string ref = base_ + "/ref";
  const std::string big = " --lora_r 16 --number_experts 4 --top_k 2 --max_steps 6";
  auto rr = run_mor(train_cmd(model_, base_ + "/train.json", ref + "/out", big));
  ASSERT_EQ(rr.exit_code, 0) << rr.err;
  auto r = run_mor(train_cmd(model_, base_ + "/train.json", mnt + "/out", big));
  if (r.exit_code == 0) GTEST_SKIP() << "the run fit in 2 MiB; nothing to test";
  expect_clean_failure(r, "train", mnt);
  expect_checkpoints_intact(mnt + "/out", ref + "/out");
}

}  // namespace
