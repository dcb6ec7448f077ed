// Internal to the fused kernels (kernels.cpp, kernels_train.cpp, gemv.cpp): float32 row helpers with
// the compute dtype's rounding points (bf16 round-to-nearest-even, vectorisable bit tricks), the ISA
// clone macro, the AVX-512 widening load and 16-lane sums, and the RMSNorm/RoPE row kernels both
// kernel files call. Not a public API: include kernels.h or kernels_train.h instead.
// Shapes: N rows, C hidden, B batch, T tokens, H heads, D head dim.
#pragma once
#include "torch_api.h"

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 headers pass an intentionally undefined register to the shuffles' masked
// builtins (lane_sums below), which -Wuninitialized reports at every inlining site.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

namespace mor::kern {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MOR_CLONES
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define MOR_HAVE_AVX512 1
#define MOR_AVX512 __attribute__((target("avx512f")))
inline bool cpu_has_avx512f() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
// 16 values of T as float lanes (bf16: widened and shifted, exact).
template <typename T>
MOR_AVX512 inline __m512 load16(const T* p) {
  if constexpr (std::is_same_v<T, c10::BFloat16>)
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  else return _mm512_loadu_ps(p);
}
// The 16-lane sums of C <= 16 accumulators at once. Each follows the halving tree of a single
// vector's sum (lane i + lane i^8, then i^4, i^2, i^1; bitwise what _mm512_reduce_add_ps gives,
// tested), but every shuffle combines two accumulators: 16 sums take 15 shuffle pairs instead
// of 16 x 4, which at M = 8 were about a seventh of the instructions of a K = 1024 row.
template <int C>
MOR_AVX512 inline void lane_sums(const __m512* acc, float* out) {
  static_assert(C >= 1 && C <= 16, "lane_sums: 1 to 16 accumulators");
  const __m512 zero = _mm512_setzero_ps();
  __m512 v[4];  // v[g] quarter k: accumulator 4g+k's lanes j + j^4 + j^8 + j^12 (j < 4)
  for (int g = 0; g < 4; ++g) {
    if (4 * g >= C) {
      v[g] = zero;
      continue;
    }
    __m512 t[2];  // t[p]: accumulators 4g+2p and 4g+2p+1, lanes j + j^8 (j < 8) in two quarters each
    for (int p = 0; p < 2; ++p) {
      const int i = 4 * g + 2 * p;  // a lambda would not inherit the target ISA
      const __m512 a = i < C ? acc[i] : zero, b = i + 1 < C ? acc[i + 1] : zero;
      t[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    }
    v[g] = _mm512_add_ps(_mm512_shuffle_f32x4(t[0], t[1], 0x88), _mm512_shuffle_f32x4(t[0], t[1], 0xDD));
  }
  // i^2 within each quarter, two accumulators per quarter; then i^1: quarter k lane j = accumulator 4j+k.
  const __m512 w0 = _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], 0x44), _mm512_shuffle_ps(v[0], v[1], 0xEE));
  const __m512 w1 = _mm512_add_ps(_mm512_shuffle_ps(v[2], v[3], 0x44), _mm512_shuffle_ps(v[2], v[3], 0xEE));
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w0, w1, 0x88), _mm512_shuffle_ps(w0, w1, 0xDD));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, r);
  for (int i = 0; i < C; ++i) out[i] = lanes[4 * (i % 4) + i / 4];
}
#else
#define MOR_HAVE_AVX512 0
inline bool cpu_has_avx512f() { return false; }
#endif

// Rounds a float32 value to bfloat16 and back (round to nearest even, NaN kept), vectorisable.
inline float round_bf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  const uint32_t out = (u & 0x7FFFFFFFu) > 0x7F800000u ? (u | 0x00400000u) & 0xFFFF0000u : rounded;
  float r;
  std::memcpy(&r, &out, sizeof r);
  return r;
}

template <typename T>
inline float to_f(T v) { return static_cast<float>(v); }
inline float to_f(c10::BFloat16 v) {
  const uint32_t u = static_cast<uint32_t>(v.x) << 16;
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}
template <typename T>
inline T from_f(float v) { return static_cast<T>(v); }
template <>
inline c10::BFloat16 from_f<c10::BFloat16>(float v) {
  const float r = round_bf16(v);
  uint32_t u;
  std::memcpy(&u, &r, sizeof u);
  c10::BFloat16 b;
  b.x = static_cast<uint16_t>(u >> 16);
  return b;
}
// The value the reference holds after an op whose result is stored in T.
template <typename T>
inline float rnd(float v) { return v; }
template <>
inline float rnd<c10::BFloat16>(float v) { return round_bf16(v); }
// The same chosen at run time, for the cloned float loops (the branch is hoisted out of the loop).
inline float rnd_if(float v, bool bf16) { return bf16 ? round_bf16(v) : v; }

// Loads n values of T into float (bf16: a shift).
template <typename T>
inline void load_row(const T* src, float* dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = to_f(src[j]);
}
template <typename T>
inline void store_row(const float* src, T* dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = from_f<T>(src[j]);
}

// bf16 rows <-> float rows as load_row/store_row, cloned per ISA: the inlined loops of a kernel
// compiled for the baseline ISA (a template outside a clone) do not vectorise. float: a copy.
void load_row_bf16(const c10::BFloat16* src, float* dst, int64_t n);
void store_row_bf16(const float* src, c10::BFloat16* dst, int64_t n);
template <typename T>
void load_any(const T* src, float* dst, int64_t n) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) load_row_bf16(src, dst, n);
  else std::memcpy(dst, src, n * sizeof(float));
}
template <typename T>
void store_any(const float* src, T* dst, int64_t n) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) store_row_bf16(src, dst, n);
  else std::memcpy(dst, src, n * sizeof(float));
}

// Throws unless x is a CPU float32/bfloat16 tensor; `what` names the kernel in the message.
void check_kernel_dtype(const torch::Tensor& x, const char* what);

// sum of x[j]^2 in float32 (16 partial sums, so it vectorises without -ffast-math).
float sum_squares(const float* x, int64_t n);
// sum of a[j] * b[j] in float32, the same 16 partial sums.
float dot_row(const float* a, const float* b, int64_t n);

// RMSNorm of x [N, C] (contiguous) with weight [C] (x's dtype) into out [N, C]; inv_rms [N] gets
// rsqrt(mean(x^2) + eps) per row when non-null (what the backward needs besides x).
void rms_norm_rows(const torch::Tensor& x, const torch::Tensor& weight, double eps, torch::Tensor& out, float* inv_rms);

// Rotate-half RoPE with sin scaled by sin_sign (+1 forward; -1 is the transpose, i.e. the backward):
// x and out are [B, T, H, D] with any strides but a unit last one; cos/sin [B, T, D] (unit last
// stride, only the first D/2 read: the halves are equal).
void rope_rows(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, float sin_sign,
               torch::Tensor& out);

// route_gate_ (kernels.h) on rows [n0, n1) of bf16 h (row stride ld, E logits then the A products
// of col_expert.size() columns), for kernels that gate inside their own parallel region (gemv.h).
void route_gate_rows(c10::BFloat16* h, int64_t ld, int64_t n0, int64_t n1, int64_t E, int64_t K,
                     const std::vector<int64_t>& col_expert);

}  // namespace mor::kern
