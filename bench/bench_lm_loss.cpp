// The training loss alone: lm_head GEMM + shifted cross-entropy, forward and backward to the hidden
// states, of the training benchmarks' shape (4 x 256 tokens, hidden 2048, vocabulary 32000, bf16):
// the reference op sequence against the chunked custom function at several chunk sizes (the default
// marked), interleaved in rounds; medians in ms and as a multiple of the two GEMMs' time at the
// bf16 matmul peak measured in the same run.
// Usage: bench_lm_loss [--threads 2] [--rounds 5] [--chunks 16,32,64,128,256] [--dtype bfloat16|float32]
#include <cstdlib>
#include <sstream>

#include "bench_common.h"
#include "lm_loss.h"

using bench::Clock;
using bench::seconds_since;

int main(int argc, char** argv) {
  int threads = 2, rounds = 5;
  std::string chunks = "16,32,64,128,256", dtype = "bfloat16";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--rounds") rounds = std::atoi(argv[i + 1]);
    else if (a == "--chunks") chunks = argv[i + 1];
    else if (a == "--dtype") dtype = argv[i + 1];
  }
  torch::set_num_threads(threads);
  const auto dt = dtype == "float32" ? torch::kFloat32 : torch::kBFloat16;
  const int64_t B = 4, T = 256, C = 2048, V = 32000;
  torch::manual_seed(0);
  auto hidden = torch::randn({B, T, C}).to(dt).requires_grad_(true);
  auto weight = (torch::randn({V, C}) * 0.02).to(dt);
  auto labels = torch::randint(0, V, {B, T}, torch::kLong);
  std::vector<int64_t> sizes{0};  // 0 = the reference
  std::stringstream ss(chunks);
  for (std::string s; std::getline(ss, s, ',');) sizes.push_back(std::atoll(s.c_str()));
  const int64_t def = mor::lm_loss_chunk_rows(V);
  const double gemm_s = 2 * 2.0 * B * (T - 1) * C * V / bench::mm_peak(B * T, C, V, 3, dt);
  std::vector<std::vector<double>> t(sizes.size());
  for (int r = 0; r < rounds + 1; ++r) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      hidden.mutable_grad() = torch::Tensor();
      auto c = Clock::now();
      auto loss = sizes[i] ? mor::lm_loss_chunked(hidden, weight, labels, sizes[i])
                           : mor::lm_loss_reference(hidden, weight, labels);
      loss.backward();
      if (r > 0) t[i].push_back(seconds_since(c));  // round 0 warms up
    }
  }
  std::printf("lm_head + cross-entropy fwd+bwd, %lldx%lld tokens, C %lld, V %lld, %s, %d threads; "
              "the two GEMMs at the measured peak: %.1f ms\n",
              (long long)B, (long long)T, (long long)C, (long long)V, dtype.c_str(), threads, gemm_s * 1e3);
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::string name = sizes[i] ? "chunked, " + std::to_string(sizes[i]) + " rows" + (sizes[i] == def ? " (default)" : "")
                                : "reference";
    bench::print_row(name, t[i], "ms", 1e3);
    std::printf("  %-40s %.2fx the GEMMs at peak\n", "", bench::median(t[i]) / gemm_s);
  }
  return 0;
}
