// LLaMA / Mistral decoder (Hugging Face LlamaForCausalLM numerics) on LibTorch, module tree named
// after the Hugging Face keys (model.layers.{i}.self_attn.q_proj.weight, ...) so checkpoints load
// without a mapping table. Every projection is a MolaLinear that may carry a MoLA adapter.
// Shapes: B batch, T new tokens, S = past + T keys, C hidden, H heads, Hkv kv heads, D head dim, V vocab.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "config.h"
#include "moe_lora.h"

namespace mor {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, torch::Dtype dtype, torch::Device device);
  torch::Tensor forward(const torch::Tensor& x);  // computed in float32, cast back to x's dtype
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Per-layer key/value cache for generation: k, v [B, Hkv, S_max, D]; `len` filled positions.
struct KVCache {
  std::vector<torch::Tensor> k, v;
  int64_t len = 0;
};

// Collected router logits: per layer, one [B*T, E] tensor per adapted module in module order
// (q,k,v,o,gate,up,down among the targets).
using RouterLogits = std::vector<std::vector<torch::Tensor>>;

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const ModelConfig& cfg, torch::Dtype dtype, torch::Device device);
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
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  int64_t layer_idx;
};
TORCH_MODULE(LlamaDecoderLayer);

// Inputs of one forward pass.
struct ForwardArgs {
  torch::Tensor input_ids;       // [B, T] int64
  torch::Tensor attention_mask;  // [B, S] (1 real, 0 pad) over past + new tokens; undefined = all real
  torch::Tensor position_ids;    // [B, T]; undefined = arange(past, past+T) (what the HF Trainer uses)
  KVCache* cache = nullptr;      // when set, keys/values are appended and attended from the cache
  RouterLogits* router_logits = nullptr;  // when set, adapted modules push their router logits
};

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  LlamaForCausalLMImpl(const ModelConfig& cfg, torch::Dtype dtype, torch::Device device);

  // Logits [B, T, V] in float32. Pad query rows attend uniformly to every key of their row (the
  // reference's saturated additive mask); real tokens never see pads or the future.
  torch::Tensor forward(const ForwardArgs& args);

  KVCache make_cache(int64_t batch, int64_t max_len) const;
  std::vector<MolaLinear> layer_modules(int64_t il) const;  // q,k,v,o,gate,up,down of layer il
  std::vector<std::string> module_names() const;            // "model.layers.{i}.self_attn.q_proj", ...

  ModelConfig cfg;
  torch::Dtype dtype;
  torch::Device device;
  // Hugging Face names: model.embed_tokens.weight, model.layers.{i}...., model.norm.weight, lm_head.weight
  torch::nn::Module* model = nullptr;  // see llama.cpp: holds embed_tokens, layers, norm
};
TORCH_MODULE(LlamaForCausalLM);

// Loads config.json + model.safetensors (or model.safetensors.index.json shards) from a directory,
// converting weights to `dtype`. Fails naming the tensor on any missing, unused or misshapen tensor.
LlamaForCausalLM load_llama(const std::string& model_dir, torch::Dtype dtype, torch::Device device);

// A random tiny LLaMA for tests and the embedded default (weights normal(0, 0.02), seeded).
LlamaForCausalLM random_llama(const ModelConfig& cfg, uint64_t seed, torch::Dtype dtype, torch::Device device);

// Writes config.json + model.safetensors in Hugging Face layout.
void save_llama(LlamaForCausalLM& m, const std::string& dir);

}  // namespace mor
