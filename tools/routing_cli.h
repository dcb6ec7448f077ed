// The routing flags on a subcommand's command line (the CLI side of src/routing.h).
#pragma once
#include <memory>
#include <vector>

#include "cli.h"
#include "routing.h"

namespace mor {

// Registers --router, --router_top_p, --router_z_loss (and dashed spellings) and sets flags.given.
inline void add_routing_flags(CLI::App& app, RoutingFlags& f) {
  auto opts = std::make_shared<std::vector<CLI::Option*>>();
  opts->push_back(add_opt(app, "router", f.router,
                          "routing per layer: top_k (the reference) or top_p (one value, a comma list per layer, or a JSON file)"));
  opts->push_back(add_opt(app, "router_top_p", f.top_p,
                          "top_p routing: per token the fewest experts (at most top_k) whose probability reaches P (same forms)"));
  opts->push_back(add_opt(app, "router_z_loss", f.z_loss,
                          "router z-loss coefficient (mean logsumexp(router logits)^2, added to the loss; same forms; 0 = off)"));
  f.given = [opts](int i) { return i >= 0 && i < int(opts->size()) && (*opts)[i]->count() > 0; };
}

}  // namespace mor
