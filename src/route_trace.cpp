// Per-token routing trace (see route_trace.h): one forward pass collecting the router logits, the
// routing each module applies (route_tokens), JSON and table output.
// Shapes: T prompt tokens, E experts, K top-k.
#include "route_trace.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

namespace mor {

RouteTrace trace_routing(LlamaForCausalLM& model, const std::vector<int64_t>& ids, const std::vector<std::string>& pieces,
                         const std::string& module) {
  if (ids.empty()) throw std::runtime_error("route: the prompt has no tokens");
  const auto& names = projection_names();
  if (module != "all" && std::find(names.begin(), names.end(), module) == names.end())
    throw std::runtime_error("--module '" + module + "': expected all or one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  RouteTrace t;
  t.ids = ids;
  t.pieces = pieces;
  const int64_t L = model->cfg.n_layer, T = int64_t(ids.size());
  std::vector<bool> adapted(names.size(), false);
  for (int64_t il = 0; il < L; ++il) {
    auto mods = model->layer_modules(il);
    for (size_t m = 0; m < names.size() && m < mods.size(); ++m) adapted[m] = adapted[m] || mods[m]->has_adapter();
  }
  for (size_t m = 0; m < names.size(); ++m)
    if (adapted[m] && (module == "all" || module == names[m])) t.modules.push_back(names[m]);
  if (t.modules.empty())
    throw std::runtime_error(module == "all" ? "route: the model carries no MoLA adapter (give --mola_weights)"
                                             : "--module " + module + ": no layer carries an adapter on " + module);
  torch::NoGradGuard ng;
  const bool was_training = model->is_training();
  model->eval();
  RouterLogits rl;
  ForwardArgs a;
  a.input_ids = torch::tensor(ids, torch::kInt64).reshape({1, T}).to(model->device);
  a.router_logits = &rl;
  model->forward(a);
  if (was_training) model->train();
  t.choice.assign(T, std::vector<std::vector<RouteChoice>>(L, std::vector<RouteChoice>(t.modules.size())));
  for (int64_t il = 0; il < L; ++il) {
    auto mods = model->layer_modules(il);
    size_t seen = 0;  // index into rl[il]: adapted modules in model order
    for (size_t m = 0; m < names.size() && m < mods.size(); ++m) {
      if (!mods[m]->has_adapter()) continue;
      const auto& logits = rl[il].at(seen++);
      auto col = std::find(t.modules.begin(), t.modules.end(), names[m]);
      if (col == t.modules.end()) continue;
      auto r = route_tokens(logits, mods[m]->spec(), torch::kFloat32);
      auto idx = r.index.to(torch::kCPU).contiguous();
      auto w = r.weights.to(torch::kCPU, torch::kFloat64).contiguous();
      auto act = r.active.to(torch::kCPU).contiguous();
      for (int64_t n = 0; n < T; ++n) {
        RouteChoice& c = t.choice[n][il][col - t.modules.begin()];
        for (int64_t j = 0; j < idx.size(1); ++j)
          if (act[n][j].item<bool>()) {
            c.experts.push_back(idx[n][j].item<int64_t>());
            c.weights.push_back(w[n][j].item<double>());
          }
      }
    }
  }
  return t;
}

nlohmann::ordered_json route_trace_json(const RouteTrace& t) {
  nlohmann::ordered_json j;
  j["modules"] = t.modules;
  auto toks = nlohmann::ordered_json::array();
  for (size_t n = 0; n < t.ids.size(); ++n) {
    nlohmann::ordered_json tj;
    tj["pos"] = int64_t(n);
    tj["id"] = t.ids[n];
    tj["piece"] = n < t.pieces.size() ? t.pieces[n] : "";
    auto layers = nlohmann::ordered_json::array();
    for (size_t il = 0; il < t.choice[n].size(); ++il) {
      nlohmann::ordered_json lj;
      lj["layer"] = int64_t(il);
      for (size_t m = 0; m < t.modules.size(); ++m) {
        const auto& c = t.choice[n][il][m];
        if (c.experts.empty()) continue;
        std::vector<double> w;
        for (double v : c.weights) w.push_back(std::round(v * 1e6) / 1e6);
        lj[t.modules[m]] = {{"experts", c.experts}, {"weights", w}};
      }
      layers.push_back(lj);
    }
    tj["layers"] = layers;
    toks.push_back(tj);
  }
  j["tokens"] = toks;
  return j;
}

std::string route_trace_table(const RouteTrace& t) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"pos", "id", "token", "layer"};
  for (const auto& m : t.modules) head.push_back(m);
  rows.push_back(head);
  for (size_t n = 0; n < t.ids.size(); ++n)
    for (size_t il = 0; il < t.choice[n].size(); ++il) {
      std::vector<std::string> r;
      r.push_back(il == 0 ? std::to_string(n) : "");
      r.push_back(il == 0 ? std::to_string(t.ids[n]) : "");
      r.push_back(il == 0 && n < t.pieces.size() ? t.pieces[n] : "");
      r.push_back(std::to_string(il));
      for (size_t m = 0; m < t.modules.size(); ++m) {
        const auto& c = t.choice[n][il][m];
        std::string cell = c.experts.empty() ? "-" : "";
        for (size_t j = 0; j < c.experts.size(); ++j) {
          char buf[48];
          std::snprintf(buf, sizeof buf, "%s%lld:%.3f", j ? " " : "", (long long)c.experts[j], c.weights[j]);
          cell += buf;
        }
        r.push_back(cell);
      }
      rows.push_back(r);
    }
  // Column widths in characters (UTF-8 continuation bytes do not count).
  auto width = [](const std::string& s) {
    size_t w = 0;
    for (unsigned char c : s) w += (c & 0xC0) != 0x80;
    return w;
  };
  std::vector<size_t> w(head.size(), 0);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) w[c] = std::max(w[c], width(r[c]));
  std::ostringstream os;
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) line += r[c] + (c + 1 < r.size() ? std::string(w[c] - width(r[c]) + 2, ' ') : "");
    os << line << "\n";
  }
  return os.str();
}

}  // namespace mor
