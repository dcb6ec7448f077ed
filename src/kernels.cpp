// Fused CPU kernels (see kernels.h; the RMSNorm/RoPE row loops are in kernels_train.cpp). Rows are split
// across threads with at::parallel_for; the inner loops work on float rows so the compiler vectorises
// them (one clone per ISA through target_clones, chosen at load time), with a polynomial exp accurate
// to about 1 ulp of float32. Rounding to the compute dtype happens exactly where the reference's ops round.
#include "kernels.h"
#include "kernels_elem.h"
#include "gemv.h"

#include "kernels_rows.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <type_traits>

namespace mor {

namespace kern {

MOR_CLONES float dot_row(const float* a, const float* b, int64_t n) {
  float acc[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int k = 0; k < 16; ++k) acc[k] += a[j + k] * b[j + k];
  float dot = 0;
  for (; j < n; ++j) dot += a[j] * b[j];
  for (int k = 0; k < 16; ++k) dot += acc[k];
  return dot;
}

float sum_squares(const float* x, int64_t n) { return dot_row(x, x, n); }

MOR_CLONES void load_row_bf16(const c10::BFloat16* src, float* dst, int64_t n) { load_row(src, dst, n); }
MOR_CLONES void store_row_bf16(const float* src, c10::BFloat16* dst, int64_t n) { store_row(src, dst, n); }

void check_kernel_dtype(const torch::Tensor& x, const char* what) {
  if (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kBFloat16)
    throw std::runtime_error(std::string(what) + ": fused kernel needs float32 or bfloat16, got " +
                             c10::toString(x.scalar_type()));
  if (!x.device().is_cpu()) throw std::runtime_error(std::string(what) + ": fused kernel is CPU only");
}

}  // namespace kern

namespace {

// (using-declarations, not a directive: a unity build shares this anonymous namespace with other files)
using kern::check_kernel_dtype;
using kern::from_f;
using kern::load_row;
using kern::rnd;
using kern::store_row;
using kern::to_f;

// exp(x) for float32 in [-87, 88] (0 below -87, clamped above): 2^(x log2 e) split into an integer
// power (built in the exponent bits) and 2^f, |f| <= 1/2, by its degree-7 Taylor polynomial
// (truncation error < 1e-8 relative).
inline float fast_exp(float x) {
  const bool under = x < -87.0f;
  x = x > 88.0f ? 88.0f : x;
  x = under ? -87.0f : x;
  const float t = x * 1.44269504088896341f;
  const float r = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer (|t| < 2^22)
  const float f = (t - r) * 0.693147180559945309f;
  float p = 1.0f / 5040;
  p = p * f + 1.0f / 720;
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(r) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return under ? 0.0f : p * scale;
}

// ---- float row loops (cloned per ISA) ----

// x[j] = exp(x[j] - mx); returns the sum.
MOR_CLONES float exp_sub_sum(float* x, int64_t n, float mx) {
  float acc[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int k = 0; k < 16; ++k) {
      const float e = fast_exp(x[j + k] - mx);
      x[j + k] = e;
      acc[k] += e;
    }
  float s = 0;
  for (; j < n; ++j) s += (x[j] = fast_exp(x[j] - mx));
  for (int k = 0; k < 16; ++k) s += acc[k];
  return s;
}

MOR_CLONES float row_max(const float* x, int64_t n) {
  float m[16];
  for (int k = 0; k < 16; ++k) m[k] = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int k = 0; k < 16; ++k) m[k] = x[j + k] > m[k] ? x[j + k] : m[k];
  float r = -std::numeric_limits<float>::infinity();
  for (; j < n; ++j) r = x[j] > r ? x[j] : r;
  for (int k = 0; k < 16; ++k) r = m[k] > r ? m[k] : r;
  return r;
}

// The attention rows' element loops, cloned per ISA (the typed kernels below are templates and
// would otherwise build for the baseline ISA only). bf16: round after each op as the reference's
// bf16 tensors do.
MOR_CLONES void scale_row(float* x, int64_t n, float div, bool bf16) {
  for (int64_t j = 0; j < n; ++j) x[j] = kern::rnd_if(x[j] / div, bf16);
}

// x[j] = fill where the mask is set; a unit-stride mask is one vectorised select.
MOR_CLONES void mask_row(float* x, const bool* m, int64_t stride, int64_t n, float fill) {
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) x[j] = m[j] ? fill : x[j];
  } else {
    for (int64_t j = 0; j < n; ++j)
      if (m[j * stride]) x[j] = fill;
  }
}

MOR_CLONES void mul_row(float* x, int64_t n, float s) {
  for (int64_t j = 0; j < n; ++j) x[j] *= s;
}

// g[j] = ((g[j] - dot) * p[j]) / div, rounded after the product and after the division (bf16).
MOR_CLONES void softmax_grad_row(float* g, const float* p, float dot, float div, int64_t n, bool bf16) {
  for (int64_t j = 0; j < n; ++j) g[j] = kern::rnd_if(kern::rnd_if((g[j] - dot) * p[j], bf16) / div, bf16);
}

// acc[j] += a * x[j] (the float32 sum of a probability-weighted value row).
MOR_CLONES void axpy_row(float* acc, float a, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += a * x[j];
}

MOR_CLONES void round_row_bf16(float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = kern::round_bf16(x[j]);
}

using kern::load_any;
using kern::store_any;

double finfo_lowest(torch::ScalarType dt) {
  return dt == torch::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                : static_cast<double>(std::numeric_limits<float>::lowest());
}

// The divisor that the reference's `scores / divisor` applies to a tensor of dtype dt, asked of
// LibTorch once per value: 1.13 casts the scalar to bf16 first (sqrt(128) = 11.3137 divides as
// 11.3125), 2.x divides by it in float32. The probe divides every finite bf16 value both ways.
float applied_divisor(double d, torch::ScalarType dt) {
  const float as_float = static_cast<float>(d);
  const float narrowed = kern::round_bf16(as_float);
  if (dt != torch::kBFloat16 || narrowed == as_float) return as_float;
  static std::mutex mu;
  static std::map<double, float> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = seen.find(d); it != seen.end()) return it->second;
  torch::NoGradGuard ng;
  std::vector<uint16_t> bits(65536);
  std::iota(bits.begin(), bits.end(), uint16_t{0});
  auto probe = torch::from_blob(bits.data(), {65536}, torch::kBFloat16).clone();
  probe = probe.masked_select(torch::isfinite(probe));
  auto want = (probe.to(torch::kFloat32) / narrowed).to(torch::kBFloat16);
  const float applied = torch::equal(probe / d, want) ? narrowed : as_float;
  seen.emplace(d, applied);
  return applied;
}

// ---- typed kernels ----

// Mask strides of a bool mask broadcast to [B, H, T, S] (all zero and a null base when undefined).
struct MaskView {
  torch::Tensor held;
  const bool* base = nullptr;
  int64_t sb = 0, sh = 0, st = 0, ss = 0;
  MaskView(const torch::Tensor& mask, torch::IntArrayRef sizes) {
    if (!mask.defined()) return;
    held = mask.to(torch::kBool).expand(sizes);
    base = held.data_ptr<bool>();
    sb = held.stride(0), sh = held.stride(1), st = held.stride(2), ss = held.stride(3);
  }
  const bool* row(int64_t b, int64_t h, int64_t t) const { return base + b * sb + h * sh + t * st; }
};

// Rows of scores [B, H, T, S] -> probabilities: out (T, may alias in) and, when p32 is non-null,
// the float32 probabilities (what the reference's softmax saves for backward).
template <typename T>
void attention_probs_impl(const torch::Tensor& scores, const torch::Tensor& mask, double divisor, T* out, float* p32) {
  const int64_t S = scores.size(3), H = scores.size(1), Tq = scores.size(2);
  const int64_t rows = scores.numel() / std::max<int64_t>(S, 1);
  const T* base = scores.data_ptr<T>();
  const MaskView mv(mask, scores.sizes());
  const float div = applied_divisor(divisor, scores.scalar_type());
  const float fill = static_cast<float>(finfo_lowest(scores.scalar_type()));
  constexpr bool bf16 = std::is_same_v<T, c10::BFloat16>;
  at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(S, 1)), [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(S);
    for (int64_t r = r0; r < r1; ++r) {
      float* x = p32 ? p32 + r * S : buf.data();
      load_any(base + r * S, x, S);
      scale_row(x, S, div, bf16);
      if (mv.base) mask_row(x, mv.row(r / (H * Tq), (r / Tq) % H, r % Tq), mv.ss, S, fill);
      const float mx = row_max(x, S);
      const float inv = 1.0f / exp_sub_sum(x, S, mx);
      mul_row(x, S, inv);
      store_any(x, out + r * S, S);
    }
  });
}

// Backward of the above through the reference's ops: softmax backward in float32 on the saved
// float32 probabilities, cast to T, masked positions zeroed (masked_fill), divided (div), cast to T.
template <typename T>
void attention_probs_backward_impl(const torch::Tensor& grad, const float* p32, const torch::Tensor& mask,
                                   double divisor, T* gin) {
  const int64_t S = grad.size(3), H = grad.size(1), Tq = grad.size(2);
  const int64_t rows = grad.numel() / std::max<int64_t>(S, 1);
  const T* gbase = grad.data_ptr<T>();
  const MaskView mv(mask, grad.sizes());
  const float div = applied_divisor(divisor, grad.scalar_type());
  constexpr bool bf16 = std::is_same_v<T, c10::BFloat16>;
  at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(S, 1)), [&](int64_t r0, int64_t r1) {
    std::vector<float> g(S);
    for (int64_t r = r0; r < r1; ++r) {
      const float* p = p32 + r * S;
      load_any(gbase + r * S, g.data(), S);
      const float dot = kern::dot_row(g.data(), p, S);
      softmax_grad_row(g.data(), p, dot, div, S, bf16);
      if (mv.base) mask_row(g.data(), mv.row(r / (H * Tq), (r / Tq) % H, r % Tq), mv.ss, S, 0.0f);
      store_any(g.data(), gin + r * S, S);
    }
  });
}

#if MOR_HAVE_AVX512
using kern::load16;
// x[s] = q . k_s for S keys of D = 16 nc values read in place (row stride ks): one 16-lane FMA
// chain per key, its lanes summed by a shuffle tree (a per-key horizontal sum in plain C++ is a
// 16-add serial chain, which made this kernel compute-bound).
template <typename T>
MOR_AVX512 void scores_avx512(const float* q, const T* k, int64_t ks, int64_t S, int64_t nc, float* x) {
  for (int64_t s = 0; s < S; ++s) {
    const T* kr = k + s * ks;
    __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q), load16(kr));
    for (int64_t c = 1; c < nc; ++c) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * c), load16(kr + 16 * c), acc);
    x[s] = _mm512_reduce_add_ps(acc);
  }
}
// out[d] = sum_s p[s] v_s[d] for D = 16 nc <= 256 values (row stride vs), held in registers.
template <typename T>
MOR_AVX512 void weighted_sum_avx512(const float* p, const T* v, int64_t vs, int64_t S, int64_t nc, float* out) {
  __m512 acc[16];
  for (int64_t c = 0; c < nc; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t s = 0; s < S; ++s) {
    const __m512 ps = _mm512_set1_ps(p[s]);
    for (int64_t c = 0; c < nc; ++c) acc[c] = _mm512_fmadd_ps(ps, load16(v + s * vs + 16 * c), acc[c]);
  }
  for (int64_t c = 0; c < nc; ++c) _mm512_storeu_ps(out + 16 * c, acc[c]);
}

// scores_avx512 for RW query rows at once (q rows D floats apart, x rows S apart): each key's
// 16-lane chunks are loaded once for all rows, and the sums of four keys x RW rows share one
// lane_sums tree. Each sum is bitwise scores_avx512's: the same FMA chain, and lane_sums is the
// halving tree of _mm512_reduce_add_ps (tested).
template <int RW, typename T>
MOR_AVX512 void scores_rows_avx512(const float* q, const T* k, int64_t ks, int64_t S, int64_t nc, int64_t D,
                                   float* x) {
  int64_t s = 0;
  for (; s + 4 <= S; s += 4) {
    __m512 acc[4 * RW];
    for (int64_t c = 0; c < nc; ++c)
      for (int j = 0; j < 4; ++j) {
        const __m512 kv = load16(k + (s + j) * ks + 16 * c);
        for (int i = 0; i < RW; ++i) {
          const __m512 qv = _mm512_loadu_ps(q + i * D + 16 * c);
          acc[j * RW + i] = c == 0 ? _mm512_mul_ps(qv, kv) : _mm512_fmadd_ps(qv, kv, acc[j * RW + i]);
        }
      }
    float d[4 * RW];
    kern::lane_sums<4 * RW>(acc, d);
    for (int j = 0; j < 4; ++j)
      for (int i = 0; i < RW; ++i) x[i * S + s + j] = d[j * RW + i];
  }
  for (; s < S; ++s)
    for (int i = 0; i < RW; ++i) scores_avx512(q + i * D, k + s * ks, ks, 1, nc, x + i * S + s);
}

// weighted_sum_avx512 for RW probability rows (S apart) into RW output rows (D apart) with NC
// 16-lane chunks: each value chunk loaded once for all rows; every sum is weighted_sum_avx512's.
template <int RW, int NC, typename T>
MOR_AVX512 void weighted_rows_avx512(const float* p, const T* v, int64_t vs, int64_t S, int64_t D, float* out) {
  static_assert(RW * NC <= 16, "weighted_rows_avx512: at most 16 accumulators");
  __m512 acc[RW][NC];
  for (int i = 0; i < RW; ++i)
    for (int c = 0; c < NC; ++c) acc[i][c] = _mm512_setzero_ps();
  for (int64_t s = 0; s < S; ++s)
    for (int c = 0; c < NC; ++c) {
      const __m512 vv = load16(v + s * vs + 16 * c);
      for (int i = 0; i < RW; ++i) acc[i][c] = _mm512_fmadd_ps(_mm512_set1_ps(p[i * S + s]), vv, acc[i][c]);
    }
  for (int i = 0; i < RW; ++i)
    for (int c = 0; c < NC; ++c) _mm512_storeu_ps(out + i * D + 16 * c, acc[i][c]);
}

// Up to 4 rows: scores of all rows, then the weighted sums in passes of as many rows as 16
// accumulators hold (NC = 4 or 8 chunks; other widths row by row).
template <typename T>
void scores_rows(const float* q, const T* k, int64_t ks, int64_t S, int64_t D, int rows, float* x) {
  const int64_t nc = D / 16;
  switch (rows) {
    case 1: return scores_rows_avx512<1>(q, k, ks, S, nc, D, x);
    case 2: return scores_rows_avx512<2>(q, k, ks, S, nc, D, x);
    case 3: return scores_rows_avx512<3>(q, k, ks, S, nc, D, x);
    default: return scores_rows_avx512<4>(q, k, ks, S, nc, D, x);
  }
}
template <typename T>
void weighted_rows(const float* p, const T* v, int64_t vs, int64_t S, int64_t D, int rows, float* out) {
  int i = 0;
  if (D == 64)
    for (; i + 4 <= rows; i += 4) weighted_rows_avx512<4, 4>(p + i * S, v, vs, S, D, out + i * D);
  if (D == 64 || D == 128)
    for (; i + 2 <= rows; i += 2) {
      if (D == 64) weighted_rows_avx512<2, 4>(p + i * S, v, vs, S, D, out + i * D);
      else weighted_rows_avx512<2, 8>(p + i * S, v, vs, S, D, out + i * D);
    }
  for (; i < rows; ++i) weighted_sum_avx512(p + i * S, v, vs, S, D / 16, out + i * D);
}
#else
template <typename T>
void scores_rows(const float*, const T*, int64_t, int64_t, int64_t, int, float*) {}
template <typename T>
void weighted_rows(const float*, const T*, int64_t, int64_t, int64_t, int, float*) {}
template <typename T>
void scores_avx512(const float*, const T*, int64_t, int64_t, int64_t, float*) {}
template <typename T>
void weighted_sum_avx512(const float*, const T*, int64_t, int64_t, int64_t, float*) {}
#endif

// One task per (batch row, kv head): its S keys and values (read in place with AVX-512, else loaded
// to float rows once) serve the G query heads of the group and their T rows, up to four rows per
// pass over the keys and values (AVX-512). Per row, as matmul -> attention_probs -> matmul:
// scores rounded to T, then scale, mask, float32 softmax, probabilities rounded to T, then the
// float32 sum over the values rounded once.
template <typename T>
void attention_cached_impl(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                           const torch::Tensor& mask, double divisor, torch::Tensor& out) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2), G = H / Hkv;
  const MaskView mv(mask, {B, H, Tq, S});
  const T* qb = q.data_ptr<T>();
  const T* kb = k.data_ptr<T>();
  const T* vb = v.data_ptr<T>();
  T* ob = out.data_ptr<T>();
  const float div = applied_divisor(divisor, q.scalar_type());
  const float fill = static_cast<float>(finfo_lowest(q.scalar_type()));
  constexpr bool bf16 = std::is_same_v<T, c10::BFloat16>;
  // AVX-512: keys and values read in place; otherwise loaded to float rows first.
  const bool vec = kern::cpu_has_avx512f() && D % 16 == 0 && D <= 256;
  at::parallel_for(0, B * Hkv, 1, [&](int64_t t0, int64_t t1) {
    // up to kRows query rows of the group at a time (vec), else one
    constexpr int kRows = 4;
    std::vector<float> kf(vec ? 0 : S * D), vf(vec ? 0 : S * D), qf(kRows * D), x(kRows * S), acc(kRows * D);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b = task / Hkv, kv = task % Hkv;
      const T* kt = kb + b * k.stride(0) + kv * k.stride(1);
      const T* vt = vb + b * v.stride(0) + kv * v.stride(1);
      for (int64_t s = 0; s < S && !vec; ++s) {
        load_any(kt + s * k.stride(2), kf.data() + s * D, D);
        load_any(vt + s * v.stride(2), vf.data() + s * D, D);
      }
      // the group's rows r = (h - kv G) Tq + t, in chunks
      for (int64_t r0 = 0; r0 < G * Tq; r0 += vec ? kRows : 1) {
        const int rows = static_cast<int>(std::min<int64_t>(vec ? kRows : 1, G * Tq - r0));
        for (int i = 0; i < rows; ++i) {
          const int64_t h = kv * G + (r0 + i) / Tq, t = (r0 + i) % Tq;
          load_any(qb + b * q.stride(0) + h * q.stride(1) + t * q.stride(2), qf.data() + i * D, D);
        }
        if (vec) scores_rows(qf.data(), kt, k.stride(2), S, D, rows, x.data());
        else
          for (int64_t s = 0; s < S; ++s) x[s] = kern::dot_row(qf.data(), kf.data() + s * D, D);
        for (int i = 0; i < rows; ++i) {
          const int64_t h = kv * G + (r0 + i) / Tq, t = (r0 + i) % Tq;
          float* xr = x.data() + i * S;
          if (bf16) round_row_bf16(xr, S);
          scale_row(xr, S, div, bf16);
          if (mv.base) mask_row(xr, mv.row(b, h, t), mv.ss, S, fill);
          const float mx = row_max(xr, S);
          mul_row(xr, S, 1.0f / exp_sub_sum(xr, S, mx));
          if (bf16) round_row_bf16(xr, S);
        }
        if (vec) {
          weighted_rows(x.data(), vt, v.stride(2), S, D, rows, acc.data());
        } else {
          std::fill(acc.begin(), acc.begin() + D, 0.0f);
          for (int64_t s = 0; s < S; ++s) axpy_row(acc.data(), x[s], vf.data() + s * D, D);
        }
        for (int i = 0; i < rows; ++i) {
          const int64_t h = kv * G + (r0 + i) / Tq, t = (r0 + i) % Tq;
          store_any(acc.data() + i * D, ob + ((b * H + h) * Tq + t) * D, D);
        }
      }
    }
  });
}

template <typename T>
void route_gate_rows_impl(T* base, int64_t ld, int64_t n0, int64_t n1, int64_t E, int64_t K,
                          const std::vector<int64_t>& col_expert) {
  const int64_t R = static_cast<int64_t>(col_expert.size());
  std::vector<float> p(E), gate(E);
  std::vector<int64_t> chosen(K);
  for (int64_t n = n0; n < n1; ++n) {
    T* row = base + n * ld;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t e = 0; e < E; ++e) mx = std::max(mx, p[e] = to_f(row[e]));
    float sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(p[e] - mx));
    const float inv = 1.0f / sum;
    for (int64_t e = 0; e < E; ++e) p[e] *= inv;
    // top-k by repeated selection, ties to the lower index
    std::fill(gate.begin(), gate.end(), 0.0f);
    float wsum = 0;
    for (int64_t k = 0; k < K; ++k) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e)
        if (gate[e] == 0.0f && (best < 0 || p[e] > p[best])) best = e;
      chosen[k] = best;
      gate[best] = 1.0f;  // taken
      wsum += p[best];
    }
    std::fill(gate.begin(), gate.end(), 0.0f);
    for (int64_t k = 0; k < K; ++k) gate[chosen[k]] = rnd<T>(p[chosen[k]] / wsum);
    T* a = row + E;
    for (int64_t j = 0; j < R; ++j) a[j] = from_f<T>(to_f(a[j]) * gate[col_expert[j]]);
  }
}

template <typename T>
void route_gate_impl(torch::Tensor& h, int64_t E, int64_t K, const std::vector<int64_t>& col_expert) {
  T* base = h.data_ptr<T>();
  const int64_t ld = h.stride(0);
  at::parallel_for(0, h.size(0), 64, [&](int64_t n0, int64_t n1) {
    route_gate_rows_impl<T>(base, ld, n0, n1, E, K, col_expert);
  });
}

}  // namespace

namespace {
std::atomic<bool>& fused_flag() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("MOR_FUSED");
    return !(e && std::string(e) == "0");
  }()};
  return on;
}
}  // namespace

void set_fused_enabled(bool on) { fused_flag() = on; }
bool fused_enabled() { return fused_flag(); }

bool fused_ok(const torch::Tensor& x) {
  const auto dt = x.scalar_type();
  return fused_enabled() && x.device().is_cpu() && (dt == torch::kFloat32 || dt == torch::kBFloat16) &&
         (!torch::GradMode::is_enabled() || !x.requires_grad());
}

bool fused_ok(const torch::Tensor& a, const torch::Tensor& b) {
  return fused_ok(a) && fused_ok(b) && a.scalar_type() == b.scalar_type() && a.device() == b.device();
}

// ---- references ----

torch::Tensor attention_probs_reference(const torch::Tensor& scores_in, const torch::Tensor& mask, double divisor) {
  auto scores = scores_in / divisor;
  if (mask.defined()) scores = scores.masked_fill(mask, finfo_lowest(scores.scalar_type()));
  return torch::softmax(scores, -1, torch::kFloat32).to(scores_in.scalar_type());
}

torch::Tensor silu_mul_reference(const torch::Tensor& g, const torch::Tensor& u) { return torch::silu(g) * u; }

torch::Tensor route_gate_reference(const torch::Tensor& h, int64_t E, int64_t K, const std::vector<int64_t>& col_expert) {
  const auto dt = h.scalar_type();
  const int64_t N = h.size(0), R = h.size(1) - E;
  auto p = torch::softmax(h.narrow(1, 0, E).to(torch::kFloat32), -1);
  auto top = torch::topk(p, K, -1);
  auto w = std::get<0>(top);
  w = (w / w.sum(-1, /*keepdim=*/true)).to(dt);
  auto gates = torch::zeros({N, E}, h.options()).scatter(1, std::get<1>(top), w);
  auto ce = torch::tensor(col_expert, torch::TensorOptions().dtype(torch::kInt64));
  return h.narrow(1, E, R) * gates.index_select(1, ce);
}

// ---- fused entry points ----

torch::Tensor attention_probs(torch::Tensor scores, const torch::Tensor& mask, double divisor) {
  RECORD_FUNCTION("mor::attn_probs", std::vector<c10::IValue>({scores}));
  check_kernel_dtype(scores, "attention_probs");
  if (scores.dim() != 4) throw std::runtime_error("attention_probs: scores must be [B, H, T, S]");
  if (!scores.is_contiguous()) scores = scores.contiguous();
  if (scores.scalar_type() == torch::kBFloat16)
    attention_probs_impl<c10::BFloat16>(scores, mask, divisor, scores.data_ptr<c10::BFloat16>(), nullptr);
  else attention_probs_impl<float>(scores, mask, divisor, scores.data_ptr<float>(), nullptr);
  return scores;
}

torch::Tensor attention_cached_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         const torch::Tensor& mask, double divisor) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1), S = k.size(2);
  auto qg = q.reshape({B, Hkv, H / Hkv * T, D});
  auto probs = attention_probs_reference(torch::matmul(qg, k.transpose(2, 3)).view({B, H, T, S}), mask, divisor);
  return torch::matmul(probs.view({B, Hkv, H / Hkv * T, S}), v).view({B, H, T, D});
}

torch::Tensor attention_cached(const torch::Tensor& q_in, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask, double divisor) {
  RECORD_FUNCTION("mor::attn_cached", std::vector<c10::IValue>({q_in}));
  check_kernel_dtype(q_in, "attention_cached");
  if (q_in.dim() != 4 || k.dim() != 4 || v.sizes() != k.sizes() || k.size(0) != q_in.size(0) ||
      k.size(3) != q_in.size(3) || k.size(1) < 1 || q_in.size(1) % k.size(1) != 0 ||
      k.scalar_type() != q_in.scalar_type() || v.scalar_type() != q_in.scalar_type())
    throw std::runtime_error("attention_cached: q must be [B, H, T, D], k and v [B, Hkv, S, D] of q's dtype, H a multiple of Hkv");
  auto q = q_in.stride(3) == 1 ? q_in : q_in.contiguous();
  auto kc = k.stride(3) == 1 ? k : k.contiguous();
  auto vc = v.stride(3) == 1 ? v : v.contiguous();
  auto out = torch::empty(q.sizes(), q.options().memory_format(torch::MemoryFormat::Contiguous));
  if (q.scalar_type() == torch::kBFloat16) attention_cached_impl<c10::BFloat16>(q, kc, vc, mask, divisor, out);
  else attention_cached_impl<float>(q, kc, vc, mask, divisor, out);
  return out;
}

torch::Tensor silu_mul(const torch::Tensor& g_in, const torch::Tensor& u_in) {
  RECORD_FUNCTION("mor::silu_mul", std::vector<c10::IValue>({g_in}));
  check_kernel_dtype(g_in, "silu_mul");
  if (g_in.sizes() != u_in.sizes() || g_in.scalar_type() != u_in.scalar_type())
    throw std::runtime_error("silu_mul: gate and up differ in shape or dtype");
  // bf16: one pass over per-value tables of LibTorch's own silu (kernels_elem.h), the reference's
  // values exactly. float32: LibTorch's vectorised silu then an in-place mul, one allocation fewer.
  if (g_in.scalar_type() == torch::kBFloat16) return silu_mul_bf16(g_in, u_in);
  return torch::silu(g_in).mul_(u_in);
}

torch::Tensor rms_norm_fused(const torch::Tensor& x_in, const torch::Tensor& weight, double eps) {
  RECORD_FUNCTION("mor::rms_norm", std::vector<c10::IValue>({x_in}));
  check_kernel_dtype(x_in, "rms_norm");
  if (weight.scalar_type() != x_in.scalar_type() || weight.numel() != x_in.size(-1))
    throw std::runtime_error("rms_norm: weight must be [C] in x's dtype");
  auto x = x_in.contiguous();
  auto w = weight.contiguous();
  auto out = torch::empty_like(x);
  kern::rms_norm_rows(x, w, eps, out, nullptr);
  return out;
}

torch::Tensor apply_rope_fused(const torch::Tensor& x_in, const torch::Tensor& cos, const torch::Tensor& sin) {
  RECORD_FUNCTION("mor::rope", std::vector<c10::IValue>({x_in}));
  check_kernel_dtype(x_in, "apply_rope");
  if (x_in.dim() != 4 || cos.dim() != 3 || cos.scalar_type() != x_in.scalar_type() || sin.scalar_type() != x_in.scalar_type())
    throw std::runtime_error("apply_rope: x must be [B, T, H, D], cos/sin [B, T, D] in x's dtype");
  auto x = x_in.contiguous();
  auto c = cos.expand({x.size(0), x.size(1), x.size(3)});
  auto s = sin.expand({x.size(0), x.size(1), x.size(3)});
  if (c.stride(2) != 1) c = c.contiguous();
  if (s.stride(2) != 1) s = s.contiguous();
  auto out = torch::empty_like(x);
  kern::rope_rows(x, c, s, 1.0f, out);
  return out;
}

void route_gate_(torch::Tensor& h, int64_t E, int64_t K, const std::vector<int64_t>& col_expert) {
  RECORD_FUNCTION("mor::route_gate", std::vector<c10::IValue>({h}));
  check_kernel_dtype(h, "route_gate");
  if (h.dim() != 2 || h.stride(1) != 1 || h.size(1) != E + static_cast<int64_t>(col_expert.size()) || K < 1 || K > E)
    throw std::runtime_error("route_gate: h must be [N, E + R] with unit column stride, 1 <= top_k <= E");
  if (h.scalar_type() == torch::kBFloat16) route_gate_impl<c10::BFloat16>(h, E, K, col_expert);
  else route_gate_impl<float>(h, E, K, col_expert);
}

void refresh_infer_weights(const torch::Tensor& router, const torch::Tensor& lora_A, const torch::Tensor& lora_B,
                           const std::vector<int64_t>& ranks, double lora_alpha, torch::ScalarType dt,
                           MolaInferWeights& c) {
  torch::NoGradGuard ng;
  const int64_t E = router.size(0);
  std::vector<int64_t> key = {router._version(), lora_A._version(), lora_B._version(),
                              reinterpret_cast<int64_t>(router.data_ptr()), reinterpret_cast<int64_t>(lora_A.data_ptr()),
                              reinterpret_cast<int64_t>(lora_B.data_ptr()), static_cast<int64_t>(dt)};
  if (key == c.key) return;
  // The same ops as mola_fused_forward, once instead of per call.
  c.ra = torch::cat({router, lora_A}, 0).to(dt);
  bool uniform = true;
  for (auto r : ranks) uniform = uniform && r == ranks.front();
  std::vector<float> col_scale;
  c.col_expert.clear();
  for (int64_t e = 0; e < E; ++e) {
    c.col_expert.insert(c.col_expert.end(), ranks[e], e);
    col_scale.insert(col_scale.end(), ranks[e], float(lora_alpha / ranks[e]));
  }
  if (uniform) c.bs = (lora_B * (lora_alpha / double(ranks.front()))).to(dt);
  else c.bs = (lora_B * torch::tensor(col_scale, torch::TensorOptions().dtype(torch::kFloat32)).to(lora_B.device())).to(dt);
  c.bt = c.bs.t().contiguous();
  c.key = std::move(key);
}

torch::Tensor mola_infer_forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& router,
                                 const torch::Tensor& lora_A, const torch::Tensor& lora_B, int64_t top_k,
                                 const std::vector<int64_t>& ranks, double lora_alpha, MolaInferWeights& c,
                                 torch::Tensor* router_logits_out) {
  torch::NoGradGuard ng;
  const int64_t E = router.size(0), R = lora_A.size(0);
  refresh_infer_weights(router, lora_A, lora_B, ranks, lora_alpha, x.scalar_type(), c);
  torch::Tensor y, h;
  std::vector<GemvProjection> group(1);
  group[0] = GemvProjection{weight, c.ra, c.bt, E, top_k, &c.col_expert, {}, {}};
  if (gemv_group_ok(x, group)) {
    // decode rows: the four steps below in one parallel region (gemv.h), bitwise the same values
    gemv_group(x, group);
    y = group[0].y;
    h = group[0].h;
  } else {
    h = linear_nograd(x, c.ra);  // [N, E + R]
    route_gate_(h, E, top_k, c.col_expert);
    // In place: addmm(self, ...) would first copy the [N, O] base product (a strided bf16 mat1 is
    // copied contiguous on the addmm_ path: it leaves oneDNN for a slow loop).
    y = linear_nograd(x, weight);
    add_low_rank_nograd_(y, h.narrow(1, E, R), c.bs, c.bt);
  }
  if (router_logits_out) *router_logits_out = h.narrow(1, 0, E);
  return y;
}

// ---- autograd versions (training) ----

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct AttentionProbsFn : public torch::autograd::Function<AttentionProbsFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& scores_in, const torch::Tensor& mask,
                               double divisor) {
    auto scores = scores_in.contiguous();
    torch::Tensor out, p32;
    if (scores.scalar_type() == torch::kBFloat16) {
      out = torch::empty_like(scores);
      p32 = torch::empty(scores.sizes(), scores.options().dtype(torch::kFloat32));
      attention_probs_impl<c10::BFloat16>(scores, mask, divisor, out.data_ptr<c10::BFloat16>(), p32.data_ptr<float>());
    } else {
      out = torch::empty_like(scores);
      attention_probs_impl<float>(scores, mask, divisor, out.data_ptr<float>(), nullptr);
      p32 = out;
    }
    ctx->save_for_backward({p32});
    ctx->saved_data["mask"] = mask.defined() ? mask : torch::Tensor();
    ctx->saved_data["div"] = divisor;
    ctx->saved_data["f32_is_out"] = scores.scalar_type() == torch::kFloat32;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("mor::attn_probs_backward", std::vector<c10::IValue>());
    auto p32 = ctx->get_saved_variables()[0];
    auto mask = ctx->saved_data["mask"].toTensor();
    const double div = ctx->saved_data["div"].toDouble();
    auto g = grads[0].contiguous();
    auto gin = torch::empty_like(g);
    if (g.scalar_type() == torch::kBFloat16)
      attention_probs_backward_impl<c10::BFloat16>(g, p32.data_ptr<float>(), mask, div, gin.data_ptr<c10::BFloat16>());
    else attention_probs_backward_impl<float>(g, p32.data_ptr<float>(), mask, div, gin.data_ptr<float>());
    return {gin, torch::Tensor(), torch::Tensor()};
  }
};

struct SiluMulFn : public torch::autograd::Function<SiluMulFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& g, const torch::Tensor& u) {
    auto gc = g.contiguous(), uc = u.contiguous();
    ctx->save_for_backward({gc, uc});
    torch::NoGradGuard ng;
    return silu_mul(gc, uc);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    RECORD_FUNCTION("mor::silu_mul_backward", std::vector<c10::IValue>());
    auto saved = ctx->get_saved_variables();
    auto d = grads[0].contiguous();
    if (d.scalar_type() == torch::kBFloat16 && saved[0].scalar_type() == torch::kBFloat16) {
      auto [dg, du] = silu_mul_backward_bf16(d, saved[0], saved[1]);
      return {dg, du};
    }
    // LibTorch's own kernels (same values as the reference's graph); silu(g) recomputed, not saved.
    auto gg = torch::silu_backward(d * saved[1], saved[0]);
    auto gu = d * torch::silu(saved[0]);
    return {gg, gu};
  }
};

}  // namespace

bool kernel_ok(const torch::Tensor& x) {
  const auto dt = x.scalar_type();
  return fused_enabled() && x.device().is_cpu() && (dt == torch::kFloat32 || dt == torch::kBFloat16);
}

torch::Tensor attention_probs_train(const torch::Tensor& scores, const torch::Tensor& mask, double divisor) {
  check_kernel_dtype(scores, "attention_probs");
  if (scores.dim() != 4) throw std::runtime_error("attention_probs: scores must be [B, H, T, S]");
  return AttentionProbsFn::apply(scores, mask, divisor);
}

torch::Tensor silu_mul_train(const torch::Tensor& g, const torch::Tensor& u) {
  check_kernel_dtype(g, "silu_mul");
  if (g.sizes() != u.sizes() || g.scalar_type() != u.scalar_type())
    throw std::runtime_error("silu_mul: gate and up differ in shape or dtype");
  return SiluMulFn::apply(g, u);
}

namespace kern {
void route_gate_rows(c10::BFloat16* h, int64_t ld, int64_t n0, int64_t n1, int64_t E, int64_t K,
                     const std::vector<int64_t>& col_expert) {
  route_gate_rows_impl(h, ld, n0, n1, E, K, col_expert);
}
}  // namespace kern

}  // namespace mor
