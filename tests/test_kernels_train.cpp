// The training kernels of src/kernels_train.h (RMSNorm and RoPE with autograd) against the
// references' autograd graphs: forward and gradients (x and the norm weight; cos/sin take none) on
// random data, float32 within ~1e-6 of the scale, bfloat16 within a bf16 step (observed errors are
// printed), odd sizes that miss the vector width, T = 1, strided inputs and upstream gradients; the
// weight gradient is the same for any thread count; finite differences check the float64 reference.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>

#include "kernels.h"
#include "kernels_train.h"
#include "llama.h"

using namespace mor;

namespace {

// max |got - want| / max |want|: the error relative to the tensor's scale (elementwise relative
// errors are meaningless where a gradient nearly cancels to 0).
double scaled_err(const torch::Tensor& got, const torch::Tensor& want) {
  auto g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item<double>();
}

double equal_frac(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kFloat32) == want.to(torch::kFloat32)).to(torch::kFloat64).mean().item<double>();
}

struct NormGrads {
  torch::Tensor y, gx, gw;
};

// y = f(x, w) and the gradients of sum(y * up), with x and/or w requiring grad.
template <typename F>
NormGrads norm_grads(F f, const torch::Tensor& x0, const torch::Tensor& w0, const torch::Tensor& up, bool gx, bool gw) {
  auto x = x0.clone().requires_grad_(gx), w = w0.clone().requires_grad_(gw);
  auto y = f(x, w);
  (y * up).sum().backward();
  return {y.detach(), gx ? x.grad() : torch::Tensor(), gw ? w.grad() : torch::Tensor()};
}

}  // namespace

TEST(KernelsTrain, RmsNormMatchesReferenceAndItsGradients) {
  torch::manual_seed(21);
  const double eps = 1e-5;
  auto fused = [&](const torch::Tensor& x, const torch::Tensor& w) { return rms_norm_train(x, w, eps); };
  auto ref = [&](const torch::Tensor& x, const torch::Tensor& w) { return rms_norm_reference(x, w, eps); };
  // C = 100 and 37 miss the 16-wide loops; [1, 1, C] is T = 1; 300 rows span several weight blocks.
  for (auto shape : std::vector<std::vector<int64_t>>{{2, 7, 100}, {1, 1, 37}, {3, 100, 64}, {1, 1, 2048}}) {
    const int64_t C = shape.back();
    for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
      auto x0 = (torch::randn(shape) * 3).to(dt), w0 = (torch::rand({C}) + 0.5).to(dt), up = torch::randn(shape).to(dt);
      auto a = norm_grads(fused, x0, w0, up, true, true), b = norm_grads(ref, x0, w0, up, true, true);
      ASSERT_EQ(a.gx.scalar_type(), dt);
      ASSERT_EQ(a.gw.scalar_type(), dt);
      const double ey = scaled_err(a.y, b.y), ex = scaled_err(a.gx, b.gx), ew = scaled_err(a.gw, b.gw);
      std::printf("rms_norm %s C=%ld rows=%ld: y %.2e (equal %.4f), grad_x %.2e (equal %.4f), grad_w %.2e (equal %.4f)\n",
                  c10::toString(dt), long(C), long(x0.numel() / C), ey, equal_frac(a.y, b.y), ex,
                  equal_frac(a.gx, b.gx), ew, equal_frac(a.gw, b.gw));
      if (dt == torch::kFloat32) {
        EXPECT_LT(ey, 1e-6);
        EXPECT_LT(ex, 1e-6);
        EXPECT_LT(ew, 1e-6);
      } else {
        // Same rounding points; the float32 values in between differ by summation order (~1e-7
        // relative), so only values within that distance of a bf16 rounding boundary may land one
        // bf16 step apart (at most 2^-7 of the largest value): observed 1e-4 of the values at most.
        EXPECT_LE(ey, 1.0 / 128);
        EXPECT_LE(ex, 1.0 / 128);
        EXPECT_LE(ew, 1.0 / 128);
        EXPECT_GE(equal_frac(a.y, b.y), 0.99);
        EXPECT_GE(equal_frac(a.gx, b.gx), 0.99);
        EXPECT_GE(equal_frac(a.gw, b.gw), 0.99);
      }
    }
  }
}

TEST(KernelsTrain, RmsNormComputesOnlyTheWantedGradients) {
  torch::manual_seed(22);
  auto fused = [](const torch::Tensor& x, const torch::Tensor& w) { return rms_norm_train(x, w, 1e-6); };
  auto ref = [](const torch::Tensor& x, const torch::Tensor& w) { return rms_norm_reference(x, w, 1e-6); };
  auto x0 = torch::randn({4, 33}), w0 = torch::rand({33}) + 0.5, up = torch::randn({4, 33});
  // the frozen-embedding case: layer 0's input norm trains its weight, x needs no gradient
  auto a = norm_grads(fused, x0, w0, up, false, true), b = norm_grads(ref, x0, w0, up, false, true);
  EXPECT_LT(scaled_err(a.gw, b.gw), 1e-6);
  a = norm_grads(fused, x0, w0, up, true, false), b = norm_grads(ref, x0, w0, up, true, false);
  EXPECT_LT(scaled_err(a.gx, b.gx), 1e-6);
  // a strided input (a narrowed view) and no grad mode (checkpointing's first pass)
  auto wide = torch::randn({4, 80});
  auto xs = wide.narrow(1, 20, 33).requires_grad_(false);
  {
    torch::NoGradGuard ng;
    EXPECT_LT(scaled_err(rms_norm_train(xs, w0, 1e-6), rms_norm_reference(xs, w0, 1e-6)), 1e-6);
  }
  EXPECT_THROW(rms_norm_train(x0, w0.to(torch::kBFloat16), 1e-6), std::runtime_error);
  EXPECT_THROW(rms_norm_train(x0.to(torch::kFloat64), w0.to(torch::kFloat64), 1e-6), std::runtime_error);
}

TEST(KernelsTrain, RmsNormWeightGradientSameForAnyThreadCount) {
  torch::manual_seed(23);
  auto x0 = torch::randn({700, 96}).to(torch::kBFloat16), w0 = (torch::rand({96}) + 0.5).to(torch::kBFloat16);
  auto up = torch::randn({700, 96}).to(torch::kBFloat16);
  auto fused = [](const torch::Tensor& x, const torch::Tensor& w) { return rms_norm_train(x, w, 1e-5); };
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  auto one = norm_grads(fused, x0.to(torch::kFloat32), w0.to(torch::kFloat32), up.to(torch::kFloat32), true, true);
  torch::set_num_threads(2);
  auto two = norm_grads(fused, x0.to(torch::kFloat32), w0.to(torch::kFloat32), up.to(torch::kFloat32), true, true);
  torch::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one.gw, two.gw));
  EXPECT_TRUE(torch::equal(one.gx, two.gx));
}

TEST(KernelsTrain, RopeMatchesReferenceAndItsGradient) {
  torch::manual_seed(24);
  // D = 16; D = 6 (half 3 misses the vector width) with T = 1; positions past the first rows
  for (auto dims : std::vector<std::vector<int64_t>>{{2, 5, 3, 16}, {3, 1, 2, 6}, {1, 9, 4, 64}}) {
    const int64_t B = dims[0], T = dims[1], H = dims[2], D = dims[3];
    auto pos = (torch::arange(T).view({1, T}) + torch::arange(B).view({B, 1}) * 7).to(torch::kLong);
    auto [c32, s32] = rope_cos_sin(pos, D, 10000.0);
    for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
      auto c = c32.to(dt), s = s32.to(dt);
      auto x0 = torch::randn({B, T, H, D}).to(dt), up = torch::randn({B, H, T, D}).to(dt);
      auto xa = x0.clone().requires_grad_(true), xb = x0.clone().requires_grad_(true);
      auto ya = apply_rope_train(xa, c, s);  // [B, H, T, D]
      auto yb = apply_rope_reference(xb.transpose(1, 2), c, s);
      ASSERT_EQ(ya.sizes(), yb.sizes());
      EXPECT_TRUE(ya.is_contiguous());
      // the upstream gradient arrives strided, as through the attention's reshape/transpose
      (ya.transpose(1, 2) * up.transpose(1, 2)).sum().backward();
      (yb * up).sum().backward();
      const double ey = scaled_err(ya.detach(), yb.detach()), ex = scaled_err(xa.grad(), xb.grad());
      std::printf("rope %s [%ld,%ld,%ld,%ld]: y %.2e (equal %.4f), grad_x %.2e (equal %.4f)\n", c10::toString(dt),
                  long(B), long(T), long(H), long(D), ey, equal_frac(ya.detach(), yb.detach()), ex,
                  equal_frac(xa.grad(), xb.grad()));
      if (dt == torch::kFloat32) {
        EXPECT_LT(ey, 1e-6);
        EXPECT_LT(ex, 1e-6);
      } else {
        // the same rounding points (each product, then the sum), so the same bf16 values
        EXPECT_TRUE(torch::equal(ya.detach(), yb.detach()));
        EXPECT_TRUE(torch::equal(xa.grad(), xb.grad()));
      }
    }
  }
}

TEST(KernelsTrain, RopeTakesStridedInputAndNoTableGradient) {
  torch::manual_seed(25);
  const int64_t B = 2, T = 4, H = 3, D = 8;
  auto pos = torch::arange(T).view({1, T}).to(torch::kLong);  // cos/sin [1, T, D], broadcast over B
  auto [c, s] = rope_cos_sin(pos, D, 10000.0);
  auto x0 = torch::randn({B, H, T, D}).transpose(1, 2);  // [B, T, H, D] with the heads outside T
  ASSERT_FALSE(x0.is_contiguous());
  auto xa = x0.detach().clone().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(true);
  auto xb = x0.detach().clone().requires_grad_(true);
  auto ya = apply_rope_train(xa, c, s), yb = apply_rope_reference(xb.transpose(1, 2), c, s);
  EXPECT_LT(scaled_err(ya.detach(), yb.detach()), 1e-6);
  ya.sum().backward();
  yb.sum().backward();
  EXPECT_LT(scaled_err(xa.grad(), xb.grad()), 1e-6);
  EXPECT_THROW(apply_rope_train(xa, c.clone().requires_grad_(true), s), std::runtime_error);
  EXPECT_THROW(apply_rope_train(xa.detach().to(torch::kFloat64), c.to(torch::kFloat64), s.to(torch::kFloat64)),
               std::runtime_error);
}

// The references' float64 autograd against central differences (what the fast paths are held to).
TEST(KernelsTrain, ReferenceGradientsMatchFiniteDifferences) {
  torch::manual_seed(26);
  auto opt = torch::TensorOptions().dtype(torch::kFloat64);
  auto x = torch::randn({3, 5}, opt), w = torch::rand({5}, opt) + 0.5, up = torch::randn({3, 5}, opt);
  auto pos = torch::arange(3).view({1, 3}).to(torch::kLong);
  auto [c32, s32] = rope_cos_sin(pos, 4, 100.0);
  auto c = c32.to(torch::kFloat64), s = s32.to(torch::kFloat64);
  auto xr = torch::randn({1, 3, 2, 4}, opt), upr = torch::randn({1, 2, 3, 4}, opt);
  auto norm_loss = [&](const torch::Tensor& xx, const torch::Tensor& ww) {
    return (rms_norm_reference(xx, ww, 1e-5) * up).sum();
  };
  auto rope_loss = [&](const torch::Tensor& xx) { return (apply_rope_reference(xx.transpose(1, 2), c, s) * upr).sum(); };
  auto xg = x.clone().requires_grad_(true), wg = w.clone().requires_grad_(true), xrg = xr.clone().requires_grad_(true);
  norm_loss(xg, wg).backward();
  rope_loss(xrg).backward();
  const double h = 1e-6;
  auto check = [&](const torch::Tensor& at, const torch::Tensor& grad, const std::function<double(const torch::Tensor&)>& f) {
    auto flat = at.reshape({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      auto p = at.clone(), m = at.clone();
      p.view({-1})[i] += h;
      m.view({-1})[i] -= h;
      EXPECT_NEAR((f(p) - f(m)) / (2 * h), grad.reshape({-1})[i].item<double>(), 1e-6) << i;
    }
  };
  torch::NoGradGuard ng;
  check(x, xg.grad(), [&](const torch::Tensor& t) { return norm_loss(t, w).item<double>(); });
  check(w, wg.grad(), [&](const torch::Tensor& t) { return norm_loss(x, t).item<double>(); });
  check(xr, xrg.grad(), [&](const torch::Tensor& t) { return rope_loss(t).item<double>(); });
}

// A training-mode model takes the kernels (fused on) or the ops (MOR_FUSED=0): same loss and
// gradients (float32: within 1e-5; the paths differ by float32 rounding only).
TEST(KernelsTrain, TrainingModelAgreesWithOpPath) {
  ModelConfig cfg = ModelConfig::llama(64, 96, 2, 8, 2, 101);
  auto m = random_llama(cfg, 12, torch::kFloat32, torch::kCPU);
  m->train();
  for (auto& p : m->named_parameters())
    if (p.key().find("layernorm") != std::string::npos || p.key().find("q_proj") != std::string::npos) {
      torch::NoGradGuard ng;
      if (p.key().find("layernorm") != std::string::npos) p.value().uniform_(0.5, 1.5);
      p.value().set_requires_grad(true);
    }
  ForwardArgs a;
  a.input_ids = torch::randint(0, 101, {2, 7}, torch::kLong);
  auto run = [&](bool fused) {
    set_fused_enabled(fused);
    for (auto& p : m->parameters())
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
    auto loss = m->forward(a).pow(2).mean();
    loss.backward();
    std::vector<torch::Tensor> g = {loss.detach()};
    for (auto& p : m->named_parameters())
      if (p.value().requires_grad()) g.push_back(p.value().grad().clone());
    set_fused_enabled(true);
    return g;
  };
  auto on = run(true), off = run(false);
  ASSERT_EQ(on.size(), off.size());
  ASSERT_GT(on.size(), 4u);
  for (size_t i = 0; i < on.size(); ++i) EXPECT_LT(scaled_err(on[i], off[i]), 1e-5) << i;
}
