// Command-line plumbing shared by the subcommands (see cli.h).
#include "cli.h"

#include "errors.h"

#include <cpuid.h>
#include "ddp.h"
#include "runtime.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <new>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>
#include <torch/version.h>

// mor uses APIs that LibTorch has had since 1.13 (Debian 12) and still has in 2.x; older releases lack some.
#if TORCH_VERSION_MAJOR < 1 || (TORCH_VERSION_MAJOR == 1 && TORCH_VERSION_MINOR < 13)
#error "mor needs LibTorch 1.13 or newer"
#endif

namespace mor {

static bool parse_bool_word(std::string s, bool& out) {
  std::transform(s.begin(), s.end(), s.begin(), ::tolower);
  if (s == "true" || s == "1" || s == "yes") { out = true; return true; }
  if (s == "false" || s == "0" || s == "no") { out = false; return true; }
  return false;
}

std::string flag_names(const std::string& name) {
  std::string dashed = name;
  std::replace(dashed.begin(), dashed.end(), '_', '-');
  return dashed == name ? "--" + name : "--" + name + ",--" + dashed;
}

CLI::Option* add_bool(CLI::App& app, const std::string& name, bool& var, const std::string& help) {
  bool* target = &var;
  std::string flag = "--" + name;
  auto* opt = app.add_option_function<std::vector<std::string>>(
      flag_names(name),
      [target, flag](const std::vector<std::string>& vals) {
        if (vals.empty() || vals.back().empty()) { *target = true; return; }
        if (!parse_bool_word(vals.back(), *target))
          throw CLI::ValidationError(flag, "expected True or False, got '" + vals.back() + "'");
      },
      help + " (default " + std::string(var ? "True" : "False") + ")");
  opt->expected(0, 1)->allow_extra_args(false);
  return opt;
}

CLI::Validator integer_check(bool is_signed, int bits, const std::string& name) {
  const bool non_negative = name == "threads";
  return CLI::Validator(
      [=](std::string& v) -> std::string {
        const char* s = v.c_str();
        while (std::isspace(static_cast<unsigned char>(*s))) ++s;
        if (*s == '\0') return "expected an integer, got '" + v + "'";
        char* end = nullptr;
        errno = 0;
        bool range_ok = true;
        if (is_signed) {
          const long long x = std::strtoll(s, &end, 10);
          const long long hi = bits >= 64 ? LLONG_MAX : (1LL << (bits - 1)) - 1, lo = -hi - 1;
          range_ok = errno != ERANGE && x >= lo && x <= hi;
          if (range_ok && non_negative && x < 0) return "must be >= 0 (0 = all cores), got " + v;
          if (!range_ok) return "'" + v + "' is out of range (" + std::to_string(lo) + " to " + std::to_string(hi) + ")";
        } else {
          if (*s == '-') return "must be >= 0, got " + v;
          const unsigned long long x = std::strtoull(s, &end, 10);
          const unsigned long long hi = bits >= 64 ? ULLONG_MAX : (1ULL << bits) - 1;
          range_ok = errno != ERANGE && x <= hi;
          if (!range_ok) return "'" + v + "' is out of range (0 to " + std::to_string(hi) + ")";
        }
        if (end == s || *end != '\0') return "expected an integer, got '" + v + "'";
        return "";
      },
      "", "integer in range");
}

CLI::Validator finite_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        if (end == v.c_str() || *end != '\0') return "expected a number, got '" + v + "'";
        if (!std::isfinite(x)) return "must be a finite number, got " + v;
        return "";
      },
      "", "finite number");
}

namespace {
std::string g_command;  // for the terminate handler: an exception nothing caught (a worker thread, a destructor)
[[noreturn]] void terminate_one_line() {
  std::string msg = "uncaught exception";
  if (std::current_exception()) msg = current_error_line();
  std::cerr << "mor " << g_command << ": error: " << msg << std::endl;
  std::_Exit(1);
}
}  // namespace

int run_command(const std::string& cmd, const std::string& description, int argc, char** argv,
                const std::function<void(CLI::App&)>& define, const std::function<int()>& body) {
  g_command = cmd;
  std::set_terminate(terminate_one_line);
  CLI::App app{description, "mor " + cmd};
  define(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (...) {
    std::cerr << "mor " << cmd << ": error: " << current_error_line() << "\n";
    return 2;
  }
  try {
    return body();
  } catch (...) {
    std::cerr << "mor " << cmd << ": error: " << current_error_line() << std::endl;
    return 1;
  }
}

void add_allocation_flags(CLI::App& app, AllocationFlags& f) {
  std::vector<CLI::Option*> opts = {
      add_opt(app, "lora_target_modules", f.target_modules, "modules carrying experts (comma list)"),
      add_opt(app, "number_experts", f.number_experts,
              "experts per layer: one integer, one per layer (comma list), or a JSON file (list or per-module object)"),
      add_opt(app, "lora_r", f.lora_r, "expert rank per layer (same forms; JSON values may list one rank per expert)"),
      add_opt(app, "top_k", f.top_k, "experts used per token, per layer (same forms)"),
      add_opt(app, "lora_alpha", f.lora_alpha, "LoRA alpha (scaling alpha / r)"),
      add_opt(app, "lora_dropout", f.lora_dropout, "dropout on the experts' input in training"),
  };
  f.was_given = [opts] {
    for (auto* o : opts)
      if (o->count() > 0) return true;
    return false;
  };
  f.given_names = [opts] {
    std::vector<std::string> names;
    for (auto* o : opts)
      if (o->count() > 0) names.push_back(o->get_name());
    return names;
  };
}

std::string build_info() {
  std::string s = "mor, built against LibTorch " TORCH_VERSION;
#ifdef MOR_TORCH_CUDA
  const auto n = torch::cuda::device_count();
  s += " with CUDA (" + (n > 0 ? std::to_string(n) + " GPU(s) visible" : std::string("no GPU visible")) + ")";
#else
  s += " (CPU only)";
#endif
  const bool bf16 = cpu_has_fast_bf16();
  s += std::string("; CPU ") + (bf16 ? "has" : "lacks") + " AVX512-BF16 (--dtype auto: " + (bf16 ? "bfloat16" : "float32") +
       " on CPU)";
  const std::string ddp = ddp_backends_built();
  s += ddp.empty() ? "; data parallel: not built (no c10d/Gloo headers)" : "; data parallel: " + ddp;
  return s;
}

}  // namespace mor
