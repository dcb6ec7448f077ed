// Training throughput, interleaved in rounds so the ratios hold on a shared machine: one training step
// (forward, loss, backward, gradient clipping, AdamW) of random LLaMA-shaped models with a base in the
// compute dtype (--dtype, default auto: bf16 where the CPU has AVX512-BF16, float32 elsewhere),
// hidden 2048, intermediate 5632, 32 heads, 4 kv heads, 6 layers, vocab 32000, 4 x 256 tokens:
//   base   frozen base only (layer 0's input norm trainable so backward runs through every layer),
//   lora   plain LoRA r=8 on all 7 modules (one expert), dropout 0.05,
//   mola   MoLA experts 2,2,4,4,6,8 top-2 r=8, dropout 0.05, balance loss (--obalance).
// The three models share one set of base weights. Each round runs one step of each (order rotated per
// round) after a warm-up round; it prints medians and per-round values of tokens/s, lora/base and
// mola/base, and MFU against that dtype's torch.mm 2048^3 peak measured at the start and end of the run.
//   7b     (own process, --one 7b): LLaMA-2-7B shapes, MoLA 2/4/6/8 experts per 8 layers, top-2,
//          1 x 256 tokens, --gradient_checkpointing optional: first and steady-state (step 2+) seconds
//          per step and peak RSS. Needs ~16-17 GB: check `free -g` first.
// Usage: bench_train [--threads 2] [--rounds 7] [--dtype auto]
//        bench_train --one 7b [--threads 2] [--steps 3] [--gradient_checkpointing] [--dtype auto]
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include "adapter.h"
#include "allocation.h"
#include "bench_common.h"
#include "cli.h"
#include "grad_checkpoint.h"
#include "llama.h"
#include "trainer.h"

using namespace mor;
using bench::Clock;
using bench::seconds_since;

namespace {

// Peak RSS in GB (10^9 bytes, the unit of issue 12's goal); ru_maxrss is in KiB. (Until 2026-12-03
// this printed GiB labelled GB.)
double peak_rss_gb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss * 1024.0 / 1e9;
}

ModelConfig small_cfg() {
  ModelConfig c = ModelConfig::llama(2048, 5632, 6, 32, 4, 32000);
  c.max_position_embeddings = 2048;
  return c;
}
ModelConfig llama7b_cfg() {
  ModelConfig c = ModelConfig::llama(4096, 11008, 32, 32, 32, 32000);
  c.max_position_embeddings = 4096;
  return c;
}

// A `dt` model whose base weights are `share`'s tensors (no copy), or freshly filled in place, one
// tensor at a time (no float32 copy), when `share` is null.
LlamaForCausalLM build(const ModelConfig& cfg, torch::Dtype dt, LlamaForCausalLM* share) {
  LlamaForCausalLM m(cfg, dt, torch::kCPU);
  torch::NoGradGuard ng;
  if (share) {
    auto src = (*share)->base_weights();
    auto dst = m->base_weights();
    for (size_t i = 0; i < dst.size(); ++i) dst[i].second.set_data(src[i].second);
    return m;
  }
  torch::manual_seed(0);
  for (auto& p : m->named_parameters()) {
    if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
    else p.value().normal_(0.0, 0.02);
  }
  return m;
}

// Matmul FLOPs of one step with a frozen base: forward 2·N·tok and the input-gradient backward
// 2·N·tok over the base projections and lm_head, plus attention scores/values (4·T·C per token per
// layer forward, twice that backward, causal half). Adapter FLOPs are not counted (they are overhead).
double step_flops(const ModelConfig& c, int64_t B, int64_t T) {
  const double C = c.hidden_size, F = c.intermediate_size, kv = C * c.n_head_kv / c.n_head;
  const double per_layer = C * C * 2 + C * kv * 2 + 3 * C * F;
  const double n = per_layer * c.n_layer + C * c.vocab_size;
  const double tok = static_cast<double>(B * T);
  return 4.0 * n * tok + 3.0 * 4.0 * T * C * tok * c.n_layer * 0.5;
}

// One configuration: its model, optimizer and the step.
struct Config {
  std::string name;
  LlamaForCausalLM model{nullptr};
  std::vector<torch::Tensor> params;
  std::unique_ptr<torch::optim::AdamW> opt;
  bool obalance = false, checkpointing = false;
};

void setup(Config& c, const ModelConfig& cfg, const std::string& experts) {
  const std::string targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
  if (c.name == "base") {
    for (auto& p : c.model->named_parameters())
      if (p.key() == "model.layers.0.input_layernorm.weight") {
        p.value().set_requires_grad(true);
        c.params.push_back(p.value());
      }
  } else {
    const bool lora = c.name == "lora";
    Allocation alloc = Allocation::from_flags(cfg, targets, lora ? "1" : experts, "8", lora ? "1" : "2", 16, 0.05);
    attach_adapters(c.model, alloc, 42);
    c.params = param_tensors(trainable_params(c.model));
    c.obalance = !lora;
  }
  c.opt = std::make_unique<torch::optim::AdamW>(c.params, torch::optim::AdamWOptions(3e-4).weight_decay(0.0));
  c.model->train();
}

// One optimizer step: the recipe's own train_step (src/trainer.h: collate, forward (optionally
// checkpointed), loss with the balance term, backward) on the rows of `ids`, then clip to norm 1, AdamW.
void bench_step(Config& c, const torch::Tensor& ids) {
  const int64_t B = ids.size(0), T = ids.size(1);
  auto host = ids.to(torch::kCPU).contiguous();
  std::vector<TokenizedExample> examples(B);
  std::vector<const TokenizedExample*> batch;
  for (int64_t b = 0; b < B; ++b) {
    examples[b].input_ids.assign(host[b].data_ptr<int64_t>(), host[b].data_ptr<int64_t>() + T);
    examples[b].labels = examples[b].input_ids;
    batch.push_back(&examples[b]);
  }
  TrainStepOptions so;
  so.obalance = c.obalance;
  so.gradient_checkpointing = c.checkpointing;
  train_step(c.model, batch, so);
  torch::nn::utils::clip_grad_norm_(c.params, 1.0);
  c.opt->step();
  c.opt->zero_grad();
}

int run_7b(int steps, bool checkpointing, torch::Dtype dt) {
  ModelConfig cfg = llama7b_cfg();
  auto t_build = Clock::now();
  Config c;
  c.name = "mola";
  c.model = build(cfg, dt, nullptr);
  std::string experts;
  for (int l = 0; l < 32; ++l) experts += (l ? "," : "") + std::to_string(2 + 2 * (l / 8));
  setup(c, cfg, experts);
  c.checkpointing = checkpointing;
  std::printf("7b: built in %.1f s, peak RSS so far %.2f GB\n", seconds_since(t_build), peak_rss_gb());
  auto ids = torch::randint(3, cfg.vocab_size, {1, 256}, torch::kInt64);
  auto mask = torch::ones({1, 256}, torch::kInt64);
  std::vector<double> secs;
  for (int i = 0; i < steps; ++i) {
    auto t = Clock::now();
    bench_step(c, ids);
    secs.push_back(seconds_since(t));
    std::printf("7b step %d: %.1f s, peak RSS %.2f GB\n", i + 1, secs.back(), peak_rss_gb());
    std::fflush(stdout);
  }
  std::vector<double> steady(secs.begin() + std::min<size_t>(1, secs.size()), secs.end());
  std::printf("RESULT 7b gradient_checkpointing=%d first_step_s=%.1f steady_step_s=%.1f peak_rss_gb=%.2f\n",
              checkpointing ? 1 : 0, secs.empty() ? 0.0 : secs[0], bench::median(steady), peak_rss_gb());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string one;
  int threads = 2, steps = 3, rounds = 7;
  bool checkpointing = false;
  std::string dtype = "auto";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--one" && i + 1 < argc) one = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--dtype" && i + 1 < argc) dtype = argv[++i];
    else if (a == "--gradient_checkpointing") checkpointing = true;
  }
  const torch::Dtype dt = parse_dtype(dtype, torch::kCPU);
  set_threads(threads);
  if (one == "7b") return run_7b(steps, checkpointing, dt);
  if (!one.empty()) throw std::runtime_error("--one: only 7b runs in its own process");

  const double peak0 = bench::mm_peak(2048, 2048, 2048, 7, dt);
  std::printf("bench_train: threads %d, %d rounds after a warm-up; %s mm 2048^3 peak at start %.1f GFLOP/s\n",
              torch::get_num_threads(), rounds, dtype_name(dt).c_str(), peak0 / 1e9);
  const ModelConfig cfg = small_cfg();
  const int64_t B = 4, T = 256;
  std::vector<Config> cs(3);
  cs[0].name = "base";
  cs[1].name = "lora";
  cs[2].name = "mola";
  cs[0].model = build(cfg, dt, nullptr);
  for (int i = 1; i < 3; ++i) cs[i].model = build(cfg, dt, &cs[0].model);
  for (auto& c : cs) setup(c, cfg, "2,2,4,4,6,8");
  torch::manual_seed(1);
  auto ids = torch::randint(3, cfg.vocab_size, {B, T}, torch::kInt64);
  auto mask = torch::ones({B, T}, torch::kInt64);
  const double flops = step_flops(cfg, B, T);

  std::map<std::string, std::vector<double>> s;
  for (int r = -1; r < rounds; ++r) {  // round -1 is the warm-up
    std::map<std::string, double> secs;
    for (int k = 0; k < 3; ++k) {
      Config& c = cs[(k + r + 1) % 3];  // rotated order
      torch::manual_seed(100 + r);
      auto t = Clock::now();
      bench_step(c, ids);
      secs[c.name] = seconds_since(t);
    }
    if (r < 0) continue;
    for (auto& c : cs) {
      s[c.name + " tokens/s"].push_back(B * T / secs[c.name]);
      s[c.name + " s/step"].push_back(secs[c.name]);
    }
    s["base MFU % of mm peak"].push_back(100.0 * flops / secs["base"] / peak0);
    s["lora / base tokens/s %"].push_back(100.0 * secs["base"] / secs["lora"]);
    s["mola / base tokens/s %"].push_back(100.0 * secs["base"] / secs["mola"]);
    std::printf("round %d: base %.2f s, lora %.2f s, mola %.2f s\n", r + 1, secs["base"], secs["lora"], secs["mola"]);
    std::fflush(stdout);
  }
  const double peak1 = bench::mm_peak(2048, 2048, 2048, 7, dt);
  std::printf("mm peak at end %.1f GFLOP/s (MFU uses the start figure); peak RSS %.2f GB\n", peak1 / 1e9, peak_rss_gb());
  std::printf("medians over %d rounds [per round]:\n", rounds);
  for (const auto& [k, v] : s) bench::print_row(k, v, "");
  return 0;
}
