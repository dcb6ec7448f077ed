// mor generate: load a LLaMA from Hugging Face files, tokenize prompts (alpaca template or as is),
// generate greedily or by sampling with the KV cache in batches, print the new text (or JSON lines).
#include <fstream>
#include <iostream>

#include "adapter.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "generate.h"
#include "llama.h"
#include "reference_adapter.h"
#include "routing.h"
#include "routing_cli.h"
#include "open_model.h"
#include "tokenizer.h"

namespace {

struct Prompt {
  std::string instruction, input;
};

std::vector<Prompt> read_prompts_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("--prompts_file " + path + ": cannot read");
  std::vector<Prompt> r;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ":" + std::to_string(n) + ": bad JSON: " + e.what());
    }
    if (j.is_string()) {
      r.push_back({j.get<std::string>(), ""});
    } else if (j.is_object() && j.contains("instruction") && j["instruction"].is_string()) {
      r.push_back({j["instruction"].get<std::string>(),
                   j.contains("input") && j["input"].is_string() ? j["input"].get<std::string>() : ""});
    } else {
      throw std::runtime_error(path + ":" + std::to_string(n) + ": expected a JSON string (or an object with \"instruction\")");
    }
  }
  if (r.empty()) throw std::runtime_error("--prompts_file " + path + ": no prompts");
  return r;
}

}  // namespace

int mor::cmd_generate(int argc, char** argv) {
  std::string base_model, prompt, input, prompts_file, tmpl = "alpaca", device = "cpu", dtype = "auto";
  std::string mola_weights, experts_top_k;
  int64_t max_new_tokens = 128, top_k = 40, batch_size = 1;
  double temperature = 0.0, top_p = 0.75;
  uint64_t seed = 42;
  int threads = 0;
  bool json = false;
  mor::RoutingFlags rflags;
  return run_command(
      "generate", "Generate text with a LLaMA-family model (greedy or sampled, KV cache, batched).", argc, argv,
      [&](CLI::App& app) {
        add_opt(app, "base_model", base_model, "model directory (Hugging Face layout) or Hub id in the local cache")->required();
        add_opt(app, "prompt", prompt, "the prompt (the instruction with --template alpaca)");
        add_opt(app, "input", input, "alpaca input (context) for --prompt");
        add_opt(app, "prompts_file", prompts_file, "one JSON string per line (or {\"instruction\", \"input\"})");
        add_opt(app, "template", tmpl, "alpaca | none | a template JSON file");
        add_opt(app, "mola_weights", mola_weights, "MoLA adapter folder (ours, or the reference's: then give --experts_top_k)");
        add_opt(app, "experts_top_k", experts_top_k,
                "the adapter's experts used per token, per layer (--top_k of train/eval): needed for a reference "
                "folder without mola_config.json, else checked against it");
        add_routing_flags(app, rflags);  // override the routing mola_config.json recorded
        add_opt(app, "max_new_tokens", max_new_tokens, "tokens to generate per prompt");
        add_opt(app, "temperature", temperature, "0 = greedy");
        add_opt(app, "top_p", top_p, "nucleus sampling (with temperature > 0)");
        add_opt(app, "top_k", top_k, "top-k sampling, 0 = off (with temperature > 0)");
        add_opt(app, "seed", seed, "sampling seed");
        add_opt(app, "batch_size", batch_size, "prompts per batch (left-padded)");
        add_opt(app, "device", device, "cpu | cuda | cuda:N");
        add_opt(app, "threads", threads, "CPU threads, 0 = all cores");
        add_opt(app, "dtype", dtype, "auto | float32 | bfloat16 | float16 (CUDA)");
        add_bool(app, "json", json, "print one JSON object per prompt");
      },
      [&]() -> int {
        if (!prompt.empty() && !prompts_file.empty()) throw std::runtime_error("give --prompt or --prompts_file, not both");
        if (batch_size < 1) throw std::runtime_error("--batch_size must be >= 1");
        if (max_new_tokens < 0) throw std::runtime_error("--max_new_tokens must be >= 0");
        if (temperature < 0) throw std::runtime_error("--temperature must be >= 0");
        if (!(top_p > 0 && top_p <= 1)) throw std::runtime_error("--top_p must be in (0, 1]");
        if (top_k < 0) throw std::runtime_error("--top_k must be >= 0");
        std::vector<Prompt> prompts = prompts_file.empty() ? std::vector<Prompt>{{prompt, input}} : read_prompts_file(prompts_file);
        const PromptTemplate pt = PromptTemplate::from_name_or_file(tmpl);
        // Here --top_k is sampling's; the experts' top-k is --experts_top_k (the rest comes from the folder).
        if (!experts_top_k.empty() && mola_weights.empty()) throw std::runtime_error("--experts_top_k needs --mola_weights");
        AdapterSpec spec;
        spec.weights_dir = mola_weights;
        spec.given = GivenAllocationFlags{};
        spec.given->top_k_flag = "--experts_top_k";
        if (!experts_top_k.empty()) spec.given->top_k = experts_top_k;
        OpenedModel opened = open_model(base_model, RuntimeOptions{device, dtype, threads}, spec);
        LlamaForCausalLM m = opened.model;
        const Tokenizer& tok = opened.source.tokenizer;
        const std::string& dir = opened.source.dir;
        const torch::Device dev = opened.runtime.device;
        const torch::Dtype dt = opened.runtime.dtype;
        rflags.apply_given(m);
        std::cerr << "mor generate: " << dir << ", " << describe_runtime(dev, dt, dtype) << "\n";
        m->eval();
        GenerateOptions o;
        o.max_new_tokens = max_new_tokens;
        o.temperature = temperature;
        o.top_p = top_p;
        o.top_k = top_k;
        o.seed = seed;
        o.stop_ids = tok.eos_ids();  // every EOS of generation_config.json
        for (size_t start = 0; start < prompts.size(); start += batch_size) {
          const size_t end = std::min(prompts.size(), start + static_cast<size_t>(batch_size));
          std::vector<std::vector<int64_t>> ids;
          std::vector<std::string> texts;
          for (size_t i = start; i < end; ++i) {
            texts.push_back(tmpl == "none" ? prompts[i].instruction + (prompts[i].input.empty() ? "" : "\n" + prompts[i].input)
                                           : pt.generate_prompt(prompts[i].instruction, prompts[i].input));
            ids.push_back(tok.encode(texts.back()));
          }
          auto out = generate(m, ids, o);
          for (size_t b = 0; b < ids.size(); ++b) {
            const std::string text = tok.decode(out.new_tokens[b]);
            if (json) {
              nlohmann::json j = {{"prompt", texts[b]}, {"prompt_ids", ids[b]}, {"generated_ids", out.new_tokens[b]}, {"text", text}};
              std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
            } else {
              std::cout << text << "\n";
            }
          }
          std::cout.flush();
        }
        return 0;
      });
}
