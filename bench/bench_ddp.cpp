// Data parallel on one machine: tokens/s of 2 processes x 1 thread (Gloo, gradients averaged in flat
// buckets) against 1 process x 2 threads with the same global batch (2 micro-batches per optimizer
// step), and the share of the 2-process step spent in the gradient all-reduce. The model: a random
// LLaMA with the 1B-class layer shape (hidden 2048, intermediate 5632, 32 heads, 4 kv heads, vocab
// 32000; --layers of them, 22 for TinyLlama-1.1B), base in --dtype auto's choice (bf16 where the CPU has
// AVX512-BF16, else float32), MoLA experts 2/4/6/8 by quarter, top-2,
// rank 8 on all 7 modules, micro-batches of 1 x --tokens tokens. Each step is the recipe's own
// train_step + Distributed::average_gradients + clip + AdamW. Configurations alternate in rounds;
// medians are printed. Usage: bench_ddp [--layers N] [--tokens T] [--steps N] [--rounds N]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "adapter.h"
#include "allocation.h"
#include "ddp.h"
#include "llama.h"
#include "runtime.h"
#include "trainer.h"

using namespace mor;
using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

static int free_port() {
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

// One worker: `micro` micro-batches per step on this process, `steps` timed steps after one warm-up.
static int worker(int layers, int64_t T, int steps, int micro) {
  ModelConfig cfg = ModelConfig::llama(2048, 5632, layers, 32, 4, 32000);
  cfg.max_position_embeddings = 2048;
  LlamaForCausalLM model(cfg, parse_dtype("auto", torch::kCPU), torch::kCPU);
  {
    torch::NoGradGuard ng;
    torch::manual_seed(0);
    for (auto& p : model->named_parameters()) {
      if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
      else p.value().normal_(0.0, 0.02);
    }
  }
  std::string experts;
  for (int l = 0; l < layers; ++l) experts += (l ? "," : "") + std::to_string(2 * (1 + 4 * l / layers));
  attach_adapters(model, Allocation::from_flags(cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", experts,
                                                "8", "2", 16, 0.05), 42);
  auto params = param_tensors(trainable_params(model));
  int64_t n_train = 0;
  for (auto& p : params) n_train += p.numel();
  Distributed dist = Distributed::connect(read_ddp_env(), "gloo", 600, torch::kCPU);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4));
  model->train();
  std::vector<TokenizedExample> ex(micro);
  for (int m = 0; m < micro; ++m) {
    auto ids = torch::randint(3, cfg.vocab_size, {T}, torch::TensorOptions().dtype(torch::kInt64));
    ex[m].input_ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + T);
    ex[m].labels = ex[m].input_ids;
  }
  TrainStepOptions so;
  so.loss_divisor = micro;
  so.obalance = true;
  double total = 0, reduce = 0;
  for (int s = 0; s <= steps; ++s) {
    const auto t0 = Clock::now();
    for (int m = 0; m < micro; ++m) train_step(model, {&ex[m]}, so);
    const double r = dist.average_gradients(params);
    clip_gradients(params, 1.0);
    opt.step();
    opt.zero_grad();
    if (s > 0) total += since(t0), reduce += r;  // step 0 is the warm-up
  }
  const double tokens = static_cast<double>(micro * T * dist.world() * steps);
  if (dist.is_main())
    std::printf("RESULT world=%lld threads=%d dtype=%s trainable=%lld s_per_step=%.3f tokens_per_s=%.2f allreduce_share=%.4f "
                "allreduce_mb=%.1f\n",
                (long long)dist.world(), torch::get_num_threads(), dtype_name(model->dtype).c_str(), (long long)n_train, total / steps, tokens / total,
                reduce / std::max(1e-12, total), n_train * 4.0 / 1e6);
  std::fflush(stdout);
  dist.barrier();
  return 0;
}

static double field(const std::string& line, const std::string& key) {
  auto p = line.find(key + "=");
  return p == std::string::npos ? -1 : std::atof(line.c_str() + p + key.size() + 1);
}

// Runs one configuration; returns its RESULT line.
static std::string run_config(const std::string& self, int world, int threads, const std::string& args) {
  const int port = free_port();
  std::vector<pid_t> pids;
  const std::string out = "/tmp/bench_ddp_" + std::to_string(getpid()) + ".out";
  for (int r = 0; r < world; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      if (world > 1) {
        setenv("RANK", std::to_string(r).c_str(), 1);
        setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
        setenv("GLOO_SOCKET_IFNAME", "lo", 1);
      }
      setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
      const std::string cmd = "exec " + self + " --worker --threads " + std::to_string(threads) + " --micro " +
                              std::to_string(2 / world) + args + (r == 0 ? " >" + out : " >/dev/null");
      execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
      _exit(127);
    }
    pids.push_back(pid);
  }
  for (pid_t p : pids) waitpid(p, nullptr, 0);
  FILE* f = std::fopen(out.c_str(), "r");
  char buf[1024];
  std::string line;
  while (f && std::fgets(buf, sizeof buf, f))
    if (std::string(buf).rfind("RESULT", 0) == 0) line = buf;
  if (f) std::fclose(f);
  std::remove(out.c_str());
  return line;
}

int main(int argc, char** argv) {
  int layers = 22, steps = 3, rounds = 3, threads = 1, micro = 2;
  int64_t tokens = 256;
  bool is_worker = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--layers" && i + 1 < argc) layers = std::atoi(argv[++i]);
    else if (a == "--tokens" && i + 1 < argc) tokens = std::atoll(argv[++i]);
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--micro" && i + 1 < argc) micro = std::atoi(argv[++i]);
    else if (a == "--worker") is_worker = true;
  }
  if (is_worker) {
    torch::set_num_threads(threads);
    return worker(layers, tokens, steps, micro);
  }
  const std::string args = " --layers " + std::to_string(layers) + " --tokens " + std::to_string(tokens) + " --steps " +
                           std::to_string(steps);
  std::printf("bench_ddp: %d layers of the 1B-class shape, %lld tokens per micro-batch, global batch 2 micro-batches, "
              "%d timed steps, %d rounds\n", layers, (long long)tokens, steps, rounds);
  std::vector<double> one, two, share;
  for (int r = 0; r < rounds; ++r) {
    for (int world : {1, 2}) {
      const std::string line = run_config(argv[0], world, world == 1 ? 2 : 1, args);
      std::printf("round %d: %s", r + 1, line.empty() ? "(no result)\n" : line.c_str());
      (world == 1 ? one : two).push_back(field(line, "tokens_per_s"));
      if (world == 2) share.push_back(field(line, "allreduce_share"));
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  std::printf("median tokens/s: 1 process x 2 threads %.2f, 2 processes x 1 thread %.2f (ratio %.3f); "
              "all-reduce %.1f%% of the 2-process step\n",
              median(one), median(two), median(two) / std::max(1e-12, median(one)), 100 * median(share));
  return 0;
}
