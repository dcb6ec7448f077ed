// Evaluation throughput: examples/s and generated tokens/s of batched greedy generation (prefill +
// KV-cache decode, as eval-scienceqa runs it) on a LLaMA-shaped random model (hidden 1024, 8 layers,
// 16 heads, 4 kv heads, vocab 32000, bf16 base), for batch 1, 8 and 32, without adapters and with MoLA
// experts 2,2,4,4,6,6,8,8 (top-2, rank 8) on all 7 modules.
// Usage: bench_eval [--threads 2] [--examples 32] [--prompt_len 96] [--new_tokens 16]
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>

#include "adapter.h"
#include "allocation.h"
#include "cli.h"
#include "generate.h"
#include "llama.h"

using namespace mor;

int main(int argc, char** argv) {
  int threads = 2;
  int64_t n_examples = 32, prompt_len = 96, new_tokens = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--examples") n_examples = std::atoll(argv[i + 1]);
    else if (a == "--prompt_len") prompt_len = std::atoll(argv[i + 1]);
    else if (a == "--new_tokens") new_tokens = std::atoll(argv[i + 1]);
  }
  set_threads(threads);
  torch::NoGradGuard ng;
  ModelConfig cfg = ModelConfig::llama(1024, 2816, 8, 16, 4, 32000);
  const torch::Dtype dt = parse_dtype("auto", torch::kCPU);
  std::cout << "threads " << torch::get_num_threads() << ", dtype " << torch::toString(dt) << ", " << n_examples
            << " examples of " << prompt_len << "±16 prompt tokens, " << new_tokens << " new tokens each\n";

  // Prompts of unequal length (left padding matters); no EOS stop so every row decodes new_tokens.
  std::mt19937_64 rng(7);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t i = 0; i < n_examples; ++i) {
    std::vector<int64_t> p{1};
    int64_t len = prompt_len - 16 + static_cast<int64_t>(rng() % 33);
    for (int64_t t = 1; t < len; ++t) p.push_back(3 + static_cast<int64_t>(rng() % 31990));
    prompts.push_back(p);
  }
  GenerateOptions o;
  o.max_new_tokens = new_tokens;
  o.stop_ids = {-1};

  for (bool adapters : {false, true}) {
    auto model = random_llama(cfg, 1, dt, torch::kCPU);
    if (adapters) {
      auto alloc = Allocation::from_flags(cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                          "2,2,4,4,6,6,8,8", "8", "2", 16.0, 0.05);
      attach_adapters(model, alloc, 1);
      for (auto& [name, p] : trainable_params(model))
        if (name.find("lora_B") != std::string::npos) p.detach().normal_(0.0, 0.01);
    }
    model->eval();
    for (int64_t bs : {1, 8, 32}) {
      generate(model, {prompts[0]}, o);  // warm-up
      auto t0 = std::chrono::steady_clock::now();
      int64_t generated = 0;
      for (int64_t s = 0; s < n_examples; s += bs) {
        std::vector<std::vector<int64_t>> batch(prompts.begin() + s, prompts.begin() + std::min(n_examples, s + bs));
        auto out = generate(model, batch, o);
        for (auto& t : out.new_tokens) generated += static_cast<int64_t>(t.size());
      }
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%-9s batch %2lld: %6.2f examples/s, %7.1f generated tokens/s (%.1f s)\n",
                  adapters ? "MoLA" : "base", (long long)bs, n_examples / secs, generated / secs, secs);
      std::fflush(stdout);
    }
  }
  return 0;
}
