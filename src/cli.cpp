// Command-line plumbing shared by the subcommands (see cli.h).
#include "cli.h"

#include <algorithm>
#include <iostream>
#include <stdexcept>

namespace mor {

static bool parse_bool_word(std::string s, bool& out) {
  std::transform(s.begin(), s.end(), s.begin(), ::tolower);
  if (s == "true" || s == "1" || s == "yes") { out = true; return true; }
  if (s == "false" || s == "0" || s == "no") { out = false; return true; }
  return false;
}

CLI::Option* add_bool(CLI::App& app, const std::string& name, bool& var, const std::string& help) {
  std::string names = "--" + name;
  std::string dashed = name;
  for (auto& c : dashed) if (c == '_') c = '-';
  if (dashed != name) names += ",--" + dashed;
  bool* target = &var;
  std::string flag = "--" + name;
  auto* opt = app.add_option_function<std::vector<std::string>>(
      names,
      [target, flag](const std::vector<std::string>& vals) {
        if (vals.empty() || vals.back().empty()) { *target = true; return; }
        if (!parse_bool_word(vals.back(), *target))
          throw CLI::ValidationError(flag, "expected True or False, got '" + vals.back() + "'");
      },
      help + " (default " + std::string(var ? "True" : "False") + ")");
  opt->expected(0, 1)->allow_extra_args(false);
  return opt;
}

int run_command(const std::string& cmd, const std::string& description, int argc, char** argv,
                const std::function<void(CLI::App&)>& define, const std::function<int()>& body) {
  CLI::App app{description, "mor " + cmd};
  define(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "mor " << cmd << ": error: " << e.what() << "\n";
    return 2;
  }
  try {
    return body();
  } catch (const std::exception& e) {
    std::cerr << "mor " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace mor
