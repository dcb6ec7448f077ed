// mor train: the reference MoLA training recipe (mola_training.py + the Hugging Face Trainer), see
// src/trainer.h. Flags keep the Python names (and dashed spellings) and the reference's defaults.
#include "cli.h"
#include "commands.h"
#include "routing_cli.h"
#include "trainer.h"
#include "recipe.h"

int mor::cmd_train(int argc, char** argv) {
  TrainOptions o;
  std::string resume;
  return run_command(
      "train", "Fine-tune a LLaMA model with MoLA adapters (the reference training recipe)", argc, argv,
      [&](CLI::App& app) {
        add_opt(app, "base_model", o.base_model, "model folder (config.json, model.safetensors, tokenizer.model) or Hub id in the local cache");
        add_opt(app, "data_path", o.data_path, "dataset: save_to_disk folder (.hf), .json/.jsonl, .parquet file or folder, or Hub dataset id (read from the HF caches)");
        add_opt(app, "output_dir", o.output_dir, "where checkpoints, logs and the final adapter go");
        add_opt(app, "batch_size", o.batch_size, "examples per optimizer step");
        add_opt(app, "micro_batch_size", o.micro_batch_size, "examples per forward/backward");
        add_opt(app, "num_epochs", o.num_epochs, "epochs");
        add_opt(app, "learning_rate", o.learning_rate, "peak learning rate");
        add_opt(app, "cutoff_len", o.cutoff_len, "tokens per example at most");
        add_opt(app, "val_set_size", o.val_set_size, "validation examples: count (>= 1), fraction (< 1) or 0");
        add_opt(app, "lora_r", o.lora_r, "LoRA rank: per-layer list, one int, or JSON file");
        add_opt(app, "lora_alpha", o.lora_alpha, "LoRA alpha");
        add_opt(app, "lora_dropout", o.lora_dropout, "LoRA dropout");
        add_opt(app, "lora_target_modules", o.lora_target_modules, "comma list of target modules");
        add_opt(app, "number_experts", o.number_experts, "experts: per-layer list, one int, or JSON file");
        add_opt(app, "top_k", o.top_k, "router top-k: per-layer list, one int, or JSON file");
        add_bool(app, "train_on_inputs", o.train_on_inputs, "train on the prompt too (else mask it)");
        add_bool(app, "add_eos_token", o.add_eos_token, "append EOS when there is room");
        add_bool(app, "group_by_length", o.group_by_length, "batch examples of similar length");
        add_bool(app, "obalance", o.obalance, "add 0.001 x the router balance loss");
        add_opt(app, "prompt_template_name", o.prompt_template_name, "alpaca, none, or a template JSON file");
        add_opt(app, "resume_from_checkpoint", o.resume_from_checkpoint,
                "checkpoint folder, true/latest (newest in output_dir), or a folder with adapter weights only");
        add_opt(app, "warmup_steps", o.warmup_steps, "linear warm-up steps");
        add_opt(app, "logging_steps", o.logging_steps, "log every N optimizer steps");
        add_opt(app, "eval_steps", o.eval_steps, "validation every N steps (0 = logging_steps)");
        add_opt(app, "save_steps", o.save_steps, "checkpoint every N steps");
        add_opt(app, "save_total_limit", o.save_total_limit, "checkpoints kept (0 = all)");
        add_opt(app, "eval_batch_size", o.eval_batch_size, "examples per validation batch");
        add_opt(app, "weight_decay", o.weight_decay, "AdamW decoupled weight decay");
        add_opt(app, "max_grad_norm", o.max_grad_norm, "clip gradients to this global norm (0 = no clipping)");
        add_opt(app, "max_steps", o.max_steps, "stop after N optimizer steps (overrides num_epochs when > 0)");
        add_opt(app, "seed", o.seed, "seed for adapters, split, order and dropout");
        add_opt(app, "lr_scheduler", o.lr_scheduler, "learning-rate schedule (linear)");
        add_opt(app, "dtype", o.dtype, "frozen base dtype: auto (bfloat16 where fast), bfloat16, float32, float16 (CUDA)");
        add_opt(app, "device", o.device, "cpu, cuda, cuda:N");
        add_opt(app, "threads", o.threads, "CPU threads (0 = all cores)");
        add_bool(app, "gradient_checkpointing", o.gradient_checkpointing, "recompute decoder layers in backward");
        add_routing_flags(app, o.routing);
        add_bool(app, "report", o.report, "write output_dir/report.html (mor report) at the end");
        add_bool(app, "overwrite_output_dir", o.overwrite_output_dir,
                 "let a fresh run replace the checkpoints and adapter already in --output_dir");
        add_opt(app, "ddp_backend", o.ddp_backend, "data parallel under torchrun: auto (nccl on CUDA, else gloo), gloo, nccl");
        add_opt(app, "ddp_timeout", o.ddp_timeout, "data parallel: seconds a rank waits for the others before failing");
        // Accepted for command-line compatibility with the reference script; mor does not report to wandb.
        static std::string wandb_project, wandb_run_name, wandb_watch, wandb_log_model;
        add_opt(app, "wandb_project", wandb_project, "ignored (compatibility)");
        add_opt(app, "wandb_run_name", wandb_run_name, "ignored (compatibility)");
        add_opt(app, "wandb_watch", wandb_watch, "ignored (compatibility)");
        add_opt(app, "wandb_log_model", wandb_log_model, "ignored (compatibility)");
      },
      [&]() {
        Trainer trainer(o);
        trainer.setup();
        return trainer.train();
      });
}
