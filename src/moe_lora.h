// Mixture-of-LoRA-experts linear layer (MoLA): a frozen base weight plus E LoRA experts behind a
// learned top-k router, computed fused (all experts' A stacked, all B stacked), the balance loss,
// and a per-expert reference loop that the fused path is tested against.
// Shapes: N = B*T tokens, I in_features, O out_features, E experts, K top-k, R = sum of expert ranks.
#pragma once
#include "torch_api.h"

#include "adapter_gemm.h"

#include <memory>
#include <string>
#include <vector>

namespace mor {

struct MolaInferWeights;  // kernels.h
struct GemvProjection;    // gemv.h

// One module's expert layout (see allocation.h for how it is chosen per layer and module).
struct ExpertSpec {
  int64_t n_expert = 0;        // E
  int64_t top_k = 0;           // K
  std::vector<int64_t> ranks;  // r_e, size E
  double lora_alpha = 16.0;    // scaling of expert e = lora_alpha / r_e
  double lora_dropout = 0.05;
  // Routing beyond the reference's top-k (see route_tokens): "top_k" (the default, the reference's
  // numerics) or "top_p" (per token the smallest set of at most K experts whose probability mass
  // reaches top_p); z_loss: coefficient of the router z-loss (ST-MoE), 0 = off.
  std::string router = "top_k";
  double top_p = 0.8;
  double z_loss = 0.0;

  int64_t total_rank() const;  // R = sum r_e
  int64_t rank_offset(int64_t e) const;  // first row of expert e in the stacked A
  bool uniform_rank() const;
  bool operator==(const ExpertSpec& o) const;
  bool operator!=(const ExpertSpec& o) const { return !(*this == o); }
};

// The fused MoLA forward of one module, free of module state so tests and benchmarks can call it.
//   x [N, I] (compute dtype), weight [O, I] (frozen, compute dtype), router [E, I], lora_A [R, I],
//   lora_B [O, R] (float32 trainable; cast to x's dtype for the matmuls).
//   drop: the adapter dropout's draw over x (undefined: none, as in eval or with p = 0); the router
//   logits are computed on x before dropout. The router rows join the A matmul (one [N, E+R] product),
//   with the dropout as a sparse correction where adapter_input_gemm_ok (adapter_gemm.h), else on a
//   masked copy of x (MOR_FUSED=0, other devices, dense draws).
// Returns y [N, O] in x's dtype; *router_logits_out (when non-null) gets the router logits [N, E].
// logits_grad false: the caller differentiates the logits only through the balance loss (no z-loss).
// Then one expert (E = K = 1) takes a shorter path: its gate is softmax of one logit, exactly 1, so
// the routing gives x and the router an exactly zero gradient, and the shorter path computes none of
// it. The router still gets that zero gradient (AdamW's weight decay steps it, as in the reference);
// the logits come detached. MOR_FUSED=0 keeps the full graph.
torch::Tensor mola_fused_forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& router,
                                 const torch::Tensor& lora_A, const torch::Tensor& lora_B, const ExpertSpec& spec,
                                 const DropoutDraw& drop = {}, torch::Tensor* router_logits_out = nullptr,
                                 bool logits_grad = true);

// The reference's per-expert loop (MoLA's patched PEFT): softmax(float32) -> topk -> renormalise ->
// cast to x's dtype, then for each expert the tokens that selected it get B_e(A_e(dropout(x))) *
// scaling_e * weight. A = per-expert [r_e, I], B = per-expert [O, r_e]. Same conventions as above.
torch::Tensor mola_reference_forward(const torch::Tensor& x, const torch::Tensor& weight,
                                     const torch::Tensor& router, const std::vector<torch::Tensor>& A,
                                     const std::vector<torch::Tensor>& B, const ExpertSpec& spec,
                                     const torch::Tensor& x_dropped = {}, torch::Tensor* router_logits_out = nullptr);

// Routing of one module's tokens, as the fused and reference paths apply it.
//   probs [N, E] float32 softmax of the logits; index [N, K] expert ids by descending probability;
//   weights [N, K] in dtype dt, renormalised over the active experts (0 where inactive);
//   active [N, K] bool: top_k = all K, top_p = the prefix whose mass before it is < top_p.
struct RouteResult {
  torch::Tensor probs, index, weights, active;
};
RouteResult route_tokens(const torch::Tensor& logits, const ExpertSpec& spec, torch::Dtype dt);
// The same with the top-p set chosen by a plain per-token loop in double (weights keep autograd
// through the float32 softmax), for tests and mola_reference_forward.
RouteResult route_tokens_reference(const torch::Tensor& logits, const ExpertSpec& spec, torch::Dtype dt);

// Router z-loss of one module (ST-MoE): mean over the N tokens of logsumexp_e(logits)^2 (float32 scalar,
// differentiable). Pads count, as in the balance loss.
torch::Tensor router_z_loss(const torch::Tensor& logits);
double router_z_loss_reference(const torch::Tensor& logits);  // plain loops in double

// Balance loss of one group of router logits sharing E and K (one layer in the reference):
// logits [N_i, E] concatenated along tokens, p = softmax(float32), f = top-k counts / sum(counts),
// P = mean_t p, loss = E * sum_e f_e P_e. Float32 scalar, differentiable through P.
torch::Tensor balance_loss(const std::vector<torch::Tensor>& logits, int64_t top_k);
// The same computed with plain loops in double (no autograd), for tests.
double balance_loss_reference(const std::vector<torch::Tensor>& logits, int64_t top_k);

// Balance loss of one layer whose modules may differ in (E, K): modules are grouped by (E, K) and
// the groups' losses summed (with one group, as in the reference, this is balance_loss itself).
// logits[i] belongs to a module with specs[i].
torch::Tensor layer_balance_loss(const std::vector<torch::Tensor>& logits, const std::vector<ExpertSpec>& specs);

// Inverted dropout x * mask / (1 - p) with an exact iid Bernoulli(p) mask: scaled_dropout of
// draw_dropout(x, p) (adapter_gemm.h), so small p draws ~p*n random numbers instead of n (torch::dropout's
// per-element draws cost ~18% of the base matmul at 7B width). x itself for p <= 0.
torch::Tensor sparse_dropout(const torch::Tensor& x, double p);

// The frozen base projection y = x W^T (+ b), optionally carrying a MoLA adapter.
// Parameter names follow Hugging Face: "weight" (base, frozen, compute dtype) and, when `bias`,
// "bias" [O] (frozen, compute dtype; Qwen2's q/k/v). Adapters are the same with or without it.
class MolaLinearImpl : public torch::nn::Module {
 public:
  MolaLinearImpl(int64_t in_features, int64_t out_features, torch::Dtype dtype = torch::kFloat32,
                 torch::Device device = torch::kCPU, bool bias = false);

  // Adds float32 trainable adapter parameters: router [E, I], lora_A [R, I], lora_B [O, R].
  // R and A uniform in +-1/sqrt(I) (kaiming_uniform a=sqrt(5)), B zero, drawn from `gen` when given.
  // Throws when an adapter is already present or the spec is invalid.
  void add_adapter(const ExpertSpec& spec, torch::Generator* gen = nullptr);
  bool has_adapter() const { return spec_.n_expert > 0; }
  const ExpertSpec& spec() const { return spec_; }
  // Replaces the routing choice (router, top_p, z_loss) of the attached adapter, e.g. an inference-time
  // override; throws without an adapter or for an invalid choice.
  void set_routing(const std::string& router, double top_p, double z_loss);

  // x [..., I] -> [..., O]. When an adapter is present and `router_logits` is non-null, pushes this
  // module's router logits [N, E] (graph-attached, x's dtype) for the balance loss.
  // Dropout (p = lora_dropout) applies to the adapter input in training mode only.
  torch::Tensor forward(const torch::Tensor& x, std::vector<torch::Tensor>* router_logits = nullptr);

  // Fills p with this module's operands for gemv_group (gemv.h), the adapter's inference copies
  // refreshed, when forward(x2) would take its inference path (eval mode; with an adapter also no
  // grad mode and the top_k router); false otherwise. x2 is [N, I].
  bool group_projection(const torch::Tensor& x2, GemvProjection& p);

  int64_t in_features, out_features;
  torch::Tensor weight;                   // [O, I] frozen base
  torch::Tensor bias;                     // [O] frozen base bias, undefined without one
  torch::Tensor router, lora_A, lora_B;   // adapter (undefined without one)

 private:
  ExpertSpec spec_;
  std::shared_ptr<MolaInferWeights> infer_;  // compute-dtype adapter copies for inference (kernels.h)
};
TORCH_MODULE(MolaLinear);

// The projections of one input (q/k/v, gate/up) at inference: one gemv_group call for all of them
// when x has decode rows and every module allows it, else each module's forward. Outputs and the
// router logits (pushed in module order) are the separate forwards' values either way.
std::vector<torch::Tensor> forward_shared_input(const std::vector<MolaLinearImpl*>& modules, const torch::Tensor& x,
                                                std::vector<torch::Tensor>* router_logits = nullptr);

}  // namespace mor
