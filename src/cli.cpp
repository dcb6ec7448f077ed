// Command-line plumbing shared by the subcommands (see cli.h).
#include "cli.h"

#include "errors.h"

#include <cpuid.h>

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

}  // namespace mor

// ---- run-time choices: device, dtype, threads ----


namespace mor {

torch::Device parse_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      throw std::runtime_error("--device " + name + ": CUDA is not available in this build/machine");
    try {
      return torch::Device(name);
    } catch (const std::exception&) {
      throw std::runtime_error("--device " + name + ": expected cpu, cuda or cuda:N");
    }
  }
  throw std::runtime_error("--device '" + name + "': expected cpu, cuda or cuda:N");
}

bool cpu_has_fast_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 1, a, b, c, d);
  return (a >> 5) & 1u;  // AVX512_BF16
#else
  return false;
#endif
}

torch::Dtype parse_dtype(const std::string& name, torch::Device device) {
  if (name == "auto") {
    if (device.is_cuda()) return torch::kBFloat16;
    return cpu_has_fast_bf16() ? torch::kBFloat16 : torch::kFloat32;
  }
  if (name == "float32" || name == "fp32" || name == "float") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") {
    if (!device.is_cuda()) throw std::runtime_error("--dtype float16 is only supported on CUDA (use bfloat16 or float32 on CPU)");
    return torch::kFloat16;
  }
  throw std::runtime_error("--dtype '" + name + "': expected auto, float32, bfloat16 or float16");
}

void set_threads(int n) {
  if (n < 0) throw std::runtime_error("--threads must be >= 0 (0 = all cores)");
  if (n == 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
}

std::string dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return c10::toString(dtype);
  }
}

std::string describe_runtime(torch::Device device, torch::Dtype dtype, const std::string& dtype_flag) {
  std::string why;
  if (dtype_flag == "auto")
    why = device.is_cuda() ? " (auto: CUDA)" : cpu_has_fast_bf16() ? " (auto: CPU has AVX512-BF16)" : " (auto: no fast bf16 on this CPU)";
  return "device " + device.str() + ", dtype " + dtype_name(dtype) + why + ", " + std::to_string(torch::get_num_threads()) +
         " threads";
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
  return s;
}

}  // namespace mor
