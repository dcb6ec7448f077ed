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
#include "arch.h"

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

bool RopeScaling::operator==(const RopeScaling& o) const {
  return type == o.type && factor == o.factor && low_freq_factor == o.low_freq_factor &&
         high_freq_factor == o.high_freq_factor && original_max_position_embeddings == o.original_max_position_embeddings;
}

namespace {

// config.json "rope_scaling": transformers reads "rope_type" (older files: "type").
RopeScaling parse_rope_scaling(const nlohmann::json& r, const ArchInfo& arch, const std::string& source) {
  RopeScaling s;
  if (r.is_null()) return s;
  auto unsupported = [&](const std::string& why) {
    return std::runtime_error(source + ": rope_scaling " + r.dump() + " is not supported: " + why);
  };
  if (!r.is_object()) throw unsupported("expected an object or null");
  const nlohmann::json* t = r.contains("rope_type") ? &r["rope_type"] : r.contains("type") ? &r["type"] : nullptr;
  if (!t || !t->is_string()) throw unsupported("no \"rope_type\" (or \"type\") string");
  s.type = t->get<std::string>();
  if (s.type == "default") {
    s.type.clear();
    return s;
  }
  const auto& ok = arch.rope_scaling_types;
  if (std::find(ok.begin(), ok.end(), s.type) == ok.end()) {
    std::string list;
    for (const auto& x : ok) list += (list.empty() ? "" : ", ") + x;
    throw unsupported("type '" + s.type + "' (supported: " + list + ")");
  }
  auto num = [&](const char* k, bool required, double def) {
    if (!r.contains(k) || r[k].is_null()) {
      if (required) throw unsupported("type '" + s.type + "' needs \"" + k + "\"");
      return def;
    }
    if (!r[k].is_number()) throw unsupported("\"" + std::string(k) + "\" must be a number");
    return r[k].get<double>();
  };
  s.factor = num("factor", true, 1.0);
  if (!(s.factor > 0)) throw unsupported("\"factor\" must be positive");
  if (s.type == "llama3") {
    s.low_freq_factor = num("low_freq_factor", true, 1.0);
    s.high_freq_factor = num("high_freq_factor", true, 4.0);
    const double omp = num("original_max_position_embeddings", true, 0);
    if (!(omp > 0) || omp != double(int64_t(omp))) throw unsupported("\"original_max_position_embeddings\" must be a positive integer");
    s.original_max_position_embeddings = int64_t(omp);
    if (!(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0))
      throw unsupported("needs 0 < low_freq_factor < high_freq_factor");
  } else if (s.type == "dynamic" && r.contains("original_max_position_embeddings") &&
             r["original_max_position_embeddings"].is_number_integer()) {
    s.original_max_position_embeddings = r["original_max_position_embeddings"].get<int64_t>();  // unused, as in transformers
  }
  return s;
}

}  // namespace

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw std::runtime_error(source + ": not a JSON object");
  ModelConfig c;
  std::string mt;
  if (j.contains("model_type") && !j["model_type"].is_null()) {
    if (!j["model_type"].is_string()) throw std::runtime_error(source + ": \"model_type\" must be a string");
    mt = j["model_type"].get<std::string>();
  }
  std::string cls;
  if (j.contains("architectures") && !j["architectures"].is_null()) {
    const auto& a = j["architectures"];
    if (!a.is_array() || a.size() != 1 || !a[0].is_string())
      throw std::runtime_error(source + ": \"architectures\" must be a list with one name");
    cls = a[0].get<std::string>();
  }
  const ArchInfo& arch = find_arch(cls, mt, source);
  c.architecture = arch.architecture;
  c.model_type = arch.model_type;

  // The family's keys (src/arch.cpp), then the special ones.
  for (const auto& k : arch.keys) {
    switch (k.kind) {
      case ConfigKey::Int: c.*k.int_field = get_int(j, k.name.c_str(), source, k.required, int64_t(k.def)); break;
      case ConfigKey::Number: c.*k.num_field = get_num(j, k.name.c_str(), source, k.def); break;
      case ConfigKey::Bool:
        c.*k.bool_field = k.def != 0;
        if (j.contains(k.name) && !j[k.name].is_null()) {
          if (!j[k.name].is_boolean()) throw std::runtime_error(source + ": \"" + k.name + "\" must be true or false");
          c.*k.bool_field = j[k.name].get<bool>();
        }
        break;
      case ConfigKey::Special: break;
    }
  }
  c.n_head_kv = get_int(j, "num_key_value_heads", source, false, c.n_head);
  c.head_dim_config = get_int(j, "head_dim", source, false, 0);
  if (j.contains("head_dim") && !j["head_dim"].is_null() && c.head_dim_config <= 0)
    throw std::runtime_error(source + ": \"head_dim\" must be positive");
  if (c.head_dim_config > 0 && c.n_head > 0 && c.head_dim_config * c.n_head == c.hidden_size)
    c.head_dim_config = 0;  // the default spelled out: keep to_json as transformers would write it
  const bool qwen_like = arch.model_type == "qwen2";
  c.eos_token_ids.clear();
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    for (const auto& e : j["eos_token_id"]) {
      if (!e.is_number_integer()) throw std::runtime_error(source + ": \"eos_token_id\" list must hold integers");
      c.eos_token_ids.push_back(e.get<int64_t>());
    }
    if (c.eos_token_ids.empty()) throw std::runtime_error(source + ": \"eos_token_id\" is an empty list");
  } else {
    const int64_t e = get_int(j, "eos_token_id", source, false, qwen_like ? -1 : 2);
    if (e >= 0) c.eos_token_ids.push_back(e);
  }
  c.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids.front();
  c.pad_token_id = get_int(j, "pad_token_id", source, false, 0);
  if (c.pad_token_id < 0) c.pad_token_id = 0;  // old conversions say -1; batches are padded with 0 anyway
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"].get<std::string>();
  if (arch.model_type == "mistral") {
    // MistralConfig's default window is 4096; null means none.
    c.sliding_window = j.contains("sliding_window") ? (j["sliding_window"].is_null() ? 0 : get_int(j, "sliding_window", source, false, 0))
                                                    : 4096;
  }
  c.rope_scaling = parse_rope_scaling(j.contains("rope_scaling") ? j["rope_scaling"] : nlohmann::json(), arch, source);

  // Things that would change the numerics and are not implemented: reject, never ignore.
  for (const auto& u : arch.unsupported) {
    if (!j.contains(u.name) || j[u.name].is_null()) continue;
    const auto& v = j[u.name];
    if (std::find(u.allowed.begin(), u.allowed.end(), v) != u.allowed.end()) continue;
    std::string msg = u.message;
    if (auto p = msg.find("{v}"); p != std::string::npos) msg.replace(p, 3, v.dump());
    throw std::runtime_error(source + ": " + msg);
  }
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
  if (head_dim_config < 0) throw std::runtime_error(source + ": \"head_dim\" must be positive");
  if (head_dim_config == 0 && hidden_size % n_head != 0)
    throw std::runtime_error(source + ": hidden_size " + std::to_string(hidden_size) + " is not a multiple of num_attention_heads " +
                             std::to_string(n_head));
  if (head_dim() % 2 != 0) throw std::runtime_error(source + ": head dimension must be even for RoPE");
  if (n_head % n_head_kv != 0)
    throw std::runtime_error(source + ": num_attention_heads " + std::to_string(n_head) +
                             " is not a multiple of num_key_value_heads " + std::to_string(n_head_kv));
  if (!(rms_norm_eps > 0)) throw std::runtime_error(source + ": rms_norm_eps must be positive");
  if (!(rope_theta > 0)) throw std::runtime_error(source + ": rope_theta must be positive");
  if (sliding_window < 0) throw std::runtime_error(source + ": sliding_window must be positive or null");
  // bos/eos -1: none (Qwen2Config leaves them unset).
  std::vector<std::pair<int64_t, const char*>> ids = {{bos_token_id, "bos_token_id"}, {eos_token_id, "eos_token_id"},
                                                      {pad_token_id, "pad_token_id"}};
  for (auto e : eos_token_ids) ids.push_back({e, "eos_token_id"});
  for (auto [v, k] : ids)
    if (v < (std::string(k) == "pad_token_id" ? 0 : -1) || v >= vocab_size)
      throw std::runtime_error(source + ": \"" + k + "\" " + std::to_string(v) + " is outside the vocabulary");
  if (eos_token_id >= 0 && (eos_token_ids.empty() || eos_token_ids.front() != eos_token_id))
    throw std::runtime_error(source + ": eos_token_id " + std::to_string(eos_token_id) + " is not the first of eos_token_ids");
  if (!rope_scaling.type.empty() && !(rope_scaling.factor > 0))
    throw std::runtime_error(source + ": rope_scaling factor must be positive");
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
      {"bos_token_id", bos_token_id >= 0 ? nlohmann::json(bos_token_id) : nlohmann::json()},
      {"eos_token_id", eos_token_ids.size() > 1 ? nlohmann::json(eos_token_ids)
                       : eos_token_id >= 0      ? nlohmann::json(eos_token_id)
                                                : nlohmann::json()},
      {"pad_token_id", pad_token_id},
      {"initializer_range", 0.02},
      {"use_cache", true},
  };
  if (!torch_dtype.empty()) j["torch_dtype"] = torch_dtype;
  if (model_type == "mistral") j["sliding_window"] = sliding_window > 0 ? nlohmann::json(sliding_window) : nlohmann::json();
  if (model_type == "qwen2") j["use_sliding_window"] = false;
  if (head_dim_config > 0) j["head_dim"] = head_dim_config;
  if (!rope_scaling.type.empty()) {
    auto& r = j["rope_scaling"];
    r = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      r["low_freq_factor"] = rope_scaling.low_freq_factor;
      r["high_freq_factor"] = rope_scaling.high_freq_factor;
    }
    if (rope_scaling.original_max_position_embeddings > 0)
      r["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
  }
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
