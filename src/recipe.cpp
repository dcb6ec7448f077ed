// The training recipe (see recipe.h). Shapes: scalars only here; the tensor work is in train_step.cpp.
#include "recipe.h"

#include "report.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "adapter.h"
#include "files.h"

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

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

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

uint64_t dropout_seed(uint64_t seed, int64_t step, int64_t rank) {
  return seed * 1000003ULL + static_cast<uint64_t>(step) + static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ULL;
}

// ---- set-up ------------------------------------------------------------------------------------

void Trainer::setup() {
  env_ = read_ddp_env();
  in_ = prepare_training(requested_, env_.present ? env_.world : 1);  // every input checked before the weights load
  out_ = in_.opt.output_dir;
  tty_ = isatty(fileno(stderr));
  join_group();
  if (is_main()) print_plan();
  build_model();
  if (in_.resume.kind == ResumeKind::Full) load_checkpoint();
  if (is_main()) prepare_output_dir();
  start_step_ = st_.global_step;
  if (is_main()) warn_if_warmup_only();
  // Router statistics of each logging window, on the device until the log line; every rank counts its
  // own micro-batches and the log line sums them over the ranks.
  router_log_ = std::make_unique<RouterStatsLog>(model_, (fs::path(out_) / "router_stats.jsonl").string(),
                                                   in_.resume.kind == ResumeKind::Full ? st_.global_step : -1);
}

void Trainer::join_group() {
  if (!env_.present || env_.world == 1) return;
  dist_ = Distributed::connect(env_, in_.opt.ddp_backend, in_.opt.ddp_timeout, parse_device(in_.opt.device));
  if (is_main())
    std::cout << "mor train: data parallel over " << dist_.world() << " processes (" << dist_.backend() << ", "
              << env_.master_addr << ":" << env_.port << "), gradient accumulation " << in_.plan.accum
              << " per process\n";
}

void Trainer::print_plan() const {
  const TrainOptions& o = in_.opt;
  const auto& plan = in_.plan;
  std::cout << "mor train: " << in_.train.size() << " training examples, " << in_.val.size() << " validation; "
            << plan.n_micro << " micro-batches of " << o.micro_batch_size << " per epoch"
            << (in_.world > 1 ? " per process" : "") << ", gradient accumulation " << plan.accum << ", "
            << plan.steps_per_epoch << " optimizer steps per epoch, " << in_.total_steps << " in all\n";
  if (plan.dropped > 0)
    std::cout << "mor train: the last " << plan.dropped << " micro-batch(es) of each epoch do not fill an optimizer step "
              << "and are dropped\n";
  std::cout << in_.alloc.table() << std::flush;
}

// After every input has been checked and loaded, so that a bad input still fails with its one error line.
void Trainer::warn_if_warmup_only() const {
  const TrainOptions& o = in_.opt;
  if (in_.total_steps > o.warmup_steps) return;
  const double peak = o.learning_rate * lr_factor(in_.total_steps - 1, o.warmup_steps, in_.total_steps);
  std::ostringstream ss;
  ss << "mor train: warning: the run has " << in_.total_steps << " optimizer steps but --warmup_steps is "
     << o.warmup_steps << ": the learning rate only warms up and peaks at " << std::setprecision(3) << peak
     << " (not --learning_rate " << o.learning_rate << "); lower --warmup_steps to reach the full rate\n";
  std::cerr << ss.str();
}

void Trainer::build_model() {
  const TrainOptions& o = in_.opt;
  AdapterSpec spec;
  spec.allocation = in_.alloc;
  spec.attach = true;
  spec.seed = o.seed;
  if (in_.resume.kind != ResumeKind::None) spec.weights_dir = in_.resume.path;
  opened_ = load_model(in_.source, RuntimeOptions{o.device, o.dtype, o.threads}, spec);
  model_ = opened_.model;
  fp16_ = opened_.runtime.dtype == torch::kFloat16;
  if (in_.resume.kind == ResumeKind::AdapterOnly && is_main())
    std::cout << "mor train: loaded adapter weights from " << in_.resume.path << "; starting a fresh run\n";
  params_ = param_tensors(trainable_params(model_));
  int64_t n_trainable = 0;
  for (auto& t : params_) n_trainable += t.numel();
  if (is_main())
    std::cout << "mor train: " << n_trainable << " trainable parameters (float32), base in "
              << c10::toString(opened_.runtime.dtype) << " on " << opened_.runtime.device.str() << "\n";
  optimizer_ = std::make_unique<torch::optim::AdamW>(params_, torch::optim::AdamWOptions(o.learning_rate)
                                                                  .betas(std::make_tuple(0.9, 0.999))
                                                                  .eps(1e-8)
                                                                  .weight_decay(o.weight_decay));
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(opened_.runtime.device);
  log_loss_ = torch::zeros({}, f64);
  log_aux_ = torch::zeros({}, f64);
  grad_norm_ = torch::zeros({}, f64);
}

void Trainer::prepare_output_dir() {
  if (in_.opt.overwrite_output_dir && in_.resume.kind != ResumeKind::Full) {
    for (auto& [n, path] : list_checkpoints(out_)) remove_checkpoint(path);  // the previous run's
  }
  fs::create_directories(out_);
  write_file_atomic((fs::path(out_) / "training_args.json").string(), training_args_json(in_.opt).dump(2) + "\n");
}

// ---- the loop ----------------------------------------------------------------------------------

int Trainer::train() {
  SignalScope signals;
  model_->train();
  t_start_ = Clock::now();
  while (st_.global_step < in_.total_steps) {
    t_step_ = Clock::now();
    accumulate_gradients();
    reduce_gradients();
    optimizer_step();
    maybe_log();
    maybe_eval();
    maybe_save();
    if (st_.global_step < in_.total_steps && stop_requested()) return stop_after_signal();
  }
  finish();
  return 0;
}

StepResult Trainer::train_step(const std::vector<int64_t>& idx) {
  std::vector<const TokenizedExample*> batch;
  for (int64_t i : idx) batch.push_back(&in_.train[i]);
  TrainStepOptions so;
  so.loss_divisor = static_cast<double>(in_.plan.accum);
  so.loss_scale = fp16_ ? loss_scale_ : 1.0;
  so.obalance = in_.opt.obalance;
  so.gradient_checkpointing = in_.opt.gradient_checkpointing;
  so.router_stats = router_log_.get();
  return mor::train_step(model_, batch, so);
}

void Trainer::accumulate_gradients() {
  const TrainOptions& o = in_.opt;
  const StepPlan& plan = in_.plan;
  const int64_t step = st_.global_step, epoch = step / plan.steps_per_epoch, sie = step % plan.steps_per_epoch;
  if (epoch != sampler_epoch_) {
    sampler_ = MicroBatchSampler(epoch_order(epoch, o.seed, in_.train_lengths, o.micro_batch_size, o.group_by_length),
                                 plan, o.micro_batch_size, dist_.rank(), dist_.world());
    sampler_epoch_ = epoch;
  }
  torch::manual_seed(dropout_seed(o.seed, step, dist_.rank()));
  step_loss_ = torch::zeros_like(log_loss_);
  step_aux_ = torch::zeros_like(log_aux_);
  step_tokens_ = 0;
  step_z_ = torch::zeros_like(log_loss_);
  for (int64_t m = 0; m < plan.micro_per_step; ++m) {
    StepResult r = train_step(sampler_.batch(sie, m));
    if (r.z.defined()) {
      any_z_ = true;
      step_z_ += r.z.to(torch::kFloat64) / static_cast<double>(plan.micro_per_step);
    }
    step_loss_ += r.loss.to(torch::kFloat64) / static_cast<double>(plan.accum);
    step_aux_ += r.aux.to(torch::kFloat64) / static_cast<double>(plan.micro_per_step);
    step_tokens_ += r.tokens;
  }
}

void Trainer::reduce_gradients() { allreduce_seconds_ += dist_.average_gradients(params_); }

void Trainer::optimizer_step() {
  bool skip = false;
  if (fp16_) {  // unscale; skip the step and halve the scale on overflow (one check for all gradients)
    torch::Tensor found_inf;
    unscale_gradients(params_, loss_scale_, found_inf);
    if (found_inf.item<float>() > 0) {
      skip = true;
      loss_scale_ *= 0.5;
      good_steps_ = 0;
    } else if (++good_steps_ % 2000 == 0) {
      loss_scale_ *= 2.0;
    }
  }
  if (skip) {
    grad_norm_ = torch::zeros_like(log_loss_);
  } else {
    grad_norm_ = clip_gradients(params_, in_.opt.max_grad_norm).to(torch::kFloat64);
    for (auto& g : optimizer_->param_groups())
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_at(st_.global_step));
    optimizer_->step();
  }
  optimizer_->zero_grad();
  const StepPlan& plan = in_.plan;
  const int64_t step = st_.global_step, epoch = step / plan.steps_per_epoch, sie = step % plan.steps_per_epoch;
  st_.global_step = step + 1;
  st_.epoch = static_cast<double>(epoch) +
              static_cast<double>((sie + 1) * plan.micro_per_step) / static_cast<double>(plan.n_micro);
  log_loss_ += step_loss_;
  log_aux_ += step_aux_;
  log_z_ = log_z_.defined() ? log_z_ + step_z_ : step_z_.clone();
  log_tokens_ += step_tokens_;
  ++log_steps_;
  step_seconds_ = seconds_since(t_step_);
  log_seconds_ += step_seconds_;
}

double Trainer::lr_at(int64_t step) const {
  return in_.opt.learning_rate * lr_factor(step, in_.opt.warmup_steps, in_.total_steps);
}

// ---- after a step ------------------------------------------------------------------------------

// [mean loss, mean aux, tokens, mean z-loss, grad norm] of the steps since the last log line, over all ranks: one
// host sync (and one small collective). `reset` starts the next log window.
torch::Tensor Trainer::global_log_values(bool reset) {
  std::vector<torch::Tensor> v{torch::stack({log_loss_, log_aux_,
                                             torch::full({}, static_cast<double>(log_tokens_), log_loss_.options()),
                                             log_z_.defined() ? log_z_ : torch::zeros_like(log_loss_)})};
  dist_.all_reduce_sum(v);
  auto host = torch::cat({v[0], grad_norm_.reshape({1})}).cpu();
  const double w = static_cast<double>(dist_.world()), n = static_cast<double>(std::max<int64_t>(1, log_steps_));
  host[0] = host[0] / (w * n);
  host[1] = host[1] / (w * n);
  host[3] = host[3] / (w * n);
  if (reset) {
    log_loss_.zero_();
    log_aux_.zero_();
    if (log_z_.defined()) log_z_.zero_();
    log_tokens_ = log_steps_ = 0;
  }
  return host;
}

void Trainer::check_finite(double loss, const char* what) const {
  if (std::isfinite(loss)) return;
  const auto cks = list_checkpoints(out_);
  throw std::runtime_error(std::string("the training loss is ") + (std::isnan(loss) ? "nan" : "infinite") + " " + what +
                           " (step " + std::to_string(st_.global_step) + "): stopped; " +
                           (cks.empty() ? "no checkpoint was written"
                                        : "the last good checkpoint is " + cks.back().second) +
                           " (lower --learning_rate, or use --dtype float32)");
}

void Trainer::maybe_log() {
  const bool first = st_.global_step == start_step_ + 1;
  const bool due = st_.global_step % in_.opt.logging_steps == 0 || st_.global_step == in_.total_steps;
  if (!due) {
    if (first) check_finite(global_log_values(false)[0].item<double>(), "at the first step");
    if (tty_ && is_main()) progress_bar();
    return;
  }
  const double seconds = log_seconds_;
  if (router_log_)
    router_log_->write(st_.global_step, st_.epoch, [this](std::vector<torch::Tensor>& t) { dist_.all_reduce_sum(t); },
                       is_main());
  auto v = global_log_values(true);
  log_seconds_ = 0;
  const double loss = v[0].item<double>(), aux = v[1].item<double>(), tokens = v[2].item<double>();
  const double z = v[3].item<double>(), grad_norm = v[4].item<double>();
  const double lr_now = lr_at(st_.global_step), tps = seconds > 0 ? tokens / seconds : 0.0;
  check_finite(loss, "in the logged steps");
  last_loss_ = loss;
  if (!is_main()) return;
  json entry{{"loss", std::round(loss * 1e4) / 1e4}, {"learning_rate", lr_now},
             {"epoch", std::round(st_.epoch * 100) / 100}, {"step", st_.global_step},
             {"aux_loss", aux}, {"grad_norm", grad_norm}, {"tokens_per_second", tps}};
  if (any_z_) entry["z_loss"] = z;
  st_.log_history.push_back(entry);
  std::ostringstream ss;
  ss << "step " << st_.global_step << "/" << in_.total_steps << " | epoch " << std::fixed << std::setprecision(2)
     << st_.epoch << " | loss " << std::setprecision(4) << loss << " | aux " << aux << " | lr " << std::scientific
     << std::setprecision(3) << lr_now << std::fixed << " | grad_norm " << std::setprecision(4) << grad_norm << " | "
     << std::setprecision(0) << tps << " tok/s";
  if (dist_.world() > 1 && step_seconds_ > 0)
    ss << " | all-reduce " << std::setprecision(1) << 100.0 * allreduce_seconds_ / std::max(1e-9, seconds) << "%";
  allreduce_seconds_ = 0;
  emit(ss.str());
  write_logs(out_, trainer_state_json(st_, in_.total_steps, in_.opt.num_epochs));
}

void Trainer::maybe_eval() {
  if (in_.val.empty() || st_.global_step % in_.opt.eval_steps != 0) return;
  // Every rank computes the same value (the validation set is small next to training).
  const double vl = evaluate_loss(model_, in_.val, in_.opt.eval_batch_size, in_.opt.obalance);
  if (!is_main()) return;
  st_.log_history.push_back(json{{"eval_loss", vl}, {"epoch", std::round(st_.epoch * 100) / 100}, {"step", st_.global_step}});
  std::ostringstream ss;
  ss << "step " << st_.global_step << "/" << in_.total_steps << " | eval_loss " << std::fixed << std::setprecision(6) << vl;
  emit(ss.str());
  write_logs(out_, trainer_state_json(st_, in_.total_steps, in_.opt.num_epochs));
}

void Trainer::maybe_save() {
  if (st_.global_step % in_.opt.save_steps != 0) return;
  if (log_steps_ > 0) check_finite(global_log_values(false)[0].item<double>(), "since the last log line");
  save_checkpoint();
}

bool Trainer::stop_requested() {
  if (dist_.world() == 1) return g_stop_signal != 0;
  // Every rank must stop after the same step: agree on it (torchrun forwards SIGTERM to all ranks,
  // but they see it at different moments).
  std::vector<torch::Tensor> flag{torch::full({1}, g_stop_signal != 0 ? 1.0f : 0.0f)};
  dist_.all_reduce_sum(flag);
  return flag[0].item<float>() > 0;
}

int Trainer::stop_after_signal() {
  const int sig = g_stop_signal ? static_cast<int>(g_stop_signal) : SIGTERM;
  if (is_main()) write_logs(out_, trainer_state_json(st_, in_.total_steps, in_.opt.num_epochs));
  if (last_saved_ != st_.global_step) save_checkpoint();
  if (!is_main()) return 128 + sig;
  const std::string ck = (fs::path(out_) / ("checkpoint-" + std::to_string(st_.global_step))).string();
  if (tty_) std::cerr << "\n";
  std::cerr << "mor train: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << " received; stopped after step "
            << st_.global_step << "/" << in_.total_steps << " and wrote " << ck
            << "\nmor train: to continue, rerun the same command with --resume_from_checkpoint " << ck
            << " (or --resume_from_checkpoint latest)\n";
  return 128 + sig;
}

void Trainer::finish() {
  if (tty_ && is_main()) std::cerr << "\n";
  if (is_main()) {
    // Final adapter in output_dir (the reference's model.save_pretrained(output_dir)).
    save_adapter(model_, in_.alloc, out_, in_.opt.base_model);
    st_.log_history.push_back(json{{"train_runtime", seconds_since(t_start_)},
                                   {"epoch", std::round(st_.epoch * 100) / 100}, {"step", st_.global_step},
                                   {"train_samples", st_.global_step * in_.opt.batch_size},
                                   {"world_size", dist_.world()}, {"peak_rss_mb", peak_rss_mb()}});
    write_logs(out_, trainer_state_json(st_, in_.total_steps, in_.opt.num_epochs));
    if (in_.opt.report) std::cout << "mor train: report written to " << write_report({out_, {}, ""}) << "\n";
    std::cout << "mor train: done, " << st_.global_step << " steps; adapter written to " << out_ << "; peak memory "
              << peak_rss_mb() << " MB\n";
  }
  dist_.barrier();  // no rank exits before the adapter is complete
}

void Trainer::emit(const std::string& line) const {
  if (tty_) std::cerr << "\r\033[K";
  std::cout << line << std::endl;
}

void Trainer::progress_bar() const {
  const double el = seconds_since(t_start_);
  const int64_t done = st_.global_step - start_step_, left = in_.total_steps - st_.global_step;
  const double frac = static_cast<double>(st_.global_step) / static_cast<double>(in_.total_steps);
  const int width = 30, filled = static_cast<int>(frac * width);
  std::cerr << "\r\033[K[" << std::string(filled, '=') << std::string(width - filled, ' ') << "] " << st_.global_step
            << "/" << in_.total_steps << " loss " << std::fixed << std::setprecision(4) << last_loss_
            << std::defaultfloat << " | ETA " << fmt_duration(el / done * left) << std::flush;
}

// ---- checkpoints -------------------------------------------------------------------------------

void Trainer::save_checkpoint() {
  const TrainOptions& o = in_.opt;
  const StepPlan& plan = in_.plan;
  const int64_t step = st_.global_step, sie = step % plan.steps_per_epoch;
  // RNG: dropout draws are reseeded from (seed, step, rank) before every optimizer step, so the step
  // counter is the whole RNG state; every rank's generator state is kept too, as the Trainer does.
  std::vector<std::string> rng = dist_.gather_bytes(serialize_tensor(at::detail::getDefaultCPUGenerator().get_state()));
  if (is_main()) {
    CheckpointContents c;
    c.write_adapter = [&](const std::string& dir) { save_adapter(model_, in_.alloc, dir, o.base_model); };
    c.optimizer = serialize_optimizer(*optimizer_);
    c.rng_states = rng;
    c.scheduler = json{{"last_epoch", step}, {"base_lrs", {o.learning_rate}}, {"last_lr", {lr_at(step)}},
                       {"warmup_steps", o.warmup_steps}, {"total_steps", in_.total_steps}};
    c.data_state = json{{"epoch", step / plan.steps_per_epoch}, {"step_in_epoch", sie},
                        {"micro_batches_done_in_epoch", sie * plan.micro_per_step}, {"global_step", step},
                        {"seed", o.seed}, {"micro_batch_size", o.micro_batch_size}, {"accum", plan.accum},
                        {"batch_size", o.batch_size}, {"world_size", dist_.world()},
                        {"samples_seen", step * o.batch_size}, {"n_train", (int64_t)in_.train.size()},
                        {"group_by_length", o.group_by_length}, {"loss_scale", loss_scale_},
                        {"good_steps", good_steps_}, {"rng", "torch.manual_seed(seed, step, rank) per step"}};
    c.trainer_state = trainer_state_json(st_, in_.total_steps, o.num_epochs);
    c.training_args = training_args_json(o);
    mor::save_checkpoint(out_, step, c, o.save_total_limit);
  }
  dist_.barrier();  // the checkpoint is complete before any rank goes on (or exits)
  last_saved_ = step;
}

void Trainer::load_checkpoint() {
  const TrainOptions& o = in_.opt;
  LoadedCheckpoint ck = mor::load_checkpoint(in_.resume.path, *optimizer_);
  ResumeState now;  // this run's values: what a checkpoint without the key is taken to have
  now.accum = in_.plan.accum;
  now.micro_batch_size = o.micro_batch_size;
  now.n_train = static_cast<int64_t>(in_.train.size());
  now.seed = o.seed;
  now.group_by_length = o.group_by_length;
  now.loss_scale = loss_scale_;
  const ResumeState rs = parse_resume_state(ck, in_.resume.path, now);
  st_.log_history = rs.log_history;
  st_.global_step = rs.global_step;
  st_.epoch = rs.epoch;
  resumed_world_ = rs.world_size;
  if (rs.micro_batch_size != o.micro_batch_size || rs.batch_size != o.batch_size || rs.n_train != now.n_train ||
      static_cast<uint64_t>(rs.seed) != o.seed || rs.group_by_length != o.group_by_length)
    throw std::runtime_error("--resume_from_checkpoint " + in_.resume.path +
                             ": the checkpoint was made with a different batch size, dataset, seed or grouping");
  loss_scale_ = rs.loss_scale;
  good_steps_ = rs.good_steps;
  if (!is_main()) return;
  std::cout << "mor train: resuming from " << in_.resume.path << " at step " << st_.global_step << "\n";
  if (resumed_world_ != dist_.world())
    std::cerr << "mor train: warning: the checkpoint was written by " << resumed_world_ << " process(es), this run has "
              << dist_.world() << ": continuing at the same global sample (" << st_.global_step * o.batch_size
              << "), but the examples each process draws from now on differ from an uninterrupted run\n";
}

}  // namespace mor
