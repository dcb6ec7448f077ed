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

// ---- the whole recipe on stories260K ---------------------------------------------------------------
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "adapter.h"
#include "allocation.h"
#include "dataset.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string model_dir() { return test::testdata_dir() + "/stories260K"; }
std::string hf_data() { return test::testdata_dir() + "/sampled_scienceqa_train_all.hf"; }
using mor::test::q;

// Five layers, different experts, ranks and top-k per layer.
const char* kAlloc = " --lora_r 4,8,2,6,4 --number_experts 2,4,3,1,5 --top_k 1,2,3,1,2 --lora_alpha 16";

json state_of(const std::string& dir) { return json::parse(test::read_file(dir + "/trainer_state.json")); }

std::vector<double> series(const json& st, const char* key) {
  std::vector<double> v;
  for (const auto& e : st["log_history"])
    if (e.contains(key)) v.push_back(e[key].get<double>());
  return v;
}

Allocation test_alloc(const ModelConfig& cfg, const std::string& r, const std::string& e, const std::string& k,
                      double dropout) {
  return Allocation::from_flags(cfg, "q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj", e, r, k, 16, dropout);
}

std::map<std::string, torch::Tensor> adapter_tensors(LlamaForCausalLM& m) {
  std::map<std::string, torch::Tensor> out;
  for (auto& p : m->named_parameters())
    if (p.value().requires_grad()) out[p.key()] = p.value().detach().clone();
  return out;
}

}  // namespace

TEST(TrainRecipe, LossFallsValLoggedCheckpointsRotateAdapterReloads) {
  MOR_REQUIRE_TESTDATA();
  const std::string out = test::scratch_dir("recipe");
  auto r = test::run_mor("train --base_model " + q(model_dir()) + " --data_path " + q(hf_data()) + " --output_dir " +
                         q(out) + " --batch_size 8 --micro_batch_size 4 --num_epochs 3 --learning_rate 1e-2" +
                         " --cutoff_len 96 --val_set_size 20 --warmup_steps 10 --logging_steps 11 --eval_steps 22" +
                         " --save_steps 20 --save_total_limit 2 --obalance --dtype float32 --threads 2" + kAlloc);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // 180 training rows / 4 = 45 micro-batches, accumulation 2: 22 steps per epoch, 1 dropped, 66 in all.
  EXPECT_NE(r.out.find("66 in all"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dropped"), std::string::npos) << r.out;
  json st = state_of(out);
  EXPECT_EQ(st["global_step"], 66);
  auto loss = series(st, "loss"), eval = series(st, "eval_loss");
  ASSERT_EQ(loss.size(), 6u);
  ASSERT_EQ(eval.size(), 3u);
  EXPECT_LT(loss.back(), 0.4 * loss.front()) << "first " << loss.front() << " last " << loss.back();
  EXPECT_LT(eval.back(), eval.front());
  EXPECT_LT(eval.back(), 0.5 * loss.front());
  for (const auto& e : st["log_history"])
    if (e.contains("loss")) {
      EXPECT_TRUE(e.contains("learning_rate") && e.contains("epoch") && e.contains("step") && e.contains("grad_norm") &&
                  e.contains("aux_loss") && e.contains("tokens_per_second"));
      EXPECT_GT(e["aux_loss"].get<double>(), 0.0);
    }
  // metrics.jsonl: one line per log entry
  std::ifstream mf(out + "/metrics.jsonl");
  size_t lines = 0;
  for (std::string l; std::getline(mf, l);) ++lines;
  EXPECT_EQ(lines, st["log_history"].size());
  // rotation: checkpoints at 20, 40, 60; the newest two kept; no temporary folders left
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename().string());
  EXPECT_TRUE(fs::exists(out + "/checkpoint-40/optimizer.pt"));
  EXPECT_TRUE(fs::exists(out + "/checkpoint-60/trainer_state.json"));
  EXPECT_TRUE(fs::exists(out + "/checkpoint-60/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-20"));
  for (auto& n : names) EXPECT_EQ(n.find(".tmp"), std::string::npos) << n;
  EXPECT_TRUE(fs::exists(out + "/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/adapter_config.json"));

  // The final adapter reproduces the last validation loss (step 66 is an eval step).
  torch::set_num_threads(2);
  auto model = load_llama(model_dir(), torch::kFloat32, torch::kCPU);
  ModelConfig cfg = model->cfg;
  attach_adapters(model, test_alloc(cfg, "4,8,2,6,4", "2,4,3,1,5", "1,2,3,1,2", 0.05), 7);
  load_adapter(model, out);
  DatasetDict dd = load_dataset(hf_data());
  const auto& rows = dd.split("train").rows;
  auto split = split_train_val(static_cast<int64_t>(rows.size()), 20, 42);
  auto tok = Tokenizer::load(model_dir());
  ExampleOptions eo;
  eo.cutoff_len = 96;
  std::vector<TokenizedExample> val;
  for (auto i : split.second) val.push_back(tokenize_example(rows[i], tok, PromptTemplate::alpaca(), eo));
  double vl = evaluate_loss(model, val, 8, true);
  EXPECT_NEAR(vl, eval.back(), 1e-6);
}

namespace {
std::string resume_args(const std::string& out) {
  return "train --base_model " + q(model_dir()) + " --data_path " + q(hf_data()) + " --output_dir " + q(out) +
         " --batch_size 4 --micro_batch_size 2 --num_epochs 1 --max_steps 16 --learning_rate 5e-3 --cutoff_len 48" +
         " --val_set_size 8 --warmup_steps 3 --logging_steps 1 --eval_steps 8 --save_steps 6 --save_total_limit 0" +
         " --group_by_length --obalance --dtype float32 --threads 2" + kAlloc;
}
}  // namespace

TEST(TrainResume, BitIdenticalFromCheckpointAndAfterSigterm) {
  MOR_REQUIRE_TESTDATA();
  const std::string a = test::scratch_dir("resume_a"), b = test::scratch_dir("resume_b"), c = test::scratch_dir("resume_c");
  auto ra = test::run_mor(resume_args(a));
  ASSERT_EQ(ra.exit_code, 0) << ra.err;
  const std::string want = test::read_file(a + "/adapter_model.safetensors");

  // Stopped after checkpoint-6 (its copy is all that run b has), resumed.
  fs::copy(a + "/checkpoint-6", b + "/checkpoint-6", fs::copy_options::recursive);
  auto rb = test::run_mor(resume_args(b) + " --resume_from_checkpoint " + q(b + "/checkpoint-6"));
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_NE(rb.out.find("resuming from"), std::string::npos) << rb.out;
  EXPECT_TRUE(test::read_file(b + "/adapter_model.safetensors") == want) << "resumed adapter differs";
  EXPECT_EQ(series(state_of(b), "loss"), series(state_of(a), "loss"));
  EXPECT_EQ(series(state_of(b), "eval_loss"), series(state_of(a), "eval_loss"));

  // SIGTERM in the middle: finishes the step, writes a checkpoint, exits non-zero with how to resume.
  const std::string err_path = c + "/../resume_c.stderr";
  pid_t pid = fork();
  if (pid == 0) {
    std::string cmd = std::string(MOR_BINARY) + " " + resume_args(c) + " >/dev/null 2>" + err_path + " </dev/null";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  bool seen = false;
  for (int i = 0; i < 4000 && !seen; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::ifstream f(c + "/metrics.jsonl");
    std::string l;
    seen = static_cast<bool>(std::getline(f, l));
  }
  ASSERT_TRUE(seen);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  std::string err = test::read_file(err_path);
  EXPECT_NE(err.find("SIGTERM"), std::string::npos) << err;
  EXPECT_NE(err.find("--resume_from_checkpoint"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(c + "/adapter_model.safetensors"));
  auto rc = test::run_mor(resume_args(c) + " --resume_from_checkpoint latest");
  ASSERT_EQ(rc.exit_code, 0) << rc.err;
  EXPECT_TRUE(test::read_file(c + "/adapter_model.safetensors") == want) << "adapter after SIGTERM + resume differs";
}

TEST(TrainRecipe, ThreeStepsMatchHandComputation) {
  MOR_REQUIRE_TESTDATA();
  const std::string dir = test::scratch_dir("hand"), out = dir + "/out";
  json rows = json::array();
  rows.push_back({{"instruction", "Name a color of the sky."}, {"input", ""}, {"output", "Blue."}});
  rows.push_back({{"instruction", "Add the numbers."}, {"input", "2 and 3"}, {"output", "The sum is 5, said Tim."}});
  test::write_file(dir + "/two.json", rows.dump());
  const double lr = 1e-2, wd = 0.1, max_norm = 0.05;
  auto r = test::run_mor("train --base_model " + q(model_dir()) + " --data_path " + q(dir + "/two.json") +
                         " --output_dir " + q(out) + " --batch_size 2 --micro_batch_size 1 --num_epochs 3" +
                         " --learning_rate 0.01 --weight_decay 0.1 --max_grad_norm 0.05 --warmup_steps 1" +
                         " --val_set_size 0 --logging_steps 1 --save_steps 100 --lora_dropout 0 --obalance" +
                         " --train_on_inputs false --dtype float32 --threads 2" + kAlloc);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  json st = state_of(out);

  torch::set_num_threads(2);
  auto model = load_llama(model_dir(), torch::kFloat32, torch::kCPU);
  auto alloc = test_alloc(model->cfg, "4,8,2,6,4", "2,4,3,1,5", "1,2,3,1,2", 0.0);
  attach_adapters(model, alloc, 42);
  auto params = param_tensors(trainable_params(model));
  auto tok = Tokenizer::load(model_dir());
  ExampleOptions eo;
  eo.train_on_inputs = false;
  std::vector<TokenizedExample> ex;
  for (auto& row : rows) ex.push_back(tokenize_example(Row::parse(row.dump()), tok, PromptTemplate::alpaca(), eo));
  std::vector<torch::Tensor> m, v;
  for (auto& p : params) {
    m.push_back(torch::zeros_like(p, torch::kFloat64));
    v.push_back(torch::zeros_like(p, torch::kFloat64));
  }
  model->train();
  std::vector<double> want_norm, want_loss;
  for (int s = 0; s < 3; ++s) {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    double step_loss = 0;
    TrainStepOptions so;  // the recipe's own step (tested against a direct computation in TrainStep.*)
    so.loss_divisor = 2.0;
    so.obalance = true;
    for (auto& e : ex) step_loss += train_step(model, {&e}, so).loss.item<double>() / 2.0;
    double sq = 0;
    for (auto& p : params) sq += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
    const double norm = std::sqrt(sq), coef = std::min(1.0, max_norm / (norm + 1e-6));
    want_norm.push_back(norm);
    want_loss.push_back(step_loss);
    const double lr_s = lr * (s < 1 ? 0.0 : (3.0 - s) / 2.0), t = s + 1;
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) {
      auto g = params[i].grad().to(torch::kFloat64) * coef;
      auto p64 = params[i].to(torch::kFloat64) * (1 - lr_s * wd);
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.999 * v[i] + 0.001 * g * g;
      auto mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.999, t));
      p64 = p64 - lr_s * mhat / (vhat.sqrt() + 1e-8);
      params[i].copy_(p64.to(torch::kFloat32));
    }
  }
  auto hand = adapter_tensors(model);
  // logged values
  std::vector<double> got_norm, got_lr, got_loss;
  for (const auto& e : st["log_history"])
    if (e.contains("loss")) {
      got_norm.push_back(e["grad_norm"]);
      got_lr.push_back(e["learning_rate"]);
      got_loss.push_back(e["loss"]);
    }
  ASSERT_EQ(got_norm.size(), 3u);
  const double want_lr[] = {1e-2, 5e-3, 0.0};  // the Trainer logs the rate after its scheduler step
  for (int s = 0; s < 3; ++s) {
    EXPECT_NEAR(got_norm[s], want_norm[s], 1e-4 * want_norm[s]) << s;
    EXPECT_GT(want_norm[s], max_norm) << "clipping must be active in this test";
    EXPECT_NEAR(got_lr[s], want_lr[s], 1e-12) << s;
    EXPECT_NEAR(got_loss[s], want_loss[s], 6e-5) << s;
  }
  // trained adapter = hand-computed one
  auto model2 = load_llama(model_dir(), torch::kFloat32, torch::kCPU);
  attach_adapters(model2, alloc, 1);
  load_adapter(model2, out, &alloc);
  auto trained = adapter_tensors(model2);
  ASSERT_EQ(trained.size(), hand.size());
  double max_diff = 0;
  for (auto& [k, t] : hand) max_diff = std::max(max_diff, (trained.at(k) - t).abs().max().item<double>());
  // float32 training vs this float64 computation: Adam divides by sqrt(v) + 1e-8, so float32 rounding of
  // near-zero gradients shows up at ~1e-3 of one lr-sized update.
  EXPECT_LT(max_diff, 3e-5);
  // and the adapter moved away from its initialisation
  auto model3 = load_llama(model_dir(), torch::kFloat32, torch::kCPU);
  attach_adapters(model3, alloc, 42);
  double moved = 0;
  for (auto& [k, t] : adapter_tensors(model3)) moved = std::max(moved, (trained.at(k) - t).abs().max().item<double>());
  EXPECT_GT(moved, 1e-3);
}

TEST(TrainErrors, BadInputsClearMessagesNoOutput) {
  MOR_REQUIRE_TESTDATA();
  const std::string dir = test::scratch_dir("bad");
  test::write_file(dir + "/empty.json", "[]");
  test::write_file(dir + "/nocol.json", R"([{"question": "q", "output": "o"}])");
  test::write_file(dir + "/noout.json", R"([{"instruction": "q", "input": ""}])");
  test::write_file(dir + "/afile", "x");
  fs::create_directories(dir + "/emptyckpt");
  const std::string base = "train --base_model " + q(model_dir()) + " --threads 1 --data_path ";
  const std::string good = base + q(hf_data());
  struct Case { std::string args, expect; };
  const std::string out = dir + "/out";
  std::vector<Case> cases = {
      {good + " --output_dir " + q(out) + " --batch_size 10 --micro_batch_size 4", "not a multiple of --micro_batch_size"},
      {base + q(dir + "/empty.json") + " --output_dir " + q(out), "no examples"},
      {base + q(dir + "/nocol.json") + " --output_dir " + q(out) + " --val_set_size 0", "'instruction'"},
      {base + q(dir + "/noout.json") + " --output_dir " + q(out) + " --val_set_size 0", "'output'"},
      {good + " --output_dir " + q(out) + " --cutoff_len 1", "--cutoff_len"},
      {good + " --output_dir " + q(dir + "/afile"), "not a folder"},
      {good + " --output_dir " + q(out) + " --resume_from_checkpoint " + q(dir + "/emptyckpt"), "no checkpoint"},
      {good + " --output_dir " + q(out) + " --resume_from_checkpoint " + q(dir + "/missing"), "no such folder"},
      {good + " --output_dir " + q(out) + " --resume_from_checkpoint latest", "no checkpoint-"},
      {good + " --output_dir " + q(out) + " --number_experts 2,2", "number_experts"},
      {good + " --output_dir " + q(out) + " --number_experts 2 --top_k 3", "top_k"},
      {good + " --output_dir " + q(out) + " --lora_target_modules q_proj,foo_proj", "foo_proj"},
      {good + " --output_dir " + q(out) + " --val_set_size 500", "--val_set_size"},
      {good + " --output_dir " + q(out) + " --dtype float16", "float16"},
  };
  for (const auto& c : cases) {
    auto r = test::run_mor(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find("mor train: error:"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line expected:\n" << r.err;
    EXPECT_FALSE(fs::exists(out)) << "output written for " << c.args;
  }
}
