// Fused RMSNorm and RoPE for training: custom autograd functions whose forward has the references'
// rounding points (rms_norm_reference and apply_rope_reference in llama.h; the same row loops as the
// inference kernels of kernels.h) and whose backward computes the references' gradients in float32
// in one pass, without the references' float32 copies, slices and zero fills.
// Shapes: N rows, C hidden, B batch, T tokens, H heads, D head dim.
#pragma once
#include "torch_api.h"

namespace mor {

// HF LlamaRMSNorm with autograd: x [..., C], weight [C], both float32 or both bfloat16 on the CPU
// (callers check kernel_ok; float64 gradient tests stay on the reference). Saves x and the per-row
// 1/rms (float32 [N]). Backward: grad_x = inv*gn - x*inv^3*sum(gn*x)/C with gn = round(grad*weight)
// (the reference's bf16 product), and grad_weight = round(sum over rows of round(grad*normed)), summed
// in float32 over fixed blocks of rows so the result does not depend on the thread count.
torch::Tensor rms_norm_train(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Rotate-half RoPE with autograd: x [B, T, H, D] (the projection layout; any strides with a unit last
// one) -> [B, H, T, D] contiguous, the attention layout, so q/k need no copy before their GEMMs.
// cos/sin [B or 1, T, D] in x's dtype must not require grad (throws). Backward, the transposed
// rotation in one pass: grad_x = grad*cos + rotate_half^T(grad*sin) = [g1 c + g2 s, g2 c - g1 s].
torch::Tensor apply_rope_train(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace mor
