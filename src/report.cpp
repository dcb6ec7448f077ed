// The training/eval report page (see report.h): reads the run folder's logs, router statistics,
// allocation and eval results, and lays them out as inline-SVG charts in one HTML file.
#include "report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "allocation.h"
#include "files.h"
#include "routing.h"
#include "svg.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mor {

namespace {

json read_json_file(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("report: cannot read " + p.string());
  try {
    return json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error("report: " + p.string() + ": not valid JSON: " + e.what());
  }
}

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::ifstream f(p);
  if (!f) return out;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const std::exception& e) {
      throw std::runtime_error("report: " + p.string() + ":" + std::to_string(n) + ": not valid JSON: " + e.what());
    }
  }
  return out;
}

double num_or_nan(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

// The training log: trainer_state.json's log_history, else metrics.jsonl.
std::vector<json> training_log(const fs::path& dir) {
  if (fs::exists(dir / "trainer_state.json")) {
    auto st = read_json_file(dir / "trainer_state.json");
    if (st.contains("log_history") && st["log_history"].is_array())
      return std::vector<json>(st["log_history"].begin(), st["log_history"].end());
  }
  return read_jsonl(dir / "metrics.jsonl");
}

std::string curves_section(const std::vector<json>& log) {
  struct Curve {
    const char* key;
    const char* title;
  };
  const Curve curves[] = {{"loss", "training loss"},       {"eval_loss", "eval loss"},
                          {"learning_rate", "learning rate"}, {"grad_norm", "gradient norm"},
                          {"tokens_per_second", "tokens/s"},  {"aux_loss", "balance loss (sum over layers)"},
                          {"z_loss", "router z-loss (weighted)"}};
  std::ostringstream o;
  o << "<h2>Training curves</h2><div class=\"grid\">";
  for (const auto& c : curves) {
    svg::Series s{c.key, {}, {}};
    for (const auto& e : log) {
      double v = num_or_nan(e, c.key), step = num_or_nan(e, "step");
      if (std::isfinite(v) && std::isfinite(step)) s.x.push_back(step), s.y.push_back(v);
    }
    if (s.x.empty() && (std::string(c.key) == "aux_loss" || std::string(c.key) == "z_loss")) continue;
    o << "<div>" << svg::line_chart(c.key, c.title, {s}, "step", c.title) << "</div>";
  }
  o << "</div>";
  return o.str();
}

// Per layer, the mean over the given modules (all when module == "mean") of load[e]; NaN past a
// layer's largest expert count.
std::vector<std::vector<double>> load_grid(const json& rec, const std::string& module, size_t& max_e) {
  std::vector<std::vector<double>> grid;
  for (const auto& L : rec.at("layers")) {
    std::vector<double> sum, cnt;
    for (const auto& m : L.at("modules")) {
      if (module != "mean" && m.at("module") != module) continue;
      const auto& load = m.at("load");
      if (sum.size() < load.size()) sum.resize(load.size(), 0), cnt.resize(load.size(), 0);
      for (size_t e = 0; e < load.size(); ++e) sum[e] += load[e].get<double>(), cnt[e] += 1;
    }
    std::vector<double> row;
    for (size_t e = 0; e < sum.size(); ++e) row.push_back(sum[e] / cnt[e]);
    max_e = std::max(max_e, row.size());
    grid.push_back(row);
  }
  for (auto& r : grid) r.resize(max_e, NAN);
  return grid;
}

std::vector<std::string> stats_modules(const std::vector<json>& stats) {
  std::vector<std::string> mods;
  for (const auto& L : stats.back().at("layers"))
    for (const auto& m : L.at("modules")) {
      auto n = m.at("module").get<std::string>();
      if (std::find(mods.begin(), mods.end(), n) == mods.end()) mods.push_back(n);
    }
  return mods;
}

std::string load_section(const std::vector<json>& stats) {
  std::ostringstream o;
  o << "<h2>Expert load per layer</h2><p>Share of the routed (non-pad) tokens' expert selections each expert "
       "received in the logging window ending at the step shown; an even spread is 1/E per expert.</p>";
  auto mods = stats_modules(stats);
  o << "<label>module <select id=\"module-pick\" onchange=\"pickModule(this.value)\"><option value=\"mean\">mean over "
       "modules</option>";
  for (const auto& m : mods) o << "<option value=\"" << svg::escape(m) << "\">" << svg::escape(m) << "</option>";
  o << "</select></label>";
  for (const std::string& module : [&] { auto v = mods; v.insert(v.begin(), "mean"); return v; }()) {
    o << "<div class=\"module-group grid\" data-module=\"" << svg::escape(module) << "\""
      << (module == "mean" ? "" : " style=\"display:none\"") << ">";
    for (size_t si : snapshot_indices(stats.size())) {
      const auto& rec = stats[si];
      size_t max_e = 0;
      auto grid = load_grid(rec, module, max_e);
      std::vector<std::string> rows, cols;
      for (size_t l = 0; l < grid.size(); ++l) rows.push_back("layer " + std::to_string(l));
      for (size_t e = 0; e < max_e; ++e) cols.push_back(std::to_string(e));
      const std::string step = std::to_string(rec.value("step", int64_t(si)));
      o << "<div>" << svg::heatmap("load-" + step + "-" + module, "step " + step + " (" + module + ")", rows, cols, grid, 0, 1)
        << "</div>";
    }
    o << "</div>";
  }
  return o.str();
}

// One series per layer over the records: the mean over modules of m[key] (or the layer's own key).
std::string per_layer_chart(const std::vector<json>& stats, const std::string& id, const std::string& title,
                            const std::string& key, bool layer_key) {
  std::vector<svg::Series> series;
  for (const auto& rec : stats) {
    const auto& layers = rec.at("layers");
    if (series.size() < layers.size())
      for (size_t l = series.size(); l < layers.size(); ++l) series.push_back({"layer " + std::to_string(l), {}, {}});
    for (size_t l = 0; l < layers.size(); ++l) {
      double v = NAN;
      if (layer_key) {
        v = num_or_nan(layers[l], key.c_str());
      } else {
        double s = 0;
        int n = 0;
        for (const auto& m : layers[l].at("modules")) s += m.at(key).get<double>(), ++n;
        if (n) v = s / n;
      }
      series[l].x.push_back(num_or_nan(rec, "step"));
      series[l].y.push_back(v);
    }
  }
  return svg::line_chart(id, title, series, "step", key, 560, 280);
}

std::string routing_section(const std::vector<json>& stats) {
  bool top_p = false;
  for (const auto& L : stats.back().at("layers"))
    for (const auto& m : L.at("modules")) top_p = top_p || m.value("router", "top_k") == "top_p";
  std::ostringstream o;
  o << "<h2>Routing over time</h2><div class=\"grid\"><div>"
    << per_layer_chart(stats, "entropy", "router entropy / ln E per layer (mean over modules)", "entropy_norm", false)
    << "</div><div>" << per_layer_chart(stats, "imbalance", "load imbalance max/mean per layer", "imbalance", false)
    << "</div><div>"
    << per_layer_chart(stats, "balance", "balance loss per layer (pads counted, as in the loss)", "balance_loss", true)
    << "</div>";
  if (top_p)
    o << "<div>" << per_layer_chart(stats, "active", "top-p: mean active experts per layer", "active", false) << "</div>";
  o << "</div>";
  return o.str();
}

std::string allocation_section(const fs::path& dir) {
  fs::path cfg = dir / "mola_config.json";
  if (!fs::exists(cfg)) return "<h2>Allocation</h2><p>No mola_config.json in the run folder.</p>";
  auto a = Allocation::from_json(read_json_file(cfg), cfg.string());
  std::ostringstream o;
  o << "<h2>Allocation</h2><table class=\"alloc\"><tr><th>layer</th><th>module</th><th>experts</th><th>top_k</th>"
       "<th>ranks</th><th>routing</th><th>parameters</th></tr>";
  for (const auto& p : a.module_paths()) {
    const auto& s = a.specs.at(p);
    std::string ranks;
    for (size_t i = 0; i < s.ranks.size(); ++i) ranks += (i ? "/" : "") + std::to_string(s.ranks[i]);
    const auto layer = p.substr(13, p.find('.', 13) - 13);
    o << "<tr class=\"alloc-row\"><td>" << layer << "</td><td>" << svg::escape(p.substr(p.rfind('.') + 1)) << "</td><td>"
      << s.n_expert << "</td><td>" << s.top_k << "</td><td>" << ranks << "</td><td>" << svg::escape(routing_label(s))
      << "</td><td>" << with_commas(a.module_parameters(p)) << "</td></tr>";
  }
  o << "</table><p>trainable parameters: " << with_commas(a.trainable_parameters()) << "</p>";
  return o.str();
}

// Per group column of an eval result's router_stats: rows = group values, columns = layer:expert,
// value = the mean over modules of the expert's load share.
std::string eval_routing(const json& rs, const std::string& prefix) {
  std::ostringstream o;
  for (auto it = rs.begin(); it != rs.end(); ++it) {
    if (it.key() == "all" || !it.value().is_object()) continue;
    std::vector<std::string> rows, cols;
    std::vector<std::vector<double>> grid;
    for (auto g = it.value().begin(); g != it.value().end(); ++g) {
      size_t max_e = 0;
      auto lg = load_grid(g.value(), "mean", max_e);
      std::vector<double> row;
      std::vector<std::string> c;
      for (size_t l = 0; l < lg.size(); ++l)
        for (size_t e = 0; e < lg[l].size(); ++e) row.push_back(lg[l][e]), c.push_back(std::to_string(l) + ":" + std::to_string(e));
      if (c.size() > cols.size()) cols = c;
      rows.push_back(g.key());
      grid.push_back(row);
    }
    o << "<div>" << svg::heatmap(prefix + "-route-" + it.key(), "expert load by " + it.key() + " (layer:expert, mean over modules)",
                                 rows, cols, grid, 0, 1, 14)
      << "</div>";
  }
  return o.str();
}

std::string eval_section(const std::string& path, size_t i) {
  auto r = read_json_file(path);
  const std::string prefix = "eval" + std::to_string(i);
  std::ostringstream o;
  o << "<h2>Eval: " << svg::escape(fs::path(path).filename().string()) << "</h2>";
  if (!r.contains("acc") || !r["acc"].is_number()) throw std::runtime_error("report: " + path + ": no 'acc' (not an eval-scienceqa result)");
  o << "<div class=\"grid\"><div>"
    << svg::bar_chart(prefix + "-overall", "accuracy", {"overall (" + std::to_string(r.value("len", int64_t(0))) + ")"},
                      {r["acc"].get<double>()}, 100, "%")
    << "</div>";
  if (r.contains("by_group") && r["by_group"].is_object())
    for (auto c = r["by_group"].begin(); c != r["by_group"].end(); ++c) {
      std::vector<std::string> labels;
      std::vector<double> vals;
      for (auto g = c.value().begin(); g != c.value().end(); ++g) {
        labels.push_back(g.key() + " (" + std::to_string(g.value().value("len", int64_t(0))) + ")");
        vals.push_back(g.value().value("acc", 0.0));
      }
      o << "<div>" << svg::bar_chart(prefix + "-" + c.key(), "accuracy by " + c.key(), labels, vals, 100, "%") << "</div>";
    }
  if (r.contains("router_stats") && r["router_stats"].is_object()) o << eval_routing(r["router_stats"], prefix);
  o << "</div>";
  return o.str();
}

const char* kStyle =
    "body{font-family:sans-serif;margin:16px;color:#222;background:#fff}h1{font-size:20px}h2{font-size:16px;margin-top:24px;"
    "border-bottom:1px solid #ddd}.grid{display:flex;flex-wrap:wrap;gap:12px}.title{font-size:12px;font-weight:bold}"
    ".tick{font-size:10px;fill:#444}.label{font-size:11px;fill:#222}table.alloc{border-collapse:collapse;font-size:12px}"
    "table.alloc td,table.alloc th{border:1px solid #ccc;padding:2px 6px;text-align:right}";
const char* kScript =
    "function pickModule(m){document.querySelectorAll('.module-group').forEach(function(d){"
    "d.style.display=d.getAttribute('data-module')===m?'flex':'none';});}";

}  // namespace

std::vector<size_t> snapshot_indices(size_t n, size_t k) {
  std::vector<size_t> out;
  if (n == 0) return out;
  if (n <= k) {
    for (size_t i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  for (size_t j = 0; j < k; ++j) {
    size_t i = (j + 1) * (n - 1) / k;  // ..., n-1: spread over the run, ending at the last
    if (out.empty() || out.back() != i) out.push_back(i);
  }
  return out;
}

std::string report_html(const ReportOptions& opt) {
  const fs::path dir(opt.run_dir);
  if (!fs::is_directory(dir)) throw std::runtime_error("report: " + opt.run_dir + " is not a folder");
  auto log = training_log(dir);
  auto stats = read_jsonl(dir / "router_stats.jsonl");
  if (log.empty() && stats.empty() && opt.evals.empty())
    throw std::runtime_error("report: " + opt.run_dir + " holds no trainer_state.json, metrics.jsonl or router_stats.jsonl");
  std::ostringstream o;
  o << "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>mor report: " << svg::escape(dir.filename().string())
    << "</title><style>" << kStyle << "</style><script>" << kScript << "</script></head><body>";
  o << "<h1>mor report: " << svg::escape(fs::absolute(dir).lexically_normal().string()) << "</h1>";
  if (fs::exists(dir / "training_args.json")) {
    auto a = read_json_file(dir / "training_args.json");
    o << "<p class=\"args\">";
    for (const char* k : {"base_model", "data_path", "learning_rate", "batch_size", "micro_batch_size", "num_epochs",
                          "number_experts", "top_k", "lora_r", "router", "router_top_p", "router_z_loss"})
      if (a.contains(k)) o << "<b>" << k << "</b> " << svg::escape(a[k].is_string() ? a[k].get<std::string>() : a[k].dump()) << " &nbsp; ";
    o << "</p>";
  }
  if (!log.empty()) o << curves_section(log);
  if (!stats.empty()) o << load_section(stats) << routing_section(stats);
  else o << "<h2>Routing</h2><p>No router_stats.jsonl in the run folder.</p>";
  o << allocation_section(dir);
  for (size_t i = 0; i < opt.evals.size(); ++i) o << eval_section(opt.evals[i], i);
  o << "</body></html>\n";
  return o.str();
}

std::string write_report(const ReportOptions& opt) {
  const std::string out = opt.out.empty() ? (fs::path(opt.run_dir) / "report.html").string() : opt.out;
  const std::string html = report_html(opt);
  write_file_atomic(out, html);
  return out;
}

}  // namespace mor
