// The training recipe's pieces: the micro-batch sampler (one process and data-parallel shards), the one
// train_step against a direct forward/loss/backward, device-side clipping against LibTorch's
// clip_grad_norm_, the float16 unscale check, the shared model set-up's vocabulary check, and the
// training-side safety rules (no silent overwrite, incomplete checkpoints, non-finite loss, warm-up
// longer than the run).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include "adapter.h"
#include "allocation.h"
#include "checkpoint.h"
#include "files.h"
#include "helpers.h"
#include "open_model.h"
#include "step_fixture.h"
#include "trainer.h"

using namespace mor;
namespace fs = std::filesystem;

namespace {
using mor::test::q;
std::string model_dir() { return test::testdata_dir() + "/stories260K"; }
std::string hf_data() { return test::testdata_dir() + "/sampled_scienceqa_train_all.hf"; }
std::string small_train(const std::string& out) {
  return "train --base_model " + q(model_dir()) + " --data_path " + q(hf_data()) + " --output_dir " + q(out) +
         " --batch_size 2 --micro_batch_size 1 --cutoff_len 32 --val_set_size 0 --lora_r 2 --number_experts 2" +
         " --top_k 1 --logging_steps 1 --dtype float32 --threads 1";
}
}  // namespace

TEST(RecipeSampler, OneProcessIsTheEpochOrderInMicroBatches) {
  std::vector<int64_t> order = {5, 3, 8, 1, 0, 9, 2, 7, 4, 6};
  StepPlan plan = plan_steps(10, 3, 2);  // 4 micro-batches (last short), 2 steps
  MicroBatchSampler s(order, plan, 3, 0, 1);
  EXPECT_EQ(s.batch(0, 0), (std::vector<int64_t>{5, 3, 8}));
  EXPECT_EQ(s.batch(0, 1), (std::vector<int64_t>{1, 0, 9}));
  EXPECT_EQ(s.batch(1, 0), (std::vector<int64_t>{2, 7, 4}));
  EXPECT_EQ(s.batch(1, 1), (std::vector<int64_t>{6}));
}

TEST(RecipeSampler, RanksInterleaveAndPadLikeDistributedSampler) {
  std::vector<int64_t> order = {5, 3, 8, 1, 0, 9, 2};  // 7 examples over 2 ranks: padded to 8 with order[0]
  EXPECT_EQ(shard_size(7, 2), 4);
  EXPECT_EQ(shard_size(7, 1), 7);
  StepPlan plan = plan_steps(4, 1, 2);
  MicroBatchSampler r0(order, plan, 1, 0, 2), r1(order, plan, 1, 1, 2);
  EXPECT_EQ(r0.shard(), (std::vector<int64_t>{5, 8, 0, 2}));
  EXPECT_EQ(r1.shard(), (std::vector<int64_t>{3, 1, 9, 5}));
  // With micro-batches of 1, step s of both ranks together holds exactly one process's step s.
  std::vector<int64_t> big(40);
  for (int i = 0; i < 40; ++i) big[i] = (i * 17) % 40;
  StepPlan p1 = plan_steps(40, 1, 4), p2 = plan_steps(20, 1, 2);
  MicroBatchSampler one(big, p1, 1, 0, 1), a(big, p2, 1, 0, 2), b(big, p2, 1, 1, 2);
  ASSERT_EQ(p1.steps_per_epoch, p2.steps_per_epoch);
  for (int64_t st = 0; st < p1.steps_per_epoch; ++st) {
    std::multiset<int64_t> want, got;
    for (int m = 0; m < 4; ++m) for (auto i : one.batch(st, m)) want.insert(i);
    for (int m = 0; m < 2; ++m) {
      for (auto i : a.batch(st, m)) got.insert(i);
      for (auto i : b.batch(st, m)) got.insert(i);
    }
    EXPECT_EQ(want, got) << "step " << st;
  }
}

TEST(RecipeStep, TrainStepEqualsDirectForwardLossBackward) {
  auto f = mor::test::tiny_step_fixture();
  auto& model = f.model;
  auto params = param_tensors(trainable_params(model));
  const auto batch = f.batch();
  for (bool ckpt : {false, true}) {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    TrainStepOptions so;
    so.loss_divisor = 4;
    so.loss_scale = 8;
    so.obalance = true;
    so.gradient_checkpointing = ckpt;
    StepResult r = train_step(model, batch, so);
    std::vector<torch::Tensor> g1;
    for (auto& p : params) g1.push_back(p.grad().clone());
    EXPECT_FALSE(r.loss.requires_grad());
    EXPECT_EQ(r.tokens, 9);
    // the same by hand: collate, forward_loss (train_step's chunked loss; test_lm_loss.cpp pins it
    // to forward + compute_loss), backward of loss / 4 * 8
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    Batch b = collate(batch);
    RouterLogits rl;
    ForwardArgs a;
    a.input_ids = b.input_ids;
    a.attention_mask = b.attention_mask;
    a.router_logits = &rl;
    LossParts lp = forward_loss(model, a, b.labels, true);
    (lp.loss / 4.0 * 8.0).backward();
    EXPECT_DOUBLE_EQ(r.loss.item<double>(), lp.loss.item<double>());
    EXPECT_DOUBLE_EQ(r.aux.item<double>(), lp.aux.item<double>());
    EXPECT_GT(r.aux.item<double>(), 0.0);
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_LT((g1[i] - params[i].grad()).abs().max().item<double>(), 1e-6) << i << (ckpt ? " checkpointed" : "");
  }
}

TEST(RecipeStep, ClipGradientsMatchesClipGradNorm) {
  torch::manual_seed(1);
  for (double max_norm : {0.05, 1e6, 0.0}) {
    std::vector<torch::Tensor> a, b;
    const std::vector<std::vector<int64_t>> shapes = {{3, 4}, {7}, {2, 2, 2}};
    for (const auto& shape : shapes) {
      auto p = torch::randn(shape).requires_grad_(true);
      p.mutable_grad() = torch::randn(shape);
      auto p2 = p.detach().clone().requires_grad_(true);
      p2.mutable_grad() = p.grad().clone();
      a.push_back(p);
      b.push_back(p2);
    }
    const double norm = clip_gradients(a, max_norm).item<double>();
    double want = 0;
    if (max_norm > 0) {
      want = torch::nn::utils::clip_grad_norm_(b, max_norm);
    } else {
      for (auto& p : b) want += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
      want = std::sqrt(want);
    }
    EXPECT_NEAR(norm, want, 1e-6 * want) << max_norm;
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(torch::equal(a[i].grad(), b[i].grad())) << "max_norm " << max_norm << " tensor " << i;
  }
}

TEST(RecipeStep, UnscaleFindsInfAndNanInOneCheck) {
  std::vector<torch::Tensor> ps;
  for (int i = 0; i < 3; ++i) {
    auto p = torch::zeros({4}).requires_grad_(true);
    p.mutable_grad() = torch::full({4}, 8.0);
    ps.push_back(p);
  }
  torch::Tensor found;
  unscale_gradients(ps, 4.0, found);
  EXPECT_EQ(found.item<float>(), 0.0f);
  EXPECT_TRUE(torch::equal(ps[1].grad(), torch::full({4}, 2.0)));
  ps[2].mutable_grad()[3] = std::numeric_limits<float>::infinity();
  unscale_gradients(ps, 2.0, found);
  EXPECT_EQ(found.item<float>(), 1.0f);
  ps[2].mutable_grad()[3] = 0;
  ps[0].mutable_grad()[0] = std::nanf("");
  unscale_gradients(ps, 1.0, found);
  EXPECT_EQ(found.item<float>(), 1.0f);
}

TEST(RecipeSetup, VocabularyMismatchNamesBothFilesBeforeAnyOutput) {
  MOR_REQUIRE_TESTDATA();
  const std::string dir = test::scratch_dir("vocab_mismatch"), m = dir + "/model", out = dir + "/out";
  fs::create_directories(m);
  fs::copy_file(model_dir() + "/tokenizer.model", m + "/tokenizer.model");
  fs::copy_file(model_dir() + "/model.safetensors", m + "/model.safetensors");
  auto cfg = nlohmann::json::parse(test::read_file(model_dir() + "/config.json"));
  const int64_t real = cfg["vocab_size"];
  cfg["vocab_size"] = 100;
  test::write_file(m + "/config.json", cfg.dump());
  const std::string msg = test::error_of([&] { open_model_source(m); });
  EXPECT_NE(msg.find(m + "/tokenizer.model"), std::string::npos) << msg;
  EXPECT_NE(msg.find(m + "/config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(real)), std::string::npos) << msg;
  EXPECT_NE(msg.find("100"), std::string::npos) << msg;
  auto r = test::run_mor("train --base_model " + q(m) + " --data_path " + q(hf_data()) + " --output_dir " + q(out) +
                         " --threads 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("mor train: error: the tokenizer " + m + "/tokenizer.model has " + std::to_string(real)),
            std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  for (std::string cmd : {"score --data_path " + q(hf_data()), std::string("generate --prompt hi")}) {
    auto g = test::run_mor(cmd + " --base_model " + q(m) + " --threads 1");
    EXPECT_NE(g.exit_code, 0) << cmd;
    EXPECT_NE(g.err.find("vocab_size 100"), std::string::npos) << cmd << "\n" << g.err;
  }
}

TEST(RecipeSafety, FreshRunKeepsPreviousOutputUnlessOverwrite) {
  MOR_REQUIRE_TESTDATA();
  const std::string out = test::scratch_dir("overwrite");
  auto r1 = test::run_mor(small_train(out) + " --max_steps 2 --save_steps 1 --warmup_steps 0");
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  const std::string adapter = test::read_file(out + "/adapter_model.safetensors");
  auto r2 = test::run_mor(small_train(out) + " --max_steps 2 --save_steps 1 --warmup_steps 0 --seed 7");
  EXPECT_NE(r2.exit_code, 0);
  EXPECT_NE(r2.err.find("--overwrite_output_dir"), std::string::npos) << r2.err;
  EXPECT_NE(r2.err.find("checkpoint-"), std::string::npos) << r2.err;
  EXPECT_EQ(std::count(r2.err.begin(), r2.err.end(), '\n'), 1) << r2.err;
  EXPECT_TRUE(test::read_file(out + "/adapter_model.safetensors") == adapter) << "the first run's adapter was touched";
  auto r3 = test::run_mor(small_train(out) + " --max_steps 1 --save_steps 1 --warmup_steps 0 --seed 7 --overwrite_output_dir");
  ASSERT_EQ(r3.exit_code, 0) << r3.err;
  EXPECT_FALSE(test::read_file(out + "/adapter_model.safetensors") == adapter);
  EXPECT_TRUE(fs::exists(out + "/checkpoint-1"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-2")) << "the previous run's checkpoints are replaced";
}

// Pruning and replacing rename a checkpoint out of the checkpoint-N names before deleting it (a kill
// inside remove_all had left a half-deleted checkpoint-1 that Kill9 found); staging folders a killed
// run left are swept by the next complete save.
TEST(RecipeSafety, CheckpointRotationLeavesOnlyWholeCheckpoints) {
  const std::string out = test::scratch_dir("rotation");
  for (std::string stale : {".tmp-checkpoint-9", ".tmp-delete-checkpoint-2"}) {
    fs::create_directories(out + "/" + stale);
    mor::write_file(out + "/" + stale + "/optimizer.pt", "partial");
  }
  auto contents = [](int64_t step) {
    CheckpointContents c;
    c.write_adapter = [step](const std::string& dir) { mor::write_file(dir + "/adapter_model.bin", std::to_string(step)); };
    c.optimizer = "opt";
    c.rng_states = {"rng"};
    c.trainer_state = {{"global_step", step}};
    c.data_state = c.scheduler = c.training_args = nlohmann::json::object();
    return c;
  };
  for (int64_t step : {1, 2, 3}) save_checkpoint(out, step, contents(step), 2);
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"checkpoint-2", "checkpoint-3"}));
  auto again = contents(3);
  again.write_adapter = [](const std::string& dir) { mor::write_file(dir + "/adapter_model.bin", "replaced"); };
  save_checkpoint(out, 3, again, 2);
  EXPECT_EQ(test::read_file(out + "/checkpoint-3/adapter_model.bin"), "replaced");
  EXPECT_TRUE(is_full_checkpoint(out + "/checkpoint-3"));
  EXPECT_EQ(list_checkpoints(out).size(), 2u);
  try {
    remove_checkpoint(out + "/checkpoint-77");
    ADD_FAILURE() << "no error for a missing checkpoint";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot remove checkpoint " + out + "/checkpoint-77"), std::string::npos)
        << e.what();
  }
}

TEST(RecipeSafety, IncompleteCheckpointIsAnError) {
  MOR_REQUIRE_TESTDATA();
  const std::string out = test::scratch_dir("incomplete");
  auto r1 = test::run_mor(small_train(out) + " --max_steps 2 --save_steps 2 --warmup_steps 0");
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  fs::remove(out + "/checkpoint-2/trainer_state.json");
  for (std::string flag : {q(out + "/checkpoint-2"), std::string("latest")}) {
    auto r = test::run_mor(small_train(out) + " --max_steps 4 --resume_from_checkpoint " + flag);
    EXPECT_NE(r.exit_code, 0) << flag;
    EXPECT_NE(r.err.find("incomplete checkpoint"), std::string::npos) << flag << "\n" << r.err;
  }
  // An adapter folder (no checkpoint files) still starts a fresh run from its weights.
  const std::string out2 = test::scratch_dir("incomplete2");
  auto r = test::run_mor(small_train(out2) + " --max_steps 1 --save_steps 5 --resume_from_checkpoint " + q(out));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("starting a fresh run"), std::string::npos) << r.out;
}

TEST(RecipeSafety, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
  MOR_REQUIRE_TESTDATA();
  const std::string out = test::scratch_dir("nan");
  // An absurd learning rate: step 1 is fine, the parameters then overflow.
  auto r = test::run_mor(small_train(out) + " --max_steps 6 --save_steps 1 --warmup_steps 0 --learning_rate 1e30" +
                         " --max_grad_norm 0 --save_total_limit 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("mor train: error: the training loss is "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the last good checkpoint is " + out + "/checkpoint-1"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(fs::exists(out + "/checkpoint-1/trainer_state.json"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-2"));
  EXPECT_FALSE(fs::exists(out + "/adapter_model.safetensors"));
}

TEST(RecipeSafety, WarmupLongerThanTheRunIsAnnounced) {
  MOR_REQUIRE_TESTDATA();
  const std::string out = test::scratch_dir("warmup");
  auto r = test::run_mor(small_train(out) + " --max_steps 3 --save_steps 10 --warmup_steps 100 --learning_rate 3e-4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Steps 0, 1, 2 use 3e-4 * s / 100: the peak is 6e-06.
  EXPECT_NE(r.err.find("warning: the run has 3 optimizer steps but --warmup_steps is 100"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("peaks at 6e-06"), std::string::npos) << r.err;
  auto quiet = test::run_mor(small_train(test::scratch_dir("warmup2")) + " --max_steps 3 --save_steps 10 --warmup_steps 1");
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err.find("--warmup_steps"), std::string::npos) << quiet.err;
}
