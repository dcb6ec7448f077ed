// MoLA allocation (see allocation.h): flag parsing (comma lists, single values, JSON files),
// validation with one clear error per problem, mola_config.json, parameter counts and the table.
#include "allocation.h"

#include "config_sizes.h"

#include "arch.h"
#include "files.h"
#include "routing.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace mor {

static void check_spec_bounds(const ExpertSpec& s, const std::string& where);

namespace {

using json = nlohmann::json;

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream is(s);
  while (std::getline(is, cur, sep)) out.push_back(trim(cur));
  if (!s.empty() && s.back() == sep) out.push_back("");
  return out;
}

bool parse_int(const std::string& s, int64_t& v) {
  if (s.empty()) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t j = i; j < s.size(); ++j)
    if (!std::isdigit(static_cast<unsigned char>(s[j]))) return false;
  try {
    v = std::stoll(s);
  } catch (...) {
    return false;
  }
  return true;
}

// Values of one per-layer flag: module path -> list of ints (one int, or per-expert ranks).
using PerModule = std::map<std::string, std::vector<int64_t>>;

std::vector<int64_t> json_values(const json& v, const std::string& flag, bool allow_list, const std::string& where) {
  auto one = [&](const json& x) -> int64_t {
    if (x.is_number_integer()) return x.get<int64_t>();
    if (x.is_number_float() && x.get<double>() == double(int64_t(x.get<double>()))) return int64_t(x.get<double>());
    throw std::runtime_error(flag + ": " + where + ": expected an integer, got " + x.dump());
  };
  if (v.is_array()) {
    if (!allow_list)
      throw std::runtime_error(flag + ": " + where + ": expected an integer, got a list " + v.dump() +
                               " (only --lora_r takes per-expert lists)");
    if (v.empty()) throw std::runtime_error(flag + ": " + where + ": empty rank list");
    std::vector<int64_t> out;
    for (const auto& x : v) out.push_back(one(x));
    return out;
  }
  return {one(v)};
}

PerModule parse_flag(const std::string& flag, const std::string& value, int64_t n_layer,
                     const std::vector<std::string>& targets, bool allow_list) {
  auto paths_of_layer = [&](int64_t il) {
    std::vector<std::string> p;
    for (const auto& m : targets) p.push_back(Allocation::module_path(il, m));
    return p;
  };
  PerModule out;
  const std::string v = trim(value);
  if (v.empty()) throw std::runtime_error(flag + ": empty value");
  bool looks_like_list = true;
  for (char c : v)
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == ',' || c == ' ' || c == '-' || c == '+'))
      looks_like_list = false;
  if (!looks_like_list || std::filesystem::is_regular_file(v)) {
    if (!std::filesystem::is_regular_file(v)) {
      // Neither integers nor a file: name the first non-integer item.
      auto items = split(v, ',');
      for (size_t i = 0; i < items.size(); ++i) {
        int64_t x;
        if (!parse_int(items[i], x))
          throw std::runtime_error(flag + ": '" + items[i] + "' is not an integer (item " + std::to_string(i + 1) +
                                   " of '" + v + "'), nor is '" + v + "' a JSON file");
      }
    }
    std::ifstream f(v);
    json j;
    try {
      j = json::parse(f);
    } catch (const std::exception& e) {
      throw std::runtime_error(flag + ": " + v + ": not valid JSON: " + e.what());
    }
    if (j.is_array()) {
      if (int64_t(j.size()) != n_layer)
        throw std::runtime_error(flag + ": " + v + ": the list has " + std::to_string(j.size()) +
                                 " values, the model has " + std::to_string(n_layer) + " layers");
      for (int64_t il = 0; il < n_layer; ++il) {
        auto vals = json_values(j[il], flag, allow_list, v + " layer " + std::to_string(il));
        for (const auto& p : paths_of_layer(il)) out[p] = vals;
      }
    } else if (j.is_object()) {
      std::set<std::string> known;
      for (int64_t il = 0; il < n_layer; ++il)
        for (const auto& p : paths_of_layer(il)) known.insert(p);
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!known.count(it.key()))
          throw std::runtime_error(flag + ": " + v + ": key '" + it.key() +
                                   "' matches no target module (expected e.g. '" +
                                   Allocation::module_path(0, targets.front()) + "')");
        out[it.key()] = json_values(it.value(), flag, allow_list, v + " '" + it.key() + "'");
      }
      for (const auto& p : known)
        if (!out.count(p)) throw std::runtime_error(flag + ": " + v + ": no value for target module '" + p + "'");
    } else {
      throw std::runtime_error(flag + ": " + v + ": expected a JSON list (one value per layer) or an object keyed by module path");
    }
    return out;
  }
  auto items = split(v, ',');
  std::vector<int64_t> ints;
  for (size_t i = 0; i < items.size(); ++i) {
    int64_t x;
    if (!parse_int(items[i], x))
      throw std::runtime_error(flag + ": '" + items[i] + "' is not an integer (item " + std::to_string(i + 1) + ")");
    ints.push_back(x);
  }
  if (ints.size() != 1 && int64_t(ints.size()) != n_layer)
    throw std::runtime_error(flag + ": expected one integer or " + std::to_string(n_layer) +
                             " comma-separated integers (one per layer), got " + std::to_string(ints.size()));
  for (int64_t il = 0; il < n_layer; ++il)
    for (const auto& p : paths_of_layer(il)) out[p] = {ints.size() == 1 ? ints[0] : ints[il]};
  return out;
}

std::string join_ints(const std::vector<int64_t>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + std::to_string(v[i]);
  return s;
}

}  // namespace

const std::vector<std::string>& Allocation::known_modules() { return projection_names_all(); }

namespace {
// Appends a target module named by `where` (the flag or the file's key): a known name, given once.
void add_target_module(std::vector<std::string>& modules, const std::string& m, const std::string& where) {
  const auto& known = Allocation::known_modules();
  if (std::find(known.begin(), known.end(), m) == known.end())
    throw std::runtime_error(where + ": unknown module '" + m + "' (known: " + join(known) + ")");
  if (std::find(modules.begin(), modules.end(), m) != modules.end())
    throw std::runtime_error(where + ": '" + m + "' given twice");
  modules.push_back(m);
}
}  // namespace

std::string Allocation::module_path(int64_t il, const std::string& name) { return projection_module_path(il, name); }

std::pair<int64_t, int64_t> Allocation::module_shape(const ModelConfig& cfg, const std::string& name) {
  const auto& names = known_modules();
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw std::runtime_error("unknown module '" + name + "'");
  return arch_of(cfg).shape(cfg, name);
}

Allocation Allocation::from_flags(const ModelConfig& cfg, const std::string& target_modules,
                                  const std::string& number_experts, const std::string& lora_r,
                                  const std::string& top_k, double lora_alpha, double lora_dropout) {
  Allocation a;
  a.n_layer = cfg.n_layer;
  a.model_type = cfg.model_type;
  a.lora_alpha = lora_alpha;
  a.lora_dropout = lora_dropout;
  if (cfg.n_layer < 1) throw std::runtime_error("model config has no layers");
  if (!(lora_alpha > 0)) throw std::runtime_error("--lora_alpha: must be > 0, got " + std::to_string(lora_alpha));
  if (!(lora_dropout >= 0 && lora_dropout < 1))
    throw std::runtime_error("--lora_dropout: must be in [0, 1), got " + std::to_string(lora_dropout));
  std::string tm = trim(target_modules);
  // The reference also accepts a Python-style list: "[q_proj,v_proj]" or "['q_proj', 'v_proj']".
  if (!tm.empty() && tm.front() == '[' && tm.back() == ']') tm = tm.substr(1, tm.size() - 2);
  for (auto m : split(tm, ',')) {
    m.erase(std::remove(m.begin(), m.end(), '\''), m.end());
    m.erase(std::remove(m.begin(), m.end(), '"'), m.end());
    m = trim(m);
    add_target_module(a.target_modules, m, "--lora_target_modules");
  }
  if (a.target_modules.empty()) throw std::runtime_error("--lora_target_modules: no modules given");
  auto experts = parse_flag("--number_experts", number_experts, cfg.n_layer, a.target_modules, false);
  auto ranks = parse_flag("--lora_r", lora_r, cfg.n_layer, a.target_modules, true);
  auto topk = parse_flag("--top_k", top_k, cfg.n_layer, a.target_modules, false);
  for (int64_t il = 0; il < cfg.n_layer; ++il) {
    for (const auto& name : known_modules()) {
      if (std::find(a.target_modules.begin(), a.target_modules.end(), name) == a.target_modules.end()) continue;
      const auto path = module_path(il, name);
      ExpertSpec s;
      s.lora_alpha = lora_alpha;
      s.lora_dropout = lora_dropout;
      s.n_expert = experts.at(path)[0];
      s.top_k = topk.at(path)[0];
      if (s.n_expert < 1)
        throw std::runtime_error("--number_experts: " + path + ": " + std::to_string(s.n_expert) + " experts, must be >= 1");
      if (s.top_k < 1)
        throw std::runtime_error("--top_k: " + path + ": " + std::to_string(s.top_k) + ", must be >= 1");
      if (s.top_k > s.n_expert)
        throw std::runtime_error("--top_k: " + path + ": top_k " + std::to_string(s.top_k) + " exceeds its " +
                                 std::to_string(s.n_expert) + " experts");
      if (s.n_expert > 4096)  // before any per-expert vector is sized by it
        throw std::runtime_error("--number_experts: " + path + ": " + std::to_string(s.n_expert) + " experts (at most 4096)");
      const auto& r = ranks.at(path);
      if (r.size() == 1) {
        s.ranks.assign(s.n_expert, r[0]);
      } else if (int64_t(r.size()) == s.n_expert) {
        s.ranks = r;
      } else {
        throw std::runtime_error("--lora_r: " + path + ": " + std::to_string(r.size()) + " per-expert ranks for " +
                                 std::to_string(s.n_expert) + " experts");
      }
      for (auto x : s.ranks)
        if (x < 1) throw std::runtime_error("--lora_r: " + path + ": rank " + std::to_string(x) + ", must be >= 1");
      check_spec_bounds(s, "--number_experts/--lora_r: " + path);
      a.specs[path] = s;
      a.shapes[path] = module_shape(cfg, name);
    }
  }
  return a;
}

std::map<std::string, std::vector<int64_t>> parse_per_module_flag(const std::string& flag, const std::string& value,
                                                                  int64_t n_layer, const std::vector<std::string>& targets,
                                                                  bool allow_list) {
  return parse_flag(flag, value, n_layer, targets, allow_list);
}

bool Allocation::targets(int64_t il, const std::string& name) const { return specs.count(module_path(il, name)) > 0; }

const ExpertSpec& Allocation::spec(const std::string& path) const {
  auto it = specs.find(path);
  if (it == specs.end()) throw std::runtime_error("allocation: module '" + path + "' carries no adapter");
  return it->second;
}

int64_t Allocation::n_expert(int64_t il, const std::string& name) const { return spec(module_path(il, name)).n_expert; }
int64_t Allocation::top_k(int64_t il, const std::string& name) const { return spec(module_path(il, name)).top_k; }
int64_t Allocation::rank(int64_t il, const std::string& name, int64_t e) const {
  return spec(module_path(il, name)).ranks.at(e);
}

std::vector<std::string> Allocation::module_paths() const {
  std::vector<std::string> out;
  for (int64_t il = 0; il < n_layer; ++il)
    for (const auto& name : known_modules())
      if (targets(il, name)) out.push_back(module_path(il, name));
  return out;
}

int64_t Allocation::module_parameters(const std::string& path) const {
  const auto& s = spec(path);
  auto [in, out] = shapes.at(path);
  return s.n_expert * in + s.total_rank() * (in + out);
}

int64_t Allocation::layer_parameters(int64_t il) const {
  int64_t n = 0;
  for (const auto& name : known_modules())
    if (targets(il, name)) n += module_parameters(module_path(il, name));
  return n;
}

int64_t Allocation::trainable_parameters() const {
  int64_t n = 0;
  for (int64_t il = 0; il < n_layer; ++il) n += layer_parameters(il);
  return n;
}

std::vector<int64_t> Allocation::layer_ranks() const {
  std::vector<int64_t> r;
  for (int64_t il = 0; il < n_layer; ++il)
    for (const auto& name : known_modules())
      if (targets(il, name)) {
        r.push_back(rank(il, name, 0));
        break;
      }
  return r;
}

nlohmann::ordered_json Allocation::to_json() const {
  nlohmann::ordered_json j;
  j["format"] = "mor-mola-allocation";
  j["version"] = 1;
  j["num_hidden_layers"] = n_layer;
  if (!model_type.empty()) j["model_type"] = model_type;
  j["target_modules"] = target_modules;
  j["lora_alpha"] = lora_alpha;
  j["lora_dropout"] = lora_dropout;
  nlohmann::ordered_json mods = nlohmann::ordered_json::object();
  for (const auto& p : module_paths()) {
    const auto& s = specs.at(p);
    mods[p] = {{"experts", s.n_expert}, {"top_k", s.top_k}, {"ranks", s.ranks},
               {"in_features", shapes.at(p).first}, {"out_features", shapes.at(p).second}};
    // Routing beyond the reference's top-k only when chosen, so default files stay as they were.
    if (s.router != "top_k") mods[p]["router"] = s.router;
    if (s.router == "top_p") mods[p]["top_p"] = s.top_p;
    if (s.z_loss != 0) mods[p]["z_loss"] = s.z_loss;
  }
  j["modules"] = mods;
  return j;
}

// Bounds far above any sensible adapter, far below an allocation that would fail or overflow the counts.
static void check_spec_bounds(const ExpertSpec& s, const std::string& where) {
  if (s.n_expert > 4096) throw std::runtime_error(where + ": " + std::to_string(s.n_expert) + " experts (at most 4096)");
  int64_t total = 0;
  for (auto r : s.ranks) {
    if (r < 1 || r > (int64_t(1) << 16)) throw std::runtime_error(where + ": rank " + std::to_string(r) + " out of range (1 to 65536)");
    total += r;
  }
  if (total > (int64_t(1) << 20)) throw std::runtime_error(where + ": total rank " + std::to_string(total) + " over all experts is too large");
}

Allocation Allocation::from_json(const nlohmann::json& j, const std::string& source) {
  Allocation a;
  try {
    if (j.value("format", "") != "mor-mola-allocation") throw std::runtime_error("not a mor allocation (format)");
    a.n_layer = j.at("num_hidden_layers").get<int64_t>();
    if (j.contains("model_type")) a.model_type = j.at("model_type").get<std::string>();  // absent in older files
    for (const auto& m : j.at("target_modules").get<std::vector<std::string>>())
      add_target_module(a.target_modules, m, "target_modules");
    a.lora_alpha = j.at("lora_alpha").get<double>();
    a.lora_dropout = j.at("lora_dropout").get<double>();
    if (a.n_layer < 1 || a.n_layer > 4096) throw std::runtime_error("num_hidden_layers " + std::to_string(a.n_layer) + " out of range");
    if (!(a.lora_alpha > 0) || !std::isfinite(a.lora_alpha)) throw std::runtime_error("lora_alpha must be a positive number");
    if (!(a.lora_dropout >= 0 && a.lora_dropout < 1)) throw std::runtime_error("lora_dropout must be in [0, 1)");
    for (auto it = j.at("modules").begin(); it != j.at("modules").end(); ++it) {
      const auto& m = it.value();
      ExpertSpec s;
      s.n_expert = m.at("experts").get<int64_t>();
      s.top_k = m.at("top_k").get<int64_t>();
      s.ranks = m.at("ranks").get<std::vector<int64_t>>();
      s.lora_alpha = a.lora_alpha;
      s.lora_dropout = a.lora_dropout;
      s.router = m.value("router", std::string("top_k"));
      s.top_p = m.value("top_p", 0.8);
      s.z_loss = m.value("z_loss", 0.0);
      if ((s.router != "top_k" && s.router != "top_p") || !(s.top_p > 0 && s.top_p <= 1) || !(s.z_loss >= 0))
        throw std::runtime_error("module '" + it.key() + "': invalid routing (router top_k|top_p, top_p in (0, 1], z_loss >= 0)");
      if (s.n_expert < 1 || s.top_k < 1 || s.top_k > s.n_expert || int64_t(s.ranks.size()) != s.n_expert)
        throw std::runtime_error("module '" + it.key() + "': inconsistent experts/top_k/ranks");
      check_spec_bounds(s, "module '" + it.key() + "'");
      a.specs[it.key()] = s;
      a.shapes[it.key()] = {m.at("in_features").get<int64_t>(), m.at("out_features").get<int64_t>()};
      for (int64_t f : {a.shapes[it.key()].first, a.shapes[it.key()].second})
        if (f < 1 || f > (int64_t(1) << 20))
          throw std::runtime_error("module '" + it.key() + "': in/out_features " + std::to_string(f) + " out of range");
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(source + ": " + e.what());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(source + ": " + e.what());
  }
  for (const auto& [p, s] : a.specs) {
    bool ok = false;
    for (int64_t il = 0; il < a.n_layer && !ok; ++il)
      for (const auto& name : a.target_modules) ok = ok || p == module_path(il, name);
    if (!ok) throw std::runtime_error(source + ": module '" + p + "' matches no target module");
  }
  return a;
}

std::string Allocation::difference(const Allocation& o) const {
  if (n_layer != o.n_layer) return "layers " + std::to_string(n_layer) + " vs " + std::to_string(o.n_layer);
  if (!model_type.empty() && !o.model_type.empty() && model_type != o.model_type)
    return "model_type " + model_type + " vs " + o.model_type;
  auto sorted = [](std::vector<std::string> v) { std::sort(v.begin(), v.end()); return v; };
  if (sorted(target_modules) != sorted(o.target_modules)) return "target modules differ";
  if (lora_alpha != o.lora_alpha) return "lora_alpha " + std::to_string(lora_alpha) + " vs " + std::to_string(o.lora_alpha);
  for (const auto& p : module_paths()) {
    const auto& a = specs.at(p);
    auto it = o.specs.find(p);
    if (it == o.specs.end()) return p + ": present vs absent";
    const auto& b = it->second;
    if (a.n_expert != b.n_expert) return p + ": experts " + std::to_string(a.n_expert) + " vs " + std::to_string(b.n_expert);
    if (a.top_k != b.top_k) return p + ": top_k " + std::to_string(a.top_k) + " vs " + std::to_string(b.top_k);
    if (a.ranks != b.ranks) return p + ": ranks [" + join_ints(a.ranks, ",") + "] vs [" + join_ints(b.ranks, ",") + "]";
  }
  return "";
}

bool AllocationFlags::any_given() const { return was_given && was_given(); }

Allocation AllocationFlags::build(const ModelConfig& cfg) const {
  return Allocation::from_flags(cfg, target_modules, number_experts, lora_r, top_k, lora_alpha, lora_dropout);
}

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return (v < 0 ? "-" : "") + out;
}

int64_t base_parameters(const ModelConfig& cfg) {
  checked_base_parameters(cfg, "config.json");  // throws rather than wrap
  int64_t per_layer = 2 * cfg.hidden_size;  // two RMSNorms
  const ArchInfo& arch = arch_of(cfg);
  for (const auto& p : arch.projections) {
    auto [in, out] = arch.shape(cfg, p.name);
    per_layer += in * out + (p.bias ? out : 0);
  }
  int64_t n = cfg.n_layer * per_layer + cfg.vocab_size * cfg.hidden_size + cfg.hidden_size;
  if (!cfg.tie_word_embeddings) n += cfg.vocab_size * cfg.hidden_size;
  return n;
}

std::string Allocation::table() const {
  // One row per layer; when the modules of a layer differ, per-module values in target order.
  auto cell = [&](int64_t il, auto get) {
    std::vector<std::string> vals;
    for (const auto& name : known_modules())
      if (targets(il, name)) vals.push_back(get(specs.at(module_path(il, name))));
    bool same = std::all_of(vals.begin(), vals.end(), [&](const std::string& s) { return s == vals.front(); });
    if (same) return vals.front();
    std::string s;
    for (size_t i = 0; i < vals.size(); ++i) s += (i ? " " : "") + vals[i];
    return s;
  };
  std::ostringstream os;
  std::vector<std::string> short_names;
  for (const auto& name : known_modules())
    if (std::find(target_modules.begin(), target_modules.end(), name) != target_modules.end())
      short_names.push_back(name);
  os << "MoLA allocation: " << n_layer << " layers, targets";
  for (const auto& n : short_names) os << " " << n;
  os << ", lora_alpha " << lora_alpha << ", lora_dropout " << lora_dropout << "\n";
  std::vector<std::array<std::string, 5>> rows = {{"layer", "experts", "top_k", "ranks", "trainable"}};
  for (int64_t il = 0; il < n_layer; ++il) {
    rows.push_back({std::to_string(il), cell(il, [](const ExpertSpec& s) { return std::to_string(s.n_expert); }),
                    cell(il, [](const ExpertSpec& s) { return std::to_string(s.top_k); }),
                    cell(il, [](const ExpertSpec& s) {
                      return s.uniform_rank() ? std::to_string(s.ranks[0]) : join_ints(s.ranks, "/");
                    }),
                    with_commas(layer_parameters(il))});
  }
  std::array<size_t, 5> w{};
  for (const auto& r : rows)
    for (size_t c = 0; c < 5; ++c) w[c] = std::max(w[c], r[c].size());
  for (const auto& r : rows) {
    for (size_t c = 0; c < 5; ++c) {
      if (c == 4) os << std::string(w[c] - r[c].size(), ' ') << r[c];
      else os << r[c] << std::string(w[c] - r[c].size() + 2, ' ');
    }
    os << "\n";
  }
  bool routed = false;  // a routing line only when some module leaves the reference's top-k
  for (const auto& [p, s] : specs) routed = routed || s.router != "top_k" || s.z_loss != 0;
  if (routed)
    for (int64_t il = 0; il < n_layer; ++il)
      os << "routing layer " << il << ": " << cell(il, [](const ExpertSpec& s) { return routing_label(s); }) << "\n";
  os << "trainable parameters: " << with_commas(trainable_parameters()) << "\n";
  return os.str();
}

}  // namespace mor
