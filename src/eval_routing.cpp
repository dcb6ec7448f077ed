// Eval router statistics per example group (see eval_routing.h).
// Shapes: B prompts of a batch, T padded length, G groups.
#include "eval_routing.h"

#include <algorithm>
#include <map>
#include <stdexcept>

namespace mor {

EvalRouterStats::EvalRouterStats(LlamaForCausalLM& model, const std::vector<Row>& rows) {
  groups_.push_back({"all", ""});
  std::map<std::pair<std::string, std::string>, int64_t> index;
  row_groups_.resize(rows.size());
  for (const char* col : {"subject", "grade", "category"}) {
    std::vector<std::string> values;
    for (const auto& r : rows)
      if (r.is_object() && r.contains(col) && r[col].is_string()) values.push_back(r[col].get<std::string>());
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    for (const auto& v : values) {
      index[{col, v}] = int64_t(groups_.size());
      groups_.push_back({col, v});
    }
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    row_groups_[i].push_back(0);
    for (const char* col : {"subject", "grade", "category"})
      if (rows[i].is_object() && rows[i].contains(col) && rows[i][col].is_string())
        row_groups_[i].push_back(index.at({col, rows[i][col].get<std::string>()}));
  }
  auto layout = router_layout(model);
  bool any = false;
  for (const auto& l : layout) any = any || !l.empty();
  if (!any) throw std::runtime_error("--router_stats: the model carries no MoLA adapter (give --mola_weights)");
  stats_ = std::make_unique<RouterStats>(layout, model->device, int64_t(groups_.size()), /*track_balance=*/false);
}

void EvalRouterStats::add(LlamaForCausalLM& model, size_t first_row, const std::vector<std::vector<int64_t>>& ids) {
  if (ids.empty()) return;
  torch::NoGradGuard ng;
  const int64_t B = int64_t(ids.size()), G = int64_t(groups_.size());
  size_t T = 0;
  for (const auto& s : ids) T = std::max(T, s.size());
  auto input = torch::zeros({B, int64_t(T)}, torch::kLong);
  auto mask = torch::zeros({B, int64_t(T)}, torch::kLong);
  auto member = torch::zeros({G, B, int64_t(T)}, torch::kFloat64);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t off = int64_t(T - ids[b].size()), n = int64_t(ids[b].size());
    if (n == 0) continue;
    input[b].narrow(0, off, n).copy_(torch::tensor(ids[b], torch::kLong));
    mask[b].narrow(0, off, n).fill_(1);
    if (first_row + size_t(b) >= row_groups_.size()) throw std::runtime_error("EvalRouterStats: row out of range");
    for (int64_t g : row_groups_[first_row + size_t(b)]) member[g][b].narrow(0, off, n).fill_(1);
  }
  RouterLogits rl;
  ForwardArgs a;
  a.input_ids = input.to(model->device);
  a.attention_mask = mask.to(model->device);
  a.position_ids = (mask.cumsum(1) - 1).clamp_min(0).to(model->device);
  a.router_logits = &rl;
  model->forward_hidden(a);
  stats_->add(rl, member.reshape({G, -1}));
  examples_ += B;
}

nlohmann::ordered_json EvalRouterStats::to_json() const {
  nlohmann::ordered_json j;
  j["tokens"] = "prompt";
  j["examples"] = examples_;
  for (size_t g = 0; g < groups_.size(); ++g) {
    auto s = stats_->summary(int64_t(g)).to_json();
    if (g == 0) j["all"] = s;
    else j[groups_[g].first][groups_[g].second] = s;
  }
  return j;
}

}  // namespace mor
