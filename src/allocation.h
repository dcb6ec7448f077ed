// MoLA allocation: which modules carry experts, and per layer/module the number of experts, top-k
// and ranks (one per expert: a mixture of ranks when they differ). Built once from the reference's
// flags (--lora_target_modules, --number_experts, --lora_r, --top_k, --lora_alpha, --lora_dropout),
// validated in one place, stored in mola_config.json, and printed as a per-layer table.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.h"
#include "moe_lora.h"

namespace mor {

struct Allocation;

// The allocation flags as the reference spells them, shared by train, params and score.
// Defaults: all 7 modules, 8 experts, rank 8, top-2, alpha 16, dropout 0.05.
struct AllocationFlags {
  std::string target_modules = "q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj";
  std::string number_experts = "8";
  std::string lora_r = "8";
  std::string top_k = "2";
  double lora_alpha = 16.0;
  double lora_dropout = 0.05;
  std::function<bool()> was_given;  // set by add_allocation_flags (src/cli.h) once the flags are registered
  std::function<std::vector<std::string>()> given_names;  // the flags passed, as "--lora_r" (same origin)

  bool any_given() const;  // whether the user passed any of them (after parsing)
  Allocation build(const ModelConfig& cfg) const;
};

struct Allocation {
  int64_t n_layer = 0;
  std::string model_type;  // the base's config.json model_type (llama, mistral, qwen2); "" when unknown
  std::vector<std::string> target_modules;  // short names as given: q_proj, v_proj, ...
  double lora_alpha = 16.0;
  double lora_dropout = 0.05;
  // Per targeted module, keyed by "model.layers.{i}.{self_attn|mlp}.{name}".
  std::map<std::string, ExpertSpec> specs;
  std::map<std::string, std::pair<int64_t, int64_t>> shapes;  // (in_features, out_features)

  // Each per-layer flag: a comma list of exactly n_layer integers (spaces allowed), one integer for
  // every layer, or a JSON file holding such a list or an object keyed by module path. --lora_r
  // values may be lists with one rank per expert. Throws one clear error naming the flag and problem.
  static Allocation from_flags(const ModelConfig& cfg, const std::string& target_modules,
                               const std::string& number_experts, const std::string& lora_r,
                               const std::string& top_k, double lora_alpha, double lora_dropout);

  static const std::vector<std::string>& known_modules();  // q,k,v,o,gate,up,down (model order)
  static std::string module_path(int64_t il, const std::string& name);
  static std::pair<int64_t, int64_t> module_shape(const ModelConfig& cfg, const std::string& name);

  bool targets(int64_t il, const std::string& name) const;
  const ExpertSpec& spec(const std::string& module_path) const;  // throws for an untargeted module
  int64_t n_expert(int64_t il, const std::string& name) const;
  int64_t rank(int64_t il, const std::string& name, int64_t expert) const;
  int64_t top_k(int64_t il, const std::string& name) const;
  std::vector<std::string> module_paths() const;  // targeted modules, layer by layer in model order

  int64_t module_parameters(const std::string& module_path) const;  // E*I (router) + R*I + O*R
  int64_t layer_parameters(int64_t il) const;
  int64_t trainable_parameters() const;
  // adapter_config.json "r": per layer, the rank of expert 0 of the first targeted module.
  std::vector<int64_t> layer_ranks() const;

  nlohmann::ordered_json to_json() const;  // mola_config.json
  static Allocation from_json(const nlohmann::json& j, const std::string& source);
  // "" when equal, else the first difference in words ("model.layers.3.mlp.up_proj: experts 4 vs 2").
  std::string difference(const Allocation& other) const;

  std::string table() const;  // per-layer allocation table plus the trainable parameter count
};

// The values of one per-layer flag per targeted module path ("model.layers.3.mlp.up_proj" -> ints),
// in every form Allocation::from_flags takes (one integer, a comma list, a JSON file); `allow_list`
// lets JSON values be per-expert lists. Throws one clear error naming `flag`.
std::map<std::string, std::vector<int64_t>> parse_per_module_flag(const std::string& flag, const std::string& value,
                                                                  int64_t n_layer, const std::vector<std::string>& targets,
                                                                  bool allow_list);

// Parameters of the base model described by cfg (embeddings, layers, norms, lm_head).
int64_t base_parameters(const ModelConfig& cfg);

// 169017344 -> "169,017,344"
std::string with_commas(int64_t v);

}  // namespace mor
