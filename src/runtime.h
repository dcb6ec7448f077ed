// Run-time choices shared by every command and the library: --device, --dtype and --threads parsed
// into a torch::Device / torch::Dtype and LibTorch's intra-op pool. No CLI types here: the commands
// register the flags (src/cli.h), the library takes the strings.
#pragma once
#include <string>

#include "torch_api.h"

namespace mor {

// --device: "cpu", "cuda", "cuda:N". Throws when CUDA is asked for but not available.
torch::Device parse_device(const std::string& name);

// --dtype: "auto" (bfloat16 on CUDA, and on CPUs with AVX512-BF16 where bf16 matmul is fast; else
// float32), "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16" (CUDA only).
torch::Dtype parse_dtype(const std::string& name, torch::Device device);
bool cpu_has_fast_bf16();  // AVX512-BF16 (cpuid leaf 7 subleaf 1, EAX bit 5)

// --threads: sets LibTorch's intra-op pool (0 = all cores), and tunes the allocator (below). Call before
// any torch work.
void set_threads(int n);

// glibc malloc keeps freed tensor buffers (up to 32 MiB each, 512 MiB in all) for reuse instead of
// unmapping and trimming them after every op: each later op would page-fault and zero them again. Measured
// on the quickstart's training (issue 12/15): 40 steps in 9.4-10.8 s instead of 16-25 s. Left alone when
// GLIBC_TUNABLES or MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ say otherwise. Idempotent.
void tune_allocator();

// One line: "device cpu, dtype bfloat16 (auto: AVX512-BF16), 2 threads".
std::string describe_runtime(torch::Device device, torch::Dtype dtype, const std::string& dtype_flag);

std::string dtype_name(torch::Dtype dtype);  // "float32", "bfloat16", "float16"

// The three flags as the commands spell them.
struct RuntimeOptions {
  std::string device = "cpu", dtype = "auto";
  int threads = 0;
};
struct Runtime {
  torch::Device device{torch::kCPU};
  torch::Dtype dtype = torch::kFloat32;
};
// Parses device and dtype and sets the thread pool.
Runtime apply_runtime(const RuntimeOptions& o);

}  // namespace mor
