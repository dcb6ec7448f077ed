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
#include "router_stats.h"
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
  bool overwrite_output_dir = false;  // a fresh run may replace output_dir's checkpoints and adapter
  // Data parallel (only when launched by torchrun: RANK, WORLD_SIZE, ... in the environment).
  std::string ddp_backend = "auto";  // auto (nccl on CUDA, else gloo) | gloo | nccl
  double ddp_timeout = 1800;         // seconds a collective may wait for the other ranks
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

// Examples of one rank under data parallelism: ceil(n / world) (the epoch order is padded by wrapping
// around, as torch's DistributedSampler with drop_last false); n itself with one process.
int64_t shard_size(int64_t n, int64_t world);

// Which examples each micro-batch of an epoch holds, for one rank: rank r of `world` takes order[r],
// order[r + world], ... of the (padded) epoch order, then cuts its share into micro-batches of
// micro_batch_size (the last may be short); optimizer step s of the epoch takes micro-batches
// s * plan.micro_per_step ... With world 1 that is the epoch order cut into micro-batches.
class MicroBatchSampler {
 public:
  MicroBatchSampler() = default;
  MicroBatchSampler(const std::vector<int64_t>& epoch_order, const StepPlan& plan, int64_t micro_batch_size,
                    int64_t rank, int64_t world);
  // Example indices of micro-batch m (0 <= m < plan.micro_per_step) of step `step_in_epoch`.
  std::vector<int64_t> batch(int64_t step_in_epoch, int64_t m) const;
  const std::vector<int64_t>& shard() const { return shard_; }

 private:
  std::vector<int64_t> shard_;
  StepPlan plan_;
  int64_t micro_batch_size_ = 1;
};

// Checks every option and input before any heavy work (files, sizes, allocation against config.json);
// throws naming the flag or file.
void validate_train_options(const TrainOptions& opt);

// Mean loss over `examples` in batches of `batch_size` (in order) as the Trainer's evaluation loop
// reports it (each batch's loss weighted by its number of examples), dropout off, no gradients.
double evaluate_loss(LlamaForCausalLM& model, const std::vector<TokenizedExample>& examples, int64_t batch_size,
                     bool obalance);

// The tensors of trainable_params(model) (what the optimizer steps), in order.
std::vector<torch::Tensor> param_tensors(const std::vector<std::pair<std::string, torch::Tensor>>& named);

// ---- one training step (the loop, the benchmark and the tests all call these) ----

struct TrainStepOptions {
  double loss_divisor = 1;  // gradient_accumulation_steps: backward sees loss / loss_divisor
  double loss_scale = 1;    // float16 dynamic loss scale (1 otherwise)
  bool obalance = false;
  bool gradient_checkpointing = false;
  RouterStatsLog* router_stats = nullptr;  // when set, the micro-batch's router statistics (device ops only)
};
// What train_step returns: detached, on the model's device (no host sync).
struct StepResult {
  torch::Tensor loss;  // float32 scalar, the micro-batch's loss (ce + 0.001 aux with obalance), unscaled
  torch::Tensor aux;   // float32 scalar, the balance loss (0 without adapters)
  torch::Tensor z;     // float32 scalar, the weighted router z-loss; undefined when every z_loss is 0
  int64_t tokens = 0;  // real (unpadded) tokens of the micro-batch
};
// One micro-batch: collate -> forward (optionally gradient-checkpointed) -> loss -> backward of
// loss / loss_divisor * loss_scale; gradients accumulate into the parameters' .grad.
StepResult train_step(LlamaForCausalLM& model, const std::vector<const TokenizedExample*>& batch,
                      const TrainStepOptions& opt);

// Gradient clipping without a host sync: the global 2-norm of all gradients (as
// torch::nn::utils::clip_grad_norm_ computes it: the norm of the per-tensor norms), and when
// max_norm > 0 every gradient times min(1, max_norm / (norm + 1e-6)). Returns the norm (a scalar on
// the gradients' device; float64 when max_norm <= 0, where nothing is clipped).
torch::Tensor clip_gradients(const std::vector<torch::Tensor>& params, double max_norm);

// float16 loss scaling: divides every gradient by `scale` and reports in `found_inf` (a float32
// scalar on the device, 1 = some gradient is inf/nan) with one fused check over all of them.
void unscale_gradients(const std::vector<torch::Tensor>& params, double scale, torch::Tensor& found_inf);

// Newest checkpoint-N folder in dir ("" when none).
std::string latest_checkpoint(const std::string& dir);

}  // namespace mor
