// The frozen base projection and a MoLA adapter's input projections in one autograd function, with
// the LoRA dropout applied as a sparse correction: h = [x R^T, dropout(x) A^T] is x [R; A]^T minus the
// dropped elements' terms, so the router and A share one GEMM with dropout on, no masked copy of x is
// made or saved, and the backward's x-gradient (base plus adapter) is one GEMM accumulation.
// Shapes: N tokens, I in, O out, P rows of wc = [router; A] (the first n_plain not under dropout),
// R = P - n_plain, k drawn positions.
#pragma once
#include "torch_api.h"

#include <utility>

namespace mor {

// One draw of the adapter dropout over x [N, I]: flat indexes of the zeroed elements (int64 [k];
// repeats allowed, a position drawn twice is dropped once) and the inverted-dropout scale 1/(1-p),
// which multiplies in x's dtype as torch's dropout mask holds it (bf16: 1/0.95 is 1.0546875).
struct DropoutDraw {
  torch::Tensor zero_index;
  double scale = 1.0;
  bool defined() const { return zero_index.defined(); }
};

// The draw for dropout probability p in (0, 1) over x's elements, exact iid Bernoulli(p). For small p
// by Poissonization: K ~ Poisson(n * -ln(1 - p)) positions drawn uniformly with replacement, each
// element then dropped with probability 1 - e^{ln(1-p)} = p, from ~p*n random numbers instead of n,
// with no wait on the device (the count is drawn on the CPU). Beyond p = 0.3 on the CPU (1 - 1/e on
// other devices), one uniform per element (u < p). Torch's default generators, so seeded runs and
// gradient checkpointing's replays repeat the draw.
DropoutDraw draw_dropout(const torch::Tensor& x, double p);

// y0 = x W^T [N, O] and h [N, P] with h[:, :n_plain] = x wc[:n_plain]^T and h[:, n_plain:] =
// dropout(x) wc[n_plain:]^T, dropout(x) = x * mask (mask = scale, 0 at the draw; no draw: x).
// Autograd for x, weight (when it requires grad) and wc. x [N, I], weight [O, I] and wc [P, I] share
// one dtype, float32 or bfloat16, on the CPU (see adapter_input_gemm_ok).
// The dropped terms are subtracted in float32 from the GEMMs' results (forward: from h; backward: from
// grad x and grad A), so values differ from the reference by rounding only.
std::pair<torch::Tensor, torch::Tensor> adapter_input_gemm(const torch::Tensor& x, const torch::Tensor& weight,
                                                           const torch::Tensor& wc, int64_t n_plain,
                                                           const DropoutDraw& drop);
// The same from the masked copy of x (scaled_dropout_reference) with torch ops, on any device.
std::pair<torch::Tensor, torch::Tensor> adapter_input_gemm_reference(const torch::Tensor& x,
                                                                     const torch::Tensor& weight,
                                                                     const torch::Tensor& wc, int64_t n_plain,
                                                                     const DropoutDraw& drop);

// Whether adapter_input_gemm applies: fused kernels on (MOR_FUSED), x on the CPU in float32 or
// bfloat16, and no draw or one of at most a quarter of x's elements (past that the corrections cost
// more than the masked copy and a second GEMM).
bool adapter_input_gemm_ok(const torch::Tensor& x, const DropoutDraw& drop);

}  // namespace mor
