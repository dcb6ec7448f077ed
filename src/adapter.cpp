// MoLA adapters on the model (see adapter.h): attach, parameters, loss, and the adapter files in the
// reference's layout (per-expert keys sliced from our stacked parameters).
#include "adapter.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "arch.h"
#include "files.h"
#include "lm_loss.h"
#include "safetensors.h"

namespace fs = std::filesystem;

namespace mor {

namespace {

const char* kPrefix = "base_model.model.";

std::string shape_str(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Visits every projection of the model (the architecture table's, in module order) with its HF path
// and short name; the module is looked up by that name.
template <typename F>
void for_each_module(LlamaForCausalLM& model, F f) {
  const ArchInfo& arch = arch_of(model->cfg);
  for (int64_t il = 0; il < model->cfg.n_layer; ++il)
    for (const auto& p : arch.projections) {
      MolaLinear m = model->projection(il, p.name);
      f(il, p.name, Allocation::module_path(il, p.name), m);
    }
}

// An adapter weight must be a floating tensor (F32/F16/BF16/F64: an integer tensor copied in would
// silently become other numbers) and finite (NaN weights would evaluate silently to garbage).
void check_adapter_tensor(const std::string& file, const std::string& key, const torch::Tensor& t) {
  const auto st = t.scalar_type();
  if (st != torch::kFloat32 && st != torch::kFloat16 && st != torch::kBFloat16 && st != torch::kFloat64)
    throw std::runtime_error(file + ": key '" + key + "' has dtype " + std::string(c10::toString(st)) +
                             " (adapter weights must be float32, float16, bfloat16 or float64)");
  if (t.numel() > 0 && !torch::isfinite(t).all().item<bool>())
    throw std::runtime_error(file + ": key '" + key + "' holds NaN or infinite values");
}

}  // namespace

void attach_adapters(LlamaForCausalLM& model, const Allocation& alloc, uint64_t seed) {
  if (alloc.n_layer != model->cfg.n_layer)
    throw std::runtime_error("allocation has " + std::to_string(alloc.n_layer) + " layers, the model " +
                             std::to_string(model->cfg.n_layer));
  if (!alloc.model_type.empty() && alloc.model_type != model->cfg.model_type)
    throw std::runtime_error("the adapter was made for a " + alloc.model_type + " base, the model is " +
                             model->cfg.model_type + " (" + model->cfg.architecture + ")");
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  for_each_module(model, [&](int64_t, const std::string&, const std::string& path, MolaLinear& m) {
    if (!alloc.specs.count(path)) return;
    auto [in, out] = alloc.shapes.at(path);
    if (in != m->in_features || out != m->out_features)
      throw std::runtime_error("allocation: " + path + " is " + std::to_string(in) + " -> " + std::to_string(out) +
                               ", the model's " + std::to_string(m->in_features) + " -> " + std::to_string(m->out_features));
    if (m->has_adapter()) throw std::runtime_error(path + ": an adapter is already attached");
    m->add_adapter(alloc.specs.at(path), &gen);
  });
}

std::vector<std::pair<std::string, torch::Tensor>> trainable_params(LlamaForCausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for_each_module(model, [&](int64_t, const std::string&, const std::string& path, MolaLinear& m) {
    if (!m->has_adapter()) return;
    out.emplace_back(path + ".router", m->router);
    out.emplace_back(path + ".lora_A", m->lora_A);
    out.emplace_back(path + ".lora_B", m->lora_B);
  });
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> adapter_state(LlamaForCausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for_each_module(model, [&](int64_t, const std::string&, const std::string& path, MolaLinear& m) {
    if (!m->has_adapter()) return;
    const auto& s = m->spec();
    const std::string key = kPrefix + path;
    for (int64_t e = 0; e < s.n_expert; ++e)
      out.emplace_back(key + ".lora_A_" + std::to_string(e) + ".weight",
                       m->lora_A.detach().narrow(0, s.rank_offset(e), s.ranks[e]));
    for (int64_t e = 0; e < s.n_expert; ++e)
      out.emplace_back(key + ".lora_B_" + std::to_string(e) + ".weight",
                       m->lora_B.detach().narrow(1, s.rank_offset(e), s.ranks[e]));
    out.emplace_back(key + ".router.router.weight", m->router.detach());
  });
  return out;
}

torch::Tensor per_example_ce(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
  auto lg = logits.narrow(1, 0, T - 1).to(torch::kFloat32).reshape({-1, V});
  auto lb = labels.narrow(1, 1, T - 1).to(lg.device()).reshape({-1});
  auto nll = torch::nn::functional::cross_entropy(
                 lg, lb, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kNone))
                 .reshape({B, T - 1});
  auto n = (lb.reshape({B, T - 1}) != -100).sum(1).to(torch::kFloat32);
  return nll.sum(1) / n;
}

torch::Tensor aux_balance_loss(LlamaForCausalLM& model, const RouterLogits& router_logits) {
  torch::Tensor aux;
  for (int64_t il = 0; il < int64_t(router_logits.size()); ++il) {
    const auto& ls = router_logits[il];
    if (ls.empty()) continue;
    std::vector<ExpertSpec> specs;
    for (auto& m : model->layer_modules(il))
      if (m->has_adapter()) specs.push_back(m->spec());
    if (specs.size() != ls.size())
      throw std::runtime_error("layer " + std::to_string(il) + ": " + std::to_string(ls.size()) +
                               " router logits for " + std::to_string(specs.size()) + " adapted modules");
    for (size_t i = 0; i < ls.size(); ++i)
      if (ls[i].size(1) != specs[i].n_expert)
        throw std::runtime_error("layer " + std::to_string(il) + ": router logits out of module order");
    auto l = layer_balance_loss(ls, specs);
    aux = aux.defined() ? aux + l : l;
  }
  if (!aux.defined()) aux = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(model->device));
  return aux;
}

torch::Tensor z_loss_term(LlamaForCausalLM& model, const RouterLogits& router_logits) {
  torch::Tensor total;
  for (int64_t il = 0; il < int64_t(router_logits.size()); ++il) {
    const auto& ls = router_logits[il];
    std::vector<ExpertSpec> specs;
    for (auto& m : model->layer_modules(il))
      if (m->has_adapter()) specs.push_back(m->spec());
    if (specs.size() != ls.size()) continue;  // aux_balance_loss reports the mismatch
    torch::Tensor layer;
    for (size_t i = 0; i < ls.size(); ++i) {
      if (specs[i].z_loss == 0) continue;
      auto t = router_z_loss(ls[i]) * (specs[i].z_loss / double(ls.size()));
      layer = layer.defined() ? layer + t : t;
    }
    if (layer.defined()) total = total.defined() ? total + layer : layer;
  }
  return total;
}

LossParts compute_loss(LlamaForCausalLM& model, const torch::Tensor& logits, const torch::Tensor& labels,
                       const RouterLogits& router_logits, bool obalance) {
  return compute_loss_from_ce(model, shifted_cross_entropy(logits, labels), router_logits, obalance);
}

LossParts forward_loss(LlamaForCausalLM& model, const ForwardArgs& a, const torch::Tensor& labels, bool obalance) {
  auto hidden = model->forward_hidden(a);
  auto ce = lm_loss(hidden, model->lm_head_weight(), labels);
  static const RouterLogits none;
  return compute_loss_from_ce(model, ce, a.router_logits ? *a.router_logits : none, obalance);
}

LossParts compute_loss_from_ce(LlamaForCausalLM& model, const torch::Tensor& ce, const RouterLogits& router_logits,
                               bool obalance) {
  LossParts p;
  p.ce = ce;
  p.aux = aux_balance_loss(model, router_logits);
  p.loss = obalance ? p.ce + kBalanceLossCoef * p.aux : p.ce;
  p.z = z_loss_term(model, router_logits);
  if (p.z.defined()) p.loss = p.loss + p.z;
  return p;
}

std::string adapter_config_json(const Allocation& alloc, const std::string& base_model_name) {
  // nlohmann::json keeps keys sorted, and dump(2) lays out like Python's json.dumps(indent=2).
  nlohmann::json j;
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = base_model_name;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  // The reference passes lora_alpha as an int; keep the int spelling when it is one.
  if (alloc.lora_alpha == double(int64_t(alloc.lora_alpha))) j["lora_alpha"] = int64_t(alloc.lora_alpha);
  else j["lora_alpha"] = alloc.lora_alpha;
  j["lora_dropout"] = alloc.lora_dropout;
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = alloc.layer_ranks();
  j["revision"] = nullptr;
  j["target_modules"] = alloc.target_modules;
  j["task_type"] = "CAUSAL_LM";
  return j.dump(2);  // PEFT writes no trailing newline
}

void save_adapter(LlamaForCausalLM& model, const Allocation& alloc, const std::string& dir,
                  const std::string& base_model_name) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw std::runtime_error("cannot create adapter folder " + dir);
  auto state = adapter_state(model);
  if (state.empty()) throw std::runtime_error("save_adapter: the model carries no adapter");
  std::vector<std::pair<std::string, torch::Tensor>> cpu;
  for (auto& [k, t] : state) cpu.emplace_back(k, t.to(torch::kCPU).contiguous());
  save_safetensors(dir + "/adapter_model.safetensors", cpu, {{"format", "pt"}});
  write_file_atomic(dir + "/adapter_config.json", adapter_config_json(alloc, base_model_name));
  write_file_atomic(dir + "/mola_config.json", alloc.to_json().dump(2) + "\n");
}

std::vector<std::pair<std::string, torch::Tensor>> read_adapter_weights(const std::string& path) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (path.size() >= 12 && path.substr(path.size() - 12) == ".safetensors") {
    auto f = SafeTensorsFile::open(path);
    for (const auto& k : f->keys()) out.emplace_back(k, f->get(k).clone());
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  torch::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    throw std::runtime_error(path + ": not a torch.save file LibTorch can read: " + msg.substr(0, msg.find('\n')));
  }
  if (v.isNone())  // LibTorch's unpickler turns a top-level collections.OrderedDict into None
    throw std::runtime_error(path + ": holds a collections.OrderedDict, which LibTorch cannot read; re-save it "
                             "as a plain dict (torch.save(dict(state_dict), path)), as PEFT does");
  if (!v.isGenericDict()) throw std::runtime_error(path + ": expected a dict of name -> tensor");
  for (const auto& item : v.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor())
      throw std::runtime_error(path + ": expected a dict of name -> tensor");
    out.emplace_back(item.key().toStringRef(), item.value().toTensor());
  }
  return out;
}

Allocation load_adapter(LlamaForCausalLM& model, const std::string& dir, const Allocation* flags) {
  if (!fs::is_directory(dir)) throw std::runtime_error("adapter folder " + dir + " does not exist");
  Allocation alloc;
  const std::string mola_cfg = dir + "/mola_config.json";
  if (fs::exists(mola_cfg)) {
    nlohmann::json j;
    try {
      std::ifstream f(mola_cfg);
      j = nlohmann::json::parse(f);
    } catch (const std::exception& e) {
      throw std::runtime_error(mola_cfg + ": not valid JSON: " + e.what());
    }
    alloc = Allocation::from_json(j, mola_cfg);
    if (flags) {
      auto d = alloc.difference(*flags);
      if (!d.empty())
        throw std::runtime_error("the allocation flags disagree with " + mola_cfg + ": " + d +
                                 " (saved vs flags); drop the flags or fix them");
    }
  } else if (flags) {
    alloc = *flags;
    // The reference's adapter_config.json carries lora_alpha: it wins over the flag default.
    const std::string pc = dir + "/adapter_config.json";
    if (fs::exists(pc)) {
      try {
        std::ifstream f(pc);
        auto j = nlohmann::json::parse(f);
        if (j.contains("lora_alpha") && j["lora_alpha"].is_number()) {
          alloc.lora_alpha = j["lora_alpha"].get<double>();
          for (auto& [p, s] : alloc.specs) s.lora_alpha = alloc.lora_alpha;
        }
      } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error(pc + ": " + e.what());
      }
    }
  } else {
    throw std::runtime_error(dir + " has no mola_config.json (a reference adapter stores no expert counts or "
                             "top-k): pass --number_experts, --lora_r, --top_k and --lora_target_modules");
  }
  if (!alloc.model_type.empty() && alloc.model_type != model->cfg.model_type)
    throw std::runtime_error(mola_cfg + ": the adapter was made for a " + alloc.model_type + " base, the model is " +
                             model->cfg.model_type + " (" + model->cfg.architecture + ")");
  std::string wpath = dir + "/adapter_model.safetensors";
  if (!fs::exists(wpath)) wpath = dir + "/adapter_model.bin";
  if (!fs::exists(wpath)) throw std::runtime_error(dir + ": neither adapter_model.safetensors nor adapter_model.bin found");
  auto weights = read_adapter_weights(wpath);
  std::map<std::string, torch::Tensor> byname(weights.begin(), weights.end());

  // Attach (or check) adapters, then check every expected key and shape before copying anything.
  bool any = false;
  for_each_module(model, [&](int64_t, const std::string&, const std::string&, MolaLinear& m) { any = any || m->has_adapter(); });
  if (!any) {
    try {
      attach_adapters(model, alloc, 0);
    } catch (const std::runtime_error& e) {  // the allocation came from the folder: name where
      throw std::runtime_error((fs::exists(mola_cfg) ? mola_cfg : dir) + ": does not fit the model: " + e.what());
    }
  } else {
    for_each_module(model, [&](int64_t, const std::string&, const std::string& path, MolaLinear& m) {
      bool want = alloc.specs.count(path) > 0;
      if (want != m->has_adapter())
        throw std::runtime_error(wpath + ": " + path + (want ? ": the model carries no adapter there" : ": the model carries an adapter the file lacks"));
      if (!want) return;
      const auto &a = m->spec(), &b = alloc.specs.at(path);  // dropout may differ (a training choice)
      if (a.n_expert != b.n_expert || a.top_k != b.top_k || a.ranks != b.ranks || a.lora_alpha != b.lora_alpha)
        throw std::runtime_error(wpath + ": " + path + ": the model's adapter (experts " + std::to_string(a.n_expert) +
                                 ", top_k " + std::to_string(a.top_k) + ", lora_alpha " + std::to_string(a.lora_alpha) +
                                 ") differs from the saved one (experts " + std::to_string(b.n_expert) + ", top_k " +
                                 std::to_string(b.top_k) + ", lora_alpha " + std::to_string(b.lora_alpha) + ")");
    });
  }
  auto expected = adapter_state(model);
  std::set<std::string> seen;
  for (auto& [k, t] : expected) {
    auto it = byname.find(k);
    if (it == byname.end()) throw std::runtime_error(wpath + ": missing key '" + k + "'");
    if (it->second.sizes() != t.sizes())
      throw std::runtime_error(wpath + ": key '" + k + "' has shape " + shape_str(it->second.sizes()) + ", expected " +
                               shape_str(t.sizes()));
    check_adapter_tensor(wpath, k, it->second);
    seen.insert(k);
  }
  for (auto& [k, t] : byname)
    if (!seen.count(k)) throw std::runtime_error(wpath + ": unexpected key '" + k + "' (not in the allocation)");
  torch::NoGradGuard ng;
  for (auto& [k, t] : expected) t.copy_(byname.at(k));  // t is a view of the stacked parameter
  return alloc;
}

}  // namespace mor
