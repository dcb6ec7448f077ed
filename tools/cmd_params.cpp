// mor params: plan a MoLA allocation without weights. Reads config.json alone, prints the per-layer
// allocation table and the trainable parameter count (and the base model's size for scale).
#include <iostream>

#include "allocation.h"
#include "arch.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "config_sizes.h"

int mor::cmd_params(int argc, char** argv) {
  std::string base_model;
  AllocationFlags flags;
  return run_command(
      "params", "Per-layer MoLA allocation and trainable parameter count from config.json alone", argc, argv,
      [&](CLI::App& app) {
        add_opt(app, "base_model", base_model, "model directory (or Hub id in the local cache)")->required();
        add_allocation_flags(app, flags);
      },
      [&]() {
        const std::string dir = resolve_model_dir(base_model);
        auto cfg = ModelConfig::from_file(dir + "/config.json");
        auto alloc = flags.build(cfg);
        checked_base_parameters(cfg, dir + "/config.json");  // throws rather than wrap
        const int64_t base = base_parameters(cfg), trainable = alloc.trainable_parameters();
        std::cout << arch_of(cfg).summary(cfg) << alloc.table();
        std::printf("base parameters: %s (trainable %.4f%% of base)\n", with_commas(base).c_str(),
                    100.0 * double(trainable) / double(base));
        return 0;
      });
}
