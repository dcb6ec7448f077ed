// The element kernels of src/kernels_elem.h against the LibTorch op sequences they replace, bit for
// bit: silu(g) * u and its autograd gradients over every bf16 value of g (NaN, infinities,
// subnormals), odd sizes, views; the dropout's scaled copy forward and backward against the mask
// tensor's mul, in bf16 and float32, with signed zeros, NaN and repeated indexes.
#include <gtest/gtest.h>

#include <numeric>

#include "helpers.h"
#include "kernels.h"
#include "kernels_elem.h"

using namespace mor;

namespace {

// Bitwise equality (NaN payloads included), and the number of differing elements for the message.
int64_t bit_mismatches(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.scalar_type(), b.scalar_type());
  EXPECT_EQ(a.sizes(), b.sizes());
  const auto it = a.element_size() == 2 ? torch::kInt16 : torch::kInt32;
  return (a.contiguous().view(it) != b.contiguous().view(it)).sum().item<int64_t>();
}

// Bitwise except that a NaN matches any NaN: LibTorch 1.13's vectorised bf16 ops write every NaN
// as 0xFFFF, the kernels keep the input NaN's sign and payload.
int64_t mismatches_but_nan(const torch::Tensor& a, const torch::Tensor& b) {
  auto nan_a = torch::isnan(a), nan_b = torch::isnan(b);
  EXPECT_TRUE(torch::equal(nan_a, nan_b));
  auto keep = ~nan_b;
  return bit_mismatches(a.masked_select(keep), b.masked_select(keep));
}

// Every bf16 bit pattern once, in a shuffled order, then `extra` random normals times 3.
torch::Tensor every_bf16(int64_t extra, uint64_t seed) {
  std::vector<int16_t> bits(65536);
  std::iota(bits.begin(), bits.end(), int16_t(-32768));
  auto all = torch::from_blob(bits.data(), {65536}, torch::kInt16).clone().view(torch::kBFloat16);
  torch::manual_seed(seed);
  all = all.index_select(0, torch::randperm(65536));
  return torch::cat({all, (torch::randn({extra}) * 3).to(torch::kBFloat16)});
}

}  // namespace

TEST(KernelsElem, SiluMulEqualsLibTorchOverEveryBf16Value) {
  torch::NoGradGuard ng;
  auto g = every_bf16(4096, 1);
  auto u = torch::randn({g.numel()}).to(torch::kBFloat16);
  EXPECT_EQ(bit_mismatches(silu_mul_bf16(g, u), torch::silu(g) * u), 0);
  EXPECT_EQ(bit_mismatches(silu_mul(g, u), torch::silu(g) * u), 0) << "silu_mul takes the table path for bf16";
  // a view with an offset and a stride, shape [7, 1000]: made contiguous first
  auto g2 = g.narrow(0, 3, 14000).view({7, 2000}).narrow(1, 0, 1000);
  auto u2 = u.narrow(0, 5, 7000).view({7, 1000});
  auto want = torch::silu(g2) * u2;
  auto got = silu_mul_bf16(g2, u2);
  EXPECT_EQ(got.sizes(), want.sizes());
  EXPECT_EQ(bit_mismatches(got, want), 0);
  EXPECT_THROW(silu_mul_bf16(g2, u2.to(torch::kFloat32)), std::runtime_error);
  EXPECT_THROW(silu_mul_bf16(g2, u), std::runtime_error);
}

TEST(KernelsElem, SiluMulBackwardEqualsAutogradOverEveryBf16Value) {
  auto g0 = every_bf16(999, 2);
  const int64_t n = g0.numel();
  torch::manual_seed(3);
  auto u0 = torch::randn({n}).to(torch::kBFloat16), d = (torch::randn({n}) * 0.01).to(torch::kBFloat16);
  auto g = g0.clone().requires_grad_(true), u = u0.clone().requires_grad_(true);
  (torch::silu(g) * u).backward(d);
  auto [dg, du] = silu_mul_backward_bf16(d, g0, u0);
  EXPECT_EQ(bit_mismatches(du, u.grad()), 0);
  EXPECT_EQ(mismatches_but_nan(dg, g.grad()), 0);

  // Through the training autograd function: the same gradients.
  auto ga = g0.clone().requires_grad_(true), ua = u0.clone().requires_grad_(true);
  silu_mul_train(ga, ua).backward(d);
  EXPECT_EQ(bit_mismatches(ua.grad(), u.grad()), 0);
  EXPECT_EQ(mismatches_but_nan(ga.grad(), g.grad()), 0);
}

TEST(KernelsElem, ScaledDropoutEqualsMaskMul) {
  for (auto dt : {torch::kBFloat16, torch::kFloat32}) {
    torch::manual_seed(4);
    auto x0 = torch::randn({33, 517}).to(dt);
    x0[0][0] = std::nan("");
    x0[0][1] = -INFINITY;
    x0[1][2] = -0.0;
    const int64_t n = x0.numel();
    auto idx = torch::randint(n, {900}, torch::kInt64);
    idx = torch::cat({idx, torch::tensor({int64_t(0), int64_t(1), int64_t(0), int64_t(n - 1)})});  // repeats, NaN, -inf
    for (double p : {0.05, 0.1, 1.0 / 3}) {
      const double scale = 1.0 / (1.0 - p);
      auto xa = x0.clone().requires_grad_(true), xb = x0.clone().requires_grad_(true);
      auto ya = scaled_dropout(xa, idx, scale), yb = scaled_dropout_reference(xb, idx, scale);
      EXPECT_EQ(mismatches_but_nan(ya.detach(), yb.detach()), 0) << c10::toString(dt) << " p " << p;
      auto up = torch::randn({33, 517}).to(dt);
      up[0][3] = -1.0;
      (ya * up).sum().backward();
      (yb * up).sum().backward();
      EXPECT_EQ(mismatches_but_nan(xa.grad(), xb.grad()), 0) << c10::toString(dt) << " p " << p;
    }
    // a transposed view: values as the reference's on the same view
    auto xt = x0.t();
    EXPECT_EQ(mismatches_but_nan(scaled_dropout(xt, idx, 1.25), scaled_dropout_reference(xt, idx, 1.25)), 0);
    EXPECT_EQ(mor::test::error_of([&] { scaled_dropout(x0, torch::tensor({n}), 1.25); }),
              "scaled_dropout: index " + std::to_string(n) + " outside [0, " + std::to_string(n) + ")");
    EXPECT_EQ(mor::test::error_of([&] { scaled_dropout(x0, torch::tensor({int64_t(-1)}), 1.25); }),
              "scaled_dropout: index -1 outside [0, " + std::to_string(n) + ")");
  }
}
