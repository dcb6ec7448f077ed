// Shared measuring pieces of the benchmarks: the machine's bf16 matmul peak and read bandwidth
// measured in the same run, medians, and a round-robin timer. The machine is shared and noisy, so
// every figure a benchmark prints is a ratio to a peak measured in the same process, and
// configurations are interleaved in rounds (medians over rounds, ratio per round).
#pragma once
#include "torch_api.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Best FLOP/s of `reps` runs of a `dt` [M, K] x [K, N] product (the weight stored [N, K] and used
// transposed, as the projections do).
inline double mm_peak(int64_t M, int64_t K, int64_t N, int reps = 7, torch::Dtype dt = torch::kBFloat16) {
  torch::NoGradGuard ng;
  auto a = torch::randn({M, K}).to(dt), w = torch::randn({N, K}).to(dt);
  torch::mm(a, w.t());
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    auto t = Clock::now();
    torch::mm(a, w.t());
    best = std::max(best, 2.0 * M * K * N / seconds_since(t));
  }
  return best;
}

// Best read bandwidth (bytes/s) of summing a 512 MiB float32 tensor.
inline double read_bandwidth(int reps = 5) {
  torch::NoGradGuard ng;
  auto t = torch::ones({128 * 1024 * 1024}, torch::kFloat32);
  t.sum();
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    auto c = Clock::now();
    t.sum();
    best = std::max(best, t.numel() * 4.0 / seconds_since(c));
  }
  return best;
}

// One printed row: name, median, and the per-round values.
inline void print_row(const std::string& name, const std::vector<double>& v, const char* unit, double scale = 1.0) {
  std::printf("  %-40s median %9.2f %s  [", name.c_str(), median(v) * scale, unit);
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%.2f", i ? " " : "", v[i] * scale);
  std::printf("]\n");
}

}  // namespace bench
