// ModelConfig from a Hugging Face config.json with validation (see config.h), and --base_model
// resolution through the local Hugging Face cache.
#include "config.h"

#include "config_sizes.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "hub.h"

namespace fs = std::filesystem;

namespace mor {

namespace {

int64_t get_int(const nlohmann::json& j, const char* key, const std::string& source, bool required, int64_t def) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) throw std::runtime_error(source + ": missing required key \"" + key + "\"");
    return def;
  }
  if (!j[key].is_number_integer()) throw std::runtime_error(source + ": \"" + key + "\" must be an integer");
  return j[key].get<int64_t>();
}

double get_num(const nlohmann::json& j, const char* key, const std::string& source, double def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) throw std::runtime_error(source + ": \"" + key + "\" must be a number");
  return j[key].get<double>();
}

}  // namespace

ModelConfig ModelConfig::llama(int64_t hidden, int64_t intermediate, int64_t n_layer, int64_t n_head,
                               int64_t n_head_kv, int64_t vocab) {
  ModelConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.n_layer = n_layer;
  c.n_head = n_head;
  c.n_head_kv = n_head_kv;
  c.vocab_size = vocab;
  return c;
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw std::runtime_error(source + ": not a JSON object");
  ModelConfig c;
  std::string mt = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
  if (j.contains("architectures") && !j["architectures"].is_null()) {
    const auto& a = j["architectures"];
    if (!a.is_array() || a.size() != 1 || !a[0].is_string())
      throw std::runtime_error(source + ": \"architectures\" must be a list with one name");
    c.architecture = a[0].get<std::string>();
  } else if (mt == "llama") {
    c.architecture = "LlamaForCausalLM";
  } else if (mt == "mistral") {
    c.architecture = "MistralForCausalLM";
  } else {
    throw std::runtime_error(source + ": no \"architectures\" and model_type '" + mt + "' is not llama or mistral");
  }
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM")
    throw std::runtime_error(source + ": unsupported architecture '" + c.architecture +
                             "' (supported: LlamaForCausalLM, MistralForCausalLM)");
  c.model_type = mt.empty() ? (c.architecture == "LlamaForCausalLM" ? "llama" : "mistral") : mt;
  if (c.model_type != "llama" && c.model_type != "mistral")
    throw std::runtime_error(source + ": unsupported model_type '" + c.model_type + "' (supported: llama, mistral)");

  c.hidden_size = get_int(j, "hidden_size", source, true, 0);
  c.intermediate_size = get_int(j, "intermediate_size", source, true, 0);
  c.n_layer = get_int(j, "num_hidden_layers", source, true, 0);
  c.n_head = get_int(j, "num_attention_heads", source, true, 0);
  c.n_head_kv = get_int(j, "num_key_value_heads", source, false, c.n_head);
  c.vocab_size = get_int(j, "vocab_size", source, true, 0);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", source, false, 2048);
  c.rms_norm_eps = get_num(j, "rms_norm_eps", source, 1e-6);
  c.rope_theta = get_num(j, "rope_theta", source, 10000.0);
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    if (!j["tie_word_embeddings"].is_boolean()) throw std::runtime_error(source + ": \"tie_word_embeddings\" must be true or false");
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  c.bos_token_id = get_int(j, "bos_token_id", source, false, 1);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    throw std::runtime_error(source + ": a list of eos_token_id is not supported");
  }
  c.eos_token_id = get_int(j, "eos_token_id", source, false, 2);
  c.pad_token_id = get_int(j, "pad_token_id", source, false, 0);
  if (c.pad_token_id < 0) c.pad_token_id = 0;  // old conversions say -1; batches are padded with 0 anyway
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"].get<std::string>();
  if (j.contains("sliding_window") && !j["sliding_window"].is_null())
    c.sliding_window = get_int(j, "sliding_window", source, false, 0);

  // Things that would change the numerics and are not implemented: reject, never ignore.
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw std::runtime_error(source + ": rope_scaling " + j["rope_scaling"].dump() + " is not supported (only null)");
  if (j.contains("hidden_act") && !j["hidden_act"].is_null() && j["hidden_act"] != "silu")
    throw std::runtime_error(source + ": hidden_act " + j["hidden_act"].dump() + " is not supported (only \"silu\")");
  for (const char* k : {"attention_bias", "mlp_bias"})
    if (j.contains(k) && j[k].is_boolean() && j[k].get<bool>())
      throw std::runtime_error(source + ": \"" + k + "\": true is not supported");
  if (j.contains("quantization_config"))
    throw std::runtime_error(source + ": quantized checkpoints (quantization_config) are not supported");
  if (j.contains("head_dim") && !j["head_dim"].is_null() && c.n_head > 0 &&
      get_int(j, "head_dim", source, false, 0) != c.hidden_size / c.n_head)
    throw std::runtime_error(source + ": head_dim != hidden_size / num_attention_heads is not supported");
  c.validate(source);
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  check_config_sizes(*this, source);
  auto pos = [&](int64_t v, const char* k) {
    if (v <= 0) throw std::runtime_error(source + ": \"" + k + "\" must be positive, got " + std::to_string(v));
  };
  pos(hidden_size, "hidden_size");
  pos(intermediate_size, "intermediate_size");
  pos(n_layer, "num_hidden_layers");
  pos(n_head, "num_attention_heads");
  pos(n_head_kv, "num_key_value_heads");
  pos(vocab_size, "vocab_size");
  pos(max_position_embeddings, "max_position_embeddings");
  if (hidden_size % n_head != 0)
    throw std::runtime_error(source + ": hidden_size " + std::to_string(hidden_size) + " is not a multiple of num_attention_heads " +
                             std::to_string(n_head));
  if (head_dim() % 2 != 0) throw std::runtime_error(source + ": head dimension must be even for RoPE");
  if (n_head % n_head_kv != 0)
    throw std::runtime_error(source + ": num_attention_heads " + std::to_string(n_head) +
                             " is not a multiple of num_key_value_heads " + std::to_string(n_head_kv));
  if (!(rms_norm_eps > 0)) throw std::runtime_error(source + ": rms_norm_eps must be positive");
  if (!(rope_theta > 0)) throw std::runtime_error(source + ": rope_theta must be positive");
  if (sliding_window < 0) throw std::runtime_error(source + ": sliding_window must be positive or null");
  for (auto [v, k] : {std::pair<int64_t, const char*>{bos_token_id, "bos_token_id"}, {eos_token_id, "eos_token_id"},
                      {pad_token_id, "pad_token_id"}})
    if (v < 0 || v >= vocab_size)
      throw std::runtime_error(source + ": \"" + k + "\" " + std::to_string(v) + " is outside the vocabulary");
}

// ---- size bounds (issue 15): far above any released model, far below what would overflow ----

namespace {
struct SizeBound {
  const char* key;
  int64_t ModelConfig::*field;
  int64_t max;
};
// Largest released figures for scale: hidden 16384-25600, intermediate 53248-73728, 126 layers,
// 128 heads, vocab 256000, context 10^6-10^7.
const SizeBound kSizeBounds[] = {
    {"hidden_size", &ModelConfig::hidden_size, int64_t(1) << 17},
    {"intermediate_size", &ModelConfig::intermediate_size, int64_t(1) << 20},
    {"num_hidden_layers", &ModelConfig::n_layer, 4096},
    {"num_attention_heads", &ModelConfig::n_head, 8192},
    {"num_key_value_heads", &ModelConfig::n_head_kv, 8192},
    {"vocab_size", &ModelConfig::vocab_size, int64_t(1) << 24},
    {"max_position_embeddings", &ModelConfig::max_position_embeddings, int64_t(1) << 30},
    {"sliding_window", &ModelConfig::sliding_window, int64_t(1) << 30},
};

int64_t mul_or_throw(int64_t a, int64_t b, const std::string& source) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r))
    throw std::runtime_error(source + ": the parameter count overflows a 64-bit integer (sizes too large)");
  return r;
}
int64_t add_or_throw(int64_t a, int64_t b, const std::string& source) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r))
    throw std::runtime_error(source + ": the parameter count overflows a 64-bit integer (sizes too large)");
  return r;
}
}  // namespace

void check_config_sizes(const ModelConfig& cfg, const std::string& source) {
  for (const auto& b : kSizeBounds) {
    const int64_t v = cfg.*(b.field);
    if (v > b.max)
      throw std::runtime_error(source + ": \"" + b.key + "\" " + std::to_string(v) + " is implausibly large (at most " +
                               std::to_string(b.max) + ")");
  }
  if (cfg.hidden_size > 0 && cfg.n_head > 0 && cfg.intermediate_size > 0 && cfg.n_layer > 0 && cfg.vocab_size > 0)
    checked_base_parameters(cfg, source);
}

int64_t checked_base_parameters(const ModelConfig& cfg, const std::string& source) {
  const int64_t C = cfg.hidden_size, F = cfg.intermediate_size, V = cfg.vocab_size;
  const int64_t D = cfg.n_head > 0 ? C / cfg.n_head : 0, Hkv = cfg.n_head_kv > 0 ? cfg.n_head_kv : cfg.n_head;
  const int64_t kv = mul_or_throw(Hkv, D, source);
  int64_t layer = mul_or_throw(2, C, source);                                    // two RMSNorms
  layer = add_or_throw(layer, mul_or_throw(2, mul_or_throw(C, C, source), source), source);   // q, o
  layer = add_or_throw(layer, mul_or_throw(2, mul_or_throw(C, kv, source), source), source);  // k, v
  layer = add_or_throw(layer, mul_or_throw(3, mul_or_throw(C, F, source), source), source);   // gate, up, down
  int64_t n = add_or_throw(mul_or_throw(cfg.n_layer, layer, source), C, source);  // + final norm
  const int64_t emb = mul_or_throw(V, C, source);
  n = add_or_throw(n, cfg.tie_word_embeddings ? emb : mul_or_throw(2, emb, source), source);
  if (n > (int64_t(1) << 50))
    throw std::runtime_error(source + ": " + std::to_string(n) + " base parameters is implausibly large (sizes too large?)");
  return n;
}

void check_config_fits_weights(const ModelConfig& cfg, uint64_t weight_bytes, const std::string& source,
                               const std::string& weights_description) {
  const int64_t n = checked_base_parameters(cfg, source);
  // A tied checkpoint may or may not store lm_head: count the smallest layout.
  const uint64_t need = 2 * uint64_t(n);
  if (need > weight_bytes)
    throw std::runtime_error(source + ": describes " + std::to_string(n) + " parameters (at least " + std::to_string(need) +
                             " bytes), but " + weights_description + " holds " + std::to_string(weight_bytes) +
                             " bytes of tensors: config.json does not match the weights");
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot read (missing config.json?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": bad JSON: " + e.what());
  }
  return from_json(j, path);
}

nlohmann::json ModelConfig::to_json() const {
  nlohmann::json j = {
      {"architectures", {architecture}},
      {"model_type", model_type},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", n_layer},
      {"num_attention_heads", n_head},
      {"num_key_value_heads", n_head_kv},
      {"vocab_size", vocab_size},
      {"max_position_embeddings", max_position_embeddings},
      {"hidden_act", "silu"},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"rope_scaling", nullptr},
      {"tie_word_embeddings", tie_word_embeddings},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"pad_token_id", pad_token_id},
      {"initializer_range", 0.02},
      {"use_cache", true},
  };
  if (!torch_dtype.empty()) j["torch_dtype"] = torch_dtype;
  if (model_type == "mistral") j["sliding_window"] = sliding_window > 0 ? nlohmann::json(sliding_window) : nlohmann::json();
  return j;
}

std::string hf_cache_dir() {
  if (const char* c = std::getenv("HF_HUB_CACHE"); c && *c) return c;
  if (const char* h = std::getenv("HF_HOME"); h && *h) return (fs::path(h) / "hub").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home ? home : "") / ".cache" / "huggingface" / "hub").string();
}

std::string resolve_model_dir(const std::string& base_model) {
  if (base_model.empty()) throw std::runtime_error("--base_model is empty");
  std::vector<std::string> looked;
  if (fs::is_directory(base_model)) return base_model;
  looked.push_back(base_model + " (not a directory)");
  // A Hub id ORG/NAME (or NAME) resolved through the cache: models--ORG--NAME/snapshots/<refs/main>.
  const bool hub_like = looks_like_repo_id(base_model);
  if (hub_like) {
    std::string folder = "models--" + base_model;
    for (size_t p; (p = folder.find('/')) != std::string::npos;) folder.replace(p, 1, "--");
    const fs::path repo = fs::path(hf_cache_dir()) / folder;
    const fs::path ref = repo / "refs" / "main";
    std::ifstream in(ref);
    std::string hash;
    if (in && std::getline(in, hash)) {
      while (!hash.empty() && std::isspace(static_cast<unsigned char>(hash.back()))) hash.pop_back();
      const fs::path snap = repo / "snapshots" / hash;
      if (!hash.empty() && fs::is_directory(snap)) return snap.string();
      looked.push_back(snap.string() + " (snapshot named by " + ref.string() + " not found)");
    } else {
      looked.push_back(ref.string() + " (not found)");
    }
  }
  std::string msg = "cannot find model '" + base_model + "'; looked in:";
  for (const auto& l : looked) msg += " " + l + ";";
  if (hub_like && !hub_offline()) {
    // Not in the cache: download what a model needs (configs, safetensors weights, tokenizer files).
    HubRequest q;
    q.repo_id = base_model;
    q.include = {"*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt"};
    try {
      return hub_snapshot_download(q);
    } catch (const std::exception& e) {
      throw std::runtime_error(msg + " downloading failed: " + e.what());
    }
  }
  msg += hub_like ? " (HF_HUB_OFFLINE is set: nothing downloaded; unset it, or pass a directory in Hugging Face layout)"
                  : " (pass a directory in Hugging Face layout or a Hub id; cache = $HF_HUB_CACHE, else $HF_HOME/hub, "
                    "else ~/.cache/huggingface/hub)";
  throw std::runtime_error(msg);
}

}  // namespace mor
