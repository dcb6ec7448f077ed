// mor eval-scienceqa: the reference evaluation_scienceqa.py, flag for flag (see src/evaluate.h).
#include <cstdio>
#include <iostream>

#include "cli.h"
#include "commands.h"
#include "evaluate.h"
#include "routing_cli.h"

int mor::cmd_eval_scienceqa(int argc, char** argv) {
  EvalOptions o;
  return run_command(
      "eval-scienceqa", "Batched greedy generation on a ScienceQA test set, answer extraction, accuracy JSON.", argc,
      argv,
      [&](CLI::App& app) {
        add_opt(app, "test_dataset", o.test_dataset, "JSON list, .jsonl, .hf, .parquet or Hub dataset id (HF caches) with instruction, input, answer");
        add_opt(app, "base_model", o.base_model, "model directory (Hugging Face layout) or Hub id in the local cache");
        add_opt(app, "mola_weights", o.mola_weights, "adapter folder (ours or the reference's adapter_model.bin)");
        add_opt(app, "save_path", o.save_path, "result file (written every --save_every examples and at the end)");
        add_allocation_flags(app, o.allocation);  // optional; must agree with the adapter folder
        add_routing_flags(app, o.routing);        // optional; overrides the recorded routing
        add_bool(app, "router_stats", o.router_stats,
                 "record router statistics (prompt tokens) per subject/grade/category in the result's router_stats");
        add_opt(app, "batch_size", o.batch_size, "prompts per batch (left-padded)");
        add_opt(app, "max_new_tokens", o.max_new_tokens, "tokens generated per prompt at most");
        add_opt(app, "scoring", o.scoring, "generate (the reference) or logprob (best option by log-probability)");
        add_opt(app, "prompt_template_name", o.prompt_template, "alpaca or a JSON template file");
        add_bool(app, "resume", o.resume, "continue from the examples already in --save_path");
        add_opt(app, "limit", o.limit, "evaluate only the first N rows (0 = all)");
        add_opt(app, "save_every", o.save_every, "rewrite --save_path after every N more examples (the reference: 200)");
        add_opt(app, "dtype", o.dtype, "auto|float32|bfloat16|float16");
        add_opt(app, "device", o.device, "cpu|cuda|cuda:N");
        add_opt(app, "threads", o.threads, "CPU threads (0 = all cores)");
        add_bool(app, "quiet", o.quiet, "no progress output");
      },
      [&]() {
        EvalSummary s = evaluate_scienceqa(o);
        std::printf("accuracy: %.2f%% (%lld/%lld)\n", s.acc, (long long)s.correct, (long long)s.len);
        for (auto& [col, groups] : s.by_group.items())
          for (auto& [val, t] : groups.items())
            std::printf("  %-9s %-28s %6.2f%% (%lld/%lld)\n", col.c_str(), val.c_str(), t["acc"].get<double>(),
                        (long long)t["correct"].get<int64_t>(), (long long)t["len"].get<int64_t>());
        std::printf("results written to %s\n", o.save_path.c_str());
        return 0;
      });
}
