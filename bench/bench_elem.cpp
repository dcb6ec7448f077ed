// The element kernels of kernels_elem.h against the LibTorch ops they replace, interleaved in rounds:
// SwiGLU forward and backward on the training shape's [4*256, 5632] bf16, and the dropout's scaled
// copy (p 0.05) on [1024, 2048]. Prints medians in ms, G elements/s and the op/kernel ratio per round,
// beside the read bandwidth measured in the same run.
// Usage: bench_elem [--threads 2] [--rounds 9]
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>

#include "bench_common.h"
#include "kernels_elem.h"
#include "runtime.h"

using bench::Clock;
using bench::seconds_since;

namespace {

double time_ms(const std::function<void()>& f) {
  auto t = Clock::now();
  f();
  return seconds_since(t) * 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 9;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
  }
  mor::set_threads(threads);  // also the allocator settings mor runs with (runtime.h)
  torch::NoGradGuard ng;
  torch::manual_seed(0);
  auto g = (torch::randn({1024, 5632}) * 2).to(torch::kBFloat16), u = torch::randn({1024, 5632}).to(torch::kBFloat16);
  auto d = (torch::randn({1024, 5632}) * 1e-3).to(torch::kBFloat16);
  auto x = torch::randn({1024, 2048}).to(torch::kBFloat16);
  auto idx = torch::randint(x.numel(), {int64_t(x.numel() * 0.0513)}, torch::kInt64);
  const double bw = bench::read_bandwidth();
  std::printf("bench_elem: threads %d, %d rounds; read bandwidth %.1f GB/s\n", torch::get_num_threads(), rounds, bw / 1e9);
  struct Case {
    const char* name;
    int64_t n;
    std::function<void()> op, kernel;
  };
  std::vector<Case> cases = {
      {"swiglu forward", g.numel(), [&] { (torch::silu(g) * u); }, [&] { mor::silu_mul_bf16(g, u); }},
      {"swiglu backward", g.numel(),
       [&] {
         auto dg = torch::silu_backward(d * u, g);
         (void)dg;
         auto du = d * torch::silu(g);
         (void)du;
       },
       [&] { mor::silu_mul_backward_bf16(d, g, u); }},
      {"dropout p=0.05", x.numel(), [&] { mor::scaled_dropout_reference(x, idx, 1 / 0.95); },
       [&] { mor::scaled_dropout(x, idx, 1 / 0.95); }},
  };
  for (auto& c : cases) {
    std::vector<double> op, ker, ratio;
    for (int r = -1; r < rounds; ++r) {
      const double a = time_ms(c.op), b = time_ms(c.kernel);
      if (r < 0) continue;
      op.push_back(a);
      ker.push_back(b);
      ratio.push_back(a / b);
    }
    std::printf("%s (%lld elements):\n", c.name, (long long)c.n);
    bench::print_row("LibTorch ops, ms", op, "ms");
    bench::print_row("kernel, ms", ker, "ms");
    bench::print_row("ops / kernel", ratio, "x");
    std::printf("  kernel %.2f G elements/s, ops %.2f G elements/s\n", c.n / bench::median(ker) / 1e6,
                c.n / bench::median(op) / 1e6);
  }
  return 0;
}
