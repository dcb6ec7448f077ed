// LLaMA / Mistral / Qwen2 decoder (Hugging Face LlamaForCausalLM numerics; the family differences --
// biases, shapes, RoPE scaling -- come from the architecture table, src/arch.h) on LibTorch, module tree
// named after the Hugging Face keys (model.layers.{i}.self_attn.q_proj.weight, ...) so checkpoints load
// without a mapping table. Every projection is a MolaLinear that may carry a MoLA adapter.
// Shapes: B batch, T new tokens, S = past + T keys, C hidden, H heads, Hkv kv heads, G = H/Hkv,
// D head dim, F intermediate, V vocab.
#pragma once
#include "torch_api.h"

#include <functional>
#include <string>
#include <vector>

#include "config.h"
#include "moe_lora.h"

namespace mor {

// HF LlamaRMSNorm: x.float() * rsqrt(mean(x^2) + eps), cast back to x's dtype, times weight.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, torch::Dtype dtype, torch::Device device);
  torch::Tensor forward(const torch::Tensor& x);  // computed in float32, cast back to x's dtype
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Pure reference versions of the numerically subtle pieces (the fast paths are tested against them).
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);
// cos, sin [B, T, D] in float32 for position ids [B, T] (HF LlamaRotaryEmbedding, no scaling).
std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(const torch::Tensor& position_ids, int64_t head_dim, double theta);
// The same with the config's head_dim, rope_theta and rope_scaling (dynamic: seq_len = max position + 1).
std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(const torch::Tensor& position_ids, const ModelConfig& cfg);
// Inverse frequencies [D/2] float32 on the CPU as transformers' modeling_rope_utils computes them for
// cfg.rope_scaling: default, linear (/ factor), dynamic (NTK base rescaled when seq_len exceeds
// max_position_embeddings), llama3 (wavelength bands between original_max_position_embeddings /
// high_freq_factor and / low_freq_factor smoothly interpolated). seq_len matters for dynamic only.
torch::Tensor rope_inv_freq(const ModelConfig& cfg, int64_t seq_len);
// HF apply_rotary_pos_emb on x [B, H, T, D] with cos/sin [B, T, D] already in x's dtype.
torch::Tensor apply_rope_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
// Fast path on x [B, T, H, D] (projection layout) with cos/sin [B, T, D] in x's dtype; same values.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Per-layer key/value cache for generation: k, v [B, Hkv, S_max, D] (after RoPE); `len` filled positions.
struct KVCache {
  std::vector<torch::Tensor> k, v;
  int64_t len = 0;
  int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
  // Keeps only batch rows `rows` (int64 [B']), e.g. to drop finished sequences.
  void select_rows(const torch::Tensor& rows);
};

// Collected router logits: per layer, one [B*T, E] tensor per adapted module in module order
// (q,k,v,o,gate,up,down among the targets).
using RouterLogits = std::vector<std::vector<torch::Tensor>>;

// What one forward pass shares across layers: rotary tables and the attention mask.
struct AttentionContext {
  torch::Tensor cos, sin;  // [B, T, D] in the compute dtype
  torch::Tensor mask;      // bool [B, 1, T, S], true = masked; undefined = nothing masked
  int64_t past = 0;        // keys already in the cache
  // Packed prefill (see LlamaForCausalLMImpl::forward): the flat indexes b*T + t of the real new
  // positions, ascending, int64 [N]; the layers then carry only those rows, as [1, N, C], and
  // attention scatters q/k/v into the padded [B, T] layout. Undefined: the padded layout throughout.
  torch::Tensor pack;
  int64_t batch = 0, len = 0;  // B and T of the padded layout, when packed
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const ModelConfig& cfg, torch::Dtype dtype, torch::Device device);
  // x [B, T, C] -> [B, T, C]; with a cache, this layer's keys/values are written at [past, past+T).
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, KVCache* cache, int64_t layer_idx,
                        std::vector<torch::Tensor>* router_logits);
  MolaLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  ModelConfig cfg;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  LlamaMLPImpl(const ModelConfig& cfg, torch::Dtype dtype, torch::Device device);
  torch::Tensor forward(const torch::Tensor& x, std::vector<torch::Tensor>* router_logits);
  MolaLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const ModelConfig& cfg, int64_t layer_idx, torch::Dtype dtype, torch::Device device);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, KVCache* cache,
                        std::vector<torch::Tensor>* router_logits);
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  int64_t layer_idx;
};
TORCH_MODULE(LlamaDecoderLayer);

// nn.Embedding without the random init (weights come from the checkpoint). Parameter "weight" [V, C].
class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  TokenEmbeddingImpl(int64_t vocab, int64_t dim, torch::Dtype dtype, torch::Device device);
  torch::Tensor forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }
  torch::Tensor weight;
};
TORCH_MODULE(TokenEmbedding);

// HF LlamaModel: "embed_tokens", "layers" (ModuleList), "norm".
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const ModelConfig& cfg, torch::Dtype dtype, torch::Device device);
  TokenEmbedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<LlamaDecoderLayer> layer_list;  // typed handles to the same modules
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

// Inputs of one forward pass.
struct ForwardArgs {
  torch::Tensor input_ids;       // [B, T] int64
  torch::Tensor attention_mask;  // [B, S] (1 real, 0 pad) over past + new tokens; undefined = all real
  torch::Tensor position_ids;    // [B, T]; undefined = arange(past, past+T) (what the HF Trainer uses)
  KVCache* cache = nullptr;      // when set, keys/values are appended and attended from the cache
  // When set, cleared and then filled with one vector per layer; adapted modules push their router logits.
  RouterLogits* router_logits = nullptr;
  bool last_only = false;        // logits for the last position only: [B, 1, V] (generation prefill)
  // When set, runs each decoder layer in place of layer->forward (same loop, e.g. gradient
  // checkpointing: grad_checkpoint.h); pushes that layer's router logits into the vector when given.
  std::function<torch::Tensor(LlamaDecoderLayerImpl& layer, const torch::Tensor& h, const AttentionContext& ctx,
                              std::vector<torch::Tensor>* router_logits)>
      run_layer;
};

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  LlamaForCausalLMImpl(const ModelConfig& cfg, torch::Dtype dtype, torch::Device device);

  // Logits [B, T, V] in float32. Pad query rows attend uniformly to every key of their row (the
  // reference's saturated additive mask); real tokens never see pads or the future.
  // A left-padded generation prefill (inference, cache, last_only, no router logits collected, every
  // row's last position real, fused kernels on) runs packed: the projections, norms and MLPs see the
  // real rows only, since no real row ever reads a pad row's values; pad keys enter the cache as
  // zeros, masked like the pad tokens' keys they stand for.
  torch::Tensor forward(const ForwardArgs& args);
  // The final normed hidden states [B, T, C] in the compute dtype (forward without the lm_head),
  // for callers that compute the loss in chunks.
  torch::Tensor forward_hidden(const ForwardArgs& args);
  // hidden [..., C] -> float32 logits [..., V] (lm_head, or the tied embedding).
  torch::Tensor logits_from_hidden(const torch::Tensor& hidden);
  const torch::Tensor& lm_head_weight() const;

  KVCache make_cache(int64_t batch, int64_t max_len) const;
  std::vector<MolaLinear> layer_modules(int64_t il) const;  // q,k,v,o,gate,up,down of layer il (table order)
  MolaLinear projection(int64_t il, const std::string& name) const;  // by the table's name ("down_proj")
  std::vector<std::string> module_names() const;            // "model.layers.{i}.self_attn.q_proj", ...
  // The base weights in Hugging Face layout (what a checkpoint holds: "<module>.weight" of the
  // projections, norms, embedding and lm_head, and "<proj>.bias" where the family has one; adapter
  // parameters are excluded), in module order.
  std::vector<std::pair<std::string, torch::Tensor>> base_weights();

  ModelConfig cfg;
  torch::Dtype dtype;
  torch::Device device;
  LlamaModel model{nullptr};
  MolaLinear lm_head{nullptr};  // null when tie_word_embeddings
};
TORCH_MODULE(LlamaForCausalLM);

// The 7 projection names in module order, and "self_attn"/"mlp" for each (from src/arch.h).
const std::vector<std::string>& projection_names();  // q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
std::string projection_path(int64_t layer, const std::string& proj);  // "model.layers.3.mlp.down_proj"

// Loads config.json + model.safetensors (or model.safetensors.index.json shards) from a directory,
// converting weights to `dtype`. Fails naming the tensor on any missing, unused or misshapen tensor.
LlamaForCausalLM load_llama(const std::string& model_dir, torch::Dtype dtype, torch::Device device);

// A random tiny model of cfg's family for tests and the embedded default (weights and biases
// normal(0, 0.02), norms 1, seeded;
// drawn in float32 on the CPU so the values do not depend on dtype or device).
LlamaForCausalLM random_llama(const ModelConfig& cfg, uint64_t seed, torch::Dtype dtype, torch::Device device);

// Writes config.json + model.safetensors in Hugging Face layout (weights in the compute dtype,
// or `save_dtype` when given), each through a temp file + rename.
void save_llama(LlamaForCausalLM& m, const std::string& dir, c10::optional<torch::Dtype> save_dtype = c10::nullopt);

}  // namespace mor
