// `mor route`: for every token of a prompt, the experts each adapted module of each layer routes it
// to and their weights (the active experts of top-k / top-p routing), as a JSON value or a table.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llama.h"

namespace mor {

struct RouteChoice {
  std::vector<int64_t> experts;  // by descending weight (active experts only)
  std::vector<double> weights;   // renormalised, sum 1
};
struct RouteTrace {
  std::vector<int64_t> ids;
  std::vector<std::string> pieces;  // one per id (the tokenizer's piece, e.g. "▁Once")
  std::vector<std::string> modules; // reported module names, model order
  // choice[t][layer][m]: token t, layer, modules[m]; empty experts when the layer leaves it unadapted
  std::vector<std::vector<std::vector<RouteChoice>>> choice;
};

// One forward pass of `ids` (no gradients, eval mode); module = "all" or one projection name, which
// must carry an adapter somewhere (else a clear error).
RouteTrace trace_routing(LlamaForCausalLM& model, const std::vector<int64_t>& ids, const std::vector<std::string>& pieces,
                         const std::string& module);

// {"tokens": [{"pos", "id", "piece", "layers": [{"layer", "<module>": {"experts": [...], "weights": [...]}}]}]}
nlohmann::ordered_json route_trace_json(const RouteTrace& t);
// One row per token and layer: pos, id, piece, layer, then per module "e:w e:w" (weights to 3 decimals).
std::string route_trace_table(const RouteTrace& t);

}  // namespace mor
