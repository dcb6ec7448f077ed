// ScienceQA preparation (see scienceqa.h).
#include "scienceqa.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "dataset_sources.h"
#include "files.h"
#include "pyjson.h"

namespace fs = std::filesystem;

namespace mor {

using json = nlohmann::ordered_json;

namespace {

const char* kTextColumns[] = {"hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution"};

const std::string& text_field(const Row& p, const char* key, const std::string& where) {
  auto it = p.find(key);
  if (it == p.end()) throw std::runtime_error(where + " has no '" + key + "'");
  if (!it->is_string()) throw std::runtime_error(where + ": '" + key + "' is " + it->type_name() + ", expected a string");
  return it->get_ref<const std::string&>();
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

bool has_image(const Row& p) {
  auto it = p.find("image");
  return it != p.end() && !it->is_null();
}

}  // namespace

json scienceqa_features() {
  json s = {{"dtype", "string"}, {"_type", "Value"}};
  json f = json::object();
  f["image"] = {{"dtype", "null"}, {"_type", "Value"}};
  f["question"] = s;
  f["choices"] = {{"feature", s}, {"_type", "Sequence"}};
  for (const char* c : {"answer", "hint", "task", "grade", "subject", "topic", "category", "skill", "lecture",
                        "solution", "input", "instruction", "output"})
    f[c] = s;
  return f;
}

Row scienceqa_row(const Row& p, const std::string& where) {
  if (!p.is_object()) throw std::runtime_error(where + " is not an object");
  const std::string& question = text_field(p, "question", where);
  auto ch = p.find("choices");
  if (ch == p.end()) throw std::runtime_error(where + " has no 'choices'");
  if (!ch->is_array()) throw std::runtime_error(where + ": 'choices' is " + ch->type_name() + ", expected a list");
  if (ch->size() > 5) throw std::runtime_error(where + " has " + std::to_string(ch->size()) + " choices; at most 5 (A-E)");
  auto ans = p.find("answer");
  if (ans == p.end()) throw std::runtime_error(where + " has no 'answer'");
  if (!ans->is_number_integer())
    throw std::runtime_error(where + ": 'answer' is " + ans->type_name() + ", expected a choice index");
  int64_t index = ans->get<int64_t>();
  if (index < 0 || index >= static_cast<int64_t>(ch->size()))
    throw std::runtime_error(where + ": answer index " + std::to_string(index) + " is out of range for " +
                             std::to_string(ch->size()) + " choices");
  std::string options;
  for (size_t i = 0; i < ch->size(); ++i) {
    if (!(*ch)[i].is_string()) throw std::runtime_error(where + ": choice " + std::to_string(i) + " is not a string");
    options += (i ? " (" : "(") + std::string(1, static_cast<char>('A' + i)) + ") " + (*ch)[i].get<std::string>();
  }
  const std::string& hint = text_field(p, "hint", where);
  // The seed: context = " ".join([hint, ""]).strip(), "N/A" when empty; the join only appends a space,
  // which strip() removes again, so the context is the hint stripped of Python's whitespace.
  std::string context = py_strip(hint + " ");
  if (context.empty()) context = "N/A";
  std::string letter(1, static_cast<char>('A' + index));

  Row r = json::object();
  r["image"] = nullptr;
  r["question"] = question;
  r["choices"] = *ch;
  r["answer"] = letter;
  for (const char* c : kTextColumns) r[c] = text_field(p, c, where);
  r["input"] = "";
  r["instruction"] = "Context: " + context + "\nQuestion: " + question + "\nOptions: " + options + "\n";
  r["output"] = "Answer: The answer is " + letter + ".";
  return r;
}

DatasetDict prepare_scienceqa(const std::string& dataset_path, std::vector<ScienceQASplitCount>* counts) {
  const std::vector<std::pair<std::string, std::string>> splits = {{"train", "train"}, {"validation", "val"}, {"test", "test"}};
  DatasetDict out;
  std::vector<ScienceQASplitCount> cnt;
  fs::path root(dataset_path);
  if (fs::is_regular_file(root) && root.filename() == "problems.json") root = root.parent_path();
  if (fs::is_directory(root) && fs::exists(root / "problems.json")) {
    // The original release: problems keyed by id, split membership in pid_splits.json.
    fs::path prob_path = root / "problems.json", split_path = root / "pid_splits.json";
    if (!fs::exists(split_path)) throw std::runtime_error(split_path.string() + ": missing (needed beside problems.json)");
    json problems = read_json(prob_path);
    json pid_splits = read_json(split_path);
    if (!problems.is_object()) throw std::runtime_error(prob_path.string() + ": expected an object keyed by problem id");
    if (!pid_splits.is_object()) throw std::runtime_error(split_path.string() + ": expected an object of split lists");
    for (const auto& [name, key] : splits) {
      auto ids = pid_splits.find(key);
      if (ids == pid_splits.end() || !ids->is_array())
        throw std::runtime_error(split_path.string() + ": no '" + key + "' list");
      Dataset ds;
      ds.features = scienceqa_features();
      ScienceQASplitCount c{name, 0, 0};
      for (const json& id : *ids) {
        std::string pid = id.is_string() ? id.get<std::string>() : id.dump();
        auto it = problems.find(pid);
        if (it == problems.end())
          throw std::runtime_error(split_path.string() + ": problem '" + pid + "' of split '" + key + "' is not in problems.json");
        ++c.total;
        if (has_image(*it)) continue;
        ds.rows.push_back(scienceqa_row(*it, prob_path.string() + ": problem '" + pid + "'"));
        ++c.kept;
      }
      out.split_names.push_back(name);
      out.splits[name] = std::move(ds);
      cnt.push_back(c);
    }
  } else {
    // A copy of derek-thomas/ScienceQA: save_to_disk, the datasets cache, parquet files, or its Hub id.
    if (fs::is_directory(root) && !fs::exists(root / "dataset_dict.json") && !fs::exists(root / "state.json") &&
        !is_datasets_cache_folder(root.string()) && !has_parquet_files(root.string()))
      throw std::runtime_error(dataset_path + ": neither a ScienceQA release folder (problems.json + pid_splits.json) "
                               "nor a copy of derek-thomas/ScienceQA (save_to_disk, datasets cache or parquet files)");
    DatasetDict in = load_dataset(dataset_path);
    for (const auto& [name, key] : splits) {
      if (!in.splits.count(name))
        throw std::runtime_error(dataset_path + ": no '" + name + "' split (a ScienceQA copy has train, validation and test)");
      const Dataset& src = in.split(name);
      Dataset ds;
      ds.features = scienceqa_features();
      ScienceQASplitCount c{name, 0, 0};
      for (size_t i = 0; i < src.rows.size(); ++i) {
        ++c.total;
        if (has_image(src.rows[i])) continue;
        ds.rows.push_back(scienceqa_row(src.rows[i], dataset_path + ": split '" + name + "' row " + std::to_string(i)));
        ++c.kept;
      }
      out.split_names.push_back(name);
      out.splits[name] = std::move(ds);
      cnt.push_back(c);
    }
  }
  if (counts) *counts = cnt;
  return out;
}

void write_scienceqa(const DatasetDict& dd, const std::string& save_path) {
  fs::path target = fs::path(save_path).lexically_normal();
  if (target.filename().empty()) target = target.parent_path();
  fs::path tmp = target;
  tmp += ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp);
  std::vector<std::string> entries = {"science_qa.hf"};
  try {
    fs::create_directories(tmp);
    save_to_disk(dd, (tmp / "science_qa.hf").string());
    for (const auto& name : dd.split_names) {
      json rows = json::array();
      for (const Row& r : dd.split(name).rows) rows.push_back(r);
      std::string file = "scienceq_" + name + ".json";
      write_file((tmp / file).string(), py_json_dumps(rows));  // json.dump(rows, f): no trailing newline
      entries.push_back(file);
    }
    if (!fs::exists(target)) {
      if (target.has_parent_path()) fs::create_directories(target.parent_path());
      fs::rename(tmp, target);
    } else {
      if (!fs::is_directory(target)) throw std::runtime_error(target.string() + ": exists and is not a folder");
      for (const auto& e : entries) {
        fs::remove_all(target / e);
        fs::rename(tmp / e, target / e);
      }
      fs::remove_all(tmp);
    }
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace mor
