// Model configuration read from a Hugging Face config.json (the families of src/arch.h: LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM; the keys read and their defaults come from that table),
// validated in one place, plus resolution of --base_model (a directory or a Hub id in the local cache).
// Everything not implemented (other rope_scaling types, activations, biases, ...) is rejected, never ignored.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mor {

// config.json "rope_scaling" (transformers' modeling_rope_utils): none, linear, dynamic (NTK) or llama3.
struct RopeScaling {
  std::string type;  // "" = none
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;   // llama3
  int64_t original_max_position_embeddings = 0;           // llama3 (required); dynamic (optional, unused)
  bool operator==(const RopeScaling& o) const;
};

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // MistralForCausalLM | Qwen2ForCausalLM (src/arch.h)
  std::string model_type = "llama";               // llama | mistral | qwen2
  int64_t hidden_size = 0;                        // C
  int64_t intermediate_size = 0;                  // F
  int64_t n_layer = 0;                            // num_hidden_layers
  int64_t n_head = 0;                             // num_attention_heads
  int64_t n_head_kv = 0;                          // num_key_value_heads (default n_head)
  int64_t vocab_size = 0;                         // V
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;                // the first of eos_token_ids
  std::vector<int64_t> eos_token_ids = {2};  // config.json may list several (LLaMA-3.x); generation stops at any
  int64_t pad_token_id = 0;  // batches are left-padded with this id (the reference uses 0)
  std::string torch_dtype;   // informational, as found in config.json
  int64_t sliding_window = 0;  // Mistral: attention window (0 = none); longer sequences are rejected
  int64_t head_dim_config = 0;  // config.json "head_dim" (0 = absent: hidden_size / n_head)
  RopeScaling rope_scaling;

  // D: config.json "head_dim" when given (then n_head * D may differ from hidden_size), else C / H.
  int64_t head_dim() const { return head_dim_config > 0 ? head_dim_config : hidden_size / n_head; }

  // A Llama config of the given shape, everything else at its default (random models in tests, benches, quickstart).
  static ModelConfig llama(int64_t hidden, int64_t intermediate, int64_t n_layer, int64_t n_head, int64_t n_head_kv,
                           int64_t vocab);

  // Throws std::runtime_error naming `source` (a file path) and the offending key.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig from_file(const std::string& config_json_path);
  nlohmann::json to_json() const;  // a config.json transformers can read
  void validate(const std::string& source) const;
};

// --base_model: a directory in Hugging Face layout, or a Hub id resolved through the local cache
// ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub; models--ORG--NAME/snapshots/<refs/main>).
// Throws listing every place it looked.
std::string resolve_model_dir(const std::string& base_model);
// The Hugging Face hub cache folder by the rules above.
std::string hf_cache_dir();

}  // namespace mor
