// SwiGLU and dropout element kernels (see kernels_elem.h): per-value tables for the bf16 SiLU and
// its backward, filled once from LibTorch's own kernels; flat loops split across threads with
// at::parallel_for, compiled in ISA clones (kernels_rows.h) so they vectorise. Each loop has one
// multiply per rounding point, so no FMA contraction can move a value.
// Shapes: n elements.
#include "kernels_elem.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/version.h>

#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "kernels_rows.h"

namespace mor {

namespace kern {
namespace {

using c10::BFloat16;

// Indexed by the bf16 bit pattern. silu: torch::silu's value. sig, second: silu_backward's two
// factors, sigmoid = 1 / (1 + exp(-x)) and 1 + x (1 - sigmoid), with exp from LibTorch's kernel and
// the rounding points of this LibTorch version.
struct SiluTables {
  std::vector<float> silu, sig, second;
  bool round_inner = false;  // dy * sigmoid rounded to bf16 before the second product (1.13)
};

std::vector<float> floats_of(const torch::Tensor& t) {
  auto c = t.to(torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Not a clone and built for the default ISA (no FMA), so `1 + x * (1 - s)` stays two roundings as in
// LibTorch's vectorised kernels.
SiluTables build_silu_tables() {
  torch::NoGradGuard ng;
  std::vector<uint16_t> bits(65536);
  std::iota(bits.begin(), bits.end(), uint16_t{0});
  auto all = torch::from_blob(bits.data(), {65536}, torch::kBFloat16).clone();
  SiluTables t;
  t.silu = floats_of(torch::silu(all));
  const auto x = floats_of(all);
  t.sig.resize(65536);
  t.second.resize(65536);
#if TORCH_VERSION_MAJOR < 2
  // 1.13's Vectorized<BFloat16> rounds after neg, exp, add, div, sub, mul, add.
  t.round_inner = true;
  const auto e = floats_of(torch::exp(all.neg()));
  for (size_t i = 0; i < x.size(); ++i) {
    t.sig[i] = round_bf16(1.0f / round_bf16(1.0f + e[i]));
    t.second[i] = round_bf16(1.0f + round_bf16(x[i] * round_bf16(1.0f - t.sig[i])));
  }
#else
  // 2.x converts to float, computes in float and rounds the result once.
  const auto e = floats_of(torch::exp(all.to(torch::kFloat32).neg()));
  for (size_t i = 0; i < x.size(); ++i) {
    t.sig[i] = 1.0f / (1.0f + e[i]);
    const float one_minus = 1.0f - t.sig[i];
    const float prod = x[i] * one_minus;
    t.second[i] = 1.0f + prod;
  }
#endif
  return t;
}

const SiluTables& silu_tables() {
  static const SiluTables t = build_silu_tables();
  return t;
}

// __restrict__: the outputs are fresh tensors, so the loops vectorise without alias checks. The
// tables are indexed by the bf16 bit pattern (.x).
MOR_CLONES void silu_mul_loop(const BFloat16* __restrict__ g, const BFloat16* __restrict__ u,
                              BFloat16* __restrict__ out, int64_t n, const float* __restrict__ silu) {
  for (int64_t i = 0; i < n; ++i) out[i] = from_f<BFloat16>(silu[g[i].x] * to_f(u[i]));
}

// dg = silu_backward(round(d * u), g), du = d * silu(g); Inner: dy * sigmoid rounded (1.13).
template <bool Inner>
inline void silu_mul_backward_body(const BFloat16* __restrict__ d, const BFloat16* __restrict__ g,
                                   const BFloat16* __restrict__ u, BFloat16* __restrict__ dg,
                                   BFloat16* __restrict__ du, int64_t n, const float* __restrict__ silu,
                                   const float* __restrict__ sig, const float* __restrict__ second) {
  for (int64_t i = 0; i < n; ++i) {
    const float dv = to_f(d[i]);
    const uint16_t x = g[i].x;
    du[i] = from_f<BFloat16>(dv * silu[x]);
    const float ds = round_bf16(dv * to_f(u[i]));  // d * u is a bf16 tensor in the reference
    const float p = Inner ? round_bf16(ds * sig[x]) : ds * sig[x];
    dg[i] = from_f<BFloat16>(p * second[x]);
  }
}

MOR_CLONES void silu_mul_backward_loop(const BFloat16* d, const BFloat16* g, const BFloat16* u, BFloat16* dg,
                                       BFloat16* du, int64_t n, const SiluTables* t) {
  if (t->round_inner)
    silu_mul_backward_body<true>(d, g, u, dg, du, n, t->silu.data(), t->sig.data(), t->second.data());
  else
    silu_mul_backward_body<false>(d, g, u, dg, du, n, t->silu.data(), t->sig.data(), t->second.data());
}

// y = x * m in T (m already rounded to T).
template <typename T>
inline void scale_body(const T* __restrict__ x, T* __restrict__ y, int64_t n, float m) {
  for (int64_t i = 0; i < n; ++i) y[i] = from_f<T>(to_f(x[i]) * m);
}
MOR_CLONES void scale_loop(const BFloat16* x, BFloat16* y, int64_t n, float m) { scale_body(x, y, n, m); }
MOR_CLONES void scale_loop(const float* x, float* y, int64_t n, float m) { scale_body(x, y, n, m); }

constexpr int64_t kGrain = int64_t(1) << 15;

void check_bf16_pair(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
  if (a.scalar_type() != torch::kBFloat16 || b.scalar_type() != torch::kBFloat16 || !a.device().is_cpu() ||
      !b.device().is_cpu() || a.sizes() != b.sizes())
    throw std::runtime_error(std::string(what) + ": bfloat16 CPU tensors of one shape expected, got " +
                             c10::toString(a.scalar_type()) + " " + c10::str(a.sizes()) + " and " +
                             c10::toString(b.scalar_type()) + " " + c10::str(b.sizes()));
}

// y = x * mask without the mask (see scaled_dropout), T = float or BFloat16.
template <typename T>
void scaled_copy_t(const torch::Tensor& x, torch::Tensor& y, const int64_t* ip, int64_t k, double scale) {
  // The mask value as a T tensor filled with `scale` holds it: double -> float (-> bf16).
  const float m = rnd<T>(float(scale));
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) { scale_loop(xp + b, yp + b, e - b, m); });
  // x * 0 (signed zero, NaN kept); repeated indexes write the same value, so this splits across threads too.
  at::parallel_for(0, k, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) yp[ip[j]] = from_f<T>(to_f(xp[ip[j]]) * 0.0f);
  });
}

torch::Tensor scaled_copy(const torch::Tensor& x_in, const torch::Tensor& zero_index, double scale) {
  auto x = x_in.contiguous();
  auto y = torch::empty_like(x);
  const int64_t n = x.numel();
  auto idx = zero_index.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t k = idx.numel();
  for (int64_t j = 0; j < k; ++j)
    if (ip[j] < 0 || ip[j] >= n)
      throw std::runtime_error("scaled_dropout: index " + std::to_string(ip[j]) + " outside [0, " + std::to_string(n) + ")");
  if (x.scalar_type() == torch::kBFloat16) scaled_copy_t<BFloat16>(x, y, ip, k, scale);
  else scaled_copy_t<float>(x, y, ip, k, scale);
  return y;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct ScaledDropoutFn : public torch::autograd::Function<ScaledDropoutFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& zero_index,
                               double scale) {
    ctx->saved_data["index"] = zero_index;
    ctx->saved_data["scale"] = scale;
    return scaled_copy(x, zero_index, scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("mor::scaled_dropout_backward", std::vector<c10::IValue>());
    auto g = scaled_copy(grads[0], ctx->saved_data["index"].toTensor(), ctx->saved_data["scale"].toDouble());
    return {g, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace
}  // namespace kern

torch::Tensor silu_mul_bf16(const torch::Tensor& g_in, const torch::Tensor& u_in) {
  RECORD_FUNCTION("mor::silu_mul_bf16", std::vector<c10::IValue>({g_in}));
  kern::check_bf16_pair(g_in, u_in, "silu_mul_bf16");
  auto g = g_in.contiguous(), u = u_in.contiguous();
  auto out = torch::empty_like(g);
  const auto* silu = kern::silu_tables().silu.data();
  const auto *gp = g.data_ptr<c10::BFloat16>(), *up = u.data_ptr<c10::BFloat16>();
  auto* op = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, g.numel(), kern::kGrain,
                   [&](int64_t b, int64_t e) { kern::silu_mul_loop(gp + b, up + b, op + b, e - b, silu); });
  return out;
}

std::pair<torch::Tensor, torch::Tensor> silu_mul_backward_bf16(const torch::Tensor& d_in, const torch::Tensor& g_in,
                                                               const torch::Tensor& u_in) {
  RECORD_FUNCTION("mor::silu_mul_backward_bf16", std::vector<c10::IValue>());
  kern::check_bf16_pair(d_in, g_in, "silu_mul_backward_bf16");
  kern::check_bf16_pair(g_in, u_in, "silu_mul_backward_bf16");
  auto d = d_in.contiguous(), g = g_in.contiguous(), u = u_in.contiguous();
  auto dg = torch::empty_like(g), du = torch::empty_like(g);
  const auto* t = &kern::silu_tables();
  const auto *dp = d.data_ptr<c10::BFloat16>(), *gp = g.data_ptr<c10::BFloat16>(), *up = u.data_ptr<c10::BFloat16>();
  auto *dgp = dg.data_ptr<c10::BFloat16>(), *dup = du.data_ptr<c10::BFloat16>();
  at::parallel_for(0, g.numel(), kern::kGrain, [&](int64_t b, int64_t e) {
    kern::silu_mul_backward_loop(dp + b, gp + b, up + b, dgp + b, dup + b, e - b, t);
  });
  return {dg, du};
}

torch::Tensor scaled_dropout_reference(const torch::Tensor& x, const torch::Tensor& zero_index, double scale) {
  auto mask = torch::full({x.numel()}, scale, x.options().requires_grad(false))
                  .index_fill_(0, zero_index.to(x.device(), torch::kLong), 0.0);
  return x * mask.view(x.sizes());
}

torch::Tensor scaled_dropout(const torch::Tensor& x, const torch::Tensor& zero_index, double scale) {
  RECORD_FUNCTION("mor::scaled_dropout", std::vector<c10::IValue>({x}));
  if (!kernel_ok(x)) return scaled_dropout_reference(x, zero_index, scale);
  return kern::ScaledDropoutFn::apply(x, zero_index, scale);
}

}  // namespace mor
