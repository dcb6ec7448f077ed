// Evaluation throughput, interleaved in rounds so the ratios hold on a shared machine: prefill and
// KV-cache decode of a LLaMA-shaped random model (hidden 1024, intermediate 2816, 8 layers, 16 heads,
// 4 kv heads, vocab 32000, bf16 where the CPU has it) with 200-token prompts and 64 new tokens (no EOS
// stop), B = 1 and 8, without adapters and with MoLA experts 2,2,4,4,6,6,8,8 (top-2, rank 8) on all 7
// modules; and ScienceQA-shaped evaluation (8 prompts of 150-250 tokens, 16 new tokens) at batch 8 vs
// batch 1. Beside the bf16 matmul peak at the prefill shape (start and end of the run, the higher
// one used) and the read bandwidth (a 512 MiB sum at the start and after each round, the best one
// used) it prints: prefill % of peak, decode weight-read bandwidth % of the
// measured one (the best, and paired: each round against the reading taken right after it), decode B=8 / B=1 step ratio, adapter overhead % and eval examples/s batch 8 / batch 1,
// each as a median over rounds with the per-round values.
// --modes ops,fused runs every configuration twice per round, with the fused kernels of kernels.h off
// (the op-by-op path) and on, and prints the fused/ops speed-up per round: before/after in one run.
// Usage: bench_eval [--threads 2] [--rounds 7] [--prompt_len 200] [--new_tokens 64] [--sqa_examples 8]
//                   [--modes fused]
#include <cstdlib>
#include <iostream>
#include <map>
#include <random>

#include "adapter.h"
#include "allocation.h"
#include "bench_common.h"
#include "cli.h"
#include "generate.h"
#include "kernels.h"
#include "llama.h"

using namespace mor;
using bench::Clock;
using bench::seconds_since;

namespace {

struct GenTimes {
  double prefill_s = 0, decode_step_s = 0;
};

// Prefill once, then greedy decode until new_tokens tokens exist (the first comes from the prefill).
GenTimes time_generation(LlamaForCausalLM& m, const torch::Tensor& ids, const torch::Tensor& mask, int64_t new_tokens) {
  torch::NoGradGuard ng;
  GenTimes r;
  auto t = Clock::now();
  GenState st = prefill(m, ids, mask, ids.size(1) + new_tokens);
  auto next = st.logits.argmax(-1);
  r.prefill_s = seconds_since(t);
  t = Clock::now();
  for (int64_t i = 1; i < new_tokens; ++i) next = decode_one(m, st, next).argmax(-1);
  r.decode_step_s = seconds_since(t) / std::max<int64_t>(1, new_tokens - 1);
  return r;
}

std::vector<int64_t> random_prompt(std::mt19937_64& rng, int64_t len) {
  std::vector<int64_t> p{1};
  for (int64_t t = 1; t < len; ++t) p.push_back(3 + static_cast<int64_t>(rng() % 31990));
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 7;
  int64_t prompt_len = 200, new_tokens = 64, sqa_examples = 8;
  std::string modes_flag = "fused";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--rounds") rounds = std::atoi(argv[i + 1]);
    else if (a == "--prompt_len") prompt_len = std::atoll(argv[i + 1]);
    else if (a == "--new_tokens") new_tokens = std::atoll(argv[i + 1]);
    else if (a == "--sqa_examples") sqa_examples = std::atoll(argv[i + 1]);
    else if (a == "--modes") modes_flag = argv[i + 1];
  }
  set_threads(threads);
  torch::NoGradGuard ng;
  ModelConfig cfg = ModelConfig::llama(1024, 2816, 8, 16, 4, 32000);
  const torch::Dtype dt = parse_dtype("auto", torch::kCPU);
  const int64_t C = cfg.hidden_size, F = cfg.intermediate_size, L = cfg.n_layer, kvd = cfg.n_head_kv * cfg.head_dim();
  const double layer_params = C * C * 2.0 + C * kvd * 2.0 + 3.0 * C * F;
  const double head_params = double(C) * cfg.vocab_size;
  std::printf("bench_eval: threads %d, dtype %s, %d rounds after a warm-up, prompts %lld tokens, %lld new tokens\n",
              torch::get_num_threads(), torch::toString(dt), rounds, (long long)prompt_len, (long long)new_tokens);

  const double peak0 = bench::mm_peak(8 * prompt_len, C, F, 7, dt);
  double bw = bench::read_bandwidth();  // the best of this and one reading per round
  std::printf("mm peak at start ([%lld x %lld] x [%lld x %lld] %s): %.1f GFLOP/s; read bandwidth %.1f GB/s\n",
              (long long)(8 * prompt_len), (long long)C, (long long)C, (long long)F, torch::toString(dt), peak0 / 1e9,
              bw / 1e9);

  auto base = random_llama(cfg, 1, dt, torch::kCPU);
  auto mola = random_llama(cfg, 1, dt, torch::kCPU);
  {
    auto alloc = Allocation::from_flags(cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                        "2,2,4,4,6,6,8,8", "8", "2", 16.0, 0.05);
    attach_adapters(mola, alloc, 1);
    for (auto& [name, p] : trainable_params(mola))
      if (name.find("lora_B") != std::string::npos) p.detach().normal_(0.0, 0.01);  // adapters that change the output
  }
  base->eval();
  mola->eval();

  std::mt19937_64 rng(7);
  std::map<int64_t, std::pair<torch::Tensor, torch::Tensor>> batches;  // B -> (ids, mask), all prompts prompt_len long
  for (int64_t B : {1, 8}) {
    std::vector<std::vector<int64_t>> ps;
    for (int64_t b = 0; b < B; ++b) ps.push_back(random_prompt(rng, prompt_len));
    batches[B] = left_pad(ps, 0);
  }
  std::vector<std::vector<int64_t>> sqa;  // ScienceQA-shaped: 150-250 tokens
  for (int64_t i = 0; i < sqa_examples; ++i) sqa.push_back(random_prompt(rng, 150 + static_cast<int64_t>(rng() % 101)));
  GenerateOptions so;
  so.max_new_tokens = 16;
  so.stop_ids = {-1};

  // Per-round series; the achieved FLOP/s and bytes/s become percentages at the end.
  std::map<std::string, std::vector<double>> s, mm_rate, read_rate;
  std::vector<double> round_bw;  // the bandwidth read right after each round (the paired yardstick)
  auto sqa_rate = [&](int64_t bs) {
    auto t = Clock::now();
    for (int64_t i = 0; i < sqa_examples; i += bs) {
      std::vector<std::vector<int64_t>> b(sqa.begin() + i, sqa.begin() + std::min(sqa_examples, i + bs));
      generate(mola, b, so);
    }
    return sqa_examples / seconds_since(t);
  };
  std::vector<std::string> modes;
  for (std::string m : {"ops", "fused"})
    if (modes_flag.find(m) != std::string::npos) modes.push_back(m);
  if (modes.empty()) throw std::runtime_error("--modes: ops and/or fused");
  for (int r = -1; r < rounds; ++r) {  // round -1 is the warm-up
    std::map<std::string, GenTimes> g;
    std::map<std::string, double> sqa_rates;
    // Rotate the order each round so no configuration always runs first.
    std::vector<std::string> order;
    for (const auto& md : modes)
      for (std::string c : {"base1", "mola1", "base8", "mola8", "sqa1", "sqa8"}) order.push_back(md + ":" + c);
    std::rotate(order.begin(), order.begin() + ((r + 1) % order.size()), order.end());
    for (const auto& mc : order) {
      const std::string md = mc.substr(0, mc.find(':')), c = mc.substr(mc.find(':') + 1);
      set_fused_enabled(md == "fused");
      if (c == "sqa1") sqa_rates[md + "1"] = sqa_rate(1);
      else if (c == "sqa8") sqa_rates[md + "8"] = sqa_rate(8);
      else {
        const int64_t B = c.back() - '0';
        auto& [ids, mask] = batches[B];
        g[md + ":" + c] = time_generation(c.rfind("base", 0) == 0 ? base : mola, ids, mask, new_tokens);
      }
    }
    if (r < 0) continue;
    round_bw.push_back(bench::read_bandwidth(3));
    bw = std::max(bw, round_bw.back());
    for (const auto& md : modes) {
      const std::string pre = modes.size() > 1 ? "[" + md + "] " : "";
      for (int64_t B : {1, 8}) {
        const std::string b = std::to_string(B);
        const double T = prompt_len, S = prompt_len;
        const double flops = 2.0 * B * T * layer_params * L + 4.0 * B * T * S * C * L + 2.0 * B * head_params;
        const double S_dec = prompt_len + new_tokens / 2.0;  // mean keys per decode step
        const double bytes = (layer_params * L + head_params) * torch::elementSize(dt) +
                             2.0 * L * B * S_dec * kvd * torch::elementSize(dt);
        for (std::string k : {"base", "mola"}) {
          const auto& x = g[md + ":" + k + b];
          s[pre + "prefill B=" + b + " " + k + " ms"].push_back(x.prefill_s * 1e3);
          s[pre + "prefill B=" + b + " " + k + " tok/s"].push_back(B * T / x.prefill_s);
          mm_rate[pre + "prefill B=" + b + " " + k + " % of mm peak"].push_back(flops / x.prefill_s);
          s[pre + "decode B=" + b + " " + k + " ms/step"].push_back(x.decode_step_s * 1e3);
          read_rate[pre + "decode B=" + b + " " + k + " weight read % of bw"].push_back(bytes / x.decode_step_s);
        }
        s[pre + "adapter overhead prefill B=" + b + " %"].push_back(
            100.0 * (g[md + ":mola" + b].prefill_s / g[md + ":base" + b].prefill_s - 1));
        s[pre + "adapter overhead decode B=" + b + " %"].push_back(
            100.0 * (g[md + ":mola" + b].decode_step_s / g[md + ":base" + b].decode_step_s - 1));
      }
      for (std::string k : {"base", "mola"})
        s[pre + "decode step B=8 / B=1 " + k].push_back(g[md + ":" + k + "8"].decode_step_s / g[md + ":" + k + "1"].decode_step_s);
      s[pre + "sqa (MoLA) examples/s batch 1"].push_back(sqa_rates[md + "1"]);
      s[pre + "sqa (MoLA) examples/s batch 8"].push_back(sqa_rates[md + "8"]);
      s[pre + "sqa (MoLA) batch 8 / batch 1"].push_back(sqa_rates[md + "8"] / sqa_rates[md + "1"]);
    }
    if (modes.size() > 1) {
      for (std::string k : {"base", "mola"})
        for (std::string b : {"1", "8"}) {
          s["speed-up fused/ops prefill B=" + b + " " + k].push_back(g["ops:" + k + b].prefill_s / g["fused:" + k + b].prefill_s);
          s["speed-up fused/ops decode B=" + b + " " + k].push_back(g["ops:" + k + b].decode_step_s /
                                                                    g["fused:" + k + b].decode_step_s);
        }
      s["speed-up fused/ops sqa batch 8"].push_back(sqa_rates["fused8"] / sqa_rates["ops8"]);
    }
    const std::string m0 = modes.back();
    std::printf("round %d: %s prefill B=8 base %.0f ms, decode B=1 base %.1f ms, mola/base decode B=1 %.2f\n", r + 1,
                m0.c_str(), g[m0 + ":base8"].prefill_s * 1e3, g[m0 + ":base1"].decode_step_s * 1e3,
                g[m0 + ":mola1"].decode_step_s / g[m0 + ":base1"].decode_step_s);
    std::fflush(stdout);
  }
  set_fused_enabled(true);
  const double peak1 = bench::mm_peak(8 * prompt_len, C, F, 7, dt), peak = std::max(peak0, peak1);
  std::printf("mm peak at end: %.1f GFLOP/s (start %.1f); best read bandwidth over the run %.1f GB/s; percentages "
              "use the higher peak and the best bandwidth, since load only lowers a reading\n",
              peak1 / 1e9, peak0 / 1e9, bw / 1e9);
  for (auto& [k, v] : mm_rate)
    for (double x : v) s[k].push_back(100.0 * x / peak);
  for (auto& [k, v] : read_rate)
    for (size_t i = 0; i < v.size(); ++i) {
      s[k].push_back(100.0 * v[i] / bw);
      s[k + " (round's own)"].push_back(100.0 * v[i] / round_bw[i]);
    }
  s["read bandwidth after each round GB/s"] = round_bw;
  for (double& x : s["read bandwidth after each round GB/s"]) x /= 1e9;
  std::printf("medians over %d rounds [per round]:\n", rounds);
  for (const auto& [k, v] : s) bench::print_row(k, v, "");
  return 0;
}
