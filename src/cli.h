// Command-line plumbing shared by the subcommands: flags registered under the Python scripts'
// names with the dashed spelling too (--base_model / --base-model), booleans that accept both
// `--flag` and `--flag True/False`, the allocation flags, and the one catch in main. The run-time
// choices (device, dtype, threads) are library code: src/runtime.h.
#pragma once
#include <functional>
#include <string>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "allocation.h"
#include "runtime.h"  // the commands parse --device/--dtype/--threads with it

namespace mor {

// CLI11 names for a flag: "--name" and, when it contains '_', also "--na-me".
std::string flag_names(const std::string& name);

// Registers the flag under both spellings for the same variable, with the default shown.
template <typename T>
CLI::Option* add_opt(CLI::App& app, const std::string& name, T& var, const std::string& help) {
  return app.add_option(flag_names(name), var, help)->capture_default_str();
}

// A boolean flag: `--flag` (true), `--flag True|False|true|false|1|0`.
CLI::Option* add_bool(CLI::App& app, const std::string& name, bool& var, const std::string& help);

// Runs `body` with a CLI11 app named "mor <cmd>"; parse errors and exceptions become one line
// `mor <cmd>: error: ...` on stderr and a non-zero exit.
int run_command(const std::string& cmd, const std::string& description, int argc, char** argv,
                const std::function<void(CLI::App&)>& define, const std::function<int()>& body);

// Registers --lora_target_modules, --number_experts, --lora_r, --top_k, --lora_alpha, --lora_dropout
// (and their dashed spellings) into `flags`; flags.any_given() then says whether any was passed.
void add_allocation_flags(CLI::App& app, AllocationFlags& flags);

}  // namespace mor
