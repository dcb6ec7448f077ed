// `mor train`: the reference training recipe (Hugging Face Trainer loop semantics as the MoLA scripts
// use it): options with the reference's defaults, train/val split, per-epoch seeded order (optionally
// length-grouped), gradient accumulation, clipping, AdamW with linear warm-up/decay, logs
// (trainer_state.json log_history, metrics.jsonl), rotating checkpoints, exact resume, SIGINT/SIGTERM.
// The small pure pieces (schedule, orders, split, step plan) are exposed for tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "examples.h"
#include "llama.h"
#include "routing.h"

namespace mor {

struct TrainOptions {
  std::string base_model;
  std::string data_path;
  std::string output_dir = "./lora-alpaca";
  int64_t batch_size = 128, micro_batch_size = 8, num_epochs = 1;
  double learning_rate = 3e-4;
  int64_t cutoff_len = 256;
  double val_set_size = 2;
  // Per-layer lists, single ints, or JSON files. number_experts "" = the reference's default: 2, 4, 6, 8
  // experts over the four quarters of the layers.
  std::string lora_r = "8", number_experts, top_k = "2";
  double lora_alpha = 16, lora_dropout = 0.05;
  std::string lora_target_modules = "q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj";
  bool train_on_inputs = true, add_eos_token = true, group_by_length = false, obalance = false;
  std::string prompt_template_name = "alpaca";
  std::string resume_from_checkpoint;  // "" | PATH | true | latest
  int64_t warmup_steps = 100, logging_steps = 10, eval_steps = 0 /* 0 = logging_steps */, save_steps = 200,
          save_total_limit = 3;
  int64_t eval_batch_size = 8;  // the Trainer's per_device_eval_batch_size default
  double weight_decay = 0.0, max_grad_norm = 1.0;
  uint64_t seed = 42;
  std::string lr_scheduler = "linear";
  std::string dtype = "auto", device = "cpu";
  int threads = 0;
  bool gradient_checkpointing = false;
  int64_t max_steps = -1;  // > 0 overrides num_epochs (as TrainingArguments.max_steps)
  RoutingFlags routing;     // --router, --router_top_p, --router_z_loss (per layer, into mola_config.json)
  bool report = false;      // write output_dir/report.html at the end (mor report)
};

// Learning-rate factor for optimizer step s (from 0): s/warmup while s < warmup, else
// (total - s)/(total - warmup), clamped at 0 (transformers' get_linear_schedule_with_warmup).
double lr_factor(int64_t step, int64_t warmup, int64_t total);

// A permutation of 0..n-1 from a 64-bit seed (Fisher-Yates on splitmix64; same on every platform).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

// Validation split: val_set_size >= 1 is a count, in (0,1) a fraction (rounded up, as datasets'
// train_test_split), 0 none. Returns (train indices, val indices) after a seeded shuffle.
std::pair<std::vector<int64_t>, std::vector<int64_t>> split_train_val(int64_t n, double val_set_size, uint64_t seed);

// transformers' get_length_grouped_indices: megabatches of min(n / (4 mb), 50) (at least 1) micro-batches
// taken from `perm`, each sorted by length (descending, stable), the longest example moved to the front.
std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& perm, const std::vector<int64_t>& lengths,
                                          int64_t micro_batch_size);

// The example order of an epoch (seeded by seed and epoch; grouped by length when asked).
std::vector<int64_t> epoch_order(int64_t epoch, uint64_t seed, const std::vector<int64_t>& lengths,
                                 int64_t micro_batch_size, bool group_by_length);

// How an epoch's micro-batches become optimizer steps.
struct StepPlan {
  int64_t n_micro = 0;          // micro-batches per epoch (last may be short)
  int64_t accum = 1;            // gradient_accumulation_steps
  int64_t steps_per_epoch = 1;  // max(1, n_micro / accum)
  int64_t micro_per_step = 1;   // micro-batches per optimizer step (n_micro when n_micro < accum)
  int64_t dropped = 0;          // leftover micro-batches per epoch (not computed)
};
StepPlan plan_steps(int64_t n_train, int64_t micro_batch_size, int64_t accum);

// Checks every option and input before any heavy work (files, sizes, allocation against config.json);
// throws naming the flag or file.
void validate_train_options(const TrainOptions& opt);

// Mean loss over `examples` in batches of `batch_size` (in order) as the Trainer's evaluation loop
// reports it (each batch's loss weighted by its number of examples), dropout off, no gradients.
double evaluate_loss(LlamaForCausalLM& model, const std::vector<TokenizedExample>& examples, int64_t batch_size,
                     bool obalance);

// The tensors of trainable_params(model) (what the optimizer steps), in order.
std::vector<torch::Tensor> param_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& named);

// Runs the whole recipe; returns the process exit code (0 done, 130/143 interrupted after a checkpoint).
int run_training(const TrainOptions& opt);

// Newest checkpoint-N folder in dir ("" when none).
std::string latest_checkpoint(const std::string& dir);

}  // namespace mor
