// Fused CPU kernels for the decoder's memory-bound pieces (attention softmax, decode attention on the
// KV cache, RMSNorm, RoPE; SiLU*mul as silu + in-place mul) and the MoLA routing of inference, each beside the op sequence it replaces
// as its pure reference, with the same rounding points (values are rounded to the compute dtype wherever the
// reference's ops round them; float32 math in between). Used when nothing needs a gradient (eval,
// scoring, generation); training uses the autograd versions at the end and in kernels_train.h.
// Shapes: B batch, H heads, T queries, S keys, D head dim, C hidden, N tokens, E experts, R ranks.
#pragma once
#include "torch_api.h"

#include <cstdint>
#include <vector>

namespace mor {

// Global switch (default on; MOR_FUSED=0 in the environment turns it off at start): benchmarks
// compare both paths in one process, tests pin the fused path against the op-by-op one.
void set_fused_enabled(bool on);
bool fused_enabled();

// Whether the fused kernels may run on these tensors: no gradient wanted (grad mode off or none
// requires grad), CPU, float32 or bfloat16.
bool fused_ok(const torch::Tensor& x);
bool fused_ok(const torch::Tensor& a, const torch::Tensor& b);

// probs = softmax(masked_fill(scores / divisor, mask, finfo(dtype).min), float32).to(dtype).
// scores [B, H, T, S] (compute dtype), mask bool broadcastable to it (true = masked; undefined = none).
// The fused version writes the probabilities into `scores` when it is contiguous (else a copy) and
// returns them.
torch::Tensor attention_probs(torch::Tensor scores, const torch::Tensor& mask, double divisor);
torch::Tensor attention_probs_reference(const torch::Tensor& scores, const torch::Tensor& mask, double divisor);

// softmax(masked(q k^T / divisor)) v for inference, reading k and v in place: narrowed views of
// a KV cache, which the batched matmul would first copy whole. q [B, H, T, D]; k, v [B, Hkv, S, D]
// (query head h attends kv head h / (H / Hkv), HF's repeat_kv order); mask as for attention_probs.
// The reference is matmul -> attention_probs_reference -> matmul with the same rounding points
// (scores and probabilities rounded to the dtype, float32 sums); only the order of the sums differs.
// Meant for decode (small T): the scores are plain dot products, not a GEMM. Returns [B, H, T, D].
torch::Tensor attention_cached(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask, double divisor);
torch::Tensor attention_cached_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         const torch::Tensor& mask, double divisor);

// silu(g) * u, g and u of one shape (compute dtype): LibTorch's silu and an in-place mul.
torch::Tensor silu_mul(const torch::Tensor& g, const torch::Tensor& u);
torch::Tensor silu_mul_reference(const torch::Tensor& g, const torch::Tensor& u);

// HF LlamaRMSNorm (reference: rms_norm_reference in llama.h): x [..., C], weight [C].
torch::Tensor rms_norm_fused(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Rotate-half RoPE on x [B, T, H, D] with cos/sin [B, T, D] in x's dtype (reference: apply_rope in llama.h).
torch::Tensor apply_rope_fused(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// MoLA routing of inference, in place on h = x [router; A]^T [N, E + R] (compute dtype): the router
// logits h[:, :E] are kept; the A activations h[:, E:] are multiplied by the renormalised top-k gate
// of their expert (zero for experts not chosen), as the fused forward does with
// softmax(float32) -> topk -> w / sum(w) -> cast -> scatter into zeros -> a * gates.
// col_expert [R]: the expert of each A row.
void route_gate_(torch::Tensor& h, int64_t n_expert, int64_t top_k, const std::vector<int64_t>& col_expert);
// The reference: the op sequence above on a copy; returns the gated a [N, R].
torch::Tensor route_gate_reference(const torch::Tensor& h, int64_t n_expert, int64_t top_k,
                                   const std::vector<int64_t>& col_expert);

// Training versions (custom autograd functions, forward as above; backward through the reference's
// ops, same rounding points): for float32/bfloat16 CPU tensors whether or not they require grad.
bool kernel_ok(const torch::Tensor& x);  // enabled, CPU, float32 or bfloat16
// Saves the float32 probabilities for backward, as the reference's float32 softmax does.
torch::Tensor attention_probs_train(const torch::Tensor& scores, const torch::Tensor& mask, double divisor);
// Saves g and u (the reference also keeps silu(g)); recomputes silu(g) in backward.
torch::Tensor silu_mul_train(const torch::Tensor& g, const torch::Tensor& u);

// Compute-dtype copies of one MoLA adapter for inference, made once and rebuilt when a parameter
// changes (an optimizer step or a load bumps its version counter) or the compute dtype does.
struct MolaInferWeights {
  torch::Tensor ra;                 // [E + R, I]: router rows, then the stacked A rows
  torch::Tensor bs;                 // [O, R]: stacked B, each expert's lora_alpha / r_e folded in
  torch::Tensor bt;                 // [R, O]: bs transposed, the decode rows' layout (add_low_rank_nograd_)
  std::vector<int64_t> col_expert;  // [R] expert of each A row
  std::vector<int64_t> key;         // versions and storage of router, A, B, and the dtype
};

// Rebuilds c for these parameters and compute dtype unless its key shows it current.
void refresh_infer_weights(const torch::Tensor& router, const torch::Tensor& lora_A, const torch::Tensor& lora_B,
                           const std::vector<int64_t>& ranks, double lora_alpha, torch::ScalarType dt,
                           MolaInferWeights& c);

// The fused MoLA forward without autograd or dropout (same values as mola_fused_forward in that
// case, routing through route_gate_): x [N, I], weight [O, I] in the compute dtype; router [E, I],
// lora_A [R, I], lora_B [O, R] float32. Four kernels per call: x [router; A]^T, the gate, x W^T and
// one low-rank update; for decode rows they run in one parallel region (gemv_group, gemv.h).
// *router_logits_out (when non-null) gets the logits [N, E] (a view).
torch::Tensor mola_infer_forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& router,
                                 const torch::Tensor& lora_A, const torch::Tensor& lora_B, int64_t top_k,
                                 const std::vector<int64_t>& ranks, double lora_alpha, MolaInferWeights& cache,
                                 torch::Tensor* router_logits_out = nullptr);

}  // namespace mor
