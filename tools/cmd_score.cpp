// mor score: per-example cross-entropy (and the micro-batch's balance loss) of a model, with or
// without a MoLA adapter, on a dataset tokenized exactly as training does. One JSON line per example
// in file order, then a summary line with the means. Eval mode, no gradients.
#include <chrono>
#include <iostream>

#include "adapter.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "dataset.h"
#include "examples.h"
#include "llama.h"
#include "reference_adapter.h"
#include "routing.h"
#include "routing_cli.h"
#include "open_model.h"
#include "tokenizer.h"

int mor::cmd_score(int argc, char** argv) {
  std::string base_model, mola_weights, data_path, split = "train", prompt_template_name = "alpaca";
  std::string device = "cpu", dtype = "auto";
  int64_t cutoff_len = 256, batch_size = 1;
  int threads = 0;
  bool train_on_inputs = true, add_eos_token = true, obalance = false;
  AllocationFlags aflags;
  RoutingFlags rflags;
  return run_command(
      "score", "Per-example cross-entropy and balance loss on a dataset (one JSON line per example)", argc, argv,
      [&](CLI::App& app) {
        add_opt(app, "base_model", base_model, "model directory (Hugging Face layout) or Hub id in the local cache")
            ->required();
        add_opt(app, "mola_weights", mola_weights, "MoLA adapter directory (ours or the reference's)");
        add_opt(app, "data_path", data_path, "dataset: .hf folder, .json list or .json/.jsonl lines, .parquet file or folder, or Hub dataset id (read from the HF caches)")->required();
        add_opt(app, "split", split, "split of a DatasetDict folder");
        add_opt(app, "prompt_template_name", prompt_template_name, "alpaca | none | a template JSON file");
        add_opt(app, "cutoff_len", cutoff_len, "tokens per example at most");
        add_bool(app, "train_on_inputs", train_on_inputs, "score the prompt tokens too");
        add_bool(app, "add_eos_token", add_eos_token, "append EOS when there is room");
        add_bool(app, "obalance", obalance, "loss = ce + 0.001 * aux");
        add_opt(app, "batch_size", batch_size, "examples per micro-batch (left-padded to a multiple of 8)");
        add_opt(app, "device", device, "cpu | cuda | cuda:N");
        add_opt(app, "threads", threads, "CPU threads, 0 = all cores");
        add_opt(app, "dtype", dtype, "auto | float32 | bfloat16 | float16 (CUDA)");
        add_allocation_flags(app, aflags);
        add_routing_flags(app, rflags);  // override the routing mola_config.json recorded
      },
      [&]() {
        if (cutoff_len < 2) throw std::runtime_error("--cutoff_len must be >= 2, got " + std::to_string(cutoff_len));
        if (batch_size < 1) throw std::runtime_error("--batch_size must be >= 1, got " + std::to_string(batch_size));
        // Cheap checks and the data first, the model last.
        ModelSource src = open_model_source(base_model);
        const Tokenizer& tok = src.tokenizer;
        PromptTemplate tmpl = PromptTemplate::from_name_or_file(prompt_template_name);
        DatasetDict dd = load_dataset(data_path);
        const Dataset& ds = dd.split(split == "train" && dd.split_names.size() == 1 ? dd.split_names[0] : split);
        if (ds.rows.empty()) throw std::runtime_error(data_path + ": no rows");
        ExampleOptions eo;
        eo.cutoff_len = cutoff_len;
        eo.train_on_inputs = train_on_inputs;
        eo.add_eos_token = add_eos_token;
        std::vector<TokenizedExample> exs;
        exs.reserve(ds.rows.size());
        for (size_t i = 0; i < ds.rows.size(); ++i) {
          try {
            exs.push_back(tokenize_example(ds.rows[i], tok, tmpl, eo));
          } catch (const std::exception& e) {
            throw std::runtime_error(data_path + ": row " + std::to_string(i) + ": " + e.what());
          }
        }
        AdapterSpec spec;
        spec.weights_dir = mola_weights;
        spec.given = given_flags(aflags);  // reference folders need --top_k
        OpenedModel opened = load_model(src, RuntimeOptions{device, dtype, threads}, spec);
        auto model = opened.model;
        const torch::Device dev = opened.runtime.device;
        rflags.apply_given(model);
        model->eval();
        torch::NoGradGuard ng;
        double sum_ce = 0, sum_aux = 0, sum_loss = 0;
        int64_t n_tokens = 0;
        auto t0 = std::chrono::steady_clock::now();
        for (size_t s = 0; s < exs.size(); s += batch_size) {
          std::vector<const TokenizedExample*> chunk;
          for (size_t i = s; i < std::min(exs.size(), s + size_t(batch_size)); ++i) chunk.push_back(&exs[i]);
          Batch b = collate(chunk, model->cfg.pad_token_id, 8);
          RouterLogits rl;
          ForwardArgs fa;
          fa.input_ids = b.input_ids.to(dev);
          fa.attention_mask = b.attention_mask.to(dev);
          fa.router_logits = &rl;
          auto logits = model->forward(fa);
          auto labels = b.labels.to(dev);
          auto lp = compute_loss(model, logits, labels, rl, obalance);
          auto ce = per_example_ce(logits, labels).cpu();
          auto n_label = (b.labels.narrow(1, 1, b.labels.size(1) - 1) != -100).sum(1);
          const double aux = lp.aux.item<double>(), loss = lp.loss.item<double>();
          for (size_t j = 0; j < chunk.size(); ++j) {
            nlohmann::ordered_json row;
            row["index"] = int64_t(s + j);
            row["n_tokens"] = int64_t(chunk[j]->input_ids.size());
            row["n_label_tokens"] = n_label[j].item<int64_t>();
            row["ce"] = ce[j].item<double>();
            row["aux"] = aux;
            row["loss"] = loss;
            if (lp.z.defined()) row["z_loss"] = lp.z.item<double>();
            std::cout << row.dump() << "\n";
            sum_ce += ce[j].item<double>();
            sum_aux += aux;
            sum_loss += loss;
            n_tokens += int64_t(chunk[j]->input_ids.size());
          }
          std::cout.flush();
        }
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double n = double(exs.size());
        nlohmann::ordered_json sum;
        sum["summary"] = true;
        sum["n_examples"] = int64_t(exs.size());
        sum["n_tokens"] = n_tokens;
        sum["ce"] = sum_ce / n;
        sum["aux"] = sum_aux / n;
        sum["loss"] = sum_loss / n;
        sum["seconds"] = secs;
        std::cout << sum.dump() << "\n";
        return 0;
      });
}
