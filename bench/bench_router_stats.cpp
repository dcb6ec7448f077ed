// What router statistics add to a training step, at bench_train's 1B-class "small" shape (hidden
// 2048, intermediate 5632, 6 layers, 32 heads / 4 kv heads, vocab 32000, bf16 base, MoLA experts
// 2,2,4,4,6,8 top-2 on all 7 modules, 4 x 256 tokens). Steps with and without RouterStats::add run
// interleaved in rounds (the order alternating), and the add itself is timed inside the with-step;
// medians and ratios are printed, plus the cost of one summary (the logging step's host sync).
// Usage: bench_router_stats [--threads N] [--rounds N] [--layers N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "adapter.h"
#include "allocation.h"
#include "llama.h"
#include "router_stats.h"
#include "trainer.h"

using namespace mor;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::thread::hardware_concurrency()), rounds = 5, layers = 6;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--layers" && i + 1 < argc) layers = std::atoi(argv[++i]);
  }
  torch::set_num_threads(threads);
  ModelConfig cfg = ModelConfig::llama(2048, 5632, layers, 32, 4, 32000);
  LlamaForCausalLM model(cfg, torch::kBFloat16, torch::kCPU);
  {
    torch::NoGradGuard ng;
    torch::manual_seed(0);
    for (auto& p : model->named_parameters()) {
      if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
      else p.value().normal_(0.0, 0.02);
    }
  }
  std::string experts;
  for (int l = 0; l < layers; ++l) experts += (l ? "," : "") + std::to_string(std::vector<int>{2, 2, 4, 4, 6, 8}[l % 6]);
  auto alloc = Allocation::from_flags(cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", experts, "8", "2", 16, 0.05);
  attach_adapters(model, alloc, 42);
  auto params = param_tensors(trainable_params(model));
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(3e-4).weight_decay(0.0));
  model->train();
  const int64_t B = 4, T = 256;
  auto ids = torch::randint(3, cfg.vocab_size, {B, T}, torch::kInt64);
  auto mask = torch::ones({B, T}, torch::kInt64);
  mask[0].narrow(0, 0, 32).zero_();  // some pads, as real batches have
  RouterStats stats(router_layout(model), torch::kCPU);
  double add_seconds = 0;
  auto step = [&](bool with_stats) {
    RouterLogits rl;
    ForwardArgs a;
    a.input_ids = ids;
    a.attention_mask = mask;
    a.router_logits = &rl;
    auto logits = model->forward(a);
    auto loss = compute_loss(model, logits, ids, rl, true).loss;
    if (with_stats) {
      auto t = Clock::now();
      stats.add(rl, mask.reshape({-1}));
      add_seconds = seconds_since(t);
    }
    loss.backward();
    opt.step();
    opt.zero_grad();
  };
  step(true);  // warm-up
  std::vector<double> with, without, adds;
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      const bool ws = (k == 0) == (r % 2 == 0);
      auto t = Clock::now();
      step(ws);
      (ws ? with : without).push_back(seconds_since(t));
      if (ws) adds.push_back(add_seconds);
    }
    std::printf("round %d: without %.3f s, with %.3f s (add %.2f ms)\n", r, without.back(), with.back(), 1e3 * adds.back());
    std::fflush(stdout);
  }
  auto t = Clock::now();
  auto summary = stats.summary();
  const double summary_s = seconds_since(t);
  const double mw = median(with), mo = median(without), ma = median(adds);
  std::printf("RESULT router_stats layers=%d threads=%d rounds=%d step_without=%.3fs step_with=%.3fs ratio=%.4f "
              "add_median=%.2fms add_share=%.3f%% summary=%.2fms tokens_counted=%lld\n",
              layers, threads, rounds, mo, mw, mw / mo, 1e3 * ma, 100 * ma / mo, 1e3 * summary_s, (long long)summary.tokens);
  return 0;
}
