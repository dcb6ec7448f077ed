// The element kernels of kernels_elem.h against the LibTorch ops they replace, interleaved in rounds:
// SwiGLU forward and backward on the training shape's [4*256, 5632] bf16, and the dropout's scaled
// copy (p 0.05) on [1024, 2048]; RoPE and RMSNorm on bench_eval's prefill shape (q [8, 200, 16, 64],
// hidden [1600, 1024]) against the op sequences of llama.h; the decode attention read in place from a
// KV cache (kernels.h's attention_cached) against the matmul -> attention_probs -> matmul it
// replaces, at B = 1 and 8 on bench_eval's shape (16 heads of 64, 210 of 264 cache positions; one
// layer, 8 calls a timing).
// Prints medians in ms, G elements/s and the op/kernel ratio per round, beside the read bandwidth
// measured in the same run.
// Usage: bench_elem [--threads 2] [--rounds 9]
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>

#include "bench_common.h"
#include "kernels.h"
#include "kernels_elem.h"
#include "llama.h"
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
  // Decode attention: q [B, 16, 1, 64] against the first 210 positions of a [B, 16, 264, 64] cache.
  struct Cache {
    torch::Tensor q, k, v, mask;
  };
  auto cache_of = [](int64_t B) {
    auto kc = torch::randn({B, 16, 264, 64}).to(torch::kBFloat16), vc = torch::randn({B, 16, 264, 64}).to(torch::kBFloat16);
    auto mask = torch::zeros({B, 1, 1, 210}, torch::kBool);
    mask.narrow(-1, 0, 7).fill_(true);  // left padding, as a batch of uneven prompts has
    return Cache{torch::randn({B, 1, 16, 64}).to(torch::kBFloat16).transpose(1, 2), kc.narrow(2, 0, 210),
                 vc.narrow(2, 0, 210), mask};
  };
  const Cache c1 = cache_of(1), c8 = cache_of(8);
  // bench_eval's prefill: q of 8 x 200 tokens, 16 heads of 64, and its [1600, 1024] hidden rows.
  auto rq = torch::randn({8, 200, 16, 64}).to(torch::kBFloat16);
  auto rc = torch::randn({8, 200, 64}).to(torch::kBFloat16), rs = torch::randn({8, 200, 64}).to(torch::kBFloat16);
  auto hx = torch::randn({1600, 1024}).to(torch::kBFloat16), hw = torch::randn({1024}).to(torch::kBFloat16);
  auto attn_ops = [](const Cache& c) {  // llama.cpp's general path
    for (int i = 0; i < 8; ++i) {
      auto p = mor::attention_probs(torch::matmul(c.q, c.k.transpose(2, 3)), c.mask, 8.0);
      (void)torch::matmul(p, c.v);
    }
  };
  auto attn_kernel = [](const Cache& c) {
    for (int i = 0; i < 8; ++i) (void)mor::attention_cached(c.q, c.k, c.v, c.mask, 8.0);
  };
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
      {"rope prefill q", rq.numel(), [&] { mor::apply_rope(rq, rc, rs); }, [&] { mor::apply_rope_fused(rq, rc, rs); }},
      {"rms_norm prefill", hx.numel(), [&] { mor::rms_norm_reference(hx, hw, 1e-5); },
       [&] { mor::rms_norm_fused(hx, hw, 1e-5); }},
      {"decode attention B=1", c1.k.numel() * 2, [&] { attn_ops(c1); }, [&] { attn_kernel(c1); }},
      {"decode attention B=8", c8.k.numel() * 2, [&] { attn_ops(c8); }, [&] { attn_kernel(c8); }},
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
