// Training throughput and memory: tokens/s, MFU (vs a measured bf16 matmul peak) and peak RSS of one
// training step (forward, loss, backward, AdamW) on random LLaMA-shaped models with a bf16 base:
//   small  hidden 2048, intermediate 5632, 32 heads, 4 kv heads, 6 layers, vocab 32000, 4 x 256 tokens:
//          base only (frozen; backward through the activations), plain LoRA r=8 on 7 modules (one
//          expert), MoLA experts 2,2,4,4,6,8 top-2;
//   7b     LLaMA-2-7B shapes, MoLA 2/4/6/8 experts per 8 layers, top-2, 1 x 256 tokens: s/step, peak RSS.
// Each configuration runs in its own process (peak RSS is per process). Usage:
//   bench_train [--threads N] [--steps N] [--skip-7b]       (driver)
//   bench_train --one base|lora|mola|7b [--threads N] [--steps N]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "adapter.h"
#include "allocation.h"
#include "llama.h"
#include "trainer.h"

using namespace mor;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
static double peak_rss_gb() {
  struct rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0 / 1024.0;
}

// bf16 matmul peak on a training-sized product (tokens x hidden x intermediate).
static double measure_bf16_peak() {
  torch::NoGradGuard ng;
  auto a = torch::randn({1024, 2048}).to(torch::kBFloat16), b = torch::randn({2048, 5632}).to(torch::kBFloat16);
  torch::matmul(a, b);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    auto t = Clock::now();
    for (int i = 0; i < 3; ++i) torch::matmul(a, b);
    best = std::max(best, 3 * 2.0 * 1024 * 2048 * 5632 / seconds_since(t));
  }
  return best;
}

static ModelConfig small_cfg() {
  ModelConfig c = ModelConfig::llama(2048, 5632, 6, 32, 4, 32000);
  c.max_position_embeddings = 2048;
  return c;
}
static ModelConfig llama7b_cfg() {
  ModelConfig c = ModelConfig::llama(4096, 11008, 32, 32, 32, 32000);
  c.max_position_embeddings = 4096;
  return c;
}

// Builds the model in bf16 and fills every tensor in place, one at a time: no float32 copy.
static LlamaForCausalLM build(const ModelConfig& cfg) {
  LlamaForCausalLM m(cfg, torch::kBFloat16, torch::kCPU);
  torch::NoGradGuard ng;
  torch::manual_seed(0);
  for (auto& p : m->named_parameters()) {
    if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
    else p.value().normal_(0.0, 0.02);
  }
  return m;
}

// Matmul FLOPs of one step with a frozen base: forward 2·N·tok and the input-gradient backward
// 2·N·tok over the base projections and lm_head, plus attention scores/values (4·T·C per token per
// layer forward, twice that backward). Adapter FLOPs are not counted (they are the overhead).
static double step_flops(const ModelConfig& c, int64_t B, int64_t T) {
  const double C = c.hidden_size, F = c.intermediate_size, kv = C * c.n_head_kv / c.n_head;
  const double per_layer = C * C * 2 + C * kv * 2 + 3 * C * F;
  const double n = per_layer * c.n_layer + C * c.vocab_size;
  const double tok = static_cast<double>(B * T);
  return 4.0 * n * tok + 3.0 * 4.0 * T * C * tok * c.n_layer * 0.5;  // causal: half the score matrix
}

static int run_one(const std::string& which, int steps) {
  const bool big = which == "7b";
  ModelConfig cfg = big ? llama7b_cfg() : small_cfg();
  const int64_t B = big ? 1 : 4, T = 256;
  auto t_build = Clock::now();
  LlamaForCausalLM model = build(cfg);
  const double build_s = seconds_since(t_build);
  std::string experts;
  if (which == "mola") experts = "2,2,4,4,6,8";
  if (big) {
    for (int l = 0; l < 32; ++l) experts += (l ? "," : "") + std::to_string(2 + 2 * (l / 8));
  }
  const std::string targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
  std::vector<torch::Tensor> params;
  if (which == "base") {
    // Nothing trainable: let layer 0's input norm require grad so backward runs through every layer.
    for (auto& p : model->named_parameters())
      if (p.key() == "model.layers.0.input_layernorm.weight") { p.value().set_requires_grad(true); params.push_back(p.value()); }
  } else {
    Allocation alloc = Allocation::from_flags(cfg, targets,
                                              which == "lora" ? "1" : experts, "8", which == "lora" ? "1" : "2", 16, 0.05);
    attach_adapters(model, alloc, 42);
    params = param_tensors(trainable_params(model));
  }
  int64_t n_train = 0;
  for (auto& p : params) n_train += p.numel();
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(3e-4).weight_decay(0.0));
  model->train();
  // B random examples of T tokens; one step = the recipe's own train_step (collate, forward, loss,
  // backward) on them, then AdamW.
  auto ids = torch::randint(3, cfg.vocab_size, {B, T}, torch::kInt64);
  std::vector<TokenizedExample> examples(B);
  std::vector<const TokenizedExample*> batch;
  for (int64_t b = 0; b < B; ++b) {
    examples[b].input_ids.assign(ids[b].data_ptr<int64_t>(), ids[b].data_ptr<int64_t>() + T);
    examples[b].labels = examples[b].input_ids;
    batch.push_back(&examples[b]);
  }
  TrainStepOptions so;
  so.obalance = which != "base";
  auto step = [&] {
    train_step(model, batch, so);
    opt.step();
    opt.zero_grad();
  };
  if (!big) step();  // warm-up
  auto t = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  const double s = seconds_since(t) / steps;
  const double tps = B * T / s;
  std::printf("RESULT %s trainable=%lld s_per_step=%.3f tokens_per_s=%.1f model_tflops=%.3f peak_rss_gb=%.2f build_s=%.1f\n",
              which.c_str(), (long long)n_train, s, tps, step_flops(cfg, B, T) / s / 1e12, peak_rss_gb(), build_s);
  return 0;
}

int main(int argc, char** argv) {
  std::string one;
  int threads = static_cast<int>(std::thread::hardware_concurrency()), steps = 3;
  bool skip7b = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--one" && i + 1 < argc) one = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--skip-7b") skip7b = true;
  }
  torch::set_num_threads(threads);
  if (!one.empty()) return run_one(one, one == "7b" ? 1 : steps);
  const double peak = measure_bf16_peak();
  std::printf("bf16 matmul peak (1024x2048x5632, %d threads): %.3f TFLOP/s\n", threads, peak / 1e12);
  double base_tps = 0;
  for (std::string w : {"base", "lora", "mola", "7b"}) {
    if (w == "7b" && skip7b) continue;
    std::string cmd = std::string(argv[0]) + " --one " + w + " --threads " + std::to_string(threads) + " --steps " +
                      std::to_string(steps) + " 2>&1";
    FILE* f = popen(cmd.c_str(), "r");
    char buf[4096];
    while (f && fgets(buf, sizeof buf, f)) {
      std::string line(buf);
      std::cout << line;
      auto pos = line.find("tokens_per_s=");
      auto fl = line.find("model_tflops=");
      if (line.rfind("RESULT", 0) == 0 && pos != std::string::npos && w != "7b") {
        double tps = std::atof(line.c_str() + pos + 13), tf = std::atof(line.c_str() + fl + 13);
        if (w == "base") base_tps = tps;
        std::printf("  %s: %.1f%% of base-only tokens/s, MFU %.1f%%\n", w.c_str(), base_tps > 0 ? 100 * tps / base_tps : 0.0,
                    100 * tf * 1e12 / peak);
      }
    }
    if (f) pclose(f);
  }
  return 0;
}
