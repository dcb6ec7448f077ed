// Gradient checkpointing: forward_checkpointed gives the same logits, router logits, loss and adapter
// gradients as the plain forward (dropout on: the recomputation must repeat the same masks), on a
// random tiny LLaMA with MoLA adapters and a left-padded batch.
#include <gtest/gtest.h>

#include "adapter.h"
#include "allocation.h"
#include "grad_checkpoint.h"
#include "llama.h"
#include "trainer.h"

using namespace mor;

TEST(GradCheckpoint, SameLogitsLossAndGradients) {
  ModelConfig cfg = ModelConfig::llama(32, 48, 3, 4, 2, 64);
  auto model = random_llama(cfg, 3, torch::kFloat32, torch::kCPU);
  auto alloc = Allocation::from_flags(cfg, "q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj", "2,3,4", "4,2,3",
                                      "1,2,2", 16, 0.1);
  attach_adapters(model, alloc, 5);
  auto params = param_tensors(trainable_params(model));
  model->train();
  auto ids = torch::randint(3, 64, {2, 11}, torch::kInt64);
  auto mask = torch::ones({2, 11}, torch::kInt64);
  mask.index_put_({1, torch::indexing::Slice(0, 4)}, 0);
  ids.index_put_({1, torch::indexing::Slice(0, 4)}, 0);
  auto labels = ids.clone();
  labels.index_put_({1, torch::indexing::Slice(0, 4)}, -100);

  // One forward+backward with the dropout stream seeded by `seed`.
  auto run = [&](bool ckpt, uint64_t seed, std::vector<torch::Tensor>& grads, torch::Tensor& logits, double& loss) {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    torch::manual_seed(seed);
    RouterLogits rl;
    ForwardArgs a;
    a.input_ids = ids;
    a.attention_mask = mask;
    a.router_logits = &rl;
    logits = ckpt ? forward_checkpointed(model, a) : model->forward(a);
    EXPECT_EQ(rl.size(), 3u);
    auto lp = compute_loss(model, logits, labels, rl, true);
    lp.loss.backward();
    loss = lp.loss.item<double>();
    grads.clear();
    for (auto& p : params) grads.push_back(p.grad().clone());
  };
  std::vector<torch::Tensor> g1, g2;
  torch::Tensor l1, l2;
  double loss1 = 0, loss2 = 0;
  run(false, 123, g1, l1, loss1);
  run(true, 123, g2, l2, loss2);
  EXPECT_TRUE(torch::allclose(l1, l2, 0, 0)) << (l1 - l2).abs().max().item<double>();
  EXPECT_EQ(loss1, loss2);
  ASSERT_EQ(g1.size(), g2.size());
  double nz = 0;
  for (size_t i = 0; i < g1.size(); ++i) {
    EXPECT_LT((g1[i] - g2[i]).abs().max().item<double>(), 1e-6) << i;
    nz += g1[i].abs().sum().item<double>();
  }
  EXPECT_GT(nz, 0.0);
  // a different dropout stream gives different gradients: the test would notice unrepeated masks
  std::vector<torch::Tensor> g3;
  torch::Tensor l3;
  double loss3 = 0;
  run(false, 124, g3, l3, loss3);
  double diff = 0;
  for (size_t i = 0; i < g3.size(); ++i) diff = std::max(diff, (g3[i] - g1[i]).abs().max().item<double>());
  EXPECT_GT(diff, 1e-6);
}
