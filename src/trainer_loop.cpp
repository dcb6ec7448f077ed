// The training loop of `mor train` (see trainer.h): input validation before heavy work, the model with
// MoLA adapters, gradient accumulation, clipping, AdamW, the linear schedule, logs, evaluation,
// checkpoints (temp folder + rename, rotation), exact resume and SIGINT/SIGTERM handling.
// Shapes: B micro-batch, T padded length, V vocab.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <regex>
#include <sstream>
#include <thread>

#include "adapter.h"
#include "allocation.h"
#include "cli.h"
#include "config.h"
#include "dataset.h"
#include "files.h"
#include "grad_checkpoint.h"
#include "report.h"
#include "router_stats.h"
#include "trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mor {

namespace {

volatile sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }

struct SignalScope {  // SIGINT/SIGTERM set a flag; a second one kills as usual (SA_RESETHAND)
  struct sigaction old_int{}, old_term{};
  SignalScope() {
    g_stop_signal = 0;
    struct sigaction sa{};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

json read_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  try {
    return json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error(p.string() + ": invalid JSON: " + e.what());
  }
}

bool is_full_checkpoint(const fs::path& d) {
  return fs::exists(d / "trainer_state.json") && fs::exists(d / "optimizer.pt") && fs::exists(d / "data_state.json");
}
bool has_adapter_weights(const fs::path& d) {
  return fs::exists(d / "adapter_model.safetensors") || fs::exists(d / "adapter_model.bin");
}

enum class ResumeKind { None, Full, AdapterOnly };
struct ResumePlan {
  ResumeKind kind = ResumeKind::None;
  std::string path;
};

ResumePlan resolve_resume(const TrainOptions& opt) {
  ResumePlan r;
  std::string v = opt.resume_from_checkpoint;
  std::string lv = v;
  std::transform(lv.begin(), lv.end(), lv.begin(), ::tolower);
  if (v.empty() || lv == "false" || lv == "none") return r;
  if (lv == "true" || lv == "latest") {
    std::string last = latest_checkpoint(opt.output_dir);
    if (last.empty())
      throw std::runtime_error("--resume_from_checkpoint " + v + ": no checkpoint-* folder in " + opt.output_dir);
    if (!is_full_checkpoint(last))
      throw std::runtime_error("--resume_from_checkpoint " + v + ": " + last + " is incomplete (needs trainer_state.json, optimizer.pt, data_state.json)");
    return {ResumeKind::Full, last};
  }
  if (!fs::is_directory(v)) throw std::runtime_error("--resume_from_checkpoint " + v + ": no such folder");
  if (is_full_checkpoint(v)) return {ResumeKind::Full, v};
  if (has_adapter_weights(v)) return {ResumeKind::AdapterOnly, v};
  throw std::runtime_error("--resume_from_checkpoint " + v +
                           ": no checkpoint there (trainer_state.json + optimizer.pt) and no adapter weights "
                           "(adapter_model.safetensors or adapter_model.bin)");
}

// Everything validate_train_options establishes, kept for the run.
struct Prepared {
  TrainOptions opt;
  std::string model_dir;
  ModelConfig cfg;
  Allocation alloc;
  ResumePlan resume;
  std::vector<TokenizedExample> train, val;
  std::vector<int64_t> train_lengths;
  StepPlan plan;
  int64_t total_steps = 0;
  torch::Device device{torch::kCPU};
  torch::Dtype dtype = torch::kFloat32;
};

Prepared prepare(const TrainOptions& in) {
  Prepared p;
  p.opt = in;
  TrainOptions& o = p.opt;
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
  if (o.cutoff_len < 2) throw std::runtime_error("--cutoff_len must be at least 2, got " + std::to_string(o.cutoff_len));
  if (!(o.learning_rate >= 0)) throw std::runtime_error("--learning_rate must be >= 0");
  if (o.warmup_steps < 0) throw std::runtime_error("--warmup_steps must be >= 0");
  if (o.weight_decay < 0) throw std::runtime_error("--weight_decay must be >= 0");
  if (o.lr_scheduler != "linear") throw std::runtime_error("--lr_scheduler '" + o.lr_scheduler + "': only linear is supported");
  if (o.lora_dropout < 0 || o.lora_dropout >= 1) throw std::runtime_error("--lora_dropout must be in [0, 1)");
  if (fs::exists(o.output_dir) && !fs::is_directory(o.output_dir))
    throw std::runtime_error("--output_dir " + o.output_dir + " exists and is not a folder");
  p.device = parse_device(o.device);
  p.dtype = parse_dtype(o.dtype, p.device);
  p.resume = resolve_resume(o);

  // Model config and allocation (no weights yet).
  p.model_dir = resolve_model_dir(o.base_model);
  p.cfg = ModelConfig::from_file((fs::path(p.model_dir) / "config.json").string());
  if (o.number_experts.empty()) {
    // The reference's default: 2, 4, 6, 8 experts over the four quarters of the layers (its literal
    // 32-value list for LLaMA-2-7B).
    for (int64_t l = 0; l < p.cfg.n_layer; ++l)
      o.number_experts += (l ? "," : "") + std::to_string(2 * (1 + 4 * l / p.cfg.n_layer));
  }
  p.alloc = Allocation::from_flags(p.cfg, o.lora_target_modules, o.number_experts, o.lora_r, o.top_k, o.lora_alpha,
                                   o.lora_dropout);
  o.routing.apply(p.alloc);

  // Data: load, split, tokenize (cheap next to the model).
  DatasetDict dd = load_dataset(o.data_path);
  if (!dd.splits.count("train"))
    throw std::runtime_error("--data_path " + o.data_path + ": no 'train' split (has: " +
                             [&] { std::string s; for (auto& n : dd.split_names) s += (s.empty() ? "" : ", ") + n; return s; }() + ")");
  const Dataset& ds = dd.split("train");
  if (ds.rows.empty()) throw std::runtime_error("--data_path " + o.data_path + ": the train split has no examples");
  for (const char* col : {"instruction", "output"})
    if (!ds.rows.front().is_object() || !ds.rows.front().contains(col))
      throw std::runtime_error("--data_path " + o.data_path + ": no '" + col + "' column (columns: " +
                               [&] { std::string s; for (auto& n : ds.column_names()) s += (s.empty() ? "" : ", ") + n; return s; }() + ")");
  const int64_t n = static_cast<int64_t>(ds.rows.size());
  auto [train_idx, val_idx] = split_train_val(n, o.val_set_size, o.seed);
  Tokenizer tok = Tokenizer::load(p.model_dir);
  PromptTemplate tmpl = PromptTemplate::from_name_or_file(o.prompt_template_name);
  ExampleOptions eo;
  eo.cutoff_len = o.cutoff_len;
  eo.train_on_inputs = o.train_on_inputs;
  eo.add_eos_token = o.add_eos_token;
  auto tokenize_rows = [&](const std::vector<int64_t>& idx, std::vector<TokenizedExample>& out) {
    out.reserve(idx.size());
    for (int64_t i : idx) {
      try {
        out.push_back(tokenize_example(ds.rows[i], tok, tmpl, eo));
      } catch (const std::exception& e) {
        throw std::runtime_error("--data_path " + o.data_path + ": example " + std::to_string(i) + ": " + e.what());
      }
    }
  };
  tokenize_rows(train_idx, p.train);
  tokenize_rows(val_idx, p.val);
  for (auto& e : p.train) p.train_lengths.push_back(static_cast<int64_t>(e.input_ids.size()));
  p.plan = plan_steps(static_cast<int64_t>(p.train.size()), o.micro_batch_size, o.batch_size / o.micro_batch_size);
  p.total_steps = o.max_steps > 0 ? o.max_steps : p.plan.steps_per_epoch * o.num_epochs;
  return p;
}

// ---- logs -------------------------------------------------------------------------------------

struct TrainerState {
  json log_history = json::array();
  int64_t global_step = 0;
  double epoch = 0;
};

json state_json(const TrainerState& st, const Prepared& p) {
  json j;
  j["best_metric"] = nullptr;
  j["best_model_checkpoint"] = nullptr;
  j["epoch"] = st.epoch;
  j["global_step"] = st.global_step;
  j["is_hyper_param_search"] = false;
  j["is_local_process_zero"] = true;
  j["is_world_process_zero"] = true;
  j["log_history"] = st.log_history;
  j["max_steps"] = p.total_steps;
  j["num_train_epochs"] = p.opt.num_epochs;
  j["total_flos"] = 0;
  j["trial_name"] = nullptr;
  j["trial_params"] = nullptr;
  return j;
}

json args_json(const TrainOptions& o) {
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

void write_logs(const fs::path& out, const TrainerState& st, const Prepared& p) {
  write_file_atomic((out / "trainer_state.json").string(), state_json(st, p).dump(2) + "\n");
  std::string lines;
  for (const auto& e : st.log_history) lines += e.dump() + "\n";
  write_file_atomic((out / "metrics.jsonl").string(), lines);
}

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof buf, "%02lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

int64_t peak_rss_mb() {
  struct rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024;
}

}  // namespace

void validate_train_options(const TrainOptions& opt) { (void)prepare(opt); }

double evaluate_loss(LlamaForCausalLM& model, const std::vector<TokenizedExample>& examples, int64_t batch_size,
                     bool obalance) {
  torch::NoGradGuard ng;
  const bool was_training = model->is_training();
  model->eval();
  double sum = 0;
  int64_t count = 0;
  for (size_t i = 0; i < examples.size(); i += batch_size) {
    std::vector<const TokenizedExample*> ptrs;
    for (size_t j = i; j < std::min(examples.size(), i + batch_size); ++j) ptrs.push_back(&examples[j]);
    Batch b = collate(ptrs);
    RouterLogits rl;
    ForwardArgs a;
    a.input_ids = b.input_ids.to(model->device);
    a.attention_mask = b.attention_mask.to(model->device);
    a.router_logits = &rl;
    auto logits = model->forward(a);
    LossParts lp = compute_loss(model, logits, b.labels.to(model->device), rl, obalance);
    sum += lp.loss.item<double>() * static_cast<double>(ptrs.size());
    count += static_cast<int64_t>(ptrs.size());
  }
  if (was_training) model->train();
  return count ? sum / static_cast<double>(count) : std::nan("");
}

int run_training(const TrainOptions& opt_in) {
  Prepared p = prepare(opt_in);  // every input checked before the weights load
  const TrainOptions& o = p.opt;
  const fs::path out(o.output_dir);
  const auto& plan = p.plan;

  std::cout << "mor train: " << p.train.size() << " training examples, " << p.val.size() << " validation; "
            << plan.n_micro << " micro-batches of " << o.micro_batch_size << " per epoch, gradient accumulation "
            << plan.accum << ", " << plan.steps_per_epoch << " optimizer steps per epoch, " << p.total_steps
            << " in all\n";
  if (plan.dropped > 0)
    std::cout << "mor train: the last " << plan.dropped << " micro-batch(es) of each epoch do not fill an optimizer step "
              << "and are dropped\n";
  std::cout << p.alloc.table() << std::flush;

  if (o.threads > 0) torch::set_num_threads(o.threads);
  else torch::set_num_threads(std::max(1u, std::thread::hardware_concurrency()));

  // Heavy work from here on.
  LlamaForCausalLM model = load_llama(p.model_dir, p.dtype, p.device);
  attach_adapters(model, p.alloc, o.seed);
  if (p.resume.kind != ResumeKind::None) load_adapter(model, p.resume.path, &p.alloc);
  if (p.resume.kind == ResumeKind::AdapterOnly)
    std::cout << "mor train: loaded adapter weights from " << p.resume.path << "; starting a fresh run\n";
  std::vector<torch::Tensor> params = param_tensors(trainable_params(model));
  int64_t n_trainable = 0;
  for (auto& t : params) n_trainable += t.numel();
  std::cout << "mor train: " << n_trainable << " trainable parameters (float32), base in "
            << c10::toString(p.dtype) << " on " << p.device.str() << "\n";

  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(o.learning_rate)
                                            .betas(std::make_tuple(0.9, 0.999))
                                            .eps(1e-8)
                                            .weight_decay(o.weight_decay));
  TrainerState st;
  double loss_scale = 65536.0;  // float16 only: dynamic loss scaling
  int64_t good_steps = 0;
  const bool fp16 = p.dtype == torch::kFloat16;
  if (p.resume.kind == ResumeKind::Full) {
    fs::path ck(p.resume.path);
    torch::load(optimizer, (ck / "optimizer.pt").string());
    json js = read_json(ck / "trainer_state.json");
    json ds = read_json(ck / "data_state.json");
    st.log_history = js.value("log_history", json::array());
    st.global_step = js.at("global_step").get<int64_t>();
    st.epoch = js.value("epoch", 0.0);
    if (ds.value("micro_batch_size", o.micro_batch_size) != o.micro_batch_size ||
        ds.value("accum", plan.accum) != plan.accum || ds.value("n_train", (int64_t)p.train.size()) != (int64_t)p.train.size() ||
        ds.value("seed", o.seed) != o.seed || ds.value("group_by_length", o.group_by_length) != o.group_by_length)
      throw std::runtime_error("--resume_from_checkpoint " + p.resume.path +
                               ": the checkpoint was made with a different batch size, dataset, seed or grouping");
    loss_scale = ds.value("loss_scale", loss_scale);
    good_steps = ds.value("good_steps", (int64_t)0);
    std::cout << "mor train: resuming from " << p.resume.path << " at step " << st.global_step << "\n";
  }
  fs::create_directories(out);
  write_file_atomic((out / "training_args.json").string(), args_json(o).dump(2) + "\n");
  // Router statistics of each logging window (on the device until the log line).
  RouterStatsLog router_log(model, (out / "router_stats.jsonl").string(),
                            p.resume.kind == ResumeKind::Full ? st.global_step : -1);

  const bool tty = isatty(fileno(stderr));
  SignalScope signals;
  model->train();

  auto set_lr = [&](double lr) {
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  };

  auto save_checkpoint = [&](int64_t step) {
    const fs::path final_dir = out / ("checkpoint-" + std::to_string(step));
    const fs::path tmp = out / (".tmp-checkpoint-" + std::to_string(step));
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    save_adapter(model, p.alloc, tmp.string(), o.base_model);
    torch::save(optimizer, (tmp / "optimizer.pt").string());
    const int64_t sie = step % plan.steps_per_epoch;
    json sched{{"last_epoch", step}, {"base_lrs", {o.learning_rate}},
               {"last_lr", {o.learning_rate * lr_factor(step, o.warmup_steps, p.total_steps)}},
               {"warmup_steps", o.warmup_steps}, {"total_steps", p.total_steps}};
    write_file((tmp / "scheduler.json").string(), sched.dump(2) + "\n");
    // RNG: dropout draws are reseeded from (seed, step) before every optimizer step, so the step
    // counter is the whole RNG state; the generator state is kept too for inspection.
    torch::save(at::detail::getDefaultCPUGenerator().get_state(), (tmp / "rng_state.pt").string());
    json ds{{"epoch", step / plan.steps_per_epoch}, {"step_in_epoch", sie},
            {"micro_batches_done_in_epoch", sie * plan.micro_per_step}, {"global_step", step},
            {"seed", o.seed}, {"micro_batch_size", o.micro_batch_size}, {"accum", plan.accum},
            {"n_train", (int64_t)p.train.size()}, {"group_by_length", o.group_by_length},
            {"loss_scale", loss_scale}, {"good_steps", good_steps}, {"rng", "torch.manual_seed(seed, step) per step"}};
    write_file((tmp / "data_state.json").string(), ds.dump(2) + "\n");
    write_file((tmp / "trainer_state.json").string(), state_json(st, p).dump(2) + "\n");
    write_file((tmp / "training_args.json").string(), args_json(o).dump(2) + "\n");
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    // Rotation: keep the newest save_total_limit checkpoints (by step).
    if (o.save_total_limit > 0) {
      std::vector<std::pair<int64_t, fs::path>> cks;
      static const std::regex re("checkpoint-([0-9]+)");
      for (const auto& e : fs::directory_iterator(out)) {
        std::smatch m;
        std::string name = e.path().filename().string();
        if (e.is_directory() && std::regex_match(name, m, re)) cks.emplace_back(std::stoll(m[1]), e.path());
      }
      std::sort(cks.begin(), cks.end());
      for (size_t i = 0; i + o.save_total_limit < cks.size(); ++i) fs::remove_all(cks[i].second);
    }
  };

  // Accumulators between logs.
  double log_loss = 0, log_aux = 0, log_z = 0;
  bool any_z = false;
  int64_t log_steps = 0, log_tokens = 0;
  double log_seconds = 0;
  const auto t_start = std::chrono::steady_clock::now();
  const int64_t start_step = st.global_step;
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  int64_t last_saved = -1;

  auto emit = [&](const std::string& line) {
    if (tty) std::cerr << "\r\033[K";
    std::cout << line << std::endl;
  };

  for (int64_t step = start_step; step < p.total_steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t epoch = step / plan.steps_per_epoch, sie = step % plan.steps_per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(epoch, o.seed, p.train_lengths, o.micro_batch_size, o.group_by_length);
      order_epoch = epoch;
    }
    torch::manual_seed(o.seed * 1000003ULL + static_cast<uint64_t>(step));
    double step_loss = 0, step_aux = 0, step_z = 0;
    int64_t step_tokens = 0;
    for (int64_t m = 0; m < plan.micro_per_step; ++m) {
      const int64_t mi = sie * plan.micro_per_step + m;
      std::vector<const TokenizedExample*> ptrs;
      for (int64_t j = mi * o.micro_batch_size; j < std::min<int64_t>(order.size(), (mi + 1) * o.micro_batch_size); ++j)
        ptrs.push_back(&p.train[order[j]]);
      Batch b = collate(ptrs);
      RouterLogits rl;
      ForwardArgs a;
      a.input_ids = b.input_ids.to(p.device);
      a.attention_mask = b.attention_mask.to(p.device);
      a.router_logits = &rl;
      auto logits = o.gradient_checkpointing ? forward_checkpointed(model, a) : model->forward(a);  // [B, T, V] f32
      LossParts lp = compute_loss(model, logits, b.labels.to(p.device), rl, o.obalance);
      router_log.add(rl, a.attention_mask);
      torch::Tensor scaled = lp.loss / static_cast<double>(plan.accum);
      if (fp16) scaled = scaled * loss_scale;
      scaled.backward();
      step_loss += lp.loss.item<double>() / static_cast<double>(plan.accum);
      step_aux += lp.aux.defined() ? lp.aux.item<double>() / static_cast<double>(plan.micro_per_step) : 0.0;
      if (lp.z.defined()) {
        any_z = true;
        step_z += lp.z.item<double>() / static_cast<double>(plan.micro_per_step);
      }
      step_tokens += b.attention_mask.sum().item<int64_t>();
    }
    bool skip = false;
    if (fp16) {  // unscale; skip the step and halve the scale on overflow
      bool finite = true;
      for (auto& t : params)
        if (t.grad().defined()) {
          t.grad().mul_(1.0 / loss_scale);
          finite = finite && torch::isfinite(t.grad()).all().item<bool>();
        }
      if (!finite) {
        skip = true;
        loss_scale *= 0.5;
        good_steps = 0;
      } else if (++good_steps % 2000 == 0) {
        loss_scale *= 2.0;
      }
    }
    double grad_norm = 0;
    if (!skip) {
      if (o.max_grad_norm > 0) {
        grad_norm = torch::nn::utils::clip_grad_norm_(params, o.max_grad_norm);
      } else {
        double s = 0;
        for (auto& t : params)
          if (t.grad().defined()) s += t.grad().to(torch::kFloat64).pow(2).sum().item<double>();
        grad_norm = std::sqrt(s);
      }
      set_lr(o.learning_rate * lr_factor(step, o.warmup_steps, p.total_steps));
      optimizer.step();
    }
    optimizer.zero_grad();
    st.global_step = step + 1;
    st.epoch = static_cast<double>(epoch) +
               static_cast<double>((sie + 1) * plan.micro_per_step) / static_cast<double>(plan.n_micro);
    log_loss += step_loss;
    log_aux += step_aux;
    log_z += step_z;
    log_tokens += step_tokens;
    ++log_steps;
    log_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double lr_now = o.learning_rate * lr_factor(st.global_step, o.warmup_steps, p.total_steps);

    if (tty) {
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      const int64_t done = st.global_step - start_step, left = p.total_steps - st.global_step;
      const double frac = static_cast<double>(st.global_step) / static_cast<double>(p.total_steps);
      const int width = 30, filled = static_cast<int>(frac * width);
      std::cerr << "\r\033[K[" << std::string(filled, '=') << std::string(width - filled, ' ') << "] "
                << st.global_step << "/" << p.total_steps << " loss " << std::fixed << std::setprecision(4)
                << step_loss << std::defaultfloat << " | ETA " << fmt_duration(el / done * left) << std::flush;
    }
    if (st.global_step % o.logging_steps == 0 || st.global_step == p.total_steps) {
      json e{{"loss", std::round(log_loss / log_steps * 1e4) / 1e4}, {"learning_rate", lr_now},
             {"epoch", std::round(st.epoch * 100) / 100}, {"step", st.global_step},
             {"aux_loss", log_aux / log_steps}, {"grad_norm", grad_norm},
             {"tokens_per_second", log_seconds > 0 ? log_tokens / log_seconds : 0.0}};
      if (any_z) e["z_loss"] = log_z / log_steps;
      st.log_history.push_back(e);
      std::ostringstream ss;
      ss << "step " << st.global_step << "/" << p.total_steps << " | epoch " << std::fixed << std::setprecision(2)
         << st.epoch << " | loss " << std::setprecision(4) << log_loss / log_steps << " | aux " << log_aux / log_steps
         << " | lr " << std::scientific << std::setprecision(3) << lr_now << std::fixed << " | grad_norm "
         << std::setprecision(4) << grad_norm << " | " << std::setprecision(0)
         << (log_seconds > 0 ? log_tokens / log_seconds : 0.0) << " tok/s";
      emit(ss.str());
      log_loss = log_aux = log_z = log_seconds = 0;
      log_steps = log_tokens = 0;
      write_logs(out, st, p);
      router_log.write(st.global_step, st.epoch);
    }
    if (!p.val.empty() && st.global_step % o.eval_steps == 0) {
      double vl = evaluate_loss(model, p.val, o.eval_batch_size, o.obalance);
      st.log_history.push_back(json{{"eval_loss", vl}, {"epoch", std::round(st.epoch * 100) / 100}, {"step", st.global_step}});
      std::ostringstream ss;
      ss << "step " << st.global_step << "/" << p.total_steps << " | eval_loss " << std::fixed << std::setprecision(6) << vl;
      emit(ss.str());
      write_logs(out, st, p);
    }
    if (st.global_step % o.save_steps == 0) {
      save_checkpoint(st.global_step);
      last_saved = st.global_step;
    }
    if (g_stop_signal && st.global_step < p.total_steps) {
      const int sig = g_stop_signal;
      write_logs(out, st, p);
      if (last_saved != st.global_step) save_checkpoint(st.global_step);
      const fs::path ck = out / ("checkpoint-" + std::to_string(st.global_step));
      if (tty) std::cerr << "\n";
      std::cerr << "mor train: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << " received; stopped after step "
                << st.global_step << "/" << p.total_steps << " and wrote " << ck.string()
                << "\nmor train: to continue, rerun the same command with --resume_from_checkpoint " << ck.string()
                << " (or --resume_from_checkpoint latest)\n";
      return 128 + sig;
    }
  }
  if (tty) std::cerr << "\n";

  // Final adapter in output_dir (the reference's model.save_pretrained(output_dir)).
  save_adapter(model, p.alloc, out.string(), o.base_model);
  st.log_history.push_back(json{{"train_runtime", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()},
                                {"epoch", std::round(st.epoch * 100) / 100}, {"step", st.global_step},
                                {"peak_rss_mb", peak_rss_mb()}});
  write_logs(out, st, p);
  if (o.report) std::cout << "mor train: report written to " << write_report({out.string(), {}, ""}) << "\n";
  std::cout << "mor train: done, " << st.global_step << " steps; adapter written to " << out.string()
            << "; peak memory " << peak_rss_mb() << " MB\n";
  return 0;
}

}  // namespace mor
