// Data-parallel training on c10d (Gloo), launched by Debian 12's torchrun and by hand: 2 processes x 1
// thread equal 1 process with the same global batch (adapter within 1e-6 relative, logged losses within
// 1e-6), same-seed runs with dropout are bit-identical, resume after a kill at a checkpoint and after
// SIGTERM to the agent are bit-identical, resume with world size 1 from a 2-process checkpoint ends at
// the same global sample count, the multi-node shape (2 nodes x 1 process, c10d rendezvous) equals the
// single-node run, and a rank killed or hung mid-run ends the other with one error line within
// --ddp_timeout, leaving only complete checkpoints. Tiny runs: stories260K, cutoff 32, 8 steps.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "adapter.h"
#include "helpers.h"

using namespace mor;
namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

using mor::test::q;
std::string model_dir() { return test::testdata_dir() + "/stories260K"; }
std::string hf_data() { return test::testdata_dir() + "/sampled_scienceqa_train_all.hf"; }

bool have_torchrun() { return std::system("command -v torchrun >/dev/null 2>&1") == 0; }
bool have_ddp() { return test::run_mor("--version").out.find("data parallel: gloo") != std::string::npos; }
#define DDP_REQUIRE()                                                                        \
  do {                                                                                       \
    MOR_REQUIRE_TESTDATA();                                                                  \
    if (!have_ddp()) GTEST_SKIP() << "mor was built without c10d/Gloo (libgloo-dev missing)"; \
  } while (0)
#define TORCHRUN_REQUIRE()                                                                 \
  do {                                                                                     \
    DDP_REQUIRE();                                                                         \
    if (!have_torchrun()) GTEST_SKIP() << "torchrun not found (Debian: python3-torch)";     \
  } while (0)

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Global batch 4 of micro-batches of 1: accumulation 4 in one process, 2 per process in two. `extra`
// flags ("--name value ...") replace the defaults of the same name.
std::string train_args(const std::string& out, const std::string& extra = "") {
  std::vector<std::pair<std::string, std::string>> flags = {
      {"base_model", q(model_dir())}, {"data_path", q(hf_data())}, {"output_dir", q(out)}, {"batch_size", "4"},
      {"micro_batch_size", "1"}, {"max_steps", "8"}, {"learning_rate", "5e-3"}, {"cutoff_len", "32"},
      {"val_set_size", "0"}, {"warmup_steps", "2"}, {"logging_steps", "1"}, {"save_steps", "4"},
      {"save_total_limit", "0"}, {"lora_r", "4"}, {"number_experts", "2,3,2,2,3"}, {"top_k", "1,2,1,2,2"},
      {"lora_dropout", "0"}, {"dtype", "float32"}, {"threads", "1"}, {"ddp_timeout", "30"}};
  std::istringstream in(extra);
  std::string name, value;
  while (in >> name >> value) {
    name = name.substr(2);  // "--name"
    bool found = false;
    for (auto& f : flags)
      if (f.first == name) f.second = value, found = true;
    if (!found) flags.emplace_back(name, value);
  }
  std::string args = "train --obalance --group_by_length";
  for (auto& [n, v] : flags) args += " --" + n + " " + v;
  return args;
}

struct Shell {
  int exit_code = -1;
  std::string out;
};
Shell shell(const std::string& cmd) {
  static std::atomic<int> n{0};
  const std::string log = test::scratch_dir("shell" + std::to_string(n++)) + "/log";
  int status = std::system(("OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=lo " + cmd + " >" + log + " 2>&1 </dev/null").c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), test::read_file(log)};
}

std::string torchrun_single_node(const std::string& args, int nproc = 2) {
  return "torchrun --redirects 9:1 --tee 9:1 --no_python --nproc_per_node " + std::to_string(nproc) +
         " --master_addr 127.0.0.1 --master_port " + std::to_string(free_port()) + " " + MOR_BINARY + " " + args;
}

json state_of(const std::string& dir) { return json::parse(test::read_file(dir + "/trainer_state.json")); }
std::vector<double> series(const json& st, const char* key) {
  std::vector<double> v;
  for (const auto& e : st["log_history"])
    if (e.contains(key)) v.push_back(e[key].get<double>());
  return v;
}

// Largest |a - b| / max|a| over the adapter's tensors.
double adapter_rel_diff(const std::string& a, const std::string& b) {
  auto ta = read_adapter_weights(a + "/adapter_model.safetensors"), tb = read_adapter_weights(b + "/adapter_model.safetensors");
  EXPECT_EQ(ta.size(), tb.size());
  double worst = 0;
  for (size_t i = 0; i < ta.size() && i < tb.size(); ++i) {
    EXPECT_EQ(ta[i].first, tb[i].first);
    const double scale = std::max(1e-30, ta[i].second.abs().max().item<double>());
    worst = std::max(worst, (ta[i].second - tb[i].second).abs().max().item<double>() / scale);
  }
  return worst;
}

void expect_series_near(const json& a, const json& b, const char* key, double rel) {
  auto x = series(a, key), y = series(b, key);
  ASSERT_EQ(x.size(), y.size()) << key;
  ASSERT_FALSE(x.empty()) << key;
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], y[i], rel * std::max(1.0, std::abs(x[i]))) << key << " " << i;
}

// Whether metrics.jsonl reached `lines_wanted` lines within 30 s (a fault test whose ranks never
// joined would otherwise pass on the join's own error line).
bool wait_logged(const std::string& out, int lines_wanted) {
  for (int i = 0; i < 3000; ++i) {
    std::ifstream f(out + "/metrics.jsonl");
    int lines = 0;
    for (std::string l; std::getline(f, l);) ++lines;
    if (lines >= lines_wanted) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}
// Processes (other than this one) whose command line mentions `needle`.
int processes_with(const std::string& needle) {
  int n = 0;
  for (auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos || std::stoi(pid) == getpid()) continue;
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    n += cmd.find(needle) != std::string::npos;
  }
  return n;
}

// The reference runs, made once: one process, and two processes under torchrun.
const std::string& one_process_run() {
  static std::string dir = [] {
    std::string d = test::scratch_dir("ddp_one");
    auto r = test::run_mor(train_args(d));
    if (r.exit_code != 0) throw std::runtime_error("1-process run failed: " + r.err);
    return d;
  }();
  return dir;
}
const std::string& two_process_run() {
  static std::string dir = [] {
    std::string d = test::scratch_dir("ddp_two");
    auto r = shell(torchrun_single_node(train_args(d)));
    if (r.exit_code != 0) throw std::runtime_error("2-process run failed: " + r.out);
    return d;
  }();
  return dir;
}

}  // namespace

TEST(DdpTorchrun, TwoProcessesEqualOneProcessWithTheSameGlobalBatch) {
  TORCHRUN_REQUIRE();
  const std::string one = one_process_run(), two = two_process_run();
  const json s1 = state_of(one), s2 = state_of(two);
  EXPECT_EQ(s2["global_step"], 8);
  EXPECT_LT(adapter_rel_diff(one, two), 1e-6);
  expect_series_near(s1, s2, "loss", 1e-6);
  expect_series_near(s1, s2, "aux_loss", 1e-6);
  expect_series_near(s1, s2, "grad_norm", 1e-6);
  // router statistics count both ranks' tokens: the same windows as the one-process run
  auto lines = [](const std::string& dir) {
    std::vector<json> v;
    std::istringstream in(test::read_file(dir + "/router_stats.jsonl"));
    for (std::string l; std::getline(in, l);) v.push_back(json::parse(l));
    return v;
  };
  const auto r1 = lines(one), r2 = lines(two);
  ASSERT_EQ(r1.size(), 8u);
  ASSERT_EQ(r2.size(), r1.size());
  for (size_t i = 0; i < r1.size(); ++i) {
    EXPECT_EQ(r2[i]["tokens"], r1[i]["tokens"]) << "step " << i + 1;
    for (size_t l = 0; l < r1[i]["layers"].size(); ++l)
      for (size_t m = 0; m < r1[i]["layers"][l]["modules"].size(); ++m) {
        const json &a = r1[i]["layers"][l]["modules"][m], &b = r2[i]["layers"][l]["modules"][m];
        EXPECT_EQ(b["counts"], a["counts"]) << "step " << i + 1 << " layer " << l << " module " << m;
        EXPECT_NEAR(b["entropy"].get<double>(), a["entropy"].get<double>(), 1e-5);
      }
    EXPECT_NEAR(r2[i]["layers"][0]["balance_loss"].get<double>(), r1[i]["layers"][0]["balance_loss"].get<double>(), 1e-5);
  }
  // and the run did train: the adapter moved and both ranks' tokens are counted
  EXPECT_EQ(series(s2, "train_samples"), std::vector<double>{32});
  EXPECT_EQ(series(s2, "world_size"), std::vector<double>{2});
  // only rank 0 wrote: one set of files, checkpoints with both ranks' RNG state
  EXPECT_TRUE(fs::exists(two + "/checkpoint-4/rng_state_0.pt"));
  EXPECT_TRUE(fs::exists(two + "/checkpoint-4/rng_state_1.pt"));
  EXPECT_EQ(series(state_of(two + "/checkpoint-8"), "loss").size(), 8u);
}

TEST(DdpTorchrun, DropoutRunsWithTheSameSeedAreBitIdentical) {
  TORCHRUN_REQUIRE();
  const std::string a = test::scratch_dir("ddp_drop_a"), b = test::scratch_dir("ddp_drop_b");
  const std::string extra = " --lora_dropout 0.2 --max_steps 4 --save_steps 100";
  auto ra = shell(torchrun_single_node(train_args(a, extra)));
  ASSERT_EQ(ra.exit_code, 0) << ra.out;
  auto rb = shell(torchrun_single_node(train_args(b, extra)));
  ASSERT_EQ(rb.exit_code, 0) << rb.out;
  EXPECT_TRUE(test::read_file(a + "/adapter_model.safetensors") == test::read_file(b + "/adapter_model.safetensors"));
  EXPECT_EQ(series(state_of(a), "loss"), series(state_of(b), "loss"));
  // dropout is on: the losses differ from the dropout-free run's first four
  const auto no_dropout = series(state_of(two_process_run()), "aux_loss");
  ASSERT_GE(no_dropout.size(), 4u);
  EXPECT_NE(series(state_of(a), "aux_loss"), std::vector<double>(no_dropout.begin(), no_dropout.begin() + 4));
}

TEST(DdpTorchrun, ResumeAfterKillAtCheckpointAndAfterSigtermIsBitIdentical) {
  TORCHRUN_REQUIRE();
  const std::string two = two_process_run(), b = test::scratch_dir("ddp_resume_b"), c = test::scratch_dir("ddp_resume_c");
  const std::string want = test::read_file(two + "/adapter_model.safetensors");
  // Killed right after checkpoint-4: that folder is all the run left.
  fs::copy(two + "/checkpoint-4", b + "/checkpoint-4", fs::copy_options::recursive);
  auto rb = shell(torchrun_single_node(train_args(b, " --resume_from_checkpoint latest")));
  ASSERT_EQ(rb.exit_code, 0) << rb.out;
  EXPECT_TRUE(test::read_file(b + "/adapter_model.safetensors") == want) << "resumed adapter differs";
  EXPECT_EQ(series(state_of(b), "loss"), series(state_of(two), "loss"));

  // SIGTERM to the torchrun agent: one checkpoint (by rank 0), every rank exits, resume is exact.
  const std::string ref = test::scratch_dir("ddp_sigterm_ref");
  // Long enough that the signal, sent once step 20 is logged, lands well before the end.
  const std::string longer = " --max_steps 120 --save_steps 1000 --logging_steps 10";
  auto rr = shell(torchrun_single_node(train_args(ref, longer)));
  ASSERT_EQ(rr.exit_code, 0) << rr.out;
  const std::string log = c + "/../ddp_sigterm.log";
  pid_t pid = fork();
  if (pid == 0) {
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("GLOO_SOCKET_IFNAME", "lo", 1);
    const std::string cmd = "exec " + torchrun_single_node(train_args(c, longer)) + " >" + log + " 2>&1 </dev/null";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  wait_logged(c, 2);
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::string out = test::read_file(log);
  EXPECT_EQ(processes_with(c), 0) << "a rank outlived the agent";
  EXPECT_NE(out.find("SIGTERM received"), std::string::npos) << out;
  int n_ck = 0;
  for (auto& e : fs::directory_iterator(c)) {
    const std::string n = e.path().filename().string();
    EXPECT_EQ(n.find(".tmp"), std::string::npos) << n;
    n_ck += n.rfind("checkpoint-", 0) == 0;
  }
  ASSERT_EQ(n_ck, 1) << out;
  EXPECT_FALSE(fs::exists(c + "/adapter_model.safetensors")) << "stopped before the end";
  auto rc = shell(torchrun_single_node(train_args(c, longer + " --resume_from_checkpoint latest")));
  ASSERT_EQ(rc.exit_code, 0) << rc.out;
  EXPECT_TRUE(test::read_file(c + "/adapter_model.safetensors") == test::read_file(ref + "/adapter_model.safetensors"))
      << "adapter after SIGTERM + resume differs";
}

TEST(DdpTorchrun, ResumeWithOneProcessFromATwoProcessCheckpoint) {
  TORCHRUN_REQUIRE();
  const std::string two = two_process_run(), d = test::scratch_dir("ddp_resume_w1");
  fs::copy(two + "/checkpoint-4", d + "/checkpoint-4", fs::copy_options::recursive);
  auto r = test::run_mor(train_args(d, " --resume_from_checkpoint latest"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: the checkpoint was written by 2 process(es), this run has 1"), std::string::npos) << r.err;
  const json st = state_of(d);
  EXPECT_EQ(st["global_step"], 8);
  EXPECT_EQ(series(st, "train_samples"), series(state_of(two), "train_samples"));
  EXPECT_EQ(series(st, "loss").size(), 8u);
}

TEST(DdpTorchrun, MultiNodeShapeEqualsSingleNode) {
  TORCHRUN_REQUIRE();
  const std::string two = two_process_run(), d = test::scratch_dir("ddp_nodes");
  const std::string ep = "127.0.0.1:" + std::to_string(free_port());
  auto node = [&](int rank) {
    return "torchrun --redirects 9:1 --tee 9:1 --no_python --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d"
           " --rdzv_endpoint " + ep + " --rdzv_id mortest --node_rank " + std::to_string(rank) + " " + MOR_BINARY + " " +
           train_args(d);
  };
  Shell n1;
  std::thread t([&] { n1 = shell(node(1)); });
  Shell n0 = shell(node(0));
  t.join();
  ASSERT_EQ(n0.exit_code, 0) << n0.out;
  ASSERT_EQ(n1.exit_code, 0) << n1.out;
  EXPECT_LT(adapter_rel_diff(two, d), 1e-6);
  expect_series_near(state_of(two), state_of(d), "loss", 1e-6);
  expect_series_near(state_of(two), state_of(d), "grad_norm", 1e-6);
}

namespace {
struct Rank {
  pid_t pid = -1;
  std::string err;
};
// A rank started by hand with the torchrun variables (rank 0 hosts the store).
Rank start_rank(int rank, int port, const std::string& out, const std::string& extra) {
  Rank r;
  r.err = out + "/../rank" + std::to_string(rank) + ".err";
  r.pid = fork();
  if (r.pid == 0) {
    setenv("RANK", std::to_string(rank).c_str(), 1);
    setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    setenv("WORLD_SIZE", "2", 1);
    setenv("LOCAL_WORLD_SIZE", "2", 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    setenv("GLOO_SOCKET_IFNAME", "lo", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    const std::string cmd = "exec " + std::string(MOR_BINARY) + " " + train_args(out, extra) + " >/dev/null 2>" + r.err;
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  return r;
}
int wait_exit(pid_t pid, double limit_s, double& took) {
  const auto t0 = Clock::now();
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    took = std::chrono::duration<double>(Clock::now() - t0).count();
    if (took > limit_s) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
void expect_only_complete_checkpoints(const std::string& out) {
  for (auto& e : fs::directory_iterator(out)) {
    const std::string n = e.path().filename().string();
    EXPECT_EQ(n.find(".tmp"), std::string::npos) << n;
    if (n.rfind("checkpoint-", 0) == 0) {
      for (const char* f : {"trainer_state.json", "optimizer.pt", "data_state.json", "adapter_model.safetensors",
                            "rng_state_0.pt", "rng_state_1.pt"})
        EXPECT_TRUE(fs::exists(e.path() / f)) << n << "/" << f;
    }
  }
}
}  // namespace

TEST(DdpFaults, KilledRankEndsTheOtherWithOneErrorLine) {
  DDP_REQUIRE();
  const std::string out = test::scratch_dir("ddp_kill");
  const int port = free_port();
  const std::string extra = " --max_steps 100000 --save_steps 2 --save_total_limit 2 --ddp_timeout 20";
  Rank r0 = start_rank(0, port, out, extra), r1 = start_rank(1, port, out, extra);
  const bool trained = wait_logged(out, 5);
  kill(r1.pid, SIGKILL);
  waitpid(r1.pid, nullptr, 0);
  double took = 0;
  const int code = wait_exit(r0.pid, 25, took);
  const std::string err = test::read_file(r0.err);
  ASSERT_TRUE(trained) << "the 2 ranks never logged 5 steps: " << err;
  EXPECT_NE(code, -1) << "rank 0 still running 25 s after rank 1 died";
  EXPECT_NE(code, 0) << err;
  EXPECT_LT(took, 20.0);
  EXPECT_NE(err.find("mor train: error: data parallel: "), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  expect_only_complete_checkpoints(out);
}

TEST(DdpFaults, HungRankEndsTheOtherWithinTheTimeout) {
  DDP_REQUIRE();
  const std::string out = test::scratch_dir("ddp_hang");
  const int port = free_port();
  const std::string extra = " --max_steps 100000 --save_steps 3 --save_total_limit 2 --ddp_timeout 4";
  Rank r0 = start_rank(0, port, out, extra), r1 = start_rank(1, port, out, extra);
  const bool trained = wait_logged(out, 5);
  kill(r1.pid, SIGSTOP);
  double took = 0;
  const int code = wait_exit(r0.pid, 15, took);
  kill(r1.pid, SIGKILL);
  waitpid(r1.pid, nullptr, 0);
  const std::string err = test::read_file(r0.err);
  ASSERT_TRUE(trained) << "the 2 ranks never logged 5 steps: " << err;
  EXPECT_NE(code, -1) << "rank 0 still running 15 s after rank 1 hung (timeout 4 s)";
  EXPECT_NE(code, 0) << err;
  EXPECT_NE(err.find("mor train: error: data parallel: "), std::string::npos) << err;
  EXPECT_NE(err.find("--ddp_timeout 4"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  expect_only_complete_checkpoints(out);
}

// Rank 1 joins the store late and dies before it joins the process group: the join has one deadline,
// so rank 0 gives up --ddp_timeout after it began to wait, not once for the store and again for Gloo.
TEST(DdpFaults, RankLostDuringTheJoinFailsWithinOneTimeout) {
  DDP_REQUIRE();
  if (std::system("/usr/bin/python3 -c 'import torch.distributed' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch.distributed not found (Debian: python3-torch)";
  const std::string out = test::scratch_dir("ddp_join");
  const int port = free_port();
  const auto t0 = Clock::now();
  Rank r0 = start_rank(0, port, out, " --ddp_timeout 10");
  // A store client that counts as worker 1 about 8 s from now, then exits without joining Gloo.
  const std::string worker = "/usr/bin/python3 -c 'import time, datetime, torch.distributed as d; time.sleep(max(0, 8 - "
                             "time.monotonic() + " + std::to_string(std::chrono::duration<double>(
                             std::chrono::steady_clock::now().time_since_epoch()).count()) + ")); "
                             "d.TCPStore(\"127.0.0.1\", " + std::to_string(port) +
                             ", 2, False, datetime.timedelta(seconds=30))'";
  const int wrc = std::system((worker + " >/dev/null 2>&1").c_str());
  double took = 0;
  const int code = wait_exit(r0.pid, 30, took);
  took = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::string err = test::read_file(r0.err);
  EXPECT_EQ(wrc, 0) << "the store client failed";
  EXPECT_EQ(code, 1) << err;
  EXPECT_NE(err.find("mor train: error: data parallel: cannot join the 2 ranks"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  std::cout << "rank 0 gave up " << took << " s after its start\n";
  // One deadline: start-up (1-3 s) + 10 s. Store then Gloo, each with the full timeout, took 8 + 10 s and more.
  EXPECT_LT(took, 16.5) << err;
  EXPECT_FALSE(fs::exists(out + "/training_args.json"));
}

TEST(DdpSetup, BatchMustDivideByMicroBatchTimesWorld) {
  DDP_REQUIRE();
  const std::string out = test::scratch_dir("ddp_divide");
  const int port = free_port();
  // batch 6 = micro 1 x 2 processes x 3 is fine; batch 6 with micro 2 over 2 processes is not.
  Rank r0 = start_rank(0, port, out, " --batch_size 6 --micro_batch_size 2");
  double took = 0;
  const int code = wait_exit(r0.pid, 20, took);
  const std::string err = test::read_file(r0.err);
  EXPECT_EQ(code, 1) << err;
  EXPECT_NE(err.find("--batch_size 6 is not a multiple of --micro_batch_size 2 x 2 processes"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(out + "/training_args.json"));
}
