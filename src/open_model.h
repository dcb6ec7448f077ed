// The one set-up path of every command that runs a model (train, eval-scienceqa, score, generate):
// run-time options, model resolution (folder or Hub id in the local cache), config.json, tokenizer,
// the vocabulary check (before any weights load or output folder is created), then the weights on the
// chosen device/dtype and the adapter (fresh, loaded from a folder, or both for train's resume).
#pragma once
#include <optional>
#include <string>

#include "allocation.h"
#include "config.h"
#include "llama.h"
#include "reference_adapter.h"
#include "runtime.h"
#include "tokenizer.h"

namespace mor {

// What a model folder holds before any weights are read.
struct ModelSource {
  std::string dir;             // resolved model folder
  ModelConfig cfg;             // dir/config.json
  Tokenizer tokenizer;
  std::string tokenizer_file;  // the file the tokenizer came from (for messages)
};
// Resolves base_model, reads config.json, loads the tokenizer and checks that the tokenizer's
// vocabulary fits the model's (naming both files and both sizes when it does not).
ModelSource open_model_source(const std::string& base_model);

struct AdapterSpec {
  std::optional<Allocation> allocation;  // fresh adapters (attach) or the flags load_adapter must agree with
  bool attach = false;                   // attach fresh adapters from `allocation`, seeded by `seed`
  uint64_t seed = 42;
  std::string weights_dir;               // load adapter weights from here ("" none)
  // eval/score/generate: the allocation flags as given; a folder without mola_config.json (the
  // reference's) then takes its allocation from its own files (load_adapter_folder).
  std::optional<GivenAllocationFlags> given;
};

struct OpenedModel {
  ModelSource source;
  Runtime runtime;
  LlamaForCausalLM model{nullptr};
  std::optional<Allocation> allocation;  // the adapter's, when it has one
};

// Loads the weights of an opened source and sets up the adapter.
OpenedModel load_model(ModelSource source, const RuntimeOptions& runtime, const AdapterSpec& adapter = {});

// open_model_source + load_model.
OpenedModel open_model(const std::string& base_model, const RuntimeOptions& runtime, const AdapterSpec& adapter = {});

}  // namespace mor
