// Training checkpoints as the Hugging Face Trainer lays them out: output_dir/checkpoint-N with the
// adapter, optimizer.pt, scheduler.json, trainer_state.json (log_history), data_state.json (where the
// data order stands), training_args.json and the RNG state of every rank. A checkpoint is staged in
// .tmp-checkpoint-N and renamed only when complete; on any failure the staging folder goes and the
// previous checkpoints stay intact. Also: which folder --resume_from_checkpoint means, the logs.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "torch_api.h"

namespace mor {

enum class ResumeKind { None, Full, AdapterOnly };
struct ResumePlan {
  ResumeKind kind = ResumeKind::None;
  std::string path;
};
// --resume_from_checkpoint: "" / false / none = fresh; true / latest = newest checkpoint-N in
// output_dir; a checkpoint folder; or a folder with adapter weights only (fresh run from them). A
// checkpoint folder without trainer_state.json, optimizer.pt or data_state.json is an error.
ResumePlan resolve_resume(const std::string& flag, const std::string& output_dir);
bool is_full_checkpoint(const std::string& dir);

// What trainer_state.json records.
struct TrainerState {
  nlohmann::json log_history = nlohmann::json::array();
  int64_t global_step = 0;
  double epoch = 0;
};
nlohmann::json trainer_state_json(const TrainerState& st, int64_t max_steps, int64_t num_epochs);

// output_dir/trainer_state.json and metrics.jsonl (one log entry a line), each written atomically.
void write_logs(const std::string& output_dir, const nlohmann::json& trainer_state);

// Everything one checkpoint holds besides the adapter (written by `write_adapter` into the folder).
struct CheckpointContents {
  std::function<void(const std::string& dir)> write_adapter;
  std::string optimizer;                // torch archive bytes (serialize_optimizer)
  std::vector<std::string> rng_states;  // per rank: torch archive bytes of the CPU generator state
  nlohmann::json trainer_state, data_state, scheduler, training_args;
};
// Writes output_dir/checkpoint-<step> (staged, then renamed; an older one of that step replaced only
// then), sweeps staging folders a killed run left, then keeps the newest save_total_limit (0 = all;
// pruned by remove_checkpoint). Returns the folder. Throws std::runtime_error naming the file that could not be written.
std::string save_checkpoint(const std::string& output_dir, int64_t step, const CheckpointContents& c,
                            int64_t save_total_limit);

struct LoadedCheckpoint {
  nlohmann::json trainer_state, data_state;
  std::vector<torch::Tensor> rng_states;  // per rank that saved one (rng_state.pt or rng_state_<r>.pt)
};
// trainer_state.json and data_state.json alone (no optimizer, no RNG states), as read; parse_resume_state
// checks them.
LoadedCheckpoint read_checkpoint_state(const std::string& dir);
// Reads a checkpoint folder's state files and loads optimizer.pt into `optimizer`.
LoadedCheckpoint load_checkpoint(const std::string& dir, torch::optim::Optimizer& optimizer);

// What a resume takes from trainer_state.json and data_state.json, every field type- and range-checked:
// an error names the file and the key. A data_state key that is absent keeps `fallback`'s value (older
// checkpoints lack world_size/batch_size; batch_size then is accum x micro_batch_size x world_size).
struct ResumeState {
  nlohmann::json log_history = nlohmann::json::array();  // of objects
  int64_t global_step = 0;
  double epoch = 0;
  int64_t world_size = 1, batch_size = 0, accum = 1, micro_batch_size = 1, n_train = 0, seed = 0, good_steps = 0;
  bool group_by_length = false;
  double loss_scale = 1;
};
ResumeState parse_resume_state(const LoadedCheckpoint& ck, const std::string& dir, const ResumeState& fallback);

// In-memory torch archives, so a failed write is a checked write of bytes (files.h), never a
// c10::Error from a half-written archive.
std::string serialize_optimizer(const torch::optim::Optimizer& optimizer);
std::string serialize_tensor(const torch::Tensor& t);

// Removes a checkpoint folder so that a kill at any moment leaves it whole or gone: renamed to a
// .tmp-delete-<name> sibling first (never listed), then deleted. Throws if the rename fails.
void remove_checkpoint(const std::string& dir);

// output_dir/checkpoint-N folders, sorted by N.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir);

nlohmann::json read_json_file(const std::string& path);

}  // namespace mor
