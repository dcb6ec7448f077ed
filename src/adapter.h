// MoLA adapters on a LlamaForCausalLM: attaching them per the allocation, the trainable parameters,
// the training loss (cross-entropy + 0.001 * balance loss), and the adapter files the Python MoLA
// reads and writes (adapter_model.safetensors / .bin with per-expert keys, adapter_config.json as
// PEFT writes it, plus mola_config.json holding the full allocation).
#pragma once
#include "torch_api.h"

#include <string>
#include <utility>
#include <vector>

#include "allocation.h"
#include "llama.h"

namespace mor {

// Adds float32 adapters to every module the allocation targets (R and A uniform +-1/sqrt(in), B
// zero), drawn in module order from a CPU generator seeded with `seed`. Throws when the allocation's
// layers or module shapes do not fit the model, or adapters are already attached.
void attach_adapters(LlamaForCausalLM& model, const Allocation& alloc, uint64_t seed);

// The trainable leaf parameters, in module order (layer by layer, q,k,v,o,gate,up,down; per module
// router [E, I], lora_A [R, I] (experts stacked), lora_B [O, R]), named
// "model.layers.{i}.self_attn.q_proj.router|lora_A|lora_B". These are what the optimizer steps.
std::vector<std::pair<std::string, torch::Tensor>> trainable_params(LlamaForCausalLM& model);

// The adapter as the reference names it, per-expert slices of the stacked parameters (detached
// views): base_model.model.model.layers.{i}.self_attn.q_proj.lora_A_{e}.weight [r_e, I],
// ...lora_B_{e}.weight [O, r_e], ...router.router.weight [E, I]; module order, A's, B's, router.
std::vector<std::pair<std::string, torch::Tensor>> adapter_state(LlamaForCausalLM& model);

struct LossParts {
  torch::Tensor loss;  // ce + 0.001 * aux when obalance, else ce
  torch::Tensor ce;    // float32 mean over tokens whose shifted label != -100
  torch::Tensor aux;   // sum over layers of the balance loss (float32; 0 without adapters)
  torch::Tensor z;     // weighted router z-loss, already in `loss`; undefined when every z_loss is 0
};
constexpr double kBalanceLossCoef = 0.001;

// logits [B, T, V] (float32), labels [B, T] with -100 masked; router_logits as filled by forward.
LossParts compute_loss(LlamaForCausalLM& model, const torch::Tensor& logits, const torch::Tensor& labels,
                       const RouterLogits& router_logits, bool obalance);
// The same with the cross-entropy already computed (float32 scalar, e.g. by lm_loss): adds the
// balance and z-loss parts.
LossParts compute_loss_from_ce(LlamaForCausalLM& model, const torch::Tensor& ce, const RouterLogits& router_logits,
                               bool obalance);
// Training / validation forward and loss in one: forward_hidden(a), then lm_loss (src/lm_loss.h:
// the chunked cross-entropy, equal to forward + compute_loss to float32 rounding; exactly their op
// sequence when MOR_FUSED=0 or the lm_head weight requires grad), then compute_loss_from_ce with the router
// logits a.router_logits collects (none when null). Gradient checkpointing via a.run_layer as usual.
LossParts forward_loss(LlamaForCausalLM& model, const ForwardArgs& a, const torch::Tensor& labels, bool obalance);
// Each example's own mean cross-entropy over its shifted labels: [B] float32 (nan when none).
torch::Tensor per_example_ce(const torch::Tensor& logits, const torch::Tensor& labels);
// Sum over layers of the balance loss of their adapted modules.
torch::Tensor aux_balance_loss(LlamaForCausalLM& model, const RouterLogits& router_logits);

// Router z-loss term: sum over layers of the mean over the layer's adapted modules of
// z_loss_m * router_z_loss(logits_m) (pads included, as in the balance loss). Undefined when every
// module's z_loss is 0 (the default: the loss stays bit-identical).
torch::Tensor z_loss_term(LlamaForCausalLM& model, const RouterLogits& router_logits);

// Writes dir/adapter_model.safetensors (metadata {"format": "pt"}), dir/adapter_config.json (PEFT's
// layout: sorted keys, indent 2) and dir/mola_config.json; each via a temporary file and rename.
void save_adapter(LlamaForCausalLM& model, const Allocation& alloc, const std::string& dir,
                  const std::string& base_model_name);

// PEFT's adapter_config.json text for this allocation (what save_adapter writes).
std::string adapter_config_json(const Allocation& alloc, const std::string& base_model_name);

// Reads an adapter folder: ours (adapter_model.safetensors + mola_config.json) or the reference's
// (adapter_model.bin or .safetensors, no mola_config.json: then `flags` must give the allocation).
// When mola_config.json is present and `flags` is given, they must agree (else a clear error).
// Attaches adapters when the model has none (else they must match), checks every key and shape
// (first mismatch reported), and copies the weights in. Returns the allocation used.
Allocation load_adapter(LlamaForCausalLM& model, const std::string& dir, const Allocation* flags = nullptr);

// Name -> tensor of an adapter weights file (.safetensors, or a torch.save zip such as adapter_model.bin).
std::vector<std::pair<std::string, torch::Tensor>> read_adapter_weights(const std::string& path);

}  // namespace mor
