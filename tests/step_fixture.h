// The train-step tests' shared case: a tiny float32 LLaMA (hidden 32, 2 layers, vocab 64) with MoLA
// on q/v/gate (experts 2,3, ranks 4,2, top-k 1,2, no dropout), in training mode, and a two-row batch:
// one row with masked prompt labels, one shorter row (padding).
#pragma once
#include <vector>

#include "adapter.h"
#include "allocation.h"
#include "llama.h"
#include "trainer.h"

namespace mor::test {

struct StepFixture {
  LlamaForCausalLM model{nullptr};
  std::vector<TokenizedExample> ex;
  std::vector<const TokenizedExample*> batch() const { return {&ex[0], &ex[1]}; }
};

inline StepFixture tiny_step_fixture() {
  StepFixture f;
  ModelConfig cfg = ModelConfig::llama(32, 48, 2, 4, 2, 64);
  f.model = random_llama(cfg, 3, torch::kFloat32, torch::kCPU);
  attach_adapters(f.model, Allocation::from_flags(cfg, "q_proj,v_proj,gate_proj", "2,3", "4,2", "1,2", 16, 0.0), 5);
  f.model->train();
  f.ex.resize(2);
  f.ex[0].input_ids = {1, 5, 9, 33, 12, 7};
  f.ex[0].labels = {-100, -100, 9, 33, 12, 7};
  f.ex[1].input_ids = {1, 40, 41};
  f.ex[1].labels = {1, 40, 41};
  return f;
}

}  // namespace mor::test
