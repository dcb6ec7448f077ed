// Fixtures for the bad-input, full-disk and kill -9 tests (see helpers_bad.h).
#include "helpers_bad.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <mutex>
#include <sstream>

#include "adapter.h"
#include "allocation.h"
#include "dataset.h"
#include "helpers.h"
#include "llama.h"

namespace fs = std::filesystem;

namespace mor::test::bad {


std::string copy_model(const std::string& dir) {
  const std::string src = testdata_dir() + "/stories260K", dst = dir + "/model";
  fs::create_directories(dst);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) {
    fs::copy_file(src + "/" + f, dst + "/" + f, fs::copy_options::overwrite_existing);
    fs::permissions(dst + "/" + f, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  }
  return dst;
}

std::string copy_adapter(const std::string& dir) {
  static std::once_flag once;
  static std::string made;
  std::call_once(once, [] {
    made = scratch_dir("bad_adapter_src") + "/adapter";
    auto model = load_llama(testdata_dir() + "/stories260K", torch::kFloat32, torch::kCPU);
    AllocationFlags f;
    f.target_modules = "q_proj,v_proj";
    f.number_experts = "2";
    f.lora_r = "2";
    f.top_k = "1";
    Allocation alloc = f.build(model->cfg);
    attach_adapters(model, alloc, 7);
    save_adapter(model, alloc, made, "stories260K");
  });
  const std::string dst = dir + "/adapter";
  fs::create_directories(dst);
  fs::copy(made, dst, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return dst;
}

void write_train_json(const std::string& path, int n) {
  DatasetDict dd = load_dataset(testdata_dir() + "/sampled_scienceqa_train_all.hf");
  nlohmann::json rows = nlohmann::json::array();
  const auto& r = dd.split("train").rows;
  for (int i = 0; i < n && i < int(r.size()); ++i)
    rows.push_back({{"instruction", r[i].at("instruction").get<std::string>()},
                    {"input", r[i].at("input").get<std::string>()},
                    {"output", r[i].at("output").get<std::string>()}});
  write_file(path, rows.dump());
}

void write_test_json(const std::string& path, int n) {
  auto rows = read_json(testdata_dir() + "/sampled_scienceqa_json/test.json");
  nlohmann::json out = nlohmann::json::array();
  for (int i = 0; i < n && i < int(rows.size()); ++i) out.push_back(rows[i]);
  write_file(path, out.dump());
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }
void write_json(const std::string& path, const nlohmann::json& j) { write_file(path, j.dump(2)); }

RawSafetensors read_raw(const std::string& path) {
  const std::string b = read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(b[i]);
  RawSafetensors st;
  st.header = nlohmann::json::parse(b.substr(8, n));
  st.data = b.substr(8 + n);
  return st;
}

void write_raw(const std::string& path, const RawSafetensors& st, int64_t claimed_header_len) {
  const std::string h = st.header.dump();
  const uint64_t n = claimed_header_len >= 0 ? uint64_t(claimed_header_len) : h.size();
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  write_file(path, s + h + st.data);
}

Snapshot snapshot(const std::string& root) {
  Snapshot s;
  if (!fs::exists(root)) return s;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const std::string rel = fs::relative(it->path(), root).string();
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      s[rel] = "d";
    } else {
      const std::string data = S_ISREG(st.st_mode) ? read_file(it->path().string()) : "";
      std::ostringstream o;
      o << "f " << st.st_size << " " << st.st_mtim.tv_sec << "." << st.st_mtim.tv_nsec << " "
        << std::hash<std::string>{}(data);
      s[rel] = o.str();
    }
  }
  return s;
}

std::string diff(const Snapshot& before, const Snapshot& after) {
  std::string d;
  for (const auto& [k, v] : after) {
    auto it = before.find(k);
    if (it == before.end()) d += "new: " + k + "\n";
    else if (it->second != v) d += "changed: " + k + " (" + it->second + " -> " + v + ")\n";
  }
  for (const auto& [k, v] : before)
    if (!after.count(k)) d += "removed: " + k + "\n";
  return d;
}

std::string check_one_line_error(const std::string& err, const std::string& cmd, const std::string& expect) {
  const std::string prefix = "mor " + cmd + ": error: ";
  if (err.empty()) return "stderr is empty";
  if (err.back() != '\n' || std::count(err.begin(), err.end(), '\n') != 1)
    return "stderr must be exactly one line, got:\n" + err;
  if (err.rfind(prefix, 0) != 0) return "stderr must start with '" + prefix + "', got:\n" + err;
  for (const char* bt : {"Exception raised from", "frame #", "terminate called", "(most recent call first)"})
    if (err.find(bt) != std::string::npos) return std::string("library message leaked (") + bt + "):\n" + err;
  if (err.find(expect) == std::string::npos) return "stderr does not name '" + expect + "':\n" + err;
  return "";
}

}  // namespace mor::test::bad
