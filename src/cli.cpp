// Command-line plumbing shared by the subcommands (see cli.h).
#include "cli.h"
#include "ddp.h"
#include "runtime.h"

#include <algorithm>
#include <iostream>
#include <stdexcept>
#include <thread>

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
  } catch (const c10::Error& e) {  // LibTorch's message carries a backtrace: keep its first line
    std::string m = e.what_without_backtrace();
    std::cerr << "mor " << cmd << ": error: " << m.substr(0, m.find('\n')) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "mor " << cmd << ": error: " << e.what() << "\n";
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
