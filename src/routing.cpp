// Routing options (see routing.h): per-layer parsing of --router, --router_top_p, --router_z_loss,
// validation, and applying them to an allocation or to a loaded model's adapters.
#include "routing.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>


namespace mor {

namespace {

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string json_text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

double parse_number(const std::string& flag, const std::string& path, const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(v))
    throw std::runtime_error(flag + ": " + path + ": '" + text + "' is not a number");
  return v;
}

// Validated routing per module path from the given flag values (absent = keep the module's current).
void set_module(ExpertSpec& s, const std::string& path, const std::string* router, const std::string* top_p,
                const std::string* z_loss) {
  if (router) {
    if (*router != "top_k" && *router != "top_p")
      throw std::runtime_error("--router: " + path + ": '" + *router + "' is not a router (top_k or top_p)");
    s.router = *router;
  }
  if (top_p) {
    double p = parse_number("--router_top_p", path, *top_p);
    if (!(p > 0 && p <= 1)) throw std::runtime_error("--router_top_p: " + path + ": " + *top_p + " is not in (0, 1]");
    s.top_p = p;
  }
  if (z_loss) {
    double z = parse_number("--router_z_loss", path, *z_loss);
    if (!(z >= 0)) throw std::runtime_error("--router_z_loss: " + path + ": " + *z_loss + " must be >= 0");
    s.z_loss = z;
  }
}

}  // namespace

std::map<std::string, std::string> per_module_values(const std::string& flag, const std::string& value,
                                                     const Allocation& alloc) {
  const std::string v = trim(value);
  if (v.empty()) throw std::runtime_error(flag + ": empty value");
  std::map<std::string, std::string> out;
  const auto paths = alloc.module_paths();
  auto layer_of = [](const std::string& path) {  // "model.layers.{i}.…"
    return std::stoll(path.substr(13, path.find('.', 13) - 13));
  };
  if (std::filesystem::is_regular_file(v)) {
    nlohmann::json j;
    try {
      std::ifstream f(v);
      j = nlohmann::json::parse(f);
    } catch (const std::exception& e) {
      throw std::runtime_error(flag + ": " + v + ": not valid JSON: " + e.what());
    }
    if (j.is_array()) {
      if (int64_t(j.size()) != alloc.n_layer)
        throw std::runtime_error(flag + ": " + v + ": the list has " + std::to_string(j.size()) + " values, the model has " +
                                 std::to_string(alloc.n_layer) + " layers");
      for (const auto& p : paths) out[p] = json_text(j[layer_of(p)]);
    } else if (j.is_object()) {
      std::set<std::string> known(paths.begin(), paths.end());
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!known.count(it.key()))
          throw std::runtime_error(flag + ": " + v + ": key '" + it.key() + "' matches no target module");
        out[it.key()] = json_text(it.value());
      }
      for (const auto& p : paths)
        if (!out.count(p)) throw std::runtime_error(flag + ": " + v + ": no value for target module '" + p + "'");
    } else {
      throw std::runtime_error(flag + ": " + v + ": expected a JSON list (one value per layer) or an object keyed by module path");
    }
    return out;
  }
  std::vector<std::string> items;
  std::string cur;
  std::istringstream is(v);
  while (std::getline(is, cur, ',')) items.push_back(trim(cur));
  if (v.back() == ',') items.push_back("");
  if (items.size() != 1 && int64_t(items.size()) != alloc.n_layer)
    throw std::runtime_error(flag + ": expected one value or " + std::to_string(alloc.n_layer) +
                             " comma-separated values (one per layer), got " + std::to_string(items.size()));
  for (const auto& p : paths) out[p] = items.size() == 1 ? items[0] : items[layer_of(p)];
  return out;
}

bool RoutingFlags::any_given() const { return given && (given(0) || given(1) || given(2)); }

void RoutingFlags::apply(Allocation& alloc) const {
  auto r = per_module_values("--router", router, alloc);
  auto p = per_module_values("--router_top_p", top_p, alloc);
  auto z = per_module_values("--router_z_loss", z_loss, alloc);
  for (auto& [path, s] : alloc.specs) set_module(s, path, &r.at(path), &p.at(path), &z.at(path));
}

void RoutingFlags::apply_given(LlamaForCausalLM& model, Allocation* alloc) const {
  if (!any_given()) return;
  Allocation a;
  a.n_layer = model->cfg.n_layer;
  for (int64_t il = 0; il < a.n_layer; ++il) {
    auto mods = model->layer_modules(il);
    for (size_t m = 0; m < mods.size(); ++m)
      if (mods[m]->has_adapter()) a.specs[Allocation::module_path(il, Allocation::known_modules()[m])] = mods[m]->spec();
  }
  if (a.specs.empty()) throw std::runtime_error("--router/--router_top_p/--router_z_loss: the model carries no adapter");
  auto was = [&](int i) { return given && given(i); };
  std::map<std::string, std::string> r, p, z;
  if (was(0)) r = per_module_values("--router", router, a);
  if (was(1)) p = per_module_values("--router_top_p", top_p, a);
  if (was(2)) z = per_module_values("--router_z_loss", z_loss, a);
  for (int64_t il = 0; il < a.n_layer; ++il) {
    auto mods = model->layer_modules(il);
    for (size_t m = 0; m < mods.size(); ++m) {
      if (!mods[m]->has_adapter()) continue;
      const auto path = Allocation::module_path(il, Allocation::known_modules()[m]);
      ExpertSpec s = mods[m]->spec();
      set_module(s, path, was(0) ? &r.at(path) : nullptr, was(1) ? &p.at(path) : nullptr, was(2) ? &z.at(path) : nullptr);
      mods[m]->set_routing(s.router, s.top_p, s.z_loss);
      if (alloc && alloc->specs.count(path)) alloc->specs[path] = s;
    }
  }
}

std::string routing_label(const ExpertSpec& s) {
  std::ostringstream os;
  os << s.router;
  if (s.router == "top_p") os << " p=" << s.top_p;
  if (s.z_loss > 0) os << " z=" << s.z_loss;
  return os.str();
}

}  // namespace mor
