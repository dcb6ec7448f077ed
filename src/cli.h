// Command-line plumbing shared by the subcommands: flags registered under the Python scripts'
// names with the dashed spelling too (--base_model / --base-model), booleans that accept both
// `--flag` and `--flag True/False`, the allocation flags, and the one catch in main. The run-time
// choices (device, dtype, threads) are library code: src/runtime.h.
#pragma once
#include <functional>
#include <string>
#include <type_traits>

#include <CLI/CLI.hpp>
#include "torch_api.h"

#include "allocation.h"
#include "runtime.h"  // the commands parse --device/--dtype/--threads with it

namespace mor {

// CLI11 names for a flag: "--name" and, when it contains '_', also "--na-me".
std::string flag_names(const std::string& name);

// Checks every numeric flag gets before CLI11 converts it (CLI11 2.1 clamps 99999999999999999999 to
// INT64_MAX and accepts nan/inf): integers must fit their type, floats must be finite, --threads >= 0.
CLI::Validator integer_check(bool is_signed, int bits, const std::string& name);
CLI::Validator finite_check();

// Registers the flag under both spellings for the same variable, with the default shown.
template <typename T>
CLI::Option* add_opt(CLI::App& app, const std::string& name, T& var, const std::string& help) {
  CLI::Option* o = app.add_option(flag_names(name), var, help)->capture_default_str();
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    o->check(integer_check(std::is_signed_v<T>, int(sizeof(T) * 8), name));
  else if constexpr (std::is_floating_point_v<T>)
    o->check(finite_check());
  return o;
}

// A boolean flag: `--flag` (true), `--flag True|False|true|false|1|0`.
CLI::Option* add_bool(CLI::App& app, const std::string& name, bool& var, const std::string& help);

// Runs `body` with a CLI11 app named "mor <cmd>"; parse errors and every exception (std::runtime_error,
// c10::Error without its backtrace, nlohmann::json errors, std::bad_alloc, anything else) become one line
// `mor <cmd>: error: ...` on stderr and a non-zero exit: the one place library errors reach the user.
int run_command(const std::string& cmd, const std::string& description, int argc, char** argv,
                const std::function<void(CLI::App&)>& define, const std::function<int()>& body);

// Registers --lora_target_modules, --number_experts, --lora_r, --top_k, --lora_alpha, --lora_dropout
// (and their dashed spellings) into `flags`; flags.any_given() then says whether any was passed.
void add_allocation_flags(CLI::App& app, AllocationFlags& flags);

}  // namespace mor
