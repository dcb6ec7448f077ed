// The architecture table (the idea of llama.cpp's llama-arch): one entry per supported Hugging Face
// `architectures` / `model_type` (LlamaForCausalLM/llama, MistralForCausalLM/mistral,
// Qwen2ForCausalLM/qwen2) holding the config.json keys read and their defaults, the keys rejected
// unless at their default, the module tree and HF weight names (optional biases included), the
// projection shapes, norm, activation, tied embeddings, RoPE variant and tokenizer kind.
// config.cpp, llama.cpp, allocation.cpp, adapter.cpp and `mor params` ask this table.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.h"

namespace mor {

// A projection dimension in terms of the config: C, F, H*D (query heads), Hkv*D (key/value heads).
enum class Dim { Hidden, Intermediate, QueryHeads, KvHeads };
int64_t dim_value(Dim d, const ModelConfig& cfg);

// One linear projection of a decoder layer: "model.layers.{i}.<block>.<name>.weight" [out, in] and,
// when `bias`, "...<name>.bias" [out].
struct Projection {
  std::string name;   // q_proj
  std::string block;  // self_attn | mlp
  Dim in, out;
  bool bias = false;
};

// A config.json key the family reads into ModelConfig. Absent or null -> `def` (unless required).
struct ConfigKey {
  enum Kind { Int, Number, Bool, Special };  // Special: read by dedicated code in config.cpp
  std::string name;
  Kind kind;
  bool required = false;
  double def = 0;
  int64_t ModelConfig::*int_field = nullptr;
  double ModelConfig::*num_field = nullptr;
  bool ModelConfig::*bool_field = nullptr;
  std::string note;  // Special keys: what is read
};

// A key transformers' model class reads that changes the numerics in a way not implemented: present and
// non-null with a value outside `allowed` -> error (empty `allowed`: any non-null value is rejected).
// `message` may hold "{v}", replaced by the value as JSON.
struct UnsupportedKey {
  std::string name;
  std::vector<nlohmann::json> allowed;
  std::string message;
};

struct ArchInfo {
  std::string architecture;  // LlamaForCausalLM
  std::string model_type;    // llama
  std::vector<ConfigKey> keys;
  std::vector<UnsupportedKey> unsupported;
  // Keys the HF class reads that leave the forward pass unchanged here (accepted, not used), with why.
  std::vector<std::pair<std::string, std::string>> inert;
  std::vector<Projection> projections;  // module order: q, k, v, o, gate, up, down
  std::string norm = "RMSNorm";         // float32 x * rsqrt(mean(x^2) + eps), cast back, times weight
  std::string activation = "silu";      // gate: down(silu(gate(x)) * up(x))
  bool tied_default = false;            // tie_word_embeddings when absent
  std::string rope = "rotate_half";     // GPT-NeoX style halves, float32 tables
  std::vector<std::string> rope_scaling_types;  // besides none/default
  // Mistral: sliding_window must cover every sequence (checked per forward); Qwen2: only with
  // use_sliding_window true, which is rejected.
  std::string sliding_window;
  std::string tokenizer;  // which files, in the order they are taken
  std::vector<std::string> weight_extras;  // stored tensors that may be present and are not used

  const Projection& projection(const std::string& name) const;  // throws for an unknown name
  std::pair<int64_t, int64_t> shape(const ModelConfig& cfg, const std::string& name) const;  // (in, out)
  std::vector<std::string> projection_names() const;
  std::string summary(const ModelConfig& cfg) const;  // one line for `mor params`
};

// The supported families.
const std::vector<ArchInfo>& architectures();
// By architecture class name ("" = take model_type) and/or model_type ("" = take the class); both
// given must agree. Throws naming `source` and the supported names.
const ArchInfo& find_arch(const std::string& architecture, const std::string& model_type, const std::string& source);
// The entry of a parsed config (cfg.architecture).
const ArchInfo& arch_of(const ModelConfig& cfg);

// The projection names every family shares, in module order, and their HF module path
// "model.layers.{il}.{self_attn|mlp}.{name}" (throws for an unknown name).
const std::vector<std::string>& projection_names_all();
std::string projection_module_path(int64_t il, const std::string& name);

}  // namespace mor
