// The base projection and the adapter's input GEMM with the dropout as a sparse correction (see
// adapter_gemm.h): the draw's distinct positions in row order, the three float32
// corrections (forward h, grad x, grad A), the autograd function, and its dense reference.
// Shapes: N tokens, I in, O out, P rows of wc, n_plain of them not under dropout, R = P - n_plain.
#include "adapter_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "kernels_elem.h"
#include "kernels_rows.h"

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 headers pass an intentionally undefined register to masked builtins, which
// -Wmaybe-uninitialized reports at every inlining site (as in gemv.cpp).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace mor {

DropoutDraw draw_dropout(const torch::Tensor& x, double p) {
  if (!(p > 0 && p < 1)) throw std::runtime_error("draw_dropout: p must be in (0, 1), got " + std::to_string(p));
  const int64_t n = x.numel();
  auto on_x = torch::TensorOptions().dtype(torch::kInt64).device(x.device());
  DropoutDraw d;
  d.scale = 1.0 / (1.0 - p);
  // Past p = 0.3 the Poisson draw costs more than one uniform per element on the CPU. On other devices
  // it stays up to about 2/3 (n * -ln(1 - p) < n positions), since nonzero() waits for the device.
  const double hits_per_element = -std::log1p(-p);  // the Poisson rate of each element
  if (x.device().is_cpu() ? p >= 0.3 : hits_per_element >= 1.0) {
    d.zero_index = (torch::rand({n}, on_x.dtype(torch::kFloat32)) < p).nonzero().squeeze(1);
    return d;
  }
  const double rate = double(n) * hits_per_element;
  auto k = torch::poisson(torch::full({1}, rate, torch::TensorOptions().dtype(torch::kFloat64))).item<double>();
  d.zero_index = torch::randint(n, {int64_t(k)}, on_x);
  return d;
}

bool adapter_input_gemm_ok(const torch::Tensor& x, const DropoutDraw& drop) {
  return kernel_ok(x) && (!drop.defined() || drop.zero_index.numel() * 4 <= x.numel());
}

namespace kern {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows of the float matrices the corrections read (A's columns, the dropout block's gradient) are
// padded with zeros to a multiple of 16 floats, so every inner loop is whole vectors.
constexpr int64_t kLanes = 16;
int64_t padded(int64_t R) { return (R + kLanes - 1) / kLanes * kLanes; }

// acc[0, W) += sum over j < cnt of v[j] * M[idx[j], 0, W): one dropped row's terms. With AVX-512,
// up to 64 columns at a time stay in registers across the whole sum.
#if MOR_HAVE_AVX512
template <int NB>
MOR_AVX512 void sum_rows_block(float* acc, const float* M, int64_t W, const int32_t* idx, const float* v,
                               int64_t cnt) {
  __m512 a[NB];
  for (int q = 0; q < NB; ++q) a[q] = _mm512_loadu_ps(acc + q * kLanes);
  for (int64_t j = 0; j < cnt; ++j) {
    const float* m = M + int64_t(idx[j]) * W;
    const __m512 vj = _mm512_set1_ps(v[j]);
    for (int q = 0; q < NB; ++q) a[q] = _mm512_fmadd_ps(vj, _mm512_loadu_ps(m + q * kLanes), a[q]);
  }
  for (int q = 0; q < NB; ++q) _mm512_storeu_ps(acc + q * kLanes, a[q]);
}
#endif

void sum_rows(float* __restrict acc, const float* __restrict M, int64_t W, const int32_t* idx, const float* v,
              int64_t cnt) {
#if MOR_HAVE_AVX512
  if (cpu_has_avx512f()) {
    for (int64_t b = 0; b < W; b += 4 * kLanes) {
      switch (std::min<int64_t>(4, (W - b) / kLanes)) {
        case 1: sum_rows_block<1>(acc + b, M + b, W, idx, v, cnt); break;
        case 2: sum_rows_block<2>(acc + b, M + b, W, idx, v, cnt); break;
        case 3: sum_rows_block<3>(acc + b, M + b, W, idx, v, cnt); break;
        default: sum_rows_block<4>(acc + b, M + b, W, idx, v, cnt); break;
      }
    }
    return;
  }
#endif
  for (int64_t j = 0; j < cnt; ++j) {
    const float* m = M + int64_t(idx[j]) * W;
    for (int64_t w = 0; w < W; ++w) acc[w] += v[j] * m[w];
  }
}

// C[idx[j] - base, 0, W) += v[j] * g[0, W) for j < cnt: one dropped row's terms spread over the
// columns it drops.
MOR_CLONES void scatter_rows(float* __restrict C, int64_t W, const int32_t* idx, int64_t base, const float* v,
                             const float* __restrict g, int64_t cnt) {
  for (int64_t j = 0; j < cnt; ++j) {
    float* c = C + (int64_t(idx[j]) - base) * W;
    for (int64_t b = 0; b < W; b += kLanes)
      for (int64_t k = 0; k < kLanes; ++k) c[b + k] += v[j] * g[b + k];
  }
}

// out[j] = g[0, W) . M[idx[j], 0, W) for j < cnt. One dot per dropped element: with AVX-512 a
// register's lanes are summed by shuffles (a lane sum through memory would stall on store forwarding).
#if MOR_HAVE_AVX512
MOR_AVX512 void dots_avx512(const float* g, const float* M, int64_t W, const int32_t* idx, float* out, int64_t cnt) {
  for (int64_t j = 0; j < cnt; ++j) {
    const float* m = M + int64_t(idx[j]) * W;
    __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(g), _mm512_loadu_ps(m));
    for (int64_t b = kLanes; b < W; b += kLanes)
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(g + b), _mm512_loadu_ps(m + b), acc);
    out[j] = _mm512_reduce_add_ps(acc);
  }
}
#endif

void dots(const float* g, const float* M, int64_t W, const int32_t* idx, float* out, int64_t cnt) {
#if MOR_HAVE_AVX512
  if (cpu_has_avx512f()) return dots_avx512(g, M, W, idx, out, cnt);
#endif
  for (int64_t j = 0; j < cnt; ++j) {
    const float* m = M + int64_t(idx[j]) * W;
    float t = 0;
    for (int64_t w = 0; w < W; ++w) t += g[w] * m[w];
    out[j] = t;
  }
}

// The draw's distinct positions row-major: row_ptr [N+1] into cols (ascending per row). CPU tensors,
// so the autograd node can keep them (saved_data).
struct DropSets {
  torch::Tensor row_ptr, cols;  // int64, int32
  torch::Tensor xs;             // float32 [cols]: x at those positions, once correct_h has gathered them
  const int64_t* rp() const { return row_ptr.data_ptr<int64_t>(); }
  const int32_t* col() const { return cols.data_ptr<int32_t>(); }
};

// Row n's set bits of the bitmap, [n I, (n+1) I), as ascending columns written from out; returns the
// end of what it wrote.
int32_t* row_bits(const uint64_t* bits, int64_t n, int64_t I, int32_t* out) {
  const int64_t lo = n * I, hi = lo + I;
  for (int64_t w = lo >> 6; w <= (hi - 1) >> 6; ++w) {
    uint64_t b = bits[w];
    if (w == lo >> 6) b &= ~uint64_t{0} << (lo & 63);
    if (w == (hi - 1) >> 6 && (hi & 63)) b &= ~(~uint64_t{0} << (hi & 63));
    const int32_t base = int32_t(w * 64 - lo);
    for (; b; b &= b - 1) *out++ = base + __builtin_ctzll(b);
  }
  return out;
}

DropSets drop_sets(const torch::Tensor& zero_index, int64_t N, int64_t I) {
  auto idx = zero_index.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t n = N * I, k = idx.numel();
  const int64_t* ip = idx.data_ptr<int64_t>();
  std::vector<uint64_t> bits((n + 63) / 64, 0);  // a bitmap dedups and sorts in one pass
  for (int64_t j = 0; j < k; ++j) {
    if (ip[j] < 0 || ip[j] >= n)
      throw std::runtime_error("adapter_input_gemm: dropout index " + std::to_string(ip[j]) + " outside [0, " +
                               std::to_string(n) + ")");
    bits[ip[j] >> 6] |= uint64_t{1} << (ip[j] & 63);
  }
  DropSets d;
  if (k == 0) {  // (also x with no elements, whose bitmap is empty)
    d.row_ptr = torch::zeros({N + 1}, torch::kInt64);
    d.cols = torch::empty({0}, torch::kInt32);
    return d;
  }
  // Threads scan contiguous row ranges into their own lists (k entries at most, left uninitialised
  // past what is written), joined in row order.
  const int64_t T = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N));
  std::vector<std::unique_ptr<int32_t[]>> part(T);
  std::vector<int64_t> len(T), start(N);  // start: row r's first entry within its range's list
  at::parallel_for(0, T, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      part[t].reset(new int32_t[k]);
      int32_t *p0 = part[t].get(), *p = p0;
      for (int64_t r = N * t / T; r < N * (t + 1) / T; ++r) {
        start[r] = p - p0;
        p = row_bits(bits.data(), r, I, p);
      }
      len[t] = p - p0;
    }
  });
  int64_t nnz = 0;
  for (auto l : len) nnz += l;
  d.row_ptr = torch::empty({N + 1}, torch::kInt64);
  d.cols = torch::empty({nnz}, torch::kInt32);
  int64_t* rp = d.row_ptr.data_ptr<int64_t>();
  int32_t* cols = d.cols.data_ptr<int32_t>();
  for (int64_t t = 0, base = 0; t < T; ++t) {
    for (int64_t r = N * t / T; r < N * (t + 1) / T; ++r) rp[r] = base + start[r];
    std::copy(part[t].get(), part[t].get() + len[t], cols + base);
    base += len[t];
  }
  rp[N] = nnz;
  return d;
}

// m [rows, R] (any float type and strides) as float [rows, padded(R)], zeros past R.
torch::Tensor padded_float(const torch::Tensor& m) {
  auto out = torch::zeros({m.size(0), padded(m.size(1))}, torch::kFloat32);
  out.narrow(1, 0, m.size(1)).copy_(m);
  return out;
}

// Forward: h[n, n_plain + r] = s * (h - sum over dropped i of x[n, i] A[r, i]), for every row;
// at = A's columns, padded float [I, W]. Keeps the dropped x values in d.xs for grad A's correction.
template <typename T>
void correct_h(torch::Tensor& h, const torch::Tensor& x, DropSets& d, const torch::Tensor& at, int64_t n_plain,
               float s) {
  const int64_t N = x.size(0), I = x.size(1), P = h.size(1), R = P - n_plain, W = at.size(1);
  const T* xp = x.data_ptr<T>();
  const float* ap = at.data_ptr<float>();
  T* hp = h.data_ptr<T>();
  const int64_t* rp = d.rp();
  const int32_t* cols = d.col();
  d.xs = torch::empty({d.cols.numel()}, torch::kFloat32);
  float* xs = d.xs.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    std::vector<float> acc(W);
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t j0 = rp[n], cnt = rp[n + 1] - j0;
      float* xv = xs + j0;
      for (int64_t j = 0; j < cnt; ++j) xv[j] = to_f(xp[n * I + cols[j0 + j]]);
      std::fill(acc.begin(), acc.end(), 0.0f);
      sum_rows(acc.data(), ap, W, cols + j0, xv, cnt);
      T* hr = hp + n * P + n_plain;
      for (int64_t r = 0; r < R; ++r) hr[r] = from_f<T>(s * (to_f(hr[r]) - acc[r]));
    }
  });
}

// grad x at each dropped (n, i) loses the adapter term the GEMM added: g_A[n, :] . A[:, i], with
// ga the (already scaled) gradient of h's dropout block, padded float [N, W].
template <typename T>
void correct_grad_x(torch::Tensor& gx, const torch::Tensor& ga, const DropSets& d, const torch::Tensor& at) {
  const int64_t N = gx.size(0), I = gx.size(1), W = at.size(1);
  T* gp = gx.data_ptr<T>();
  const float *gap = ga.data_ptr<float>(), *ap = at.data_ptr<float>();
  const int64_t* rp = d.rp();
  const int32_t* cols = d.col();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    std::vector<float> t;
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t j0 = rp[n], cnt = rp[n + 1] - j0;
      t.resize(cnt);
      dots(gap + n * W, ap, W, cols + j0, t.data(), cnt);
      for (int64_t j = 0; j < cnt; ++j) {
        T& g = gp[n * I + cols[j0 + j]];
        g = from_f<T>(to_f(g) - t[j]);
      }
    }
  });
}

// grad A[r, i] (wc's row n_plain + r) loses sum over dropped rows n of column i of g_A[n, r] x[n, i]
// (x's values from d.xs). Threads split the columns and each scans every row's run of its columns, so
// each sum runs over n ascending whatever the thread count.
template <typename T>
void correct_grad_a(torch::Tensor& gwc, const torch::Tensor& ga, const DropSets& d, int64_t N, int64_t n_plain) {
  const int64_t I = gwc.size(1), R = gwc.size(0) - n_plain, W = ga.size(1);
  const float *gap = ga.data_ptr<float>(), *xs = d.xs.data_ptr<float>();
  T* gp = gwc.data_ptr<T>() + n_plain * I;
  const int64_t* rp = d.rp();
  const int32_t* cols = d.col();
  at::parallel_for(0, I, 64, [&](int64_t i0, int64_t i1) {
    std::vector<float> corr((i1 - i0) * W, 0.0f);  // [i1 - i0, W]
    for (int64_t n = 0; n < N; ++n) {  // row n's dropped columns in [i0, i1): [b, e)
      const int32_t* b = std::lower_bound(cols + rp[n], cols + rp[n + 1], int32_t(i0));
      const int32_t* e = std::lower_bound(b, cols + rp[n + 1], int32_t(i1));
      scatter_rows(corr.data(), W, b, i0, xs + (b - cols), gap + n * W, e - b);
    }
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = i0; i < i1; ++i) gp[r * I + i] = from_f<T>(to_f(gp[r * I + i]) - corr[(i - i0) * W + r]);
  });
}

// Saved for the backward: x, weight, wc; with a draw, its row-major sets with x's values there, A's
// columns as padded float [I, W] ("at") and the mask value in x's dtype.
struct AdapterInputFn : public torch::autograd::Function<AdapterInputFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& weight,
                               const torch::Tensor& wc_in, const torch::Tensor& zero_index, bool drop,
                               int64_t n_plain, double scale) {
    RECORD_FUNCTION("mor::adapter_input_gemm", std::vector<c10::IValue>({x_in}));
    auto x = x_in.contiguous(), wc = wc_in.contiguous();
    auto y0 = torch::mm(x, weight.t());
    auto h = torch::mm(x, wc.t());
    ctx->save_for_backward({x, weight, wc});
    ctx->saved_data["n_plain"] = n_plain;
    drop = drop && wc.size(0) > n_plain;  // no rows under dropout: nothing to correct
    ctx->saved_data["drop"] = drop;
    if (!drop) return {y0, h};
    const bool bf16 = x.scalar_type() == torch::kBFloat16;
    auto d = drop_sets(zero_index, x.size(0), x.size(1));
    const float s = rnd_if(float(scale), bf16);
    auto at = padded_float(wc.narrow(0, n_plain, wc.size(0) - n_plain).t());  // A's columns [I, W]
    if (bf16) correct_h<c10::BFloat16>(h, x, d, at, n_plain, s);
    else correct_h<float>(h, x, d, at, n_plain, s);
    ctx->saved_data["row_ptr"] = d.row_ptr;
    ctx->saved_data["cols"] = d.cols;
    ctx->saved_data["xs"] = d.xs;
    ctx->saved_data["at"] = at;
    ctx->saved_data["scale"] = double(s);
    return {y0, h};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("mor::adapter_input_gemm_backward", std::vector<c10::IValue>());
    auto v = ctx->get_saved_variables();
    const auto &x = v[0], &weight = v[1], &wc = v[2];
    auto& sd = ctx->saved_data;
    const int64_t n_plain = sd["n_plain"].toInt(), R = wc.size(0) - n_plain;
    const bool drop = sd["drop"].toBool(), bf16 = x.scalar_type() == torch::kBFloat16;
    auto gy = grads[0].contiguous(), gh = grads[1].contiguous();
    DropSets d;
    torch::Tensor ga, at;  // ga float [N, R]: the dropout block's gradient times the mask value
    if (drop) {
      d.row_ptr = sd["row_ptr"].toTensor();
      d.cols = sd["cols"].toTensor();
      d.xs = sd["xs"].toTensor();
      at = sd["at"].toTensor();
      gh = gh.clone();
      gh.narrow(1, n_plain, R).mul_(sd["scale"].toDouble());
      ga = padded_float(gh.narrow(1, n_plain, R));
    }
    torch::Tensor gx, gw, gwc;
    if (ctx->needs_input_grad(0)) {
      gx = torch::mm(gy, weight);
      gx.addmm_(gh, wc);
      if (drop && bf16) correct_grad_x<c10::BFloat16>(gx, ga, d, at);
      else if (drop) correct_grad_x<float>(gx, ga, d, at);
    }
    if (ctx->needs_input_grad(1)) gw = torch::mm(gy.t(), x);
    if (ctx->needs_input_grad(2)) {
      gwc = torch::mm(gh.t(), x);
      if (drop && bf16) correct_grad_a<c10::BFloat16>(gwc, ga, d, x.size(0), n_plain);
      else if (drop) correct_grad_a<float>(gwc, ga, d, x.size(0), n_plain);
    }
    return {gx, gw, gwc, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace
}  // namespace kern

std::pair<torch::Tensor, torch::Tensor> adapter_input_gemm(const torch::Tensor& x, const torch::Tensor& weight,
                                                           const torch::Tensor& wc, int64_t n_plain,
                                                           const DropoutDraw& drop) {
  if (x.dim() != 2 || weight.dim() != 2 || wc.dim() != 2 || weight.size(1) != x.size(1) || wc.size(1) != x.size(1) ||
      n_plain < 0 || n_plain > wc.size(0))
    throw std::runtime_error("adapter_input_gemm: shapes x " + std::to_string(x.dim()) +
                             "-d, weight and wc must be [*, " + std::to_string(x.dim() ? x.size(-1) : 0) +
                             "] with n_plain in [0, rows of wc]");
  kern::check_kernel_dtype(x, "adapter_input_gemm");
  if (weight.scalar_type() != x.scalar_type() || wc.scalar_type() != x.scalar_type())
    throw std::runtime_error("adapter_input_gemm: x, weight and wc must share one dtype");
  // An undefined tensor cannot enter an autograd function (LibTorch 1.13): no draw is an empty index.
  auto index = drop.defined() ? drop.zero_index : torch::empty({0}, torch::kInt64);
  auto out = kern::AdapterInputFn::apply(x, weight, wc, index, drop.defined(), n_plain, drop.scale);
  return {out[0], out[1]};
}

std::pair<torch::Tensor, torch::Tensor> adapter_input_gemm_reference(const torch::Tensor& x,
                                                                     const torch::Tensor& weight,
                                                                     const torch::Tensor& wc, int64_t n_plain,
                                                                     const DropoutDraw& drop) {
  auto xd = drop.defined() ? scaled_dropout_reference(x, drop.zero_index, drop.scale) : x;
  const int64_t R = wc.size(0) - n_plain;
  auto h = torch::cat({torch::mm(x, wc.narrow(0, 0, n_plain).t()), torch::mm(xd, wc.narrow(0, n_plain, R).t())}, 1);
  return {torch::mm(x, weight.t()), h};
}

}  // namespace mor
