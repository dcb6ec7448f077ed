// Checkpoints, resume resolution and training logs (see checkpoint.h).
#include "checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "files.h"
#include "trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mor {

json read_json_file(const std::string& p) {
  std::ifstream f(p);
  if (!f) throw std::runtime_error("cannot read " + p);
  try {
    return json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error(p + ": invalid JSON: " + e.what());
  }
}

bool is_full_checkpoint(const std::string& d) {
  const fs::path p(d);
  return fs::exists(p / "trainer_state.json") && fs::exists(p / "optimizer.pt") && fs::exists(p / "data_state.json");
}

namespace {
bool has_adapter_weights(const fs::path& d) {
  return fs::exists(d / "adapter_model.safetensors") || fs::exists(d / "adapter_model.bin");
}
// A folder that was meant to be a checkpoint: named checkpoint-N or holding a checkpoint's own files
// (not trainer_state.json alone: an output folder has one beside its final adapter).
bool looks_like_checkpoint(const fs::path& d) {
  static const std::regex re("checkpoint-[0-9]+");
  const std::string name = d.filename().empty() ? d.parent_path().filename().string() : d.filename().string();
  return std::regex_match(name, re) || fs::exists(d / "optimizer.pt") || fs::exists(d / "data_state.json");
}
std::string incomplete(const std::string& flag, const std::string& dir) {
  return "--resume_from_checkpoint " + flag + ": " + dir +
         " is an incomplete checkpoint (needs trainer_state.json, optimizer.pt and data_state.json)";
}
}  // namespace

ResumePlan resolve_resume(const std::string& v, const std::string& output_dir) {
  std::string lv = v;
  std::transform(lv.begin(), lv.end(), lv.begin(), ::tolower);
  if (v.empty() || lv == "false" || lv == "none") return {};
  if (lv == "true" || lv == "latest") {
    std::string last = latest_checkpoint(output_dir);
    if (last.empty())
      throw std::runtime_error("--resume_from_checkpoint " + v + ": no checkpoint-* folder in " + output_dir);
    if (!is_full_checkpoint(last)) throw std::runtime_error(incomplete(v, last));
    return {ResumeKind::Full, last};
  }
  if (!fs::is_directory(v)) throw std::runtime_error("--resume_from_checkpoint " + v + ": no such folder");
  if (is_full_checkpoint(v)) return {ResumeKind::Full, v};
  if (looks_like_checkpoint(v)) throw std::runtime_error(incomplete(v, v));
  if (has_adapter_weights(v)) return {ResumeKind::AdapterOnly, v};
  throw std::runtime_error("--resume_from_checkpoint " + v +
                           ": no checkpoint there (trainer_state.json + optimizer.pt) and no adapter weights "
                           "(adapter_model.safetensors or adapter_model.bin)");
}

json trainer_state_json(const TrainerState& st, int64_t max_steps, int64_t num_epochs) {
  json j;
  j["best_metric"] = nullptr;
  j["best_model_checkpoint"] = nullptr;
  j["epoch"] = st.epoch;
  j["global_step"] = st.global_step;
  j["is_hyper_param_search"] = false;
  j["is_local_process_zero"] = true;
  j["is_world_process_zero"] = true;
  j["log_history"] = st.log_history;
  j["max_steps"] = max_steps;
  j["num_train_epochs"] = num_epochs;
  j["total_flos"] = 0;
  j["trial_name"] = nullptr;
  j["trial_params"] = nullptr;
  return j;
}

void write_logs(const std::string& output_dir, const json& state) {
  const fs::path out(output_dir);
  write_file_atomic((out / "trainer_state.json").string(), state.dump(2) + "\n");
  std::string lines;
  for (const auto& e : state["log_history"]) lines += e.dump() + "\n";
  write_file_atomic((out / "metrics.jsonl").string(), lines);
}

std::string serialize_optimizer(const torch::optim::Optimizer& optimizer) {
  std::ostringstream ss;
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  archive.save_to(ss);
  return ss.str();
}

std::string serialize_tensor(const torch::Tensor& t) {
  std::ostringstream ss;
  torch::save(t, ss);
  return ss.str();
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> cks;
  static const std::regex re("checkpoint-([0-9]+)");
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return cks;
  for (const auto& e : fs::directory_iterator(output_dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, re)) cks.emplace_back(std::stoll(m[1]), e.path().string());
  }
  std::sort(cks.begin(), cks.end());
  return cks;
}

namespace {
void write_contents(const fs::path& dir, const CheckpointContents& c) {
  c.write_adapter(dir.string());
  write_file((dir / "optimizer.pt").string(), c.optimizer);
  write_file((dir / "scheduler.json").string(), c.scheduler.dump(2) + "\n");
  if (c.rng_states.size() == 1) {
    write_file((dir / "rng_state.pt").string(), c.rng_states[0]);
  } else {
    for (size_t r = 0; r < c.rng_states.size(); ++r)
      write_file((dir / ("rng_state_" + std::to_string(r) + ".pt")).string(), c.rng_states[r]);
  }
  write_file((dir / "data_state.json").string(), c.data_state.dump(2) + "\n");
  write_file((dir / "training_args.json").string(), c.training_args.dump(2) + "\n");
  // Last: its presence marks a complete checkpoint (is_full_checkpoint).
  write_file((dir / "trainer_state.json").string(), c.trainer_state.dump(2) + "\n");
}
}  // namespace

void remove_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  const fs::path doomed = d.parent_path() / (".tmp-delete-" + d.filename().string());
  std::error_code ec;
  fs::remove_all(doomed, ec);
  fs::rename(d, doomed, ec);  // one step: the folder stops being a checkpoint-N whole
  if (ec) throw std::runtime_error("cannot remove checkpoint " + dir + ": " + ec.message());
  fs::remove_all(doomed, ec);
}

namespace {
// Staging and deletion folders a killed run left in output_dir (.tmp-checkpoint-N, .tmp-delete-*):
// never a checkpoint-N, so nothing reads them; removed after the next complete save.
void sweep_staging(const fs::path& out) {
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(out, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".tmp-checkpoint-", 0) == 0 || name.rfind(".tmp-delete-checkpoint-", 0) == 0)
      stale.push_back(e.path());
  }
  for (const auto& p : stale) fs::remove_all(p, ec);
}
}  // namespace

std::string save_checkpoint(const std::string& output_dir, int64_t step, const CheckpointContents& c,
                            int64_t save_total_limit) {
  const fs::path out(output_dir);
  const fs::path final_dir = out / ("checkpoint-" + std::to_string(step));
  const fs::path tmp = out / (".tmp-checkpoint-" + std::to_string(step));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    write_contents(tmp, c);
    // An older checkpoint-<step> leaves by a rename, only once its successor is complete.
    if (fs::exists(final_dir)) remove_checkpoint(final_dir.string());
    fs::rename(tmp, final_dir);
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    std::string m = e.what();
    if (auto* fe = dynamic_cast<const fs::filesystem_error*>(&e)) m = fe->path1().string() + ": " + fe->code().message();
    throw std::runtime_error("checkpoint " + final_dir.string() + " not written: " + m);
  }
  sweep_staging(out);
  if (save_total_limit > 0) {
    // Renamed before removal: a kill inside remove_all must not leave a half-deleted checkpoint-N.
    auto cks = list_checkpoints(output_dir);
    for (size_t i = 0; i + save_total_limit < cks.size(); ++i) {
      try {
        remove_checkpoint(cks[i].second);
      } catch (const std::runtime_error&) {  // a prune that cannot rename keeps a whole checkpoint, as before
      }
    }
  }
  return final_dir.string();
}

LoadedCheckpoint read_checkpoint_state(const std::string& dir) {
  const fs::path ck(dir);
  LoadedCheckpoint l;
  l.trainer_state = read_json_file((ck / "trainer_state.json").string());
  l.data_state = read_json_file((ck / "data_state.json").string());
  return l;
}

namespace {
// torch::load of one archive; a c10 error becomes one line naming the file.
template <typename T>
void load_archive(T& into, const fs::path& p) {
  try {
    torch::load(into, p.string());
  } catch (const c10::Error& e) {
    std::string m = e.what_without_backtrace();
    throw std::runtime_error(p.string() + ": cannot load: " + m.substr(0, m.find('\n')));
  }
}
}  // namespace

LoadedCheckpoint load_checkpoint(const std::string& dir, torch::optim::Optimizer& optimizer) {
  const fs::path ck(dir);
  LoadedCheckpoint l = read_checkpoint_state(dir);
  load_archive(optimizer, ck / "optimizer.pt");
  auto load_rng = [&](const fs::path& p) {
    torch::Tensor t;
    load_archive(t, p);
    l.rng_states.push_back(t);
  };
  if (fs::exists(ck / "rng_state.pt")) load_rng(ck / "rng_state.pt");
  for (int r = 0; fs::exists(ck / ("rng_state_" + std::to_string(r) + ".pt")); ++r)
    load_rng(ck / ("rng_state_" + std::to_string(r) + ".pt"));
  return l;
}

namespace {
int64_t int_key(const json& j, const std::string& file, const char* key, int64_t fallback, int64_t lo) {
  if (!j.contains(key)) return fallback;
  const json& v = j[key];
  if (!v.is_number_integer() || v.get<int64_t>() < lo)
    throw std::runtime_error(file + ": \"" + key + "\" must be an integer >= " + std::to_string(lo) + ", not " + v.dump());
  return v.get<int64_t>();
}
double number_key(const json& j, const std::string& file, const char* key, double fallback, bool positive) {
  if (!j.contains(key)) return fallback;
  const json& v = j[key];
  if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0 || (positive && v.get<double>() == 0))
    throw std::runtime_error(file + ": \"" + key + "\" must be a finite number " + (positive ? "> 0" : ">= 0") +
                             ", not " + v.dump());
  return v.get<double>();
}
}  // namespace

ResumeState parse_resume_state(const LoadedCheckpoint& ck, const std::string& dir, const ResumeState& fallback) {
  const std::string ts = (fs::path(dir) / "trainer_state.json").string(), dsf = (fs::path(dir) / "data_state.json").string();
  const json &t = ck.trainer_state, &d = ck.data_state;
  if (!t.is_object()) throw std::runtime_error(ts + ": needs a JSON object");
  if (!d.is_object()) throw std::runtime_error(dsf + ": needs a JSON object");
  ResumeState r = fallback;
  if (!t.contains("global_step")) throw std::runtime_error(ts + ": no \"global_step\"");
  r.global_step = int_key(t, ts, "global_step", 0, 0);
  r.epoch = number_key(t, ts, "epoch", 0.0, false);
  r.log_history = t.contains("log_history") ? t["log_history"] : json::array();
  if (!r.log_history.is_array()) throw std::runtime_error(ts + ": \"log_history\" must be a list");
  for (const auto& e : r.log_history)
    if (!e.is_object()) throw std::runtime_error(ts + ": \"log_history\" must hold objects, not " + e.dump());
  r.world_size = int_key(d, dsf, "world_size", fallback.world_size, 1);
  r.micro_batch_size = int_key(d, dsf, "micro_batch_size", fallback.micro_batch_size, 1);
  r.accum = int_key(d, dsf, "accum", fallback.accum, 1);
  r.batch_size = int_key(d, dsf, "batch_size", r.accum * r.micro_batch_size * r.world_size, 1);
  r.n_train = int_key(d, dsf, "n_train", fallback.n_train, 0);
  r.seed = int_key(d, dsf, "seed", fallback.seed, std::numeric_limits<int64_t>::min());
  r.good_steps = int_key(d, dsf, "good_steps", 0, 0);
  r.loss_scale = number_key(d, dsf, "loss_scale", fallback.loss_scale, true);
  if (d.contains("group_by_length")) {
    if (!d["group_by_length"].is_boolean())
      throw std::runtime_error(dsf + ": \"group_by_length\" must be true or false, not " + d["group_by_length"].dump());
    r.group_by_length = d["group_by_length"].get<bool>();
  }
  return r;
}

}  // namespace mor
