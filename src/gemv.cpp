// Skinny bf16 GEMM (see gemv.h): each task streams a slice of W's rows once, NR rows at a time,
// against all M activation rows held in L1, with vdpbf16ps (pairs of bf16 products into float32
// lanes); lanes are summed at the end of a row and rounded once to bf16. oneDNN's bf16 GEMM reaches
// about half the read bandwidth at M = 1 (bench_eval), this about what a plain read does. The
// low-rank update of decode rows (the LoRA B product) runs along the outputs instead, 64 columns
// per AVX-512 block.
#include "gemv.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels.h"
#include "kernels_rows.h"

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 headers pass an intentionally undefined register to the shuffles' masked
// builtins, which -Wuninitialized reports at every inlining site.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define MOR_HAVE_BF16_KERNEL 1
#define MOR_BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))
#else
#define MOR_HAVE_BF16_KERNEL 0
#endif

namespace mor {

namespace {

bool cpu_has_avx512bf16() {
#if MOR_HAVE_BF16_KERNEL
  static const bool ok = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl");
  return ok;
#else
  return false;
#endif
}

#if MOR_HAVE_BF16_KERNEL

// The 16-lane sums of C <= 16 accumulators at once. Each follows the halving tree of a single
// vector's sum (lane i + lane i^8, then i^4, i^2, i^1; bitwise what that sum gives, checked once
// against it), but every shuffle combines two accumulators: 16 sums take 15 shuffle pairs instead
// of 16 x 4, which at M = 8 were about a seventh of the instructions of a K = 1024 row.
template <int C>
MOR_BF16_TARGET inline void lane_sums(const __m512* acc, float* out) {
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

// W rows in flight per block. Each load prefetches the same position of the next block's row (a
// prefetch past W's end is harmless): a fixed 1024 elements ahead had hit, for 3 of 4 rows at
// K = 1024, a row of the block already being loaded. Measured on a cold 64 MB W, 2 threads: 1.1x
// at M = 1, 1.2x at M = 4.
constexpr int kRowsInFlight = 4;

// Dot products of MR rows of x (row stride ldx) with NR consecutive rows of w (length K, row
// stride K): dot[m][n]. The K tail is loaded masked (zeros contribute nothing).
template <int MR, int NR>
MOR_BF16_TARGET inline void dot_block(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t K,
                                      float dot[MR][NR]) {
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512i wv[NR];
    for (int n = 0; n < NR; ++n) {
      wv[n] = _mm512_loadu_si512(w + n * K + k);
      _mm_prefetch(reinterpret_cast<const char*>(w + (n + NR) * K + k), _MM_HINT_T0);
    }
    for (int m = 0; m < MR; ++m) {
      const __m512i xv = _mm512_loadu_si512(x + m * ldx + k);
      for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], (__m512bh)xv, (__m512bh)wv[n]);
    }
  }
  if (k < K) {
    const __mmask32 mk = static_cast<__mmask32>((1ull << (K - k)) - 1);
    __m512i wv[NR];
    for (int n = 0; n < NR; ++n) wv[n] = _mm512_maskz_loadu_epi16(mk, w + n * K + k);
    for (int m = 0; m < MR; ++m) {
      const __m512i xv = _mm512_maskz_loadu_epi16(mk, x + m * ldx + k);
      for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], (__m512bh)xv, (__m512bh)wv[n]);
    }
  }
  lane_sums<MR * NR>(&acc[0][0], &dot[0][0]);
}

struct GemvArgs {
  const uint16_t* x;
  int64_t ldx, K, N;
  const uint16_t* w;
  c10::BFloat16* y;  // [M, N] contiguous; read first when accumulate
  bool accumulate;
};

// Rows m0 .. m0 + MR of y for W rows n .. n + NR.
template <int MR, int NR>
MOR_BF16_TARGET inline void gemv_block(const GemvArgs& a, int64_t m0, int64_t n) {
  float d[MR][NR];
  dot_block<MR, NR>(a.x + m0 * a.ldx, a.ldx, a.w + n * a.K, a.K, d);
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NR; ++j) {
      c10::BFloat16& out = a.y[(m0 + m) * a.N + n + j];
      const float v = a.accumulate ? static_cast<float>(out) + d[m][j] : d[m][j];
      out = c10::BFloat16(v);  // round to nearest even, as the mm's bf16 output
    }
}

// W rows [n0, n1) for all MR rows of x: blocks of NR rows, then single rows for the remainder. Above
// 4 rows of x a block runs as two passes (x rows 0-3, then the rest) over W's rows, the second from
// L1: one pass of 8 x 2 accumulators measured 21-28 GB/s, two of 4 x 4 31-40 (cold W, 2 threads).
// Every output's float sum is the same either way.
template <int MR, int NR>
MOR_BF16_TARGET void gemv_rows(const GemvArgs& a, int64_t n0, int64_t n1) {
  constexpr int M1 = MR <= 4 ? MR : 4, M2 = MR - M1;
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) {
    gemv_block<M1, NR>(a, 0, n);
    if constexpr (M2 > 0) gemv_block<M2, NR>(a, M1, n);
  }
  for (; n < n1; ++n) {
    gemv_block<M1, 1>(a, 0, n);
    if constexpr (M2 > 0) gemv_block<M2, 1>(a, M1, n);
  }
}

// At most 16 accumulators: kRowsInFlight W rows against at most 4 rows of x at a time.
template <int MR>
void gemv_parallel(const GemvArgs& a) {
  constexpr int NR = kRowsInFlight;
  const int64_t blocks = (a.N + NR - 1) / NR;
  // Parallel only from ~64 KiB of weights on: below it a fork costs about what the work does.
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / (2 * a.K * NR));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    gemv_rows<MR, NR>(a, b0 * NR, std::min(a.N, b1 * NR));
  });
}

void gemv_dispatch(const GemvArgs& a, int64_t M) {
  switch (M) {
    case 1: return gemv_parallel<1>(a);
    case 2: return gemv_parallel<2>(a);
    case 3: return gemv_parallel<3>(a);
    case 4: return gemv_parallel<4>(a);
    case 5: return gemv_parallel<5>(a);
    case 6: return gemv_parallel<6>(a);
    case 7: return gemv_parallel<7>(a);
    case 8: return gemv_parallel<8>(a);
    default: throw std::runtime_error("gemv_bf16: " + std::to_string(M) + " rows (at most 8)");
  }
}

#endif  // MOR_HAVE_BF16_KERNEL

}  // namespace

bool gemv_ok(const torch::Tensor& x, const torch::Tensor& w) {
  return cpu_has_avx512bf16() && fused_ok(x, w) && x.scalar_type() == torch::kBFloat16 && x.dim() == 2 &&
         w.dim() == 2 && x.size(0) >= 1 && x.size(0) <= kGemvMaxRows && x.size(1) == w.size(1) && x.size(1) > 0 &&
         (x.size(0) == 1 || x.stride(0) >= x.size(1)) && x.stride(1) == 1 && w.is_contiguous();
}

torch::Tensor gemv_bf16(const torch::Tensor& x, const torch::Tensor& w, torch::Tensor acc) {
  RECORD_FUNCTION("mor::gemv", std::vector<c10::IValue>({x, w}));
  if (!gemv_ok(x, w))
    throw std::runtime_error("gemv_bf16: needs bf16 CPU x [M <= 8, K] (unit column stride) and contiguous W [N, K] "
                             "on an AVX512-BF16 CPU with the fused kernels on");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  if (acc.defined()) {
    if (acc.scalar_type() != torch::kBFloat16 || acc.sizes() != torch::IntArrayRef({M, N}) || !acc.is_contiguous())
      throw std::runtime_error("gemv_bf16: acc must be a contiguous bf16 [" + std::to_string(M) + ", " +
                               std::to_string(N) + "] tensor");
  }
  torch::Tensor y = acc.defined() ? acc : torch::empty({M, N}, w.options());
#if MOR_HAVE_BF16_KERNEL
  GemvArgs a{reinterpret_cast<const uint16_t*>(x.data_ptr<c10::BFloat16>()),
             M == 1 ? K : x.stride(0),
             K,
             N,
             reinterpret_cast<const uint16_t*>(w.data_ptr<c10::BFloat16>()),
             y.data_ptr<c10::BFloat16>(),
             acc.defined()};
  gemv_dispatch(a, M);
#endif
  return y;
}

torch::Tensor gemv_bf16_reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& acc) {
  auto d = torch::mm(x.to(torch::kFloat32), w.to(torch::kFloat32).t());  // bf16 products are exact in float32
  if (acc.defined()) d = d + acc.to(torch::kFloat32);
  return d.to(torch::kBFloat16);
}

torch::Tensor linear_nograd(const torch::Tensor& x, const torch::Tensor& w) {
  const int64_t K = x.size(-1);
  const int64_t rows = K > 0 ? x.numel() / K : 0;
  if (rows >= 1 && rows <= kGemvMaxRows && w.dim() == 2) {
    auto x2 = x.reshape({rows, K});
    if (gemv_ok(x2, w)) {
      auto shape = x.sizes().vec();
      shape.back() = w.size(0);
      return gemv_bf16(x2, w).view(shape);
    }
  }
  return torch::matmul(x, w.t());
}

namespace {

constexpr int64_t kLowRankChunk = 256;  // output columns per task: R x 256 of bt stays in L1/L2

// Columns [n0, n1) of every row: sum[j] = sum_r a[m, r] bt[r, n0 + j] in float32, then
// acc[m, n0 + j] = round(acc + sum).
template <typename T>
inline __attribute__((always_inline)) void low_rank_cols(T* acc, const T* a, int64_t lda, const T* bt, int64_t M,
                                                         int64_t R, int64_t O, int64_t n0, int64_t n1) {
  float sum[kLowRankChunk];
  const int64_t w = n1 - n0;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t j = 0; j < w; ++j) sum[j] = 0.0f;
    for (int64_t r = 0; r < R; ++r) {
      const float ar = kern::to_f(a[m * lda + r]);
      const T* row = bt + r * O + n0;
      for (int64_t j = 0; j < w; ++j) sum[j] += ar * kern::to_f(row[j]);
    }
    T* out = acc + m * O + n0;
    for (int64_t j = 0; j < w; ++j) out[j] = kern::from_f<T>(kern::to_f(out[j]) + sum[j]);
  }
}

#if MOR_HAVE_AVX512
// low_rank_cols on nb blocks of 64 columns from n0, each block's sums in four registers over r. The
// FMAs round exactly as the loop's mul-then-add: a product of two bf16 values fits float32.
MOR_AVX512 void low_rank_blocks_avx512(c10::BFloat16* acc, const c10::BFloat16* a, int64_t lda, const c10::BFloat16* bt,
                                       int64_t M, int64_t R, int64_t O, int64_t n0, int64_t nb) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t blk = 0; blk < nb; ++blk) {
      const int64_t n = n0 + 64 * blk;
      __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int64_t r = 0; r < R; ++r) {
        const __m512 ar = _mm512_set1_ps(kern::to_f(a[m * lda + r]));
        const c10::BFloat16* row = bt + r * O + n;
        for (int k = 0; k < 4; ++k) s[k] = _mm512_fmadd_ps(ar, kern::load16(row + 16 * k), s[k]);
      }
      float sum[64];
      for (int k = 0; k < 4; ++k) _mm512_storeu_ps(sum + 16 * k, s[k]);
      c10::BFloat16* out = acc + m * O + n;
      for (int j = 0; j < 64; ++j) out[j] = kern::from_f<c10::BFloat16>(kern::to_f(out[j]) + sum[j]);
    }
}
#endif

MOR_CLONES void low_rank_cols_bf16(c10::BFloat16* acc, const c10::BFloat16* a, int64_t lda, const c10::BFloat16* bt,
                                   int64_t M, int64_t R, int64_t O, int64_t n0, int64_t n1) {
  low_rank_cols(acc, a, lda, bt, M, R, O, n0, n1);
}
MOR_CLONES void low_rank_cols_f32(float* acc, const float* a, int64_t lda, const float* bt, int64_t M, int64_t R,
                                  int64_t O, int64_t n0, int64_t n1) {
  low_rank_cols(acc, a, lda, bt, M, R, O, n0, n1);
}

}  // namespace

torch::Tensor& add_low_rank_nograd_(torch::Tensor& acc, const torch::Tensor& a, const torch::Tensor& b,
                                    const torch::Tensor& bt) {
  const int64_t M = a.size(0), R = a.size(1), O = bt.size(1);
  const bool kernel = fused_ok(acc, a) && fused_ok(a, bt) && a.dim() == 2 && bt.dim() == 2 && acc.dim() == 2 &&
                      M >= 1 && M <= kGemvMaxRows && bt.size(0) == R && acc.size(0) == M && acc.size(1) == O &&
                      acc.is_contiguous() && bt.is_contiguous() && a.stride(1) == 1;
  // addmm_ on b^T, not on bt: LibTorch picks its kernel by layout, and for some small shapes the
  // contiguous [R, O] operand rounds differently (measured at O = R = 16).
  if (!kernel) return acc.addmm_(a.is_contiguous() ? a : a.contiguous(), b.t());
  RECORD_FUNCTION("mor::low_rank", std::vector<c10::IValue>({a, bt}));
  const int64_t lda = M == 1 ? R : a.stride(0), chunks = (O + kLowRankChunk - 1) / kLowRankChunk;
  // one task below ~64 K multiply-adds: a fork would cost what the work does
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / std::max<int64_t>(1, M * R * kLowRankChunk));
  at::parallel_for(0, chunks, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t n0 = c * kLowRankChunk, n1 = std::min(O, n0 + kLowRankChunk);
      if (acc.scalar_type() == torch::kBFloat16) {
        int64_t nv = n0;  // columns done by the AVX-512 blocks
#if MOR_HAVE_AVX512
        if (kern::cpu_has_avx512f()) {
          low_rank_blocks_avx512(acc.data_ptr<c10::BFloat16>(), a.data_ptr<c10::BFloat16>(), lda,
                                 bt.data_ptr<c10::BFloat16>(), M, R, O, n0, (n1 - n0) / 64);
          nv = n0 + (n1 - n0) / 64 * 64;
        }
#endif
        if (nv < n1)
          low_rank_cols_bf16(acc.data_ptr<c10::BFloat16>(), a.data_ptr<c10::BFloat16>(), lda,
                             bt.data_ptr<c10::BFloat16>(), M, R, O, nv, n1);
      } else
        low_rank_cols_f32(acc.data_ptr<float>(), a.data_ptr<float>(), lda, bt.data_ptr<float>(), M, R, O, n0, n1);
    }
  });
  return acc;
}

}  // namespace mor
