// mor route: for every token of a prompt, the experts and weights each layer's router picks (one
// module or all), as a table or JSON (see src/route_trace.h).
#include <iostream>

#include "adapter.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "llama.h"
#include "route_trace.h"
#include "routing.h"
#include "routing_cli.h"
#include "tokenizer.h"

int mor::cmd_route(int argc, char** argv) {
  std::string base_model, mola_weights, prompt, module = "all", tmpl = "none", device = "cpu", dtype = "float32";
  int threads = 0;
  bool json = false;
  AllocationFlags aflags;
  RoutingFlags rflags;
  return run_command(
      "route", "Per-token expert choices and weights of every layer's router for one prompt", argc, argv,
      [&](CLI::App& app) {
        add_opt(app, "base_model", base_model, "model directory (Hugging Face layout) or Hub id in the local cache")->required();
        add_opt(app, "mola_weights", mola_weights, "MoLA adapter directory (ours or the reference's)")->required();
        add_opt(app, "prompt", prompt, "the text to route")->required();
        add_opt(app, "module", module, "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|all");
        add_opt(app, "prompt_template_name", tmpl, "none (the prompt as given) | alpaca | a template JSON file");
        add_bool(app, "json", json, "print JSON instead of a table");
        add_opt(app, "device", device, "cpu | cuda | cuda:N");
        add_opt(app, "dtype", dtype, "float32 | bfloat16 | float16 (CUDA) | auto");
        add_opt(app, "threads", threads, "CPU threads, 0 = all cores");
        add_allocation_flags(app, aflags);  // for a reference adapter without mola_config.json
        add_routing_flags(app, rflags);     // override the recorded routing
      },
      [&]() {
        set_threads(threads);
        const std::string dir = resolve_model_dir(base_model);
        Tokenizer tok = Tokenizer::load(dir);
        std::string text = prompt;
        if (tmpl != "none") text = PromptTemplate::from_name_or_file(tmpl).generate_prompt(prompt);
        auto ids = tok.encode(text);
        std::vector<std::string> pieces;
        for (auto id : ids) pieces.push_back(tok.id_to_piece(id));
        const torch::Device dev = parse_device(device);
        auto model = load_llama(dir, parse_dtype(dtype, dev), dev);
        if (aflags.any_given()) {
          auto flags = aflags.build(model->cfg);
          load_adapter(model, mola_weights, &flags);
        } else {
          load_adapter(model, mola_weights, nullptr);
        }
        rflags.apply_given(model);
        auto t = trace_routing(model, ids, pieces, module);
        if (json) std::cout << route_trace_json(t).dump() << "\n";
        else std::cout << route_trace_table(t);
        return 0;
      });
}
