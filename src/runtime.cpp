// Run-time choices (see runtime.h): device, dtype, threads.
#include "runtime.h"

#include <cpuid.h>
#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

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

void tune_allocator() {
  auto set = [](const char* name) { return std::getenv(name) != nullptr; };
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables && std::strstr(tunables, "glibc.malloc.")) || set("MALLOC_MMAP_THRESHOLD_") || set("MALLOC_TRIM_THRESHOLD_"))
    return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum on 64-bit; larger blocks are still mapped
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

void set_threads(int n) {
  tune_allocator();
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

Runtime apply_runtime(const RuntimeOptions& o) {
  Runtime r;
  r.device = parse_device(o.device);
  r.dtype = parse_dtype(o.dtype, r.device);
  // Measured on an AVX2 EPYC with LibTorch 1.13: a bf16 [1024 x 2048] x [2048 x 2048] mm took 9.9 s
  // (its scalar fallback), float32 0.12 s. Asked for explicitly, so it runs, but says so.
  if (r.device.is_cpu() && r.dtype == torch::kBFloat16 && !cpu_has_fast_bf16())
    std::cerr << "mor: warning: --dtype " << o.dtype << " on a CPU without AVX512-BF16: LibTorch's bf16 matmuls "
              << "fall back to scalar loops here, far slower than float32 (--dtype auto picks float32)\n";
  set_threads(o.threads);
  return r;
}

}  // namespace mor
