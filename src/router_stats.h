// Router statistics per layer and module over the non-pad tokens of a window (a logging window of
// training, a group of eval examples): share of routed tokens per expert (the top-k / top-p
// selections), mean router probability per expert, router entropy (mean over tokens, and divided
// by ln E), load imbalance max/mean, the mean number of active experts (top-p), and each layer's
// balance loss. Accumulated in device tensors (no host sync until summary()), plus a pure loop
// reference the fast path is tested against.
// Shapes: N = B*T tokens of one forward pass, E experts, K top-k, G groups of tokens.
#pragma once
#include "torch_api.h"

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llama.h"
#include "moe_lora.h"

namespace mor {

// The adapted modules of each layer in module order (what RouterLogits holds per layer).
struct RouterModule {
  std::string name;  // q_proj, ..., down_proj
  ExpertSpec spec;
};
using RouterLayout = std::vector<std::vector<RouterModule>>;
RouterLayout router_layout(LlamaForCausalLM& model);

struct ModuleRouterStats {
  std::string name, router;
  int64_t experts = 0, top_k = 0;
  std::vector<int64_t> counts;  // selections per expert (a token counts once per active expert)
  std::vector<double> load;     // counts / sum(counts)
  std::vector<double> prob;     // mean softmax probability per expert
  double entropy = 0;           // mean over tokens of -sum_e p log p (nats)
  double entropy_norm = 0;      // entropy / ln E (0 when E = 1)
  double imbalance = 0;         // max(counts) / mean(counts) (0 without tokens)
  double active = 0;            // mean number of active experts per token (K for top_k)
};
struct LayerRouterStats {
  int64_t layer = 0;
  // Mean over the window's forward passes of the layer's balance loss, which counts pad tokens as
  // the reference's loss does (the other statistics exclude them). NaN when not tracked.
  double balance_loss = 0;
  std::vector<ModuleRouterStats> modules;
};
struct RouterStatsSummary {
  int64_t tokens = 0;  // non-pad tokens counted
  std::vector<LayerRouterStats> layers;
  // {"tokens": n, "layers": [{"layer", "balance_loss", "modules": [{"module", "router", "experts",
  // "top_k", "counts", "load", "prob", "entropy", "entropy_norm", "imbalance", "active"}]}]}
  // (floats rounded to 6 decimals; balance_loss null when not tracked).
  nlohmann::ordered_json to_json() const;
};

class RouterStats {
 public:
  RouterStats(RouterLayout layout, torch::Device device, int64_t groups = 1, bool track_balance = true);
  // Adds one forward pass. member: [N] (1 = a real token, 0 = pad; the flattened attention mask) or
  // [G, N] (token n belongs to group g). Only device ops: no host sync.
  void add(const RouterLogits& router_logits, const torch::Tensor& member);
  RouterStatsSummary summary(int64_t group = 0) const;  // copies to the host
  // Data parallel: every accumulator is a sum, so `sum_in_place` (an all-reduce over the ranks) turns
  // each rank's window into the global one. Call it on every rank.
  void reduce(const std::function<void(std::vector<torch::Tensor>&)>& sum_in_place);
  void reset();
  int64_t groups() const { return groups_; }
  const RouterLayout& layout() const { return layout_; }

 private:
  struct Acc {
    torch::Tensor counts, prob, entropy, active;  // [G, E], [G, E], [G], [G] float64
  };
  RouterLayout layout_;
  torch::Device device_;
  int64_t groups_;
  bool track_balance_;
  std::vector<std::vector<Acc>> acc_;
  torch::Tensor tokens_;   // [G] float64
  torch::Tensor balance_;  // [L] float64 sums over passes
  int64_t passes_ = 0;
};

// router_stats.jsonl of a training run: one compact line per logging step, {"step", "epoch", then
// RouterStatsSummary::to_json's fields}. The file is rewritten whole through a temp file + rename
// (as metrics.jsonl), so readers never see a partial line; on resume, lines past the resumed step go.
class RouterStatsLog {
 public:
  RouterStatsLog(LlamaForCausalLM& model, std::string path, int64_t resume_step = -1);
  // One micro-batch: its router logits and attention mask [B, T] (1 real, 0 pad). Device ops only.
  void add(const RouterLogits& router_logits, const torch::Tensor& attention_mask);
  // At a logging step: appends the window's summary, rewrites the file (when to_file), starts a new
  // window. Under data parallel every rank calls it with the all-reduce and rank 0 alone writes.
  void write(int64_t step, double epoch,
             const std::function<void(std::vector<torch::Tensor>&)>& sum_in_place = nullptr, bool to_file = true);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  RouterStats stats_;
  std::vector<std::string> lines_;
};

// The same statistics by plain loops in double over each pass's logits and mask (for tests).
RouterStatsSummary router_stats_reference(const RouterLayout& layout, const std::vector<RouterLogits>& passes,
                                          const std::vector<torch::Tensor>& masks);

}  // namespace mor
