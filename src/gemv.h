// Skinny bf16 GEMM for inference (decode): y[M, N] = x[M, K] W[N, K]^T with M <= 8 rows, float32
// accumulation and one rounding to bf16 at the end (where torch::mm rounds), by AVX512-BF16 dot
// products streamed over W's rows; plus the reference and the dispatch that falls back to torch::mm;
// and the low-rank update of decode rows (the LoRA B product), vectorised along the outputs; and
// gemv_group, all projections of one input (with their MoLA adapters) in one parallel region.
// Shapes: M rows of activations (tokens), K input features, N output features (W's rows).
#pragma once
#include "torch_api.h"

#include <cstdint>
#include <vector>

namespace mor {

// Most activation rows the kernel takes; above it a GEMM is compute-bound and oneDNN wins.
constexpr int64_t kGemvMaxRows = 8;

// Whether gemv_bf16 runs the kernel for these operands: fused kernels enabled (kernels.h), the CPU
// has AVX512-BF16, no gradient wanted, x [M, K] (M <= kGemvMaxRows, unit column stride) and W [N, K]
// contiguous, both bf16 on the CPU.
bool gemv_ok(const torch::Tensor& x, const torch::Tensor& w);

// y = x W^T as a new bf16 [M, N] tensor; acc (when defined, [M, N] bf16 contiguous) is instead
// updated in place, acc = bf16(acc + x W^T), as addmm_ rounds, and returned. Throws unless gemv_ok.
torch::Tensor gemv_bf16(const torch::Tensor& x, const torch::Tensor& w, torch::Tensor acc = {});

// The reference: float32 products of the bf16 values summed in float32, rounded once to bf16.
torch::Tensor gemv_bf16_reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& acc = {});

// x [..., K] W^T for inference call sites: the kernel where gemv_ok holds for x flattened to
// [rows, K], else torch::matmul. Same rounding point either way. The kernel measured faster than
// torch::mm at every M <= 8 and decode shape (bench_gemv, 2 threads, AVX512-BF16 EPYC): 45-63 GB/s
// against oneDNN's 10-25 at M = 1, 27-32 against 10-21 at M = 8. (While the kernels ran on one
// thread, before morlib was built with OpenMP, oneDNN had kept the MLP and the vocabulary at M > 4.)
torch::Tensor linear_nograd(const torch::Tensor& x, const torch::Tensor& w);

// acc [M, O] += a [M, R] b^T in place for inference, b [O, R] the (scaled) B of a rank-R update
// and bt its contiguous transpose [R, O]. For M <= kGemvMaxRows bf16/float32 CPU rows (fused
// kernels on) a kernel on bt: each element's R products summed in float32 and added to acc with one
// rounding, as addmm_ rounds. Its sums run along O, so it needs no horizontal sums: bench_gemv
// measured it 1.6-8x faster than the row kernel with accumulate (gemv_bf16 on b), whose 16-lane sum
// costs most of a K = R <= 64 row. Otherwise acc.addmm_(a, b^T). a may have a row stride (a view of
// a wider tensor); acc and bt are contiguous.
torch::Tensor& add_low_rank_nograd_(torch::Tensor& acc, const torch::Tensor& a, const torch::Tensor& b,
                                    const torch::Tensor& bt);

// One projection of gemv_group: y = x W^T; with an adapter (ra defined) also MoLA's decode as
// mola_infer_forward (kernels.h) runs it: h = x ra^T (E router logits, then R A products), route_gate_'s
// top-k gate applied to h's A products in place, then y += (gated A products) bt as add_low_rank_nograd_ adds.
struct GemvProjection {
  torch::Tensor w;                                   // [N, K] bf16, contiguous
  torch::Tensor ra, bt;                              // adapter: [E + R, K] and [R, N] bf16, contiguous
  int64_t n_expert = 0, top_k = 0;                   // E, K
  const std::vector<int64_t>* col_expert = nullptr;  // [R]: expert of each A row
  torch::Tensor y, h;                                // set by gemv_group: [M, N]; with an adapter [M, E + R]
};

// Whether gemv_group runs on these operands: gemv_ok(x, w), and for an adapter gemv_ok(x, ra),
// consistent E/R/top_k/col_expert and bt [R, N] contiguous in x's dtype.
bool gemv_group_ok(const torch::Tensor& x, const std::vector<GemvProjection>& ps);

// Every projection of one x [M <= 8, K] (q/k/v, gate/up, or one module) in a single parallel
// region: all W and [router; A] rows, a barrier, the gates, the low-rank updates. Separately these
// are up to three forks per projection, and an empty fork measured 3.2 us on 2 threads against the
// 15-60 us of a decode projection. Each value is bitwise what linear_nograd, route_gate_ and
// add_low_rank_nograd_ give (tested). Throws unless gemv_group_ok.
void gemv_group(const torch::Tensor& x, std::vector<GemvProjection>& ps);

}  // namespace mor
