// Tensor comparisons shared by the kernel tests (test_moe_lora, test_router, test_adapter_gemm,
// test_kernels): a max-abs difference, relative to the reference's own scale where it exceeds 1; and
// whether LibTorch's own bf16 GEMM, which the references run, sums in float32 on this CPU.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "torch_api.h"

namespace mor::test {

inline double max_abs(const torch::Tensor& a) { return a.abs().max().item<double>(); }
inline double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// |a - b| <= tol * max(1, max |b|) everywhere, with a and b of the same shape.
inline void expect_close(const torch::Tensor& a, const torch::Tensor& b, const std::string& what, double tol = 1e-5) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  double scale = std::max(1.0, max_abs(b));
  EXPECT_LE(max_diff(a, b), tol * scale) << what << " (max |ref| " << max_abs(b) << ")";
}

// LibTorch 1.13's CPU bf16 GEMM sums in float32 where oneDNN's AVX-512 kernels take it. On a CPU
// without them (an AVX2 machine) its fallback rounds every partial sum to bf16 when the second
// operand is a contiguous [K, N] (a transposed one still sums in float32): 1 + 256 * 2^-8 gives 1,
// not 2. A reference run through such GEMMs is less exact than the kernels it checks, so the bf16
// tests compare both with float64 there instead of with each other.
inline bool bf16_mm_sums_in_float32() {
  static const bool yes = [] {
    auto x = torch::full({1, 257}, 1.0 / 256).to(torch::kBFloat16);
    x[0][0] = 1.0;
    auto y = torch::mm(x, torch::ones({257, 4}).to(torch::kBFloat16));
    return y[0][0].item<float>() == 2.0f;
  }();
  return yes;
}

}  // namespace mor::test
