// Router statistics (see router_stats.h): device accumulation per layer and module, the host
// summary and its JSON, and the pure loop reference.
// Shapes: N tokens of a pass, E experts, K top-k, G token groups, L layers.
#include "router_stats.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>

#include "files.h"

namespace mor {

RouterLayout router_layout(LlamaForCausalLM& model) {
  RouterLayout out(model->cfg.n_layer);
  const auto& names = projection_names();
  for (int64_t il = 0; il < model->cfg.n_layer; ++il) {
    auto mods = model->layer_modules(il);
    for (size_t m = 0; m < mods.size() && m < names.size(); ++m)
      if (mods[m]->has_adapter()) out[il].push_back({names[m], mods[m]->spec()});
  }
  return out;
}

RouterStats::RouterStats(RouterLayout layout, torch::Device device, int64_t groups, bool track_balance)
    : layout_(std::move(layout)), device_(device), groups_(groups), track_balance_(track_balance) {
  if (groups_ < 1) throw std::runtime_error("RouterStats: groups must be >= 1");
  reset();
}

void RouterStats::reset() {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(device_);
  acc_.assign(layout_.size(), {});
  for (size_t il = 0; il < layout_.size(); ++il)
    for (const auto& m : layout_[il]) {
      const int64_t E = m.spec.n_expert;
      acc_[il].push_back({torch::zeros({groups_, E}, f64), torch::zeros({groups_, E}, f64), torch::zeros({groups_}, f64),
                          torch::zeros({groups_}, f64)});
    }
  tokens_ = torch::zeros({groups_}, f64);
  balance_ = torch::zeros({int64_t(layout_.size())}, f64);
  passes_ = 0;
}

void RouterStats::add(const RouterLogits& rl, const torch::Tensor& member) {
  torch::NoGradGuard ng;
  if (rl.size() != layout_.size())
    throw std::runtime_error("RouterStats: " + std::to_string(rl.size()) + " layers of router logits, expected " +
                             std::to_string(layout_.size()));
  auto mem = (member.dim() == 1 ? member.unsqueeze(0) : member).to(device_, torch::kFloat64);  // [G, N]
  if (mem.size(0) != groups_) throw std::runtime_error("RouterStats: token groups do not match");
  tokens_ += mem.sum(1);
  for (size_t il = 0; il < layout_.size(); ++il) {
    const auto& mods = layout_[il];
    if (rl[il].size() != mods.size())
      throw std::runtime_error("RouterStats: layer " + std::to_string(il) + ": " + std::to_string(rl[il].size()) +
                               " router logits for " + std::to_string(mods.size()) + " adapted modules");
    std::vector<torch::Tensor> detached;
    std::vector<ExpertSpec> specs;
    for (size_t i = 0; i < mods.size(); ++i) {
      const auto& spec = mods[i].spec;
      auto lg = rl[il][i].detach();
      if (lg.size(0) != mem.size(1) || lg.size(1) != spec.n_expert)
        throw std::runtime_error("RouterStats: layer " + std::to_string(il) + " " + mods[i].name + ": logits " +
                                 std::to_string(lg.size(0)) + "x" + std::to_string(lg.size(1)) + " for " +
                                 std::to_string(mem.size(1)) + " tokens and " + std::to_string(spec.n_expert) + " experts");
      RouteResult r = route_tokens(lg, spec, torch::kFloat32);  // the selections the layer made
      auto act = r.active.to(torch::kFloat64);                     // [N, K]
      auto sel = torch::zeros({lg.size(0), spec.n_expert}, act.options()).scatter_add(1, r.index, act);  // [N, E]
      auto p = r.probs.to(torch::kFloat64);
      Acc& a = acc_[il][i];
      a.counts += mem.mm(sel);
      a.prob += mem.mm(p);
      a.entropy -= mem.mv(torch::xlogy(p, p).sum(1));
      a.active += mem.mv(act.sum(1));
      detached.push_back(lg);
      specs.push_back(spec);
    }
    if (track_balance_ && !mods.empty()) balance_[int64_t(il)] += layer_balance_loss(detached, specs).to(torch::kFloat64);
  }
  ++passes_;
}

void RouterStats::reduce(const std::function<void(std::vector<torch::Tensor>&)>& sum_in_place) {
  std::vector<torch::Tensor> all{tokens_, balance_, torch::full({1}, double(passes_), tokens_.options())};
  for (auto& layer : acc_)
    for (auto& a : layer) all.insert(all.end(), {a.counts, a.prob, a.entropy, a.active});
  sum_in_place(all);  // in place: the accumulators themselves now hold the sums
  passes_ = int64_t(std::llround(all[2].item<double>()));
}

namespace {

// Fills the derived fields of a module's statistics from counts, probability sums and totals.
void finish(ModuleRouterStats& m, const std::vector<double>& counts, const std::vector<double>& prob_sum,
            double entropy_sum, double active_sum, double tokens) {
  const int64_t E = m.experts;
  double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  double mx = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
  for (int64_t e = 0; e < E; ++e) {
    m.counts.push_back(int64_t(std::llround(counts[e])));
    m.load.push_back(total > 0 ? counts[e] / total : 0.0);
    m.prob.push_back(tokens > 0 ? prob_sum[e] / tokens : 0.0);
  }
  m.entropy = tokens > 0 ? entropy_sum / tokens : 0.0;
  m.entropy_norm = E > 1 ? m.entropy / std::log(double(E)) : 0.0;
  m.imbalance = total > 0 ? mx / (total / double(E)) : 0.0;
  m.active = tokens > 0 ? active_sum / tokens : 0.0;
}

std::vector<double> to_vec(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double round6(double v) { return std::isfinite(v) ? std::round(v * 1e6) / 1e6 : v; }

}  // namespace

RouterStatsSummary RouterStats::summary(int64_t g) const {
  if (g < 0 || g >= groups_) throw std::runtime_error("RouterStats: no group " + std::to_string(g));
  RouterStatsSummary s;
  const double tokens = to_vec(tokens_)[g];
  s.tokens = int64_t(std::llround(tokens));
  auto bal = to_vec(balance_);
  for (size_t il = 0; il < layout_.size(); ++il) {
    LayerRouterStats L;
    L.layer = int64_t(il);
    L.balance_loss = track_balance_ && passes_ > 0 ? bal[il] / double(passes_) : std::nan("");
    for (size_t i = 0; i < layout_[il].size(); ++i) {
      const auto& spec = layout_[il][i].spec;
      const Acc& a = acc_[il][i];
      ModuleRouterStats m;
      m.name = layout_[il][i].name;
      m.router = spec.router;
      m.experts = spec.n_expert;
      m.top_k = spec.top_k;
      finish(m, to_vec(a.counts[g]), to_vec(a.prob[g]), to_vec(a.entropy)[g], to_vec(a.active)[g], tokens);
      L.modules.push_back(std::move(m));
    }
    s.layers.push_back(std::move(L));
  }
  return s;
}

nlohmann::ordered_json RouterStatsSummary::to_json() const {
  nlohmann::ordered_json j;
  j["tokens"] = tokens;
  auto layers_j = nlohmann::ordered_json::array();
  for (const auto& L : layers) {
    nlohmann::ordered_json lj;
    lj["layer"] = L.layer;
    if (std::isfinite(L.balance_loss)) lj["balance_loss"] = round6(L.balance_loss);
    else lj["balance_loss"] = nullptr;
    auto mods = nlohmann::ordered_json::array();
    for (const auto& m : L.modules) {
      std::vector<double> load, prob;
      for (double v : m.load) load.push_back(round6(v));
      for (double v : m.prob) prob.push_back(round6(v));
      mods.push_back({{"module", m.name}, {"router", m.router}, {"experts", m.experts}, {"top_k", m.top_k},
                      {"counts", m.counts}, {"load", load}, {"prob", prob}, {"entropy", round6(m.entropy)},
                      {"entropy_norm", round6(m.entropy_norm)}, {"imbalance", round6(m.imbalance)},
                      {"active", round6(m.active)}});
    }
    lj["modules"] = mods;
    layers_j.push_back(lj);
  }
  j["layers"] = layers_j;
  return j;
}

RouterStatsLog::RouterStatsLog(LlamaForCausalLM& model, std::string path, int64_t resume_step)
    : path_(std::move(path)), stats_(router_layout(model), model->device) {
  if (resume_step < 0 || !std::filesystem::exists(path_)) return;
  std::ifstream f(path_);
  std::string line;
  while (std::getline(f, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) <= resume_step) lines_.push_back(line);
    } catch (const std::exception&) {
      break;  // a damaged tail: keep what came before it
    }
  }
}

void RouterStatsLog::add(const RouterLogits& rl, const torch::Tensor& attention_mask) {
  stats_.add(rl, attention_mask.reshape({-1}));
}

void RouterStatsLog::write(int64_t step, double epoch,
                           const std::function<void(std::vector<torch::Tensor>&)>& sum_in_place, bool to_file) {
  if (sum_in_place) stats_.reduce(sum_in_place);
  if (!to_file) {
    stats_.reset();
    return;
  }
  nlohmann::ordered_json j;
  j["step"] = step;
  j["epoch"] = std::round(epoch * 100) / 100;
  const auto summary = stats_.summary().to_json();  // a named value: items() must not outlive it
  for (auto it = summary.begin(); it != summary.end(); ++it) j[it.key()] = it.value();
  lines_.push_back(j.dump());
  stats_.reset();
  std::string all;
  for (const auto& l : lines_) all += l + "\n";
  write_file_atomic(path_, all);
}

RouterStatsSummary router_stats_reference(const RouterLayout& layout, const std::vector<RouterLogits>& passes,
                                          const std::vector<torch::Tensor>& masks) {
  if (passes.size() != masks.size()) throw std::runtime_error("router_stats_reference: one mask per pass");
  RouterStatsSummary s;
  std::vector<std::vector<std::vector<double>>> counts(layout.size()), probs(layout.size());
  std::vector<std::vector<double>> ent(layout.size()), act(layout.size());
  std::vector<double> bal(layout.size(), 0.0);
  for (size_t il = 0; il < layout.size(); ++il)
    for (const auto& m : layout[il]) {
      counts[il].emplace_back(m.spec.n_expert, 0.0);
      probs[il].emplace_back(m.spec.n_expert, 0.0);
      ent[il].push_back(0);
      act[il].push_back(0);
    }
  double tokens = 0;
  for (size_t ip = 0; ip < passes.size(); ++ip) {
    auto mask_t = masks[ip].to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
    auto mask = mask_t.accessor<double, 1>();
    for (int64_t n = 0; n < mask_t.size(0); ++n) tokens += mask[n] != 0;
    for (size_t il = 0; il < layout.size(); ++il) {
      std::vector<torch::Tensor> ls;
      for (size_t i = 0; i < layout[il].size(); ++i) {
        const auto& spec = layout[il][i].spec;
        const int64_t E = spec.n_expert;
        auto c = passes[ip][il][i].detach().to(torch::kCPU, torch::kFloat64).contiguous();
        ls.push_back(passes[ip][il][i].detach());
        auto a = c.accessor<double, 2>();
        for (int64_t n = 0; n < c.size(0); ++n) {
          if (mask[n] == 0) continue;  // pads are not counted
          double mx = -INFINITY, z = 0;
          for (int64_t e = 0; e < E; ++e) mx = std::max(mx, a[n][e]);
          std::vector<double> p(E);
          for (int64_t e = 0; e < E; ++e) z += (p[e] = std::exp(a[n][e] - mx));
          for (auto& v : p) v /= z;
          std::vector<int64_t> order(E);
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return p[x] > p[y]; });
          double mass = 0;
          for (int64_t j = 0; j < spec.top_k; ++j) {
            if (spec.router == "top_p" && !(mass < spec.top_p)) break;
            counts[il][i][order[j]] += 1;
            act[il][i] += 1;
            mass += p[order[j]];
          }
          for (int64_t e = 0; e < E; ++e) {
            probs[il][i][e] += p[e];
            if (p[e] > 0) ent[il][i] -= p[e] * std::log(p[e]);
          }
        }
      }
      if (!ls.empty()) {
        // The balance loss over every token, pads included (grouped by (E, K) as the loss does).
        std::map<std::pair<int64_t, int64_t>, std::vector<torch::Tensor>> groups;
        for (size_t i = 0; i < ls.size(); ++i) groups[{layout[il][i].spec.n_expert, layout[il][i].spec.top_k}].push_back(ls[i]);
        for (auto& [key, g] : groups) bal[il] += balance_loss_reference(g, key.second);
      }
    }
  }
  s.tokens = int64_t(tokens);
  for (size_t il = 0; il < layout.size(); ++il) {
    LayerRouterStats L;
    L.layer = int64_t(il);
    L.balance_loss = passes.empty() ? std::nan("") : bal[il] / double(passes.size());
    for (size_t i = 0; i < layout[il].size(); ++i) {
      ModuleRouterStats m;
      m.name = layout[il][i].name;
      m.router = layout[il][i].spec.router;
      m.experts = layout[il][i].spec.n_expert;
      m.top_k = layout[il][i].spec.top_k;
      finish(m, counts[il][i], probs[il][i], ent[il][i], act[il][i], tokens);
      L.modules.push_back(std::move(m));
    }
    s.layers.push_back(std::move(L));
  }
  return s;
}

}  // namespace mor
