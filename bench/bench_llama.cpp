// Prefill and decode timing of a LLaMA-shaped random model (hidden 1024, 8 layers, 16 heads, 4 kv heads,
// vocab 32000) in float32 and bfloat16, beside the machine's measured matmul peak (same dtype and threads)
// and memory bandwidth: prefill as a fraction of peak FLOP/s, decode as weight bytes read per second.
// Also a MoLA-like mixed workload (bf16 base matmul + float32 low-rank adapter matmuls) used to choose
// the BLAS build. Usage: bench_llama [--threads 2] [--dtype float32,bfloat16] [--quick] [--kernels]
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "cli.h"
#include "generate.h"
#include "llama.h"

using namespace mor;
using Clock = std::chrono::steady_clock;

static double seconds_of(const std::function<void()>& f, int reps) {
  f();  // warm-up
  auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double>(Clock::now() - t0).count() / reps;
}

// Best GFLOP/s of dense matmuls shaped like the model's projections.
static double matmul_peak(torch::Dtype dt) {
  double best = 0;
  for (auto [M, K, N] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{512, 1024, 2816}, {1024, 1024, 1024}, {512, 2816, 1024}}) {
    auto a = torch::randn({M, K}).to(dt), b = torch::randn({N, K}).to(dt);
    double s = seconds_of([&] { torch::matmul(a, b.t()); }, 5);
    best = std::max(best, 2.0 * M * K * N / s / 1e9);
  }
  return best;
}

// Read bandwidth (GB/s): summing a 512 MiB buffer.
static double memory_bandwidth() {
  auto t = torch::ones({128 * 1024 * 1024}, torch::kFloat32);
  double s = seconds_of([&] { t.sum(); }, 5);
  return t.numel() * 4.0 / s / 1e9;
}

int main(int argc, char** argv) {
  int threads = 2;
  std::string dtypes = "float32,bfloat16";
  bool quick = false, kernels_only = false;  // --kernels: matmul peak + MoLA-like step only (BLAS choice)
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--dtype" && i + 1 < argc) dtypes = argv[++i];
    else if (a == "--quick") quick = true;
    else if (a == "--kernels") kernels_only = true;
  }
  set_threads(threads);
  torch::NoGradGuard ng;
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  std::cout << "threads " << torch::get_num_threads() << ", OPENBLAS_CORETYPE=" << (ct ? ct : "(unset)")
            << ", OMP_WAIT_POLICY=" << (std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(unset)") << "\n";
  const double bw = memory_bandwidth();
  std::cout << "memory read bandwidth: " << bw << " GB/s\n";

  ModelConfig cfg = ModelConfig::llama(1024, 2816, 8, 16, 4, 32000);
  const int64_t C = cfg.hidden_size, F = cfg.intermediate_size, L = cfg.n_layer;
  const int64_t kv = cfg.n_head_kv * cfg.head_dim();
  const double layer_params = C * C * 2.0 + C * kv * 2.0 + 3.0 * C * F;  // q,o + k,v + mlp
  const double head_params = double(C) * cfg.vocab_size;

  std::stringstream ss(dtypes);
  for (std::string name; std::getline(ss, name, ',');) {
    const torch::Dtype dt = parse_dtype(name, torch::kCPU);
    const double peak = matmul_peak(dt);
    std::cout << "\n== " << name << ": matmul peak " << peak << " GFLOP/s\n";

    // MoLA-like layer step: bf16/f32 base [256 x 4096] x [4096 x 4096] plus float32 adapters
    // (8 experts x rank 8 stacked: [256 x 4096] x [4096 x 64], then x [64 x 4096]).
    {
      auto x = torch::randn({256, 4096}).to(dt), w = (torch::randn({4096, 4096}) * 0.02).to(dt);
      auto xf = torch::randn({256, 4096}), A = torch::randn({64, 4096}), B = torch::randn({4096, 64});
      double s = seconds_of([&] {
        auto y = torch::matmul(x, w.t());
        auto h = torch::matmul(xf, A.t());
        y.add_(torch::matmul(h, B.t()).to(dt));
      }, quick ? 3 : 10);
      std::cout << "mola-like layer (base " << name << " + f32 adapters): " << s * 1e3 << " ms\n";
    }

    if (kernels_only) continue;
    auto m = random_llama(cfg, 1, dt, torch::kCPU);
    m->eval();
    for (int64_t B : {1, 8}) {
      const int64_t T = B == 1 ? 256 : 128;
      auto ids = torch::randint(3, cfg.vocab_size, {B, T}, torch::kLong);
      ForwardArgs a;
      a.input_ids = ids;
      a.last_only = true;
      double s = seconds_of([&] { m->forward(a); }, quick ? 1 : 3);
      const double flops = 2.0 * B * T * layer_params * L + 4.0 * B * T * T * C * L + 2.0 * B * head_params;
      std::cout << "prefill B=" << B << " T=" << T << ": " << s * 1e3 << " ms, " << B * T / s << " tok/s, "
                << flops / s / 1e9 << " GFLOP/s = " << 100.0 * flops / s / 1e9 / peak << "% of peak\n";
    }
    for (int64_t B : {1, 8}) {
      const int64_t P = 64, steps = quick ? 8 : 32;
      auto ids = torch::randint(3, cfg.vocab_size, {B, P}, torch::kLong);
      GenState st = prefill(m, ids, torch::ones({B, P}, torch::kLong), P + steps + 1);
      auto next = st.logits.argmax(-1);
      auto t0 = Clock::now();
      for (int64_t i = 0; i < steps; ++i) next = decode_one(m, st, next).argmax(-1);
      const double s = std::chrono::duration<double>(Clock::now() - t0).count() / steps;
      const double bytes = (layer_params * L + head_params) * torch::elementSize(dt);
      std::cout << "decode B=" << B << ": " << s * 1e3 << " ms/step, " << B / s << " tok/s, weights " << bytes / s / 1e9
                << " GB/s = " << 100.0 * bytes / s / 1e9 / bw << "% of bandwidth\n";
    }
  }
  return 0;
}
