// The architecture table (see arch.h): LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM with
// the config keys and defaults of transformers' LlamaConfig / MistralConfig / Qwen2Config, their
// weights and projection shapes. Adding a family is one entry here (plus its numerics, if new).
#include "arch.h"
#include "files.h"

#include <sstream>
#include <stdexcept>

namespace mor {

namespace {

ConfigKey int_key(const std::string& name, int64_t ModelConfig::*f, bool required, double def = 0) {
  ConfigKey k{name, ConfigKey::Int, required, def};
  k.int_field = f;
  return k;
}
ConfigKey num_key(const std::string& name, double ModelConfig::*f, double def) {
  ConfigKey k{name, ConfigKey::Number, false, def};
  k.num_field = f;
  return k;
}
ConfigKey bool_key(const std::string& name, bool ModelConfig::*f, bool def) {
  ConfigKey k{name, ConfigKey::Bool, false, def ? 1.0 : 0.0};
  k.bool_field = f;
  return k;
}
ConfigKey special(const std::string& name, const std::string& note) {
  ConfigKey k{name, ConfigKey::Special};
  k.note = note;
  return k;
}

// The keys every family reads the same way; shapes are required (transformers' defaults are 7B shapes,
// which a config.json without them almost certainly does not mean).
std::vector<ConfigKey> common_keys(double max_pos, double rope_theta, double rms_eps, bool tied) {
  return {
      special("architectures", "a list with one class name"),
      special("model_type", "selects the family"),
      int_key("hidden_size", &ModelConfig::hidden_size, true),
      int_key("intermediate_size", &ModelConfig::intermediate_size, true),
      int_key("num_hidden_layers", &ModelConfig::n_layer, true),
      int_key("num_attention_heads", &ModelConfig::n_head, true),
      special("num_key_value_heads", "integer; default num_attention_heads"),
      special("head_dim", "integer; default hidden_size / num_attention_heads"),
      int_key("vocab_size", &ModelConfig::vocab_size, true),
      int_key("max_position_embeddings", &ModelConfig::max_position_embeddings, false, max_pos),
      num_key("rms_norm_eps", &ModelConfig::rms_norm_eps, rms_eps),
      num_key("rope_theta", &ModelConfig::rope_theta, rope_theta),
      special("rope_scaling", "null, or {rope_type|type: linear|dynamic|llama3, factor, ...}"),
      bool_key("tie_word_embeddings", &ModelConfig::tie_word_embeddings, tied),
      int_key("bos_token_id", &ModelConfig::bos_token_id, false, 1),
      special("eos_token_id", "an integer or a list of integers; default 2"),
      special("pad_token_id", "integer; null or negative -> 0 (batches are left-padded with it)"),
      special("torch_dtype", "informational"),
  };
}

std::vector<UnsupportedKey> common_unsupported() {
  return {
      {"hidden_act", {"silu"}, "hidden_act {v} is not supported (only \"silu\")"},
      {"attention_dropout", {0}, "attention_dropout {v} is not supported (only 0.0)"},
      {"quantization_config", {}, "quantized checkpoints (quantization_config) are not supported"},
      {"partial_rotary_factor", {1}, "partial_rotary_factor {v} is not supported (only 1.0)"},
  };
}

std::vector<std::pair<std::string, std::string>> common_inert() {
  return {{"initializer_range", "only initialises weights, which come from the checkpoint"},
          {"use_cache", "generation always uses the KV cache"},
          {"transformers_version", "bookkeeping"}};
}

std::vector<Projection> llama_projections(bool qkv_bias) {
  return {{"q_proj", "self_attn", Dim::Hidden, Dim::QueryHeads, qkv_bias},
          {"k_proj", "self_attn", Dim::Hidden, Dim::KvHeads, qkv_bias},
          {"v_proj", "self_attn", Dim::Hidden, Dim::KvHeads, qkv_bias},
          {"o_proj", "self_attn", Dim::QueryHeads, Dim::Hidden, false},
          {"gate_proj", "mlp", Dim::Hidden, Dim::Intermediate, false},
          {"up_proj", "mlp", Dim::Hidden, Dim::Intermediate, false},
          {"down_proj", "mlp", Dim::Intermediate, Dim::Hidden, false}};
}

const std::vector<std::string> kRopeScaling = {"linear", "dynamic", "llama3"};

ArchInfo llama() {
  ArchInfo a;
  a.architecture = "LlamaForCausalLM";
  a.model_type = "llama";
  a.keys = common_keys(2048, 10000.0, 1e-6, false);
  a.unsupported = common_unsupported();
  a.unsupported.push_back({"attention_bias", {false}, "\"attention_bias\": {v} is not supported"});
  a.unsupported.push_back({"mlp_bias", {false}, "\"mlp_bias\": {v} is not supported"});
  a.inert = common_inert();
  a.inert.push_back({"pretraining_tp", "only splits the matmuls into slices (same sums)"});
  a.projections = llama_projections(false);
  a.rope_scaling_types = kRopeScaling;
  a.sliding_window = "none";
  a.tokenizer = "tokenizer.json (BPE: LLaMA-3 byte-level, TinyLlama/LLaMA-2 conversions), else tokenizer.model (sentencepiece)";
  a.weight_extras = {"rotary_emb.inv_freq", "lm_head.weight when tied"};
  return a;
}

ArchInfo mistral() {
  ArchInfo a;
  a.architecture = "MistralForCausalLM";
  a.model_type = "mistral";
  a.keys = common_keys(4096 * 32, 10000.0, 1e-6, false);
  a.keys.push_back(special("sliding_window", "integer or null; default 4096; every sequence must fit in it"));
  a.unsupported = common_unsupported();
  a.inert = common_inert();
  a.projections = llama_projections(false);
  a.rope_scaling_types = kRopeScaling;
  a.sliding_window = "checked: a sequence longer than sliding_window is rejected";
  a.tokenizer = "tokenizer.json when present, else tokenizer.model (sentencepiece; v3: vocab 32768 with control tokens)";
  a.weight_extras = {"rotary_emb.inv_freq", "lm_head.weight when tied"};
  return a;
}

ArchInfo qwen2() {
  ArchInfo a;
  a.architecture = "Qwen2ForCausalLM";
  a.model_type = "qwen2";
  a.keys = common_keys(32768, 10000.0, 1e-6, false);
  for (auto& k : a.keys) {  // Qwen2Config leaves bos/eos unset (None)
    if (k.name == "bos_token_id") k.def = -1;
    if (k.name == "eos_token_id") k.note = "an integer or a list of integers; default none";
  }
  a.unsupported = common_unsupported();
  a.unsupported.push_back({"use_sliding_window", {false},
                           "\"use_sliding_window\": {v} is not supported (sliding-window attention is not "
                           "implemented; Qwen2 attends to every key when it is false)"});
  a.inert = common_inert();
  a.inert.push_back({"sliding_window", "used only with use_sliding_window true"});
  a.inert.push_back({"max_window_layers", "used only with use_sliding_window true"});
  a.inert.push_back({"use_mrope", "Qwen2-VL only; Qwen2ForCausalLM ignores it"});
  a.projections = llama_projections(true);
  a.rope_scaling_types = kRopeScaling;
  a.sliding_window = "inert (use_sliding_window false)";
  a.tokenizer = "tokenizer.json (byte-level BPE)";
  a.weight_extras = {"rotary_emb.inv_freq", "lm_head.weight when tied"};
  return a;
}


}  // namespace

int64_t dim_value(Dim d, const ModelConfig& cfg) {
  const int64_t Hkv = cfg.n_head_kv > 0 ? cfg.n_head_kv : cfg.n_head;
  switch (d) {
    case Dim::Hidden: return cfg.hidden_size;
    case Dim::Intermediate: return cfg.intermediate_size;
    case Dim::QueryHeads: return cfg.n_head * cfg.head_dim();
    case Dim::KvHeads: return Hkv * cfg.head_dim();
  }
  throw std::runtime_error("dim_value: bad Dim");
}

const std::vector<ArchInfo>& architectures() {
  static const std::vector<ArchInfo> t = {llama(), mistral(), qwen2()};
  return t;
}

const ArchInfo& find_arch(const std::string& architecture, const std::string& model_type, const std::string& source) {
  std::vector<std::string> classes, types;
  for (const auto& a : architectures()) {
    classes.push_back(a.architecture);
    types.push_back(a.model_type);
  }
  const ArchInfo *by_class = nullptr, *by_type = nullptr;
  for (const auto& a : architectures()) {
    if (a.architecture == architecture) by_class = &a;
    if (a.model_type == model_type) by_type = &a;
  }
  if (!architecture.empty() && !by_class)
    throw std::runtime_error(source + ": unsupported architecture '" + architecture + "' (supported: " +
                             join(classes, ", ") + ")");
  if (!model_type.empty() && !by_type)
    throw std::runtime_error(source + ": unsupported model_type '" + model_type + "' (supported: " + join(types, ", ") +
                             ")");
  if (by_class && by_type && by_class != by_type)
    throw std::runtime_error(source + ": model_type '" + model_type + "' does not match architecture " + architecture +
                             " (which has model_type '" + by_class->model_type + "')");
  if (by_class) return *by_class;
  if (by_type) return *by_type;
  throw std::runtime_error(source + ": neither \"architectures\" nor \"model_type\" given (supported: " +
                           join(classes, ", ") + ")");
}

const ArchInfo& arch_of(const ModelConfig& cfg) { return find_arch(cfg.architecture, cfg.model_type, "model config"); }

const Projection& ArchInfo::projection(const std::string& name) const {
  for (const auto& p : projections)
    if (p.name == name) return p;
  throw std::runtime_error(architecture + ": unknown module '" + name + "' (known: " + join(projection_names(), ", ") + ")");
}

std::pair<int64_t, int64_t> ArchInfo::shape(const ModelConfig& cfg, const std::string& name) const {
  const auto& p = projection(name);
  return {dim_value(p.in, cfg), dim_value(p.out, cfg)};
}

std::vector<std::string> ArchInfo::projection_names() const {
  std::vector<std::string> n;
  for (const auto& p : projections) n.push_back(p.name);
  return n;
}

std::string ArchInfo::summary(const ModelConfig& cfg) const {
  std::ostringstream os;
  os << "architecture: " << architecture << " (" << model_type << "), " << norm << " eps " << cfg.rms_norm_eps << ", "
     << activation << ", head_dim " << cfg.head_dim() << ", RoPE theta " << cfg.rope_theta;
  if (!cfg.rope_scaling.type.empty()) os << " scaling " << cfg.rope_scaling.type << " x" << cfg.rope_scaling.factor;
  std::vector<std::string> biased;
  for (const auto& p : projections)
    if (p.bias) biased.push_back(p.name);
  os << ", " << (biased.empty() ? "no biases" : join(biased, "/") + " bias") << ", "
     << (cfg.tie_word_embeddings ? "tied" : "untied") << " embeddings\n";
  return os.str();
}

const std::vector<std::string>& projection_names_all() {
  static const std::vector<std::string> n = architectures().front().projection_names();
  return n;
}

std::string projection_module_path(int64_t il, const std::string& name) {
  // Every family shares the module tree: the first entry's blocks stand for all.
  return "model.layers." + std::to_string(il) + "." + architectures().front().projection(name).block + "." + name;
}

}  // namespace mor
