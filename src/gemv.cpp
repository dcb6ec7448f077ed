// Skinny bf16 GEMM (see gemv.h): each task streams a slice of W's rows once, NR rows at a time,
// against all M activation rows held in L1, with vdpbf16ps (pairs of bf16 products into float32
// lanes); lanes are summed at the end of a row and rounded once to bf16. oneDNN's bf16 GEMM reaches
// about half the read bandwidth at M = 1 (bench_eval), this about what a plain read does. The
// low-rank update of decode rows (the LoRA B product) runs along the outputs instead, 64 columns
// per AVX-512 block. gemv_group runs several weights' rows, gates and updates in one OpenMP region.
#include "gemv.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"
#include "kernels_rows.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>  // (kernels_rows.h silences GCC 12's -Wuninitialized in these headers)
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

using kern::lane_sums;

// W rows in flight per block above 4 rows of x at K > 1536 (see rows_in_flight). Each load prefetches the same position of the next block's row (a
// prefetch past W's end is harmless): a fixed 1024 elements ahead had hit, for 3 of 4 rows at
// K = 1024, a row of the block already being loaded. Measured on a cold 64 MB W, 2 threads: 1.1x
// at M = 1, 1.2x at M = 4.
constexpr int kRowsInFlight = 4;

// Two-pass rows (M > 4, see gemv_rows) take 6 W rows per block where K is small enough that x's 8
// rows, the block and the next one stay in L1 (48 KiB): 24 accumulators a pass instead of 16, so
// each pass keeps more products in flight per W byte. Cold W, 2 threads, M = 8, a standalone
// probe: 1.15-1.2x at K = 1024; at K = 2816 6 rows lost 0-10%.
//
// At most 4 rows of x, W is read one row at a time, front to back (the next row prefetched at the
// same offset): interleaving 4 rows' loads had made 4 streams 2K bytes apart, which the hardware
// prefetchers followed worse. Cold W, 2 threads, M = 1, one process alternating the two: lm_head
// [32000, 1024] 39 -> 49 GB/s, q [1024, 1024] 31 -> 42, k/v [256, 1024] 28 -> 40; M = 2 and 4 gain
// 10-40%. Above 4 rows one W row per block lost (M = 8 decode steps 8.6 -> 10.5 ms): there x's
// rows cost a load each per W load, so blocks of rows reuse them from registers.
int rows_in_flight(int64_t M, int64_t K) {
  if (M <= 4) return 1;
  return K <= 1536 ? 6 : kRowsInFlight;
}

// Dot products of MR rows of x (row stride ldx) with NR consecutive rows of w (length K, row
// stride K): dot[m][n]. The K tail is loaded masked (zeros contribute nothing). Rows [P0, P1) of
// the next block are prefetched (see gemv_rows).
template <int MR, int NR, int P0 = 0, int P1 = NR>
MOR_BF16_TARGET inline void dot_block(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t K,
                                      float dot[MR][NR]) {
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512i wv[NR];
    for (int n = 0; n < NR; ++n) wv[n] = _mm512_loadu_si512(w + n * K + k);
    for (int n = P0; n < P1; ++n) _mm_prefetch(reinterpret_cast<const char*>(w + (n + NR) * K + k), _MM_HINT_T0);
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
  if constexpr (MR * NR <= 16) {
    lane_sums<MR * NR>(&acc[0][0], &dot[0][0]);
  } else {  // each sum follows the same tree in any group (lane_sums' test)
    lane_sums<16>(&acc[0][0], &dot[0][0]);
    lane_sums<MR * NR - 16>(&acc[0][0] + 16, &dot[0][0] + 16);
  }
}

struct GemvArgs {
  const uint16_t* x;
  int64_t ldx, K, N;
  const uint16_t* w;
  c10::BFloat16* y;  // [M, N] contiguous; read first when accumulate
  bool accumulate;
};

// x [M, K] (unit column stride) against w [N, K] into y [M, N], both contiguous bf16.
GemvArgs gemv_args(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& y, bool accumulate) {
  return GemvArgs{reinterpret_cast<const uint16_t*>(x.data_ptr<c10::BFloat16>()),
                  x.size(0) == 1 ? x.size(1) : x.stride(0),
                  x.size(1),
                  w.size(0),
                  reinterpret_cast<const uint16_t*>(w.data_ptr<c10::BFloat16>()),
                  y.data_ptr<c10::BFloat16>(),
                  accumulate};
}

// Rows m0 .. m0 + MR of y for W rows n .. n + NR, prefetching rows [P0, P1) of the next block.
template <int MR, int NR, int P0 = 0, int P1 = NR>
MOR_BF16_TARGET inline void gemv_block(const GemvArgs& a, int64_t m0, int64_t n) {
  float d[MR][NR];
  dot_block<MR, NR, P0, P1>(a.x + m0 * a.ldx, a.ldx, a.w + n * a.K, a.K, d);
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
// Every output's float sum is the same either way. With two passes each prefetches half of the
// next block's rows: all in the first had left the memory idle during the second, whose loads hit
// L1 (cold W, M = 8, 2 threads, a standalone probe: 29-33 -> 36-40 GB/s; the M = 1 rate is 39-49).
template <int MR, int NR>
MOR_BF16_TARGET void gemv_rows(const GemvArgs& a, int64_t n0, int64_t n1) {
  constexpr int M1 = MR <= 4 ? MR : 4, M2 = MR - M1, P = M2 > 0 ? NR / 2 : NR;
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) {
    gemv_block<M1, NR, 0, P>(a, 0, n);
    if constexpr (M2 > 0) gemv_block<M2, NR, P, NR>(a, M1, n);
  }
  for (; n < n1; ++n) {
    gemv_block<M1, 1>(a, 0, n);
    if constexpr (M2 > 0) gemv_block<M2, 1, 1, 1>(a, M1, n);
  }
}

// W rows in nr-row blocks of one or more weights (segments) sharing x, numbered one after another.
// Blocks never straddle segments, so each row is computed as a lone gemv_rows call computes it.
int64_t segment_blocks(const GemvArgs& a, int nr) { return (a.N + nr - 1) / nr; }

// Global blocks [b0, b1) of the segments, NR W rows against at most 4 rows of x at a time.
template <int MR, int NR>
void segment_rows(const GemvArgs* segs, size_t n, int64_t b0, int64_t b1) {
  int64_t first = 0;  // the segment's first global block
  for (size_t i = 0; i < n && first < b1; ++i) {
    const int64_t nb = segment_blocks(segs[i], NR), lo = std::max(b0, first), hi = std::min(b1, first + nb);
    if (lo < hi) gemv_rows<MR, NR>(segs[i], (lo - first) * NR, std::min(segs[i].N, (hi - first) * NR));
    first += nb;
  }
}

using SegmentRowsFn = void (*)(const GemvArgs*, size_t, int64_t, int64_t);

template <int NR>
SegmentRowsFn segment_rows_for(int64_t M) {
  switch (M) {
    case 1: return segment_rows<1, NR>;
    case 2: return segment_rows<2, NR>;
    case 3: return segment_rows<3, NR>;
    case 4: return segment_rows<4, NR>;
    case 5: return segment_rows<5, NR>;
    case 6: return segment_rows<6, NR>;
    case 7: return segment_rows<7, NR>;
    case 8: return segment_rows<8, NR>;
    default: throw std::runtime_error("gemv_bf16: " + std::to_string(M) + " rows (at most 8)");
  }
}

// The row kernel for M rows of x with K columns, and its W rows per block.
struct RowsKernel {
  SegmentRowsFn fn;
  int nr;
};
RowsKernel rows_kernel(int64_t M, int64_t K) {
  const int nr = rows_in_flight(M, K);
  if (nr == 1) return {segment_rows_for<1>(M), nr};
  return {nr == kRowsInFlight ? segment_rows_for<kRowsInFlight>(M) : segment_rows_for<6>(M), nr};
}

#endif  // MOR_HAVE_BF16_KERNEL

// Threads for `bytes` of weights: one per ~64 KiB, since below it a fork costs about what the work does.
int64_t gemv_tasks(int64_t bytes) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), bytes / (64 << 10)));
}

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
  const GemvArgs a = gemv_args(x, w, y, acc.defined());
  const RowsKernel rows = rows_kernel(M, K);
  const int64_t blocks = segment_blocks(a, rows.nr), tasks = gemv_tasks(2 * N * K);
  at::parallel_for(0, blocks, (blocks + tasks - 1) / tasks, [&](int64_t b0, int64_t b1) { rows.fn(&a, 1, b0, b1); });
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

// Columns [c0, c1) of the low-rank update in chunks of kLowRankChunk, AVX-512 blocks of 64 from
// each chunk's start. Every element's sum is the same for any split (FMA = mul + add here).
template <typename T>
void low_rank_range(T* acc, const T* a, int64_t lda, const T* bt, int64_t M, int64_t R, int64_t O, int64_t c0,
                    int64_t c1) {
  for (int64_t n0 = c0; n0 < c1; n0 += kLowRankChunk) {
    const int64_t n1 = std::min(c1, n0 + kLowRankChunk);
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      int64_t nv = n0;  // columns done by the AVX-512 blocks
#if MOR_HAVE_AVX512
      if (kern::cpu_has_avx512f()) {
        low_rank_blocks_avx512(acc, a, lda, bt, M, R, O, n0, (n1 - n0) / 64);
        nv = n0 + (n1 - n0) / 64 * 64;
      }
#endif
      if (nv < n1) low_rank_cols_bf16(acc, a, lda, bt, M, R, O, nv, n1);
    } else
      low_rank_cols_f32(acc, a, lda, bt, M, R, O, n0, n1);
  }
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
  at::parallel_for(0, chunks, grain, [&](int64_t ch0, int64_t ch1) {
    const int64_t c0 = ch0 * kLowRankChunk, c1 = std::min(O, ch1 * kLowRankChunk);
    if (acc.scalar_type() == torch::kBFloat16)
      low_rank_range(acc.data_ptr<c10::BFloat16>(), a.data_ptr<c10::BFloat16>(), lda, bt.data_ptr<c10::BFloat16>(), M,
                     R, O, c0, c1);
    else low_rank_range(acc.data_ptr<float>(), a.data_ptr<float>(), lda, bt.data_ptr<float>(), M, R, O, c0, c1);
  });
  return acc;
}

bool gemv_group_ok(const torch::Tensor& x, const std::vector<GemvProjection>& ps) {
  for (const auto& p : ps) {
    if (!gemv_ok(x, p.w)) return false;
    if (!p.ra.defined()) continue;
    const int64_t E = p.n_expert, R = p.ra.size(0) - E;
    if (!gemv_ok(x, p.ra) || !p.col_expert || E < 1 || R < 1 || p.top_k < 1 || p.top_k > E ||
        int64_t(p.col_expert->size()) != R || !fused_ok(x, p.bt) || p.bt.dim() != 2 || p.bt.size(0) != R ||
        p.bt.size(1) != p.w.size(0) || !p.bt.is_contiguous())
      return false;
  }
  return !ps.empty();
}

namespace {

// One adapter's low-rank update in gemv_group: acc [M, O] += a [M, R] (row stride lda) bt [R, O].
struct LowRankPart {
  c10::BFloat16* acc;
  const c10::BFloat16* a;
  const c10::BFloat16* bt;
  int64_t lda, R, O;
};

constexpr int64_t kLowRankUnit = 64;  // columns: the AVX-512 block

// Smallest unit u in [0, n] with v <= u * c (c > 0).
int64_t first_unit_at(int64_t v, int64_t c, int64_t n) { return v <= 0 ? 0 : std::min(n, (v + c - 1) / c); }

// Thread t of nt: the units of 64 columns, over all parts in order, whose running cost (R per
// unit) starts in [total * t / nt, total * (t + 1) / nt), so every unit has exactly one owner.
void low_rank_share(const std::vector<LowRankPart>& parts, int64_t M, int64_t t, int64_t nt) {
  int64_t total = 0;
  for (const auto& p : parts) total += (p.O + kLowRankUnit - 1) / kLowRankUnit * p.R;
  const int64_t lo = total * t / nt, hi = total * (t + 1) / nt;
  int64_t start = 0;
  for (const auto& p : parts) {
    const int64_t units = (p.O + kLowRankUnit - 1) / kLowRankUnit;
    const int64_t u0 = first_unit_at(lo - start, p.R, units), u1 = first_unit_at(hi - start, p.R, units);
    if (u0 < u1)
      low_rank_range(p.acc, p.a, p.lda, p.bt, M, p.R, p.O, u0 * kLowRankUnit, std::min(p.O, u1 * kLowRankUnit));
    start += units * p.R;
  }
}

}  // namespace

void gemv_group(const torch::Tensor& x, std::vector<GemvProjection>& ps) {
  RECORD_FUNCTION("mor::gemv_group", std::vector<c10::IValue>({x}));
  if (!gemv_group_ok(x, ps))
    throw std::runtime_error("gemv_group: needs bf16 CPU x [M <= 8, K] and contiguous W (and [router; A] [E + R, K], "
                             "B^T [R, N]) on an AVX512-BF16 CPU with the fused kernels on");
#if MOR_HAVE_BF16_KERNEL
  const int64_t M = x.size(0);
  const RowsKernel rows = rows_kernel(M, x.size(1));
  std::vector<GemvArgs> segs;
  std::vector<LowRankPart> parts;
  int64_t bytes = 0, blocks = 0;
  for (auto& p : ps) {
    p.y = torch::empty({M, p.w.size(0)}, p.w.options());
    segs.push_back(gemv_args(x, p.w, p.y, false));
    if (p.ra.defined()) {
      p.h = torch::empty({M, p.ra.size(0)}, p.ra.options());
      segs.push_back(gemv_args(x, p.ra, p.h, false));
      const int64_t E = p.n_expert, R = p.ra.size(0) - E;
      parts.push_back({p.y.data_ptr<c10::BFloat16>(), p.h.data_ptr<c10::BFloat16>() + E, p.bt.data_ptr<c10::BFloat16>(),
                       E + R, R, p.w.size(0)});
    }
  }
  for (const auto& a : segs) bytes += 2 * a.N * a.K, blocks += segment_blocks(a, rows.nr);
  auto gate = [&] {
    for (auto& p : ps)
      if (p.ra.defined())
        kern::route_gate_rows(p.h.data_ptr<c10::BFloat16>(), p.h.size(1), 0, M, p.n_expert, p.top_k, *p.col_expert);
  };
  const int64_t tasks = gemv_tasks(bytes);
#ifdef _OPENMP
  if (tasks > 1 && !omp_in_parallel()) {
    // The gates need every row of h, so the updates wait for a barrier; one thread gates.
#pragma omp parallel num_threads(static_cast<int>(tasks))
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      rows.fn(segs.data(), segs.size(), blocks * t / nt, blocks * (t + 1) / nt);
#pragma omp barrier
#pragma omp single
      gate();
      low_rank_share(parts, M, t, nt);
    }
    return;
  }
#endif
  rows.fn(segs.data(), segs.size(), 0, blocks);
  gate();
  low_rank_share(parts, M, 0, 1);
#endif
}

}  // namespace mor
