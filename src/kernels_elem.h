// Elementwise kernels for the pieces LibTorch 1.13 runs at about 0.5 G elements/s in bfloat16 on this
// CPU (every bf16 op converts, computes and rounds per vector, single-threaded below its grain): the
// SwiGLU product silu(g) * u forward and backward, and the dropout's scaled copy x * mask. Each
// keeps the exact values of the op sequence it replaces (tested bitwise against LibTorch's ops).
// Shapes: n elements, any shape (inputs are made contiguous).
#pragma once
#include "torch_api.h"

#include <utility>

namespace mor {

// silu(g) * u for bfloat16 g and u of one shape, = torch::silu(g) * u. A bf16 SiLU is a function of
// its one 16-bit input, so a table over all 65536 values, filled once from LibTorch's own silu,
// holds the reference's values whatever its rounding (1.13 rounds after every vector op, 2.x once).
torch::Tensor silu_mul_bf16(const torch::Tensor& g, const torch::Tensor& u);

// The gradients of silu(g) * u for the output gradient d (all bfloat16, one shape), as autograd of
// torch::silu(g) * u gives them: {dg, du} = {silu_backward(d * u, g), d * silu(g)}. silu_backward's
// sigmoid and its second factor 1 + g (1 - sigmoid) are tables too; the order and rounding of the two
// products follow the LibTorch version (1.13: each rounded to bf16; 2.x: float, one rounding).
std::pair<torch::Tensor, torch::Tensor> silu_mul_backward_bf16(const torch::Tensor& d, const torch::Tensor& g,
                                                               const torch::Tensor& u);

// x * mask, where mask (x's dtype, float32 or bfloat16) holds `scale` everywhere but 0 at the flat
// indexes `zero_index` (int64, repeats allowed), without the mask tensor: values equal to
// x * torch::full(x.sizes(), scale).index_fill_(zero_index, 0) (zeros as x * 0: signed, NaN kept).
// With autograd: grad_x = grad * mask in the same way; zero_index and scale are constants.
torch::Tensor scaled_dropout(const torch::Tensor& x, const torch::Tensor& zero_index, double scale);
// The reference: the mask tensor and LibTorch's mul.
torch::Tensor scaled_dropout_reference(const torch::Tensor& x, const torch::Tensor& zero_index, double scale);

}  // namespace mor
