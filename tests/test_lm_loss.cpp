// The chunked lm_head + cross-entropy (src/lm_loss.h) against the reference op sequence: loss and
// d(hidden) in float32 and bfloat16, ignored labels, all-ignored (NaN), row counts around the chunk
// size, the incoming gradient's scale, no-grad mode, the fallbacks, tied embeddings, and train_step
// with the fused path against MOR_FUSED=0. Shapes: B batch, T positions, C hidden, V vocab.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "adapter.h"
#include "allocation.h"
#include "kernels.h"
#include "lm_loss.h"
#include "step_fixture.h"
#include "trainer.h"

using namespace mor;

namespace {

struct LmCase {
  torch::Tensor hidden;  // [B, T, C] leaf, requires grad
  torch::Tensor weight;  // [V, C]
  torch::Tensor labels;  // [B, T]
};

// Logits of a realistic spread (std ~2) so the softmax is neither uniform nor one-hot.
LmCase lm_case(int64_t B, int64_t T, int64_t C, int64_t V, torch::Dtype dt, double ignored_frac, uint64_t seed) {
  torch::manual_seed(seed);
  LmCase c;
  c.hidden = torch::randn({B, T, C}).to(dt).requires_grad_(true);
  c.weight = (torch::randn({V, C}) * (2.0 / std::sqrt(double(C)))).to(dt);
  c.labels = torch::randint(0, V, {B, T}, torch::kLong);
  c.labels.masked_fill_(torch::rand({B, T}) < ignored_frac, -100);
  return c;
}

struct LmLossGrad {
  torch::Tensor loss, grad;  // grad [B, T, C] float32
};

LmLossGrad lm_run(const LmCase& c, int64_t chunk, double out_scale = 1.0) {
  c.hidden.mutable_grad() = torch::Tensor();
  auto loss = chunk > 0 ? lm_loss_chunked(c.hidden, c.weight, c.labels, chunk)
                        : lm_loss_reference(c.hidden, c.weight, c.labels);
  (loss * out_scale).backward();
  return {loss.detach(), c.hidden.grad().to(torch::kFloat32)};
}

// Adapter parameters away from their init (lora_B = 0 would leave lora_A without a gradient).
std::vector<torch::Tensor> lm_randomised_adapters(LlamaForCausalLM& model) {
  auto params = param_tensors(trainable_params(model));
  torch::NoGradGuard ng;
  for (auto& p : params) p.normal_(0.0, 0.2);
  return params;
}

double lm_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>() /
         b.to(torch::kFloat64).abs().max().item<double>();
}

void lm_expect_matches(const LmCase& c, int64_t chunk, double loss_tol, double grad_tol, const char* what) {
  auto ref = lm_run(c, 0), got = lm_run(c, chunk);
  const double el = lm_rel(got.loss, ref.loss), eg = lm_rel(got.grad, ref.grad);
  std::printf("  %s: loss %.7f vs %.7f, rel err %.2e; d(hidden) rel max-abs err %.2e\n", what,
              got.loss.item<double>(), ref.loss.item<double>(), el, eg);
  EXPECT_LE(el, loss_tol) << what;
  EXPECT_LE(eg, grad_tol) << what;
  EXPECT_EQ(got.loss.scalar_type(), torch::kFloat32);
}

}  // namespace

TEST(LmLoss, Float32MatchesReference) {
  auto c = lm_case(3, 37, 64, 500, torch::kFloat32, 0.2, 1);
  for (int64_t chunk : {16, 5, 1000}) lm_expect_matches(c, chunk, 1e-6, 1e-5, ("float32 chunk " + std::to_string(chunk)).c_str());
}

// bfloat16: both paths round the logits and the float32 gradient rows to bfloat16 at the same
// points, but the GEMMs of a chunk and of the whole matrix may accumulate in another order (BLAS
// blocking depends on the row count). One flipped rounding of a bfloat16 d(hidden) element is 2^-8
// of it (< 4e-3 of the largest), of a logit moves its softmax term by 2^-8 relative; the loss is a
// mean over many rows, so flips average out. Observed here (oneDNN, AVX512-BF16): loss 1e-7, d(hidden) 0.
TEST(LmLoss, BFloat16MatchesReferenceWithinRounding) {
  auto c = lm_case(2, 64, 128, 700, torch::kBFloat16, 0.1, 2);
  lm_expect_matches(c, 32, 1e-4, 1e-2, "bfloat16 chunk 32");
}

TEST(LmLoss, IgnoredRowsAndLastPositionGetNoGradient) {
  auto c = lm_case(3, 20, 32, 100, torch::kFloat32, 0.5, 3);
  c.labels[1].fill_(-100);  // one example without any label
  lm_expect_matches(c, 4, 1e-6, 1e-5, "half ignored");
  auto got = lm_run(c, 4);
  // Position t is predicted against label t+1: no label there, no gradient.
  auto next_ignored = torch::cat({c.labels.narrow(1, 1, 19) == -100, torch::ones({3, 1}, torch::kBool)}, 1);
  EXPECT_EQ(got.grad.index({next_ignored}).abs().max().item<double>(), 0.0);
  EXPECT_GT(got.grad.index({next_ignored.logical_not()}).abs().min().item<double>(), 0.0);
}

TEST(LmLoss, AllIgnoredIsNanLikeTheReference) {
  auto c = lm_case(2, 9, 16, 50, torch::kFloat32, 0.0, 4);
  c.labels.fill_(-100);
  auto ref = lm_run(c, 0), got = lm_run(c, 8);
  EXPECT_TRUE(std::isnan(ref.loss.item<double>()));
  EXPECT_TRUE(std::isnan(got.loss.item<double>()));
  EXPECT_EQ(got.grad.abs().max().item<double>(), 0.0);
  EXPECT_EQ(ref.grad.abs().max().item<double>(), 0.0);
  // One position only (T = 1): nothing to predict either.
  auto one = lm_case(2, 1, 16, 50, torch::kFloat32, 0.0, 5);
  EXPECT_TRUE(std::isnan(lm_run(one, 8).loss.item<double>()));
}

TEST(LmLoss, RowCountsAroundTheChunkSize) {
  const int64_t chunk = 8;
  for (int64_t n : {int64_t(1), chunk - 1, chunk, chunk + 1, 3 * chunk + 5}) {
    auto c = lm_case(2, 20, 24, 90, torch::kFloat32, 0.0, 10 + n);
    // Keep exactly n labelled rows: the first n of the shifted labels in row-major order.
    auto flat = c.labels.narrow(1, 1, 19).reshape({-1});
    auto keep = torch::arange(flat.numel()) < n;
    auto shifted = torch::where(keep, flat, torch::full_like(flat, -100)).view({2, 19});
    c.labels = torch::cat({c.labels.narrow(1, 0, 1), shifted}, 1);
    ASSERT_EQ((c.labels.narrow(1, 1, 19) != -100).sum().item<int64_t>(), n);
    lm_expect_matches(c, chunk, 1e-6, 1e-5, ("rows " + std::to_string(n)).c_str());
  }
}

TEST(LmLoss, IncomingGradientScalesTheHiddenGradient) {
  auto c = lm_case(2, 16, 32, 80, torch::kFloat32, 0.1, 6);
  auto ref = lm_run(c, 0, 0.25), got = lm_run(c, 8, 0.25), unit = lm_run(c, 8, 1.0);
  EXPECT_LE(lm_rel(got.grad, ref.grad), 1e-5);
  EXPECT_LE(lm_rel(got.grad, unit.grad * 0.25), 1e-6);
  EXPECT_GT(lm_rel(unit.grad, ref.grad), 0.5);  // the reference really is scaled
}

TEST(LmLoss, NoGradModeGivesTheSameLoss) {
  auto c = lm_case(2, 12, 16, 60, torch::kFloat32, 0.2, 7);
  auto with_grad = lm_loss_chunked(c.hidden, c.weight, c.labels, 4);
  EXPECT_TRUE(with_grad.requires_grad());
  torch::Tensor no_grad;
  {
    torch::NoGradGuard ng;
    no_grad = lm_loss_chunked(c.hidden, c.weight, c.labels, 4);
  }
  EXPECT_FALSE(no_grad.requires_grad());
  EXPECT_EQ(no_grad.item<float>(), with_grad.item<float>());
  auto frozen = lm_loss_chunked(c.hidden.detach(), c.weight, c.labels, 4);  // grad mode on, nothing to differentiate
  EXPECT_FALSE(frozen.requires_grad());
  EXPECT_EQ(frozen.item<float>(), with_grad.item<float>());
}

TEST(LmLoss, FallbacksAndBadInputs) {
  auto c = lm_case(2, 12, 16, 60, torch::kFloat32, 0.2, 8);
  // A trainable weight: the chunked path refuses, lm_loss takes the reference and the weight gets its gradient.
  auto w = c.weight.clone().requires_grad_(true);
  EXPECT_FALSE(lm_loss_chunked_ok(c.hidden, w));
  EXPECT_THROW(lm_loss_chunked(c.hidden, w, c.labels, 4), std::runtime_error);
  lm_loss(c.hidden, w, c.labels).backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_GT(w.grad().abs().max().item<double>(), 0.0);
  // MOR_FUSED=0: exactly the reference.
  EXPECT_TRUE(lm_loss_chunked_ok(c.hidden, c.weight));
  set_fused_enabled(false);
  EXPECT_FALSE(lm_loss_chunked_ok(c.hidden, c.weight));
  EXPECT_EQ(lm_loss(c.hidden, c.weight, c.labels).item<float>(),
            lm_loss_reference(c.hidden, c.weight, c.labels).item<float>());
  set_fused_enabled(true);
  EXPECT_FALSE(lm_loss_chunked_ok(c.hidden.to(torch::kFloat16), c.weight.to(torch::kFloat16)));
  auto bad = c.labels.clone();
  bad[0][5] = 60;
  EXPECT_THROW(lm_loss_chunked(c.hidden, c.weight, bad, 4), std::runtime_error);
  EXPECT_THROW(lm_loss_chunked(c.hidden, c.weight, c.labels.narrow(1, 0, 11), 4), std::runtime_error);
  EXPECT_EQ(lm_loss_chunk_rows(32000), 128);
  EXPECT_EQ(lm_loss_chunk_rows(152064), 64);
  EXPECT_EQ(lm_loss_chunk_rows(512), 256);
}

// A tied-embedding model: forward_loss (chunked) against forward + compute_loss, loss and gradients
// of the adapters.
TEST(LmLoss, ForwardLossWithTiedEmbeddingsMatchesForwardAndComputeLoss) {
  ModelConfig cfg = ModelConfig::llama(32, 48, 2, 4, 2, 64);
  cfg.tie_word_embeddings = true;
  auto model = random_llama(cfg, 11, torch::kFloat32, torch::kCPU);
  ASSERT_FALSE(model->lm_head);
  attach_adapters(model, Allocation::from_flags(cfg, "q_proj,down_proj", "2,3", "4,2", "1,2", 16, 0.0), 5);
  auto params = lm_randomised_adapters(model);
  auto ids = torch::randint(0, 64, {2, 9}, torch::kLong);
  auto labels = ids.clone();
  labels[0][3] = -100;
  std::vector<std::vector<torch::Tensor>> grads(2);
  std::vector<double> loss(2);
  for (int fused : {0, 1}) {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    RouterLogits rl;
    ForwardArgs a;
    a.input_ids = ids;
    a.router_logits = &rl;
    LossParts lp = fused ? forward_loss(model, a, labels, true) : compute_loss(model, model->forward(a), labels, rl, true);
    EXPECT_GT(lp.aux.item<double>(), 0.0);
    lp.loss.backward();
    for (auto& p : params) ASSERT_GT(p.grad().abs().max().item<double>(), 0.0);
    loss[fused] = lp.loss.item<double>();
    for (auto& p : params) grads[fused].push_back(p.grad().clone());
  }
  EXPECT_NEAR(loss[1], loss[0], 1e-6 * std::abs(loss[0]));
  for (size_t i = 0; i < params.size(); ++i) EXPECT_LE(lm_rel(grads[1][i], grads[0][i]), 1e-5) << i;
}

// train_step with the chunked loss against MOR_FUSED=0 (forward + compute_loss), with and without
// gradient checkpointing: loss and every adapter gradient. The switch also swaps RMSNorm/RoPE for
// their autograd kernels (kernels_train.h), whose float32 backward sums in another order: 1.2e-5 of
// the largest gradient entry measured here, so 3e-5 (a wrong term shows as O(1)).
TEST(LmLoss, TrainStepFusedEqualsUnfused) {
  auto f = mor::test::tiny_step_fixture();
  auto& model = f.model;
  auto params = lm_randomised_adapters(model);
  const auto batch = f.batch();
  for (bool ckpt : {false, true}) {
    std::vector<std::vector<torch::Tensor>> grads(2);
    std::vector<double> loss(2);
    for (int fused : {0, 1}) {
      set_fused_enabled(fused == 1);
      for (auto& p : params) p.mutable_grad() = torch::Tensor();
      TrainStepOptions so;
      so.loss_divisor = 4;
      so.obalance = true;
      so.gradient_checkpointing = ckpt;
      loss[fused] = train_step(model, batch, so).loss.item<double>();
      for (auto& p : params) grads[fused].push_back(p.grad().clone());
    }
    set_fused_enabled(true);
    EXPECT_NEAR(loss[1], loss[0], 1e-6 * std::abs(loss[0])) << ckpt;
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_GT(grads[0][i].abs().max().item<double>(), 0.0) << i;
      EXPECT_LE(lm_rel(grads[1][i], grads[0][i]), 3e-5) << i << (ckpt ? " checkpointed" : "");
    }
  }
}
