// The shared model set-up (see open_model.h).
#include "open_model.h"

#include <filesystem>
#include <stdexcept>

#include "adapter.h"

namespace fs = std::filesystem;

namespace mor {

namespace {
std::string tokenizer_path(const std::string& dir) {
  if (!fs::is_directory(dir)) return dir;
  for (const char* name : {"tokenizer.model", "tokenizer.json"})
    if (fs::exists(fs::path(dir) / name)) return (fs::path(dir) / name).string();
  return (fs::path(dir) / "tokenizer.model").string();
}
}  // namespace

ModelSource open_model_source(const std::string& base_model) {
  ModelSource s;
  s.dir = resolve_model_dir(base_model);
  const std::string cfg_path = (fs::path(s.dir) / "config.json").string();
  s.cfg = ModelConfig::from_file(cfg_path);
  s.tokenizer = Tokenizer::load(s.dir);
  s.tokenizer_file = tokenizer_path(s.dir);
  if (s.tokenizer.vocab_size() > s.cfg.vocab_size)
    throw std::runtime_error("the tokenizer " + s.tokenizer_file + " has " + std::to_string(s.tokenizer.vocab_size()) +
                             " tokens but the model's " + cfg_path + " has vocab_size " +
                             std::to_string(s.cfg.vocab_size) + ": they do not belong together");
  return s;
}

OpenedModel load_model(ModelSource source, const RuntimeOptions& runtime, const AdapterSpec& adapter) {
  OpenedModel m;
  m.runtime = apply_runtime(runtime);
  m.model = load_llama(source.dir, m.runtime.dtype, m.runtime.device);
  if (adapter.attach) {
    if (!adapter.allocation) throw std::runtime_error("open_model: attach needs an allocation");
    attach_adapters(m.model, *adapter.allocation, adapter.seed);
    m.allocation = adapter.allocation;
  }
  if (!adapter.weights_dir.empty() && adapter.given)
    m.allocation = load_adapter_folder(m.model, adapter.weights_dir, *adapter.given);
  else if (!adapter.weights_dir.empty())
    m.allocation = load_adapter(m.model, adapter.weights_dir, adapter.allocation ? &*adapter.allocation : nullptr);
  m.source = std::move(source);
  return m;
}

OpenedModel open_model(const std::string& base_model, const RuntimeOptions& runtime, const AdapterSpec& adapter) {
  return load_model(open_model_source(base_model), runtime, adapter);
}

}  // namespace mor
