// Router statistics of an evaluation per example group (`mor eval-scienceqa --router_stats`): one
// extra forward pass over each batch's prompts (left-padded, no lm_head) whose router logits are
// counted for "all" and for every value of subject, grade and category. Prompt tokens only: the
// tokens the model generates are not counted.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dataset.h"
#include "llama.h"
#include "router_stats.h"

namespace mor {

class EvalRouterStats {
 public:
  // Groups: "all", then each (column, value) of subject/grade/category present in `rows` (string values).
  EvalRouterStats(LlamaForCausalLM& model, const std::vector<Row>& rows);
  // Counts the prompts `ids` of rows first_row, first_row+1, ... (one forward pass, no gradients).
  void add(LlamaForCausalLM& model, size_t first_row, const std::vector<std::vector<int64_t>>& ids);
  // {"tokens": "prompt", "examples": n, "all": summary, "subject": {"natural science": summary, ...}, ...}
  // with summaries as RouterStatsSummary::to_json (no balance loss: it is a batch-level quantity).
  nlohmann::ordered_json to_json() const;
  int64_t examples() const { return examples_; }

 private:
  std::vector<std::pair<std::string, std::string>> groups_;  // (column, value); groups_[0] = ("all", "")
  std::vector<std::vector<int64_t>> row_groups_;             // per row: its group indices
  std::unique_ptr<RouterStats> stats_;
  int64_t examples_ = 0;
};

}  // namespace mor
