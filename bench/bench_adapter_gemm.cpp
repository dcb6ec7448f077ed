// The adapter input GEMM's dropout cost, forward+backward, one target module in the compute dtype
// (bf16 where the CPU has AVX512-BF16, float32 elsewhere, as `--dtype auto`): the base GEMM
// alone, adapter_input_gemm without a draw, with a p=0.05 draw as a sparse correction, and the dense
// formulation it replaced (a masked copy of x, then separate GEMMs for the router and A). Prints
// medians over interleaved rounds and each variant's time over the base GEMM; not pass/fail.
// Usage: bench_adapter_gemm [threads=2] [rounds=7] [dtype=auto|bf16|float32]
#include "torch_api.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "adapter_gemm.h"
#include "kernels_elem.h"
#include "runtime.h"

using namespace mor;

namespace {

enum class Variant { Base, NoDraw, Sparse, Dense };
const char* kNames[] = {"base GEMM only", "adapter, no draw", "adapter, sparse drop", "adapter, dense drop"};

struct Shape {
  int64_t N, I, O, n_plain, R;
};

// One forward+backward of the variant; returns milliseconds.
double run(Variant v, const Shape& s, const torch::Tensor& x0, const torch::Tensor& W, const torch::Tensor& wc0,
           const torch::Tensor& gy, const torch::Tensor& gh) {
  auto t0 = std::chrono::steady_clock::now();
  auto x = x0.clone().requires_grad_(true);
  auto wc = wc0.clone().requires_grad_(true);
  if (v == Variant::Base) {
    torch::mm(x, W.t()).backward(gy);
  } else {
    auto drop = v == Variant::NoDraw ? DropoutDraw{} : draw_dropout(x0, 0.05);
    torch::Tensor y0, h;
    if (v == Variant::Dense) {
      auto xd = scaled_dropout(x, drop.zero_index, drop.scale);
      y0 = torch::mm(x, W.t());
      h = torch::cat({torch::mm(x, wc.narrow(0, 0, s.n_plain).t()), torch::mm(xd, wc.narrow(0, s.n_plain, s.R).t())},
                     1);
    } else {
      std::tie(y0, h) = adapter_input_gemm(x, W, wc, s.n_plain, drop);
    }
    torch::autograd::backward({y0, h}, {gy, gh});
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  const torch::Dtype dt = parse_dtype(argc > 3 ? argv[3] : "auto", torch::kCPU);
  set_threads(threads);  // and the allocator tuning mor runs with
  torch::manual_seed(0);
  // q_proj-like and down_proj-like modules at hidden 2048 (bench_train's shape), 4x256 tokens, for
  // plain LoRA r8 (no router) and an 8-expert r8 MoLA layer (router 8 rows, A 64 rows).
  std::vector<Shape> shapes = {{1024, 2048, 2048, 0, 8}, {1024, 2048, 2048, 8, 64}, {1024, 5632, 2048, 8, 64}};
  std::printf("adapter input GEMM, forward+backward, %s, %d threads, median of %d rounds\n", dtype_name(dt).c_str(),
              threads, rounds);
  for (const auto& s : shapes) {
    auto opt = torch::TensorOptions().dtype(dt);
    auto x0 = torch::randn({s.N, s.I}).to(dt);
    auto W = (torch::randn({s.O, s.I}) * 0.02).to(dt);
    auto wc0 = (torch::randn({s.n_plain + s.R, s.I}) * 0.02).to(dt);
    auto gy = torch::randn({s.N, s.O}, opt), gh = torch::randn({s.N, s.n_plain + s.R}, opt);
    std::vector<std::vector<double>> ms(4);
    for (int r = 0; r <= rounds; ++r)
      for (int v = 0; v < 4; ++v) {
        double t = run(Variant(v), s, x0, W, wc0, gy, gh);
        if (r > 0) ms[v].push_back(t);  // round 0 warms up
      }
    std::printf("N %lld, in %lld, out %lld, router %lld + A %lld rows:\n", (long long)s.N, (long long)s.I,
                (long long)s.O, (long long)s.n_plain, (long long)s.R);
    const double base = median(ms[0]);
    for (int v = 0; v < 4; ++v) {
      const double m = median(ms[v]);
      std::printf("  %-22s %8.2f ms  (+%.2f ms over base, x%.3f)\n", kNames[v], m, m - base, m / base);
    }
  }
  return 0;
}
