// `mor train` as a recipe (in the spirit of torchtune's): a Trainer that sets up once (inputs checked,
// data-parallel group joined, model + adapters + optimizer, resume) and then runs a loop that reads
// top to bottom: micro-batches through train_step, gradients averaged across ranks, one optimizer
// step (clip, float16 scaler, AdamW, schedule), then log / evaluate / checkpoint when due. Losses stay
// on the device between log lines; only rank 0 writes files.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "torch_api.h"

#include "checkpoint.h"
#include "ddp.h"
#include "open_model.h"
#include "train_setup.h"
#include "trainer.h"

namespace mor {

class Trainer {
 public:
  explicit Trainer(TrainOptions opt) : requested_(std::move(opt)) {}
  // Checks every input (before any weights load or output folder exists), joins the data-parallel
  // group when launched by torchrun, builds model, adapters and optimizer, and resumes when asked.
  void setup();
  // The loop; returns the exit code (0 done, 128 + signal when stopped by SIGINT/SIGTERM after a checkpoint).
  int train();

 private:
  // set-up
  void join_group();
  void build_model();
  void print_plan() const;
  void warn_if_warmup_only() const;
  void prepare_output_dir();
  // one optimizer step
  void accumulate_gradients();
  StepResult train_step(const std::vector<int64_t>& example_indices);
  void reduce_gradients();
  void optimizer_step();
  // after a step
  void maybe_log();
  void maybe_eval();
  void maybe_save();
  bool stop_requested();
  int stop_after_signal();
  void finish();
  // checkpoints
  void save_checkpoint();
  void load_checkpoint();
  // helpers
  torch::Tensor global_log_values(bool reset);
  void check_finite(double loss, const char* what) const;
  void emit(const std::string& line) const;
  void progress_bar() const;
  double lr_at(int64_t step) const;
  bool is_main() const { return dist_.is_main(); }

  TrainOptions requested_;
  TrainInputs in_;
  DdpEnv env_;
  Distributed dist_;
  OpenedModel opened_;
  LlamaForCausalLM model_{nullptr};
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  TrainerState st_;
  std::string out_;
  bool fp16_ = false, tty_ = false;
  double loss_scale_ = 65536.0;  // float16 only: dynamic loss scaling
  int64_t good_steps_ = 0;
  int64_t resumed_world_ = 0;  // world size of the checkpoint resumed from (0 = fresh run)

  MicroBatchSampler sampler_;
  int64_t sampler_epoch_ = -1;
  int64_t start_step_ = 0, last_saved_ = -1;
  // Accumulated on the device between log lines (float64 scalars); host counters beside them.
  torch::Tensor step_loss_, step_aux_, log_loss_, log_aux_, grad_norm_;
  torch::Tensor step_z_, log_z_;  // router z-loss, when any module has z_loss > 0
  bool any_z_ = false;
  std::unique_ptr<RouterStatsLog> router_log_;  // rank 0: output_dir/router_stats.jsonl
  int64_t step_tokens_ = 0, log_tokens_ = 0, log_steps_ = 0;
  double log_seconds_ = 0, step_seconds_ = 0, allreduce_seconds_ = 0, last_loss_ = 0;
  std::chrono::steady_clock::time_point t_start_, t_step_;
};

// Seed of the dropout stream for optimizer step `step` on rank `rank` (rank 0: the one-process stream).
uint64_t dropout_seed(uint64_t seed, int64_t step, int64_t rank);

}  // namespace mor
