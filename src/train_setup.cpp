// Training inputs checked and prepared before the weights load (see train_setup.h).
#include "train_setup.h"

#include <filesystem>
#include <stdexcept>

#include "dataset.h"
#include "files.h"
#include "runtime.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mor {

namespace {

void check_options(TrainOptions& o, int64_t world) {
  if (o.eval_steps <= 0) o.eval_steps = o.logging_steps;
  auto positive = [](int64_t v, const char* flag) {
    if (v < 1) throw std::runtime_error(std::string("--") + flag + " must be >= 1, got " + std::to_string(v));
  };
  if (o.base_model.empty()) throw std::runtime_error("--base_model is required (a model folder or a Hub id in the local cache)");
  if (o.data_path.empty()) throw std::runtime_error("--data_path is required");
  positive(o.batch_size, "batch_size");
  positive(o.micro_batch_size, "micro_batch_size");
  positive(o.num_epochs, "num_epochs");
  positive(o.logging_steps, "logging_steps");
  positive(o.save_steps, "save_steps");
  positive(o.eval_batch_size, "eval_batch_size");
  if (o.batch_size % o.micro_batch_size != 0)
    throw std::runtime_error("--batch_size " + std::to_string(o.batch_size) + " is not a multiple of --micro_batch_size " +
                             std::to_string(o.micro_batch_size));
  if (world > 1 && o.batch_size % (o.micro_batch_size * world) != 0)
    throw std::runtime_error("--batch_size " + std::to_string(o.batch_size) + " is not a multiple of --micro_batch_size " +
                             std::to_string(o.micro_batch_size) + " x " + std::to_string(world) +
                             " processes (WORLD_SIZE): gradient_accumulation_steps = batch_size / micro_batch_size / "
                             "world_size must be a whole number");
  if (o.cutoff_len < 2) throw std::runtime_error("--cutoff_len must be at least 2, got " + std::to_string(o.cutoff_len));
  if (!(o.learning_rate >= 0)) throw std::runtime_error("--learning_rate must be >= 0");
  if (o.warmup_steps < 0) throw std::runtime_error("--warmup_steps must be >= 0");
  if (o.weight_decay < 0) throw std::runtime_error("--weight_decay must be >= 0");
  if (o.lr_scheduler != "linear") throw std::runtime_error("--lr_scheduler '" + o.lr_scheduler + "': only linear is supported");
  if (o.lora_dropout < 0 || o.lora_dropout >= 1) throw std::runtime_error("--lora_dropout must be in [0, 1)");
  if (!(o.ddp_timeout > 0)) throw std::runtime_error("--ddp_timeout must be > 0 seconds");
  if (o.ddp_backend != "auto" && o.ddp_backend != "gloo" && o.ddp_backend != "nccl")
    throw std::runtime_error("--ddp_backend '" + o.ddp_backend + "': expected auto, gloo or nccl");
  if (fs::exists(o.output_dir) && !fs::is_directory(o.output_dir))
    throw std::runtime_error("--output_dir " + o.output_dir + " exists and is not a folder");
  const torch::Device device = parse_device(o.device);
  (void)parse_dtype(o.dtype, device);
}

// A fresh run must not silently replace a previous run's results (the Trainer's --overwrite_output_dir).
void check_output_dir_free(const TrainOptions& o, const ResumePlan& resume) {
  if (resume.kind == ResumeKind::Full || o.overwrite_output_dir) return;
  std::vector<std::string> found;
  for (auto& [n, path] : list_checkpoints(o.output_dir)) found.push_back(fs::path(path).filename().string());
  for (const char* f : {"adapter_model.safetensors", "adapter_model.bin"})
    if (fs::exists(fs::path(o.output_dir) / f)) found.push_back(f);
  if (found.empty()) return;
  if (found.size() > 3) found.resize(3), found.push_back("...");
  throw std::runtime_error("--output_dir " + o.output_dir + " already holds a previous run (" + join(found) +
                           "): pass --overwrite_output_dir to replace it, or --resume_from_checkpoint latest to continue it");
}

void load_examples(TrainInputs& p) {
  const TrainOptions& o = p.opt;
  DatasetDict dd = load_dataset(o.data_path);
  if (!dd.splits.count("train"))
    throw std::runtime_error("--data_path " + o.data_path + ": no 'train' split (has: " + join(dd.split_names) + ")");
  const Dataset& ds = dd.split("train");
  if (ds.rows.empty()) throw std::runtime_error("--data_path " + o.data_path + ": the train split has no examples");
  for (const char* col : {"instruction", "output"})
    if (!ds.rows.front().is_object() || !ds.rows.front().contains(col))
      throw std::runtime_error("--data_path " + o.data_path + ": no '" + col + "' column (columns: " +
                               join(ds.column_names()) + ")");
  const int64_t n = static_cast<int64_t>(ds.rows.size());
  auto [train_idx, val_idx] = split_train_val(n, o.val_set_size, o.seed);
  PromptTemplate tmpl = PromptTemplate::from_name_or_file(o.prompt_template_name);
  ExampleOptions eo;
  eo.cutoff_len = o.cutoff_len;
  eo.train_on_inputs = o.train_on_inputs;
  eo.add_eos_token = o.add_eos_token;
  auto tokenize_rows = [&](const std::vector<int64_t>& idx, std::vector<TokenizedExample>& out) {
    out.reserve(idx.size());
    for (int64_t i : idx) {
      try {
        out.push_back(tokenize_example(ds.rows[i], p.source.tokenizer, tmpl, eo));
      } catch (const std::exception& e) {
        throw std::runtime_error("--data_path " + o.data_path + ": example " + std::to_string(i) + ": " + e.what());
      }
    }
  };
  tokenize_rows(train_idx, p.train);
  tokenize_rows(val_idx, p.val);
  for (auto& e : p.train) p.train_lengths.push_back(static_cast<int64_t>(e.input_ids.size()));
}

}  // namespace

TrainInputs prepare_training(const TrainOptions& in, int64_t world) {
  TrainInputs p;
  p.opt = in;
  p.world = world;
  TrainOptions& o = p.opt;
  check_options(o, world);
  p.resume = resolve_resume(o.resume_from_checkpoint, o.output_dir);
  check_output_dir_free(o, p.resume);

  // Model config, tokenizer and allocation (no weights yet).
  p.source = open_model_source(o.base_model);
  const ModelConfig& cfg = p.source.cfg;
  if (o.number_experts.empty()) {
    // The reference's default: 2, 4, 6, 8 experts over the four quarters of the layers (its literal
    // 32-value list for LLaMA-2-7B).
    for (int64_t l = 0; l < cfg.n_layer; ++l)
      o.number_experts += (l ? "," : "") + std::to_string(2 * (1 + 4 * l / cfg.n_layer));
  }
  p.alloc = Allocation::from_flags(cfg, o.lora_target_modules, o.number_experts, o.lora_r, o.top_k, o.lora_alpha,
                                   o.lora_dropout);
  o.routing.apply(p.alloc);  // --router, --router_top_p, --router_z_loss (saved in mola_config.json)
  load_examples(p);
  const int64_t accum = o.batch_size / o.micro_batch_size / world;
  p.plan = plan_steps(shard_size(static_cast<int64_t>(p.train.size()), world), o.micro_batch_size, accum);
  p.total_steps = o.max_steps > 0 ? o.max_steps : p.plan.steps_per_epoch * o.num_epochs;
  return p;
}

void validate_train_options(const TrainOptions& opt) { (void)prepare_training(opt); }

json training_args_json(const TrainOptions& o) {
  return json{{"base_model", o.base_model}, {"data_path", o.data_path}, {"output_dir", o.output_dir},
              {"batch_size", o.batch_size}, {"micro_batch_size", o.micro_batch_size}, {"num_epochs", o.num_epochs},
              {"learning_rate", o.learning_rate}, {"cutoff_len", o.cutoff_len}, {"val_set_size", o.val_set_size},
              {"lora_r", o.lora_r}, {"number_experts", o.number_experts}, {"top_k", o.top_k},
              {"lora_alpha", o.lora_alpha}, {"lora_dropout", o.lora_dropout},
              {"lora_target_modules", o.lora_target_modules}, {"train_on_inputs", o.train_on_inputs},
              {"add_eos_token", o.add_eos_token}, {"group_by_length", o.group_by_length}, {"obalance", o.obalance},
              {"prompt_template_name", o.prompt_template_name}, {"warmup_steps", o.warmup_steps},
              {"router", o.routing.router}, {"router_top_p", o.routing.top_p}, {"router_z_loss", o.routing.z_loss},
              {"logging_steps", o.logging_steps}, {"eval_steps", o.eval_steps}, {"save_steps", o.save_steps},
              {"save_total_limit", o.save_total_limit}, {"weight_decay", o.weight_decay},
              {"max_grad_norm", o.max_grad_norm}, {"seed", o.seed}, {"lr_scheduler", o.lr_scheduler},
              {"dtype", o.dtype}, {"max_steps", o.max_steps}, {"eval_batch_size", o.eval_batch_size}};
}

}  // namespace mor
