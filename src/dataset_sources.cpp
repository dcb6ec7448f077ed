// Dataset sources (see dataset_sources.h): cache folder naming and lookup as `datasets` and
// huggingface_hub do it, split names from file names, and the loaders of datasets-cache folders
// (Arrow stream files + dataset_info.json) and of parquet files and folders.
#include "dataset_sources.h"

#include "hub.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

#include "arrow.h"
#include "parquet.h"

namespace fs = std::filesystem;

namespace mor {

using json = nlohmann::ordered_json;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string hf_home() {
  if (!env("HF_HOME").empty()) return env("HF_HOME");
  if (!env("XDG_CACHE_HOME").empty()) return env("XDG_CACHE_HOME") + "/huggingface";
  return (env("HOME").empty() ? std::string(".") : env("HOME")) + "/.cache/huggingface";
}

json read_json(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error(p.string() + ": cannot read");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw std::runtime_error(p.string() + ": invalid JSON: " + e.what());
  }
}

std::pair<std::string, std::string> split_id(const std::string& id) {
  auto slash = id.find('/');
  if (slash == std::string::npos) return {"", id};
  return {id.substr(0, slash), id.substr(slash + 1)};
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::vector<fs::path> subdirs(const fs::path& p) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!is_dir(p)) return out;
  for (const auto& e : fs::directory_iterator(p, ec))
    if (is_dir(e.path())) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

bool is_sep(char c) { return c == '-' || c == '_' || c == '.' || c == ' ' || (c >= '0' && c <= '9'); }

// `kw` occurs in `s` after the start or a separator, and before a separator (or the end when
// `end_ok`).
bool has_keyword(const std::string& s, const std::string& kw, bool end_ok) {
  for (size_t i = s.find(kw); i != std::string::npos; i = s.find(kw, i + 1)) {
    bool before = i == 0 || is_sep(s[i - 1]);
    size_t j = i + kw.size();
    bool after = j == s.size() ? end_ok : is_sep(s[j]);
    if (before && after) return true;
  }
  return false;
}

const std::vector<std::pair<std::string, std::vector<std::string>>>& split_keywords() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> k = {
      {"train", {"train", "training"}},
      {"validation", {"validation", "valid", "dev", "val"}},
      {"test", {"test", "testing", "eval", "evaluation"}}};
  return k;
}

std::vector<fs::path> files_below(const fs::path& dir, const std::string& ext) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const fs::path& p = it->path();
    std::string name = p.filename().string();
    if (!name.empty() && name[0] == '.') {  // hidden files and folders (.cache, .git) are not data
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (p.extension() == ext && fs::is_regular_file(p, ec)) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string datasets_cache_dir() {
  if (!env("HF_DATASETS_CACHE").empty()) return env("HF_DATASETS_CACHE");
  return hf_home() + "/datasets";
}

std::string hub_cache_dir() {
  if (!env("HF_HUB_CACHE").empty()) return env("HF_HUB_CACHE");
  if (!env("HUGGINGFACE_HUB_CACHE").empty()) return env("HUGGINGFACE_HUB_CACHE");
  return hf_home() + "/hub";
}

bool looks_like_hub_id(const std::string& s) {
  static const std::regex re(R"(^([A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$)");
  return s.size() <= 200 && std::regex_match(s, re) && s.find("--") == std::string::npos && s.find("..") == std::string::npos;
}

std::string camelcase_to_snakecase(const std::string& name) {
  static const std::regex upper_upper("([A-Z]+)([A-Z][a-z])"), lower_upper("([a-z0-9])([A-Z])");
  std::string s = std::regex_replace(name, upper_upper, "$1_$2");
  s = std::regex_replace(s, lower_upper, "$1_$2");
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

CacheLookup find_in_datasets_cache(const std::string& repo_id) {
  CacheLookup out;
  auto [org, name] = split_id(repo_id);
  fs::path root = datasets_cache_dir();
  std::string prefix = org.empty() ? "" : org + "___";
  // (hash folder, config name) candidates of both layouts.
  std::vector<std::pair<fs::path, std::string>> found;
  fs::path current = root / (prefix + camelcase_to_snakecase(name));
  out.looked.push_back(current.string() + "/{config}/{version}/{hash}/ (the datasets cache)");
  for (const auto& config : subdirs(current))
    for (const auto& version : subdirs(config))
      for (const auto& hash : subdirs(version))
        if (fs::exists(hash / "dataset_info.json")) found.emplace_back(hash, config.filename().string());
  if (found.empty()) {
    // datasets < 2.14 named Hub datasets after their packaged builder and a config id
    // "{org}--{name}-{16 hex digits}".
    std::string id_prefix = (org.empty() ? "" : org + "--") + name + "-";
    for (const char* builder : {"parquet", "json", "csv", "arrow", "text"}) {
      fs::path legacy = root / (prefix + builder);
      if (std::string(builder) == "parquet") out.looked.push_back(legacy.string() + "/" + id_prefix + "*/{version}/{hash}/ (older datasets versions)");
      for (const auto& config : subdirs(legacy)) {
        std::string c = config.filename().string();
        if (c.rfind(id_prefix, 0) != 0 || c.size() != id_prefix.size() + 16) continue;
        for (const auto& version : subdirs(config))
          for (const auto& hash : subdirs(version))
            if (fs::exists(hash / "dataset_info.json")) found.emplace_back(hash, c);
      }
    }
  }
  if (found.empty()) return out;
  std::error_code ec;
  auto newest = std::max_element(found.begin(), found.end(), [&](const auto& a, const auto& b) {
    return fs::last_write_time(a.first, ec) < fs::last_write_time(b.first, ec);
  });
  std::set<std::string> configs;
  for (const auto& f : found) configs.insert(f.second);
  if (configs.size() > 1) {
    std::string list;
    for (const auto& c : configs) list += (list.empty() ? "" : ", ") + c;
    throw std::runtime_error(repo_id + ": the datasets cache holds several configurations (" + list + ") in " +
                             newest->first.parent_path().parent_path().parent_path().string() +
                             "; pass the folder of the one to use");
  }
  out.path = newest->first.string();
  return out;
}

CacheLookup find_in_hub_cache(const std::string& repo_id) {
  CacheLookup out;
  auto [org, name] = split_id(repo_id);
  fs::path repo = fs::path(hub_cache_dir()) / ("datasets--" + (org.empty() ? "" : org + "--") + name);
  out.looked.push_back(repo.string() + "/snapshots/{refs/main}/ (the Hub cache)");
  fs::path ref = repo / "refs" / "main";
  std::string commit;
  if (fs::exists(ref)) {
    std::ifstream f(ref);
    std::getline(f, commit);
    while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
  } else {
    auto snaps = subdirs(repo / "snapshots");  // no refs/main: a single snapshot is unambiguous
    if (snaps.size() == 1) commit = snaps[0].filename().string();
  }
  if (commit.empty() || commit.find('/') != std::string::npos || commit == "." || commit == "..") return out;
  fs::path snap = repo / "snapshots" / commit;
  if (is_dir(snap) && has_parquet_files(snap.string())) out.path = snap.string();
  return out;
}

std::string resolve_dataset(const std::string& arg) {
  std::error_code ec;
  if (fs::exists(arg, ec)) return arg;
  if (!looks_like_hub_id(arg)) throw std::runtime_error(arg + ": no such file or folder");
  std::vector<std::string> looked;
  for (auto find : {find_in_datasets_cache, find_in_hub_cache}) {
    CacheLookup c = find(arg);
    if (!c.path.empty()) return c.path;
    looked.insert(looked.end(), c.looked.begin(), c.looked.end());
  }
  std::string list;
  for (const auto& l : looked) list += (list.empty() ? " " : "; ") + l;  // one line: main prints it after "error: "
  // Not cached: download the repo's parquet files into the Hub cache (src/hub.h), then read them there.
  std::string failed;
  if (!hub_offline()) {
    HubRequest q;
    q.repo_id = arg;
    q.repo_type = "dataset";
    q.include = {"*.parquet"};
    q.cache_dir = hub_cache_dir();
    try {
      const std::string snap = hub_snapshot_download(q);
      CacheLookup c = find_in_hub_cache(arg);
      return c.path.empty() ? snap : c.path;
    } catch (const std::exception& e) {
      failed = std::string("; downloading it failed: ") + e.what();
    }
  }  // offline (HF_HUB_OFFLINE=1): the caches are all there is
  throw std::runtime_error(arg + ": no such file or folder, and no cached copy of the Hub dataset '" + arg +
                           "'; looked in:" + list + failed);
}

std::vector<std::pair<std::string, std::vector<std::string>>> splits_from_file_names(std::vector<std::string> files) {
  std::sort(files.begin(), files.end());
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  auto add = [&](const std::string& split, const std::string& f) {
    for (auto& s : out)
      if (s.first == split) return s.second.push_back(f);
    out.push_back({split, {f}});
  };
  // 1. data/{split}-NNNNN-of-NNNNN*.*
  static const std::regex sharded(R"(^data/(\w+(?:\.\w+)*?)-[0-9]{5}-of-[0-9]{5}[^/]*\.[^/]*$)");
  for (const auto& f : files) {
    std::smatch m;
    if (std::regex_match(f, m, sharded)) add(m[1].str(), f);
  }
  // 2. a split keyword in a folder name, 3. in the file name.
  for (int where = 0; where < 2 && out.empty(); ++where) {
    for (const auto& [split, keywords] : split_keywords()) {
      for (const auto& f : files) {
        size_t slash = f.rfind('/');
        std::string dirs = slash == std::string::npos ? "" : f.substr(0, slash), base = f.substr(slash + 1);
        bool hit = false;
        for (const auto& kw : keywords) {
          if (where == 1) {
            hit = hit || has_keyword(base, kw, false);
            continue;
          }
          std::stringstream ss(dirs);
          for (std::string comp; std::getline(ss, comp, '/');) hit = hit || has_keyword(comp, kw, true);
        }
        if (hit) add(split, f);
      }
    }
  }
  if (out.empty()) out.push_back({"train", files});
  // train, validation, test first, then the rest by name.
  auto rank = [](const std::string& s) { return s == "train" ? 0 : s == "validation" ? 1 : s == "test" ? 2 : 3; };
  std::stable_sort(out.begin(), out.end(), [&](const auto& a, const auto& b) {
    return rank(a.first) != rank(b.first) ? rank(a.first) < rank(b.first) : (rank(a.first) == 3 && a.first < b.first);
  });
  return out;
}

// --- loaders -----------------------------------------------------------------------------------

bool is_datasets_cache_folder(const std::string& dir) {
  fs::path d(dir);
  if (!fs::exists(d / "dataset_info.json") || fs::exists(d / "state.json")) return false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(d, ec))
    if (e.path().extension() == ".arrow") return true;
  return false;
}

DatasetDict load_datasets_cache_folder(const std::string& dir) {
  fs::path d(dir);
  json info = read_json(d / "dataset_info.json");
  if (!info.is_object()) throw std::runtime_error((d / "dataset_info.json").string() + ": expected an object");
  std::vector<std::string> arrows;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(d, ec)) {
    std::string name = e.path().filename().string();
    // cache-{fingerprint}.arrow files hold the results of .map()/.filter() calls, not the splits.
    if (e.path().extension() == ".arrow" && name.rfind("cache-", 0) != 0) arrows.push_back(name);
  }
  std::sort(arrows.begin(), arrows.end());
  // Split names: dataset_info.json's "splits" (in order), else the "-{split}.arrow" suffixes.
  std::vector<std::string> names;
  if (info.contains("splits") && info["splits"].is_object())
    for (auto it = info["splits"].begin(); it != info["splits"].end(); ++it) names.push_back(it.key());
  static const std::regex file_re(R"(^(.+)-(\w+(?:\.\w+)*?)(?:-[0-9]{5}-of-[0-9]{5})?\.arrow$)");
  if (names.empty())
    for (const auto& a : arrows) {
      std::smatch m;
      if (std::regex_match(a, m, file_re) && std::find(names.begin(), names.end(), m[2].str()) == names.end()) names.push_back(m[2]);
    }
  DatasetDict dd;
  for (const auto& split : names) {
    // {dataset_name}-{split}.arrow or {dataset_name}-{split}-NNNNN-of-NNNNN.arrow.
    std::regex re("^[^/]+-" + std::regex_replace(split, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                  R"((-[0-9]{5}-of-[0-9]{5})?\.arrow$)");
    Dataset ds;
    for (const auto& a : arrows) {
      if (!std::regex_match(a, re)) continue;
      arrow::Table t = arrow::read_stream_file((d / a).string());
      if (ds.features.is_null())
        ds.features = info.contains("features") && info["features"].is_object() ? info["features"] : features_of_schema(t.schema, (d / a).string());
      for (auto& r : t.rows) ds.rows.push_back(std::move(r));
    }
    if (ds.features.is_null())
      throw std::runtime_error(dir + ": dataset_info.json lists split '" + split + "' but no " + split + " .arrow file is there");
    dd.split_names.push_back(split);
    dd.splits[split] = std::move(ds);
  }
  if (dd.split_names.empty()) throw std::runtime_error(dir + ": no split found in dataset_info.json or the .arrow file names");
  return dd;
}

bool has_parquet_files(const std::string& dir) { return !files_below(dir, ".parquet").empty(); }

Dataset load_parquet_files(const std::vector<std::string>& files) {
  Dataset ds;
  for (const auto& f : files) {
    parquet::Table t = parquet::read_parquet_file(f);
    json features = features_of_schema(t.schema, f);
    if (ds.features.is_null()) ds.features = features;
    else if (features != ds.features)
      throw std::runtime_error(f + ": its columns differ from those of " + files.front() + " (" + features.dump() + " vs " +
                               ds.features.dump() + ")");
    for (auto& r : t.rows) ds.rows.push_back(std::move(r));
  }
  return ds;
}

DatasetDict load_parquet_folder(const std::string& dir) {
  std::vector<std::string> rel;
  fs::path root(dir);
  for (const auto& p : files_below(root, ".parquet")) rel.push_back(p.lexically_relative(root).generic_string());
  if (rel.empty()) throw std::runtime_error(dir + ": no .parquet files in the folder");
  DatasetDict dd;
  for (const auto& [split, files] : splits_from_file_names(rel)) {
    std::vector<std::string> paths;
    for (const auto& f : files) paths.push_back((root / f).string());
    dd.split_names.push_back(split);
    dd.splits[split] = load_parquet_files(paths);
  }
  return dd;
}

}  // namespace mor
