// Routing options beyond the reference's top-k, per layer like the allocation flags: --router
// top_k|top_p, --router_top_p P, --router_z_loss COEF. Each takes one value, one per layer (comma
// list), or a JSON file (a list per layer or an object keyed by module path). They live in each
// module's ExpertSpec and in mola_config.json; eval, generate and score take them from there and
// let explicitly given flags override them.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "allocation.h"
#include "llama.h"

namespace mor {

struct RoutingFlags {
  std::string router = "top_k";
  std::string top_p = "0.8";
  std::string z_loss = "0";
  // Whether flag i (0 router, 1 top_p, 2 z_loss) was on the command line; set where the flags are
  // registered (tools/routing_cli.h). Unset = none given.
  std::function<bool(int)> given;

  bool any_given() const;
  // Sets router/top_p/z_loss of every targeted module of `alloc` from all three flags (validated;
  // errors name the flag and module).
  void apply(Allocation& alloc) const;
  // Only the flags given on the command line, over what the adapter folder recorded: updates the
  // model's adapters and, when non-null, `alloc`. No-op when none was given.
  void apply_given(LlamaForCausalLM& model, Allocation* alloc = nullptr) const;
};
// One per-layer option's values per module path: the value text as given (one value, n_layer comma
// separated values, or a JSON file: list per layer or object keyed by module path). Throws naming `flag`.
std::map<std::string, std::string> per_module_values(const std::string& flag, const std::string& value,
                                                     const Allocation& alloc);

// "top_k" or "top_p p=0.8", plus " z=0.001" when the z-loss is on (the allocation table's routing cell).
std::string routing_label(const ExpertSpec& s);

}  // namespace mor
