// The causal-LM cross-entropy of training and validation: the lm_head GEMM followed by the shifted,
// ignore_index -100 mean cross-entropy, as today's reference op sequence and as a fused, chunked
// custom autograd function that never materialises the float32 [B*T, V] logits (it computes the
// hidden-state gradient chunk by chunk during the forward, while each chunk of logits is in cache).
// Shapes: B batch, T positions, C hidden, V vocab, N = B*(T-1) shifted rows, n rows with a label.
#pragma once
#include "torch_api.h"

#include <cstdint>

namespace mor {

// cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index -100), mean over the labelled rows:
// logits [B, T, V] (cast to float32), labels [B, T]. The CE part of compute_loss.
torch::Tensor shifted_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels);

// logits = matmul(hidden, weight^T).to(float32); cross_entropy(logits[:, :-1], labels[:, 1:],
// ignore_index -100), mean over the labelled rows (NaN when none: 0/0). hidden [B, T, C] in the
// compute dtype, weight [V, C] (lm_head or the tied embedding), labels [B, T] int64.
torch::Tensor lm_loss_reference(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels);

// The same loss (float32 scalar) without the [N, V] float32 logits: rows processed chunk_rows at a
// time (GEMM in the compute dtype, rounded there as the reference rounds, then float32 log-softmax).
// When a gradient is wanted (grad mode on and hidden requires grad) each chunk's
// d(hidden) = ((softmax - onehot) / n).to(dtype) @ weight is computed in the forward and kept
// ([n, C], compute dtype); backward scales it by the incoming gradient and scatters it into a zero
// [B, T, C]. No gradient flows to `weight`: it throws when weight requires grad (use lm_loss, which
// falls back to the reference then). float32 or bfloat16 only (float16 would flush the unscaled
// 1/n gradients to zero before the loss scale reaches them); throws otherwise.
torch::Tensor lm_loss_chunked(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels,
                              int64_t chunk_rows);

// Rows per chunk for vocabulary V (see lm_loss.cpp for the choice).
int64_t lm_loss_chunk_rows(int64_t vocab);

// Whether lm_loss takes the chunked path: fused_enabled() (MOR_FUSED), weight frozen, hidden and
// weight of one dtype, float32 or bfloat16.
bool lm_loss_chunked_ok(const torch::Tensor& hidden, const torch::Tensor& weight);

// lm_loss_chunked(hidden, weight, labels, lm_loss_chunk_rows(V)) when lm_loss_chunked_ok, else the
// reference.
torch::Tensor lm_loss(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels);

}  // namespace mor
