// Command-line plumbing shared by the subcommands: flags registered under the Python scripts'
// names with the dashed spelling too (--base_model / --base-model), booleans that accept both
// `--flag` and `--flag True/False`, run-time device/dtype/thread choices, and the one catch in main.
#pragma once
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace mor {

// Registers "--name" and, when it contains '_', "--na-me" for the same variable, with the default shown.
template <typename T>
CLI::Option* add_opt(CLI::App& app, const std::string& name, T& var, const std::string& help) {
  std::string names = "--" + name;
  std::string dashed = name;
  for (auto& c : dashed) if (c == '_') c = '-';
  if (dashed != name) names += ",--" + dashed;
  return app.add_option(names, var, help)->capture_default_str();
}

// A boolean flag: `--flag` (true), `--flag True|False|true|false|1|0`.
CLI::Option* add_bool(CLI::App& app, const std::string& name, bool& var, const std::string& help);

// Runs `body` with a CLI11 app named "mor <cmd>"; parse errors and exceptions become one line
// `mor <cmd>: error: ...` on stderr and a non-zero exit.
int run_command(const std::string& cmd, const std::string& description, int argc, char** argv,
                const std::function<void(CLI::App&)>& define, const std::function<int()>& body);

}  // namespace mor
