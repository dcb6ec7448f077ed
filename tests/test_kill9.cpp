// kill -9 during training (issue 15): a small run (stories260K, tiny cutoff, a checkpoint every step) is
// killed at seeded random moments, half of them the moment a checkpoint save has begun (its staging
// folder appears), at least 10 times, resuming with --resume_from_checkpoint latest after each. Every
// checkpoint-N left must be complete at all times, and the final adapter must equal an uninterrupted
// run's byte for byte.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <random>
#include <thread>

#include "helpers.h"
#include "helpers_bad.h"
#include "safetensors.h"

namespace fs = std::filesystem;
using namespace mor::test;
using namespace mor::test::bad;

namespace {

std::vector<std::string> train_argv(const std::string& model, const std::string& data, const std::string& out) {
  return {"train", "--base_model", model, "--data_path", data, "--output_dir", out, "--batch_size", "2",
          "--micro_batch_size", "2", "--max_steps", "12", "--save_steps", "1", "--save_total_limit", "3",
          "--cutoff_len", "24", "--val_set_size", "0", "--lora_r", "4", "--number_experts", "2", "--top_k", "1",
          "--learning_rate", "3e-3", "--dtype", "float32", "--threads", "1", "--seed", "11"};
}

pid_t spawn(const std::vector<std::string>& args) {
  pid_t pid = fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDWR);
    dup2(null, 0), dup2(null, 1), dup2(null, 2);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(MOR_BINARY));
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(MOR_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool staging_present(const std::string& out) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return false;
  for (auto& e : fs::directory_iterator(out, ec))
    if (e.path().filename().string().find(".tmp") != std::string::npos &&
        e.path().filename().string().find("checkpoint") != std::string::npos)
      return true;
  return false;
}

// Every checkpoint-N: the files of a complete checkpoint, the adapter readable.
void expect_complete_checkpoints(const std::string& out, const std::vector<std::string>& files, int round) {
  if (!fs::exists(out)) return;
  for (auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0) continue;
    for (const auto& f : files) EXPECT_TRUE(fs::exists(e.path() / f)) << "round " << round << ": " << name << " lacks " << f;
    EXPECT_NO_THROW(mor::SafeTensorsFile::open((e.path() / "adapter_model.safetensors").string())) << name;
  }
}

bool any_checkpoint(const std::string& out) {
  if (!fs::exists(out)) return false;
  for (auto& e : fs::directory_iterator(out))
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0) return true;
  return false;
}

TEST(Kill9, RandomKillsThenResumeEqualsUninterrupted) {
  MOR_REQUIRE_TESTDATA();
  const std::string d = scratch_dir("kill9");
  const std::string model = copy_model(d);
  write_train_json(d + "/train.json", 24);
  const std::string data = d + "/train.json";

  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(wait_exit(spawn(train_argv(model, data, d + "/ref"))), 0);
  const double ref_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const std::string want = read_file(d + "/ref/adapter_model.safetensors");
  std::vector<std::string> ckpt_files;
  for (auto& e : fs::directory_iterator(d + "/ref/checkpoint-12")) ckpt_files.push_back(e.path().filename().string());
  ASSERT_FALSE(ckpt_files.empty());

  const std::string out = d + "/run";
  std::mt19937_64 rng(20261201);
  int kills = 0, in_save = 0, round = 0;
  bool finished = false;
  while (!finished && round < 40) {
    ++round;
    auto args = train_argv(model, data, out);
    if (any_checkpoint(out)) args.insert(args.end(), {"--resume_from_checkpoint", "latest"});
    else fs::remove_all(out);  // nothing to resume: a fresh start
    const pid_t pid = spawn(args);
    bool killed = false;
    if (kills < 10) {
      if (round % 2 == 0) {  // the moment a checkpoint save has begun, plus up to 3 ms
        const auto limit = std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(ref_ms * 2 + 2000));
        while (std::chrono::steady_clock::now() < limit && !staging_present(out) && waitpid(pid, nullptr, WNOHANG) == 0)
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        if (staging_present(out)) {
          std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
          killed = kill(pid, SIGKILL) == 0;
          in_save += killed;
        }
      } else {  // anywhere in the run
        std::this_thread::sleep_for(std::chrono::microseconds(int64_t(rng() % uint64_t(ref_ms * 1000))));
        killed = kill(pid, SIGKILL) == 0;
      }
    }
    const int rc = wait_exit(pid);
    if (killed && rc == 128 + SIGKILL) ++kills;
    else if (rc == 0) finished = kills >= 10;
    else ADD_FAILURE() << "round " << round << ": exit " << rc;
    expect_complete_checkpoints(out, ckpt_files, round);
    if (finished) break;
    if (rc == 0) fs::remove_all(out);  // finished before ten kills: start over
  }
  EXPECT_GE(kills, 10);
  EXPECT_GE(in_save, 3) << "too few kills landed inside a checkpoint save";
  ASSERT_TRUE(finished) << "the run never finished after the kills";
  EXPECT_FALSE(staging_present(out)) << "a killed save's staging folder is still there after the run finished";
  EXPECT_TRUE(read_file(out + "/adapter_model.safetensors") == want) << "the resumed adapter differs from an uninterrupted run's";
  std::cout << "kill -9: " << kills << " kills (" << in_save << " inside a checkpoint save) in " << round
            << " rounds; reference run " << ref_ms << " ms\n";
}

}  // namespace
