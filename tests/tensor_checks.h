// Tensor comparisons shared by the MoLA kernel tests (test_moe_lora, test_router): a max-abs
// difference, relative to the reference's own scale where it exceeds 1.
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

}  // namespace mor::test
