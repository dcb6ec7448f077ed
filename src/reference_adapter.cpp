// Reference adapter folders (see reference_adapter.h): the allocation from adapter_config.json and
// the weights' keys/shapes, top-k from the flags, every given flag checked against the files.
#include "reference_adapter.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <stdexcept>

#include "adapter.h"
#include "cli.h"
#include "files.h"
#include "safetensors.h"

namespace fs = std::filesystem;

namespace mor {

namespace {

using json = nlohmann::json;


std::string shape_str(int64_t a, int64_t b) { return "[" + std::to_string(a) + ", " + std::to_string(b) + "]"; }

// Name -> shape of the adapter weights file (the safetensors header alone; a .bin is unpickled).
std::map<std::string, std::vector<int64_t>> weight_shapes(const std::string& path) {
  std::map<std::string, std::vector<int64_t>> out;
  if (path.size() >= 12 && path.substr(path.size() - 12) == ".safetensors") {
    auto f = SafeTensorsFile::open(path);
    for (const auto& k : f->keys()) out[k] = f->info(k).shape;
    return out;
  }
  for (auto& [k, t] : read_adapter_weights(path)) out[k] = t.sizes().vec();
  return out;
}

// Per module path: rank of each expert e (from ...lora_A_{e}.weight [r_e, I]), in_features seen.
struct FileModule {
  std::map<int64_t, int64_t> ranks;
  std::map<int64_t, std::string> keys;
};

json read_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) return json::object();
  try {
    json j = json::parse(f);
    if (!j.is_object()) throw std::runtime_error("expected a JSON object");
    return j;
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
}

// adapter_config.json "target_modules": a list, or PEFT's string spelling.
std::vector<std::string> config_targets(const json& j, const std::string& where, const ModelConfig& cfg) {
  std::vector<std::string> out;
  if (!j.contains("target_modules") || j["target_modules"].is_null()) return out;
  const json& t = j["target_modules"];
  std::string spelled;
  if (t.is_string()) {
    spelled = t.get<std::string>();
  } else if (t.is_array()) {
    for (const auto& x : t) {
      if (!x.is_string()) throw std::runtime_error(where + ": target_modules holds " + x.dump() + ", expected names");
      spelled += (spelled.empty() ? "" : ",") + x.get<std::string>();
    }
  } else {
    throw std::runtime_error(where + ": target_modules is " + std::string(t.type_name()) + ", expected a list of names");
  }
  try {
    return Allocation::from_flags(cfg, spelled, "1", "1", "1", 16, 0.05).target_modules;
  } catch (const std::exception& e) {
    throw std::runtime_error(where + ": target_modules: " + std::string(e.what()));
  }
}

std::string weights_path(const std::string& dir) {
  std::string w = dir + "/adapter_model.safetensors";
  if (!fs::exists(w)) w = dir + "/adapter_model.bin";
  if (!fs::exists(w)) throw std::runtime_error(dir + ": neither adapter_model.safetensors nor adapter_model.bin found");
  return w;
}

}  // namespace

GivenAllocationFlags given_flags(const AllocationFlags& f) {
  GivenAllocationFlags g;
  if (!f.given_names) return g;
  for (const std::string& n : f.given_names()) {
    if (n == "--lora_target_modules") g.target_modules = f.target_modules;
    else if (n == "--number_experts") g.number_experts = f.number_experts;
    else if (n == "--lora_r") g.lora_r = f.lora_r;
    else if (n == "--top_k") g.top_k = f.top_k;
    else if (n == "--lora_alpha") g.lora_alpha = f.lora_alpha;
  }
  return g;
}

void check_flags_against(const Allocation& a, const ModelConfig& cfg, const GivenAllocationFlags& g,
                         const std::string& source) {
  if (g.target_modules) {
    auto given = Allocation::from_flags(cfg, *g.target_modules, "1", "1", "1", 16, 0.05).target_modules;
    auto x = given, y = a.target_modules;
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    if (x != y)
      throw std::runtime_error("--lora_target_modules " + join(given, ",") + " disagrees with " + source + ": it targets " +
                               join(a.target_modules, ",") + " (drop the flag or fix it)");
  }
  if (g.lora_alpha && *g.lora_alpha != a.lora_alpha)
    throw std::runtime_error("--lora_alpha " + std::to_string(*g.lora_alpha) + " disagrees with " + source +
                             ": lora_alpha " + std::to_string(a.lora_alpha) + " (drop the flag or fix it)");
  const auto paths = a.module_paths();
  if (g.number_experts) {
    auto v = parse_per_module_flag("--number_experts", *g.number_experts, a.n_layer, a.target_modules, false);
    for (const auto& p : paths)
      if (v.at(p)[0] != a.specs.at(p).n_expert)
        throw std::runtime_error("--number_experts disagrees with " + source + ": " + p + " has " +
                                 std::to_string(a.specs.at(p).n_expert) + " experts there, the flag gives " +
                                 std::to_string(v.at(p)[0]) + " (drop the flag or fix it)");
  }
  if (g.lora_r) {
    auto v = parse_per_module_flag("--lora_r", *g.lora_r, a.n_layer, a.target_modules, true);
    for (const auto& p : paths) {
      const auto& s = a.specs.at(p);
      const auto& r = v.at(p);
      if (r.size() != 1 && int64_t(r.size()) != s.n_expert)
        throw std::runtime_error("--lora_r disagrees with " + source + ": " + p + " has " + std::to_string(s.n_expert) +
                                 " experts there, the flag gives " + std::to_string(r.size()) + " ranks");
      for (int64_t e = 0; e < s.n_expert; ++e) {
        const int64_t want = r.size() == 1 ? r[0] : r[e];
        if (want != s.ranks[e])
          throw std::runtime_error("--lora_r disagrees with " + source + ": key 'base_model.model." + p + ".lora_A_" +
                                   std::to_string(e) + ".weight' has shape " + shape_str(s.ranks[e], a.shapes.at(p).first) +
                                   ", expected " + shape_str(want, a.shapes.at(p).first) +
                                   " by the flag (drop --lora_r: the ranks come from the files)");
      }
    }
  }
  if (g.top_k) {
    auto v = parse_per_module_flag(g.top_k_flag, *g.top_k, a.n_layer, a.target_modules, false);
    for (const auto& p : paths)
      if (v.at(p)[0] != a.specs.at(p).top_k)
        throw std::runtime_error(g.top_k_flag + " disagrees with " + source + ": " + p + " has top_k " +
                                 std::to_string(a.specs.at(p).top_k) + " there, the flag gives " +
                                 std::to_string(v.at(p)[0]) + " (drop the flag or fix it)");
  }
}

Allocation infer_reference_allocation(const ModelConfig& cfg, const std::string& dir, const GivenAllocationFlags& g) {
  const std::string cpath = dir + "/adapter_config.json";
  const json conf = read_config(cpath);
  const std::string wpath = weights_path(dir);

  // Experts and ranks from the keys: base_model.model.model.layers.{i}.{self_attn|mlp}.{name}.lora_A_{e}.weight
  static const std::regex key_re(R"(^base_model\.model\.(model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+))\.lora_A_(\d+)\.weight$)");
  std::map<std::string, FileModule> mods;
  std::set<std::string> names_seen;
  for (const auto& [k, shape] : weight_shapes(wpath)) {
    std::smatch m;
    if (!std::regex_match(k, m, key_re)) continue;  // B's, routers, strays: load_adapter checks them
    if (shape.size() != 2) throw std::runtime_error(wpath + ": key '" + k + "' is not a matrix");
    const int64_t il = std::stoll(m[2].str());
    if (il >= cfg.n_layer)
      throw std::runtime_error(wpath + ": key '" + k + "' is for layer " + std::to_string(il) + ", the model has " +
                               std::to_string(cfg.n_layer) + " layers (is --base_model the adapter's model?)");
    FileModule& fm = mods[m[1].str()];
    fm.ranks[std::stoll(m[5].str())] = shape[0];
    fm.keys[std::stoll(m[5].str())] = k;
    names_seen.insert(m[4].str());
  }
  if (mods.empty())
    throw std::runtime_error(wpath + ": no '...lora_A_{e}.weight' keys: not a MoLA adapter (a plain PEFT LoRA "
                             "adapter is not supported)");

  Allocation a;
  a.n_layer = cfg.n_layer;
  a.target_modules = config_targets(conf, cpath, cfg);
  if (a.target_modules.empty())  // no adapter_config.json (or no list): the modules the keys name
    for (const auto& n : Allocation::known_modules())
      if (names_seen.count(n)) a.target_modules.push_back(n);
  for (const auto& n : names_seen)
    if (std::find(a.target_modules.begin(), a.target_modules.end(), n) == a.target_modules.end())
      throw std::runtime_error(wpath + ": holds experts for '" + n + "', which " + cpath +
                               " does not list in target_modules (" + join(a.target_modules, ",") + ")");
  a.lora_alpha = g.lora_alpha ? *g.lora_alpha : 16.0;
  if (conf.contains("lora_alpha")) {
    if (!conf["lora_alpha"].is_number()) throw std::runtime_error(cpath + ": lora_alpha is not a number");
    a.lora_alpha = conf["lora_alpha"].get<double>();
  }
  if (conf.contains("lora_dropout") && conf["lora_dropout"].is_number()) a.lora_dropout = conf["lora_dropout"].get<double>();

  // "r": one int, or one per layer (the MoR fork): the rank of every layer's expert 0.
  std::vector<int64_t> r_of_layer;
  if (conf.contains("r") && !conf["r"].is_null()) {
    const json& r = conf["r"];
    if (r.is_number_integer()) r_of_layer.assign(cfg.n_layer, r.get<int64_t>());
    else if (r.is_array() && int64_t(r.size()) == cfg.n_layer && std::all_of(r.begin(), r.end(), [](const json& x) { return x.is_number_integer(); }))
      r_of_layer = r.get<std::vector<int64_t>>();
    else
      throw std::runtime_error(cpath + ": r is " + r.dump() + ", expected an integer or a list of " +
                               std::to_string(cfg.n_layer) + " integers (one per layer)");
  }

  for (int64_t il = 0; il < cfg.n_layer; ++il) {
    for (const auto& name : Allocation::known_modules()) {
      if (std::find(a.target_modules.begin(), a.target_modules.end(), name) == a.target_modules.end()) continue;
      const std::string path = Allocation::module_path(il, name);
      auto it = mods.find(path);
      if (it == mods.end())
        throw std::runtime_error(wpath + ": no experts for " + path + " ('base_model.model." + path +
                                 ".lora_A_0.weight' is missing), which target_modules (" + join(a.target_modules, ",") + ") names");
      ExpertSpec s;
      s.n_expert = int64_t(it->second.ranks.size());
      for (int64_t e = 0; e < s.n_expert; ++e) {
        auto r = it->second.ranks.find(e);
        if (r == it->second.ranks.end())
          throw std::runtime_error(wpath + ": " + path + " has experts up to lora_A_" +
                                   std::to_string(it->second.ranks.rbegin()->first) + " but no lora_A_" + std::to_string(e));
        s.ranks.push_back(r->second);
      }
      if (!r_of_layer.empty() && r_of_layer[il] != s.ranks[0])
        throw std::runtime_error(cpath + " gives layer " + std::to_string(il) + " r = " + std::to_string(r_of_layer[il]) +
                                 ", but " + wpath + ": key '" + it->second.keys.at(0) + "' has " +
                                 std::to_string(s.ranks[0]) + " rows");
      s.lora_alpha = a.lora_alpha;
      s.lora_dropout = a.lora_dropout;
      a.specs[path] = s;
      a.shapes[path] = Allocation::module_shape(cfg, name);
    }
  }

  // Top-k: the one thing the files cannot tell.
  std::map<std::string, std::vector<int64_t>> topk;
  if (g.top_k) topk = parse_per_module_flag(g.top_k_flag, *g.top_k, a.n_layer, a.target_modules, false);
  else if (g.default_top_k < 1)
    throw std::runtime_error(dir + " has no mola_config.json and the reference stores no top-k: pass " + g.top_k_flag +
                             " (one value, or one per layer; the reference's evaluation uses 2)");
  for (const auto& path : a.module_paths()) {  // model order: the first problem is reported
    ExpertSpec& s = a.specs.at(path);
    s.top_k = g.top_k ? topk.at(path)[0] : std::min(g.default_top_k, s.n_expert);
    if (s.top_k < 1) throw std::runtime_error(g.top_k_flag + ": " + path + ": " + std::to_string(s.top_k) + ", must be >= 1");
    if (s.top_k > s.n_expert)
      throw std::runtime_error(g.top_k_flag + ": " + path + ": top_k " + std::to_string(s.top_k) + " exceeds its " +
                               std::to_string(s.n_expert) + " experts (in " + wpath + ")");
  }
  GivenAllocationFlags rest = g;
  rest.top_k.reset();
  if (!conf.contains("lora_alpha")) rest.lora_alpha.reset();
  check_flags_against(a, cfg, rest, wpath);
  return a;
}

Allocation load_adapter_folder(LlamaForCausalLM& model, const std::string& dir, const GivenAllocationFlags& g) {
  if (!fs::is_directory(dir)) throw std::runtime_error("adapter folder " + dir + " does not exist");
  const std::string mola_cfg = dir + "/mola_config.json";
  Allocation a;
  if (fs::exists(mola_cfg)) {
    nlohmann::json j;
    try {
      std::ifstream f(mola_cfg);
      j = nlohmann::json::parse(f);
    } catch (const std::exception& e) {
      throw std::runtime_error(mola_cfg + ": not valid JSON: " + e.what());
    }
    a = Allocation::from_json(j, mola_cfg);
    check_flags_against(a, model->cfg, g, mola_cfg);
  } else {
    a = infer_reference_allocation(model->cfg, dir, g);
  }
  return load_adapter(model, dir, &a);
}

}  // namespace mor
