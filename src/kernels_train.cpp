// RMSNorm and RoPE row kernels (forward for inference and training, backward for training; see
// kernels_train.h and kernels_rows.h) and their autograd functions. Float32 math on float rows the
// compiler vectorises (one clone per ISA), rows split across threads with at::parallel_for, values
// rounded to the compute dtype where the references' ops round them.
// Shapes: N rows, C hidden, B batch, T tokens, H heads, D head dim (half = D/2).
#include "kernels_train.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "kernels_rows.h"

namespace mor {
namespace kern {

// ---- float row loops (cloned per ISA) ----

// h[j] = w[j] * round(h[j] * inv), rounded: the reference's h * rsqrt(var + eps), cast, times weight.
MOR_CLONES void rms_scale_row(float* h, const float* w, float inv, int64_t C, bool bf16) {
  for (int64_t j = 0; j < C; ++j) h[j] = rnd_if(w[j] * rnd_if(h[j] * inv, bf16), bf16);
}

// gw[j] += round(g[j] * round(h[j] * inv)): the reference's weight gradient terms (grad * normed in
// the compute dtype), accumulated in float32.
MOR_CLONES void rms_weight_grad_row(const float* h, const float* g, float inv, int64_t C, bool bf16, float* gw) {
  for (int64_t j = 0; j < C; ++j) gw[j] += rnd_if(g[j] * rnd_if(h[j] * inv, bf16), bf16);
}

// In place over g: gn = round(g * w), then g = inv*gn - h*inv^3*sum(gn*h)/C (the float32 graph of
// h * rsqrt(mean(h^2) + eps) differentiated; 16 partial sums so the dot product vectorises).
MOR_CLONES void rms_input_grad_row(const float* h, float* g, const float* w, float inv, int64_t C, bool bf16) {
  float acc[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= C; j += 16)
    for (int k = 0; k < 16; ++k) {
      const float gn = rnd_if(g[j + k] * w[j + k], bf16);
      g[j + k] = gn;
      acc[k] += gn * h[j + k];
    }
  float dot = 0;
  for (; j < C; ++j) {
    const float gn = rnd_if(g[j] * w[j], bf16);
    g[j] = gn;
    dot += gn * h[j];
  }
  for (int k = 0; k < 16; ++k) dot += acc[k];
  const float k3 = inv * inv * inv * dot / static_cast<float>(C);
  for (j = 0; j < C; ++j) g[j] = inv * g[j] - h[j] * k3;
}

// One head, j < half: o1 = x1*c - sign*(x2*s), o2 = x2*c + sign*(x1*s), each product and sum rounded
// as x*cos + rotate_half(x)*sin rounds (sign -1: the transpose, i.e. the backward).
MOR_CLONES void rope_row(const float* x1, const float* x2, const float* c, const float* s, float sign, float* o1,
                         float* o2, int64_t half, bool bf16) {
  for (int64_t j = 0; j < half; ++j) {
    o1[j] = rnd_if(rnd_if(x1[j] * c[j], bf16) - sign * rnd_if(x2[j] * s[j], bf16), bf16);
    o2[j] = rnd_if(rnd_if(x2[j] * c[j], bf16) + sign * rnd_if(x1[j] * s[j], bf16), bf16);
  }
}

// All H bf16 heads of one position (head strides xh, oh): rope_row's arithmetic with the loads and
// stores in one cloned function, so the conversions vectorise with it (as baseline-ISA loops around
// the cloned rope_row they had cost 2.6 ns an element, 80x a copy). Every product and sum is rounded
// to bf16, so no contraction can change a value; float32 keeps rope_row, whose sums the compiler may
// contract. buf: 6 * half floats.
MOR_CLONES void rope_heads_bf16(const c10::BFloat16* xr, int64_t xh, c10::BFloat16* orow, int64_t oh,
                                const c10::BFloat16* cr, const c10::BFloat16* sr, int64_t H, int64_t half, float sign,
                                float* buf) {
  float *c = buf, *s = c + half, *x1 = s + half, *x2 = x1 + half, *o1 = x2 + half, *o2 = o1 + half;
  load_row(cr, c, half);
  load_row(sr, s, half);
  for (int64_t h = 0; h < H; ++h) {
    load_row(xr + h * xh, x1, half);
    load_row(xr + h * xh + half, x2, half);
    for (int64_t j = 0; j < half; ++j) {
      o1[j] = round_bf16(round_bf16(x1[j] * c[j]) - sign * round_bf16(x2[j] * s[j]));
      o2[j] = round_bf16(round_bf16(x2[j] * c[j]) + sign * round_bf16(x1[j] * s[j]));
    }
    store_row(o1, orow + h * oh, half);
    store_row(o2, orow + h * oh + half, half);
  }
}

// ---- typed kernels ----

template <typename T>
void rms_norm_rows_t(const torch::Tensor& x, const torch::Tensor& weight, double eps, torch::Tensor& out,
                     float* inv_rms) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const T* xp = x.data_ptr<T>();
  T* op = out.data_ptr<T>();
  std::vector<float> w(C);
  load_any(weight.data_ptr<T>(), w.data(), C);
  const float feps = static_cast<float>(eps);
  const bool bf16 = std::is_same<T, c10::BFloat16>::value;
  at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / C), [&](int64_t r0, int64_t r1) {
    std::vector<float> h(C);
    for (int64_t r = r0; r < r1; ++r) {
      load_any(xp + r * C, h.data(), C);
      const float var = sum_squares(h.data(), C) / static_cast<float>(C);
      const float inv = 1.0f / std::sqrt(var + feps);
      if (inv_rms) inv_rms[r] = inv;
      rms_scale_row(h.data(), w.data(), inv, C, bf16);
      store_any(h.data(), op + r * C, C);
    }
  });
}

// Rows of a fixed block share one float32 weight-gradient partial; the blocks' partials are summed in
// block order, so grad_weight is the same for any thread count. gx and gw may be undefined (not needed).
template <typename T>
void rms_norm_backward_t(const torch::Tensor& g, const torch::Tensor& x, const torch::Tensor& weight,
                         const float* inv, torch::Tensor& gx, torch::Tensor& gw) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  const int64_t block = std::max<int64_t>(64, (rows + 255) / 256), nblk = (rows + block - 1) / block;
  const T *gp = g.data_ptr<T>(), *xp = x.data_ptr<T>();
  T* gxp = gx.defined() ? gx.data_ptr<T>() : nullptr;
  std::vector<float> w(C), part(gw.defined() ? nblk * C : 0, 0.0f);
  load_any(weight.data_ptr<T>(), w.data(), C);
  const bool bf16 = std::is_same<T, c10::BFloat16>::value;
  at::parallel_for(0, nblk, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> h(C), gr(C);
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t r = b * block; r < std::min(rows, (b + 1) * block); ++r) {
        load_any(xp + r * C, h.data(), C);
        load_any(gp + r * C, gr.data(), C);
        if (!part.empty()) rms_weight_grad_row(h.data(), gr.data(), inv[r], C, bf16, part.data() + b * C);
        if (!gxp) continue;
        rms_input_grad_row(h.data(), gr.data(), w.data(), inv[r], C, bf16);
        store_any(gr.data(), gxp + r * C, C);
      }
  });
  if (!gw.defined()) return;
  for (int64_t b = 1; b < nblk; ++b)
    for (int64_t j = 0; j < C; ++j) part[j] += part[b * C + j];
  store_any(part.data(), gw.data_ptr<T>(), C);
}

template <typename T>
void rope_rows_t(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, float sign,
                 torch::Tensor& out) {
  const int64_t B = x.size(0), Tn = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  const T* xp = x.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const T *cp = cos.data_ptr<T>(), *sp = sin.data_ptr<T>();
  const int64_t xb = x.stride(0), xt = x.stride(1), xh = x.stride(2);
  const int64_t ob = out.stride(0), ot = out.stride(1), oh = out.stride(2);
  const int64_t cb = cos.stride(0), ct = cos.stride(1), sb = sin.stride(0), st = sin.stride(1);
  at::parallel_for(0, B * Tn, std::max<int64_t>(1, 4096 / (H * D)), [&](int64_t p0, int64_t p1) {
    std::vector<float> buf(6 * half);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p / Tn, t = p % Tn;
      const T *xr = xp + b * xb + t * xt, *cr = cp + b * cb + t * ct, *sr = sp + b * sb + t * st;
      T* orow = op + b * ob + t * ot;
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        rope_heads_bf16(xr, xh, orow, oh, cr, sr, H, half, sign, buf.data());
      } else {
        float *c = buf.data(), *s = c + half, *x1 = s + half, *x2 = x1 + half, *o1 = x2 + half, *o2 = o1 + half;
        load_row(cr, c, half);
        load_row(sr, s, half);
        for (int64_t h = 0; h < H; ++h) {
          load_row(xr + h * xh, x1, half);
          load_row(xr + h * xh + half, x2, half);
          rope_row(x1, x2, c, s, sign, o1, o2, half, false);
          store_row(o1, orow + h * oh, half);
          store_row(o2, orow + h * oh + half, half);
        }
      }
    }
  });
}

// ---- dtype dispatch (declared in kernels_rows.h) ----

void rms_norm_rows(const torch::Tensor& x, const torch::Tensor& weight, double eps, torch::Tensor& out, float* inv_rms) {
  if (x.numel() == 0) return;
  if (x.scalar_type() == torch::kBFloat16) rms_norm_rows_t<c10::BFloat16>(x, weight, eps, out, inv_rms);
  else rms_norm_rows_t<float>(x, weight, eps, out, inv_rms);
}

void rope_rows(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, float sin_sign,
               torch::Tensor& out) {
  if (x.numel() == 0) return;
  if (x.stride(3) != 1 || out.stride(3) != 1 || cos.stride(2) != 1 || sin.stride(2) != 1)
    throw std::runtime_error("rope_rows: the head dimension must have unit stride");
  if (x.scalar_type() == torch::kBFloat16) rope_rows_t<c10::BFloat16>(x, cos, sin, sin_sign, out);
  else rope_rows_t<float>(x, cos, sin, sin_sign, out);
}

}  // namespace kern

// ---- autograd functions ----

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct RmsNormFn : public torch::autograd::Function<RmsNormFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight, double eps) {
    auto xc = x.contiguous(), w = weight.contiguous();
    auto out = torch::empty_like(xc);
    auto inv = torch::empty({xc.numel() / xc.size(-1)}, xc.options().dtype(torch::kFloat32));
    kern::rms_norm_rows(xc, w, eps, out, inv.data_ptr<float>());
    ctx->save_for_backward({xc, w, inv});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("mor::rms_norm_backward", std::vector<c10::IValue>());
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &inv = saved[2];
    auto g = grads[0].contiguous();
    torch::Tensor gx = ctx->needs_input_grad(0) ? torch::empty_like(x) : torch::Tensor();
    torch::Tensor gw = ctx->needs_input_grad(1) ? torch::empty_like(w) : torch::Tensor();
    if (x.numel() > 0 && x.scalar_type() == torch::kBFloat16)
      kern::rms_norm_backward_t<c10::BFloat16>(g, x, w, inv.data_ptr<float>(), gx, gw);
    else if (x.numel() > 0) kern::rms_norm_backward_t<float>(g, x, w, inv.data_ptr<float>(), gx, gw);
    else if (gw.defined()) gw.zero_();
    return {gx, gw, torch::Tensor()};
  }
};

// cos/sin as [B, T, D] views with a unit last stride, as rope_rows reads them.
torch::Tensor rope_table(const torch::Tensor& t, int64_t B, int64_t T, int64_t D) {
  auto e = t.expand({B, T, D});
  return e.stride(2) == 1 ? e : e.contiguous();
}

struct RopeFn : public torch::autograd::Function<RopeFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& cos,
                               const torch::Tensor& sin) {
    auto x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
    const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
    auto out = torch::empty({B, H, T, D}, x.options());  // written through its [B, T, H, D] view
    auto out_bthd = out.transpose(1, 2);
    kern::rope_rows(x, rope_table(cos, B, T, D), rope_table(sin, B, T, D), 1.0f, out_bthd);
    ctx->save_for_backward({cos, sin});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("mor::rope_backward", std::vector<c10::IValue>());
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    auto saved = ctx->get_saved_variables();
    auto g = grads[0].transpose(1, 2);  // [B, T, H, D], any strides
    if (g.stride(3) != 1) g = g.contiguous();
    const int64_t B = g.size(0), T = g.size(1), D = g.size(3);
    auto gx = torch::empty(g.sizes(), g.options());  // contiguous, as the projection's view wants it
    kern::rope_rows(g, rope_table(saved[0], B, T, D), rope_table(saved[1], B, T, D), -1.0f, gx);
    return {gx, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rms_norm_train(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  kern::check_kernel_dtype(x, "rms_norm_train");
  if (x.dim() < 1 || weight.dim() != 1 || weight.scalar_type() != x.scalar_type() || weight.numel() != x.size(-1))
    throw std::runtime_error("rms_norm_train: weight must be [C] in x's dtype for x [..., C]");
  if (x.size(-1) == 0) throw std::runtime_error("rms_norm_train: hidden size is 0");
  RECORD_FUNCTION("mor::rms_norm", std::vector<c10::IValue>({x}));
  return RmsNormFn::apply(x, weight, eps);
}

torch::Tensor apply_rope_train(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  kern::check_kernel_dtype(x, "apply_rope_train");
  if (x.dim() != 4 || cos.dim() != 3 || sin.dim() != 3 || cos.scalar_type() != x.scalar_type() ||
      sin.scalar_type() != x.scalar_type() || x.size(3) % 2 != 0 || cos.size(-1) != x.size(3) ||
      sin.size(-1) != x.size(3))
    throw std::runtime_error("apply_rope_train: x must be [B, T, H, D] (D even), cos/sin [B, T, D] in x's dtype");
  if (torch::GradMode::is_enabled() && (cos.requires_grad() || sin.requires_grad()))
    throw std::runtime_error("apply_rope_train: cos/sin gradients are not implemented");
  RECORD_FUNCTION("mor::rope", std::vector<c10::IValue>({x}));
  return RopeFn::apply(x, cos, sin);
}

}  // namespace mor
