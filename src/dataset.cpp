// Loading and saving datasets (see dataset.h): save_to_disk folders through the Arrow stream
// reader/writer, JSON lists and JSON lines through nlohmann, features in the `datasets` spelling.
#include "dataset.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "arrow.h"
#include "dataset_sources.h"
#include "files.h"
#include "pyjson.h"

namespace fs = std::filesystem;

namespace mor {

using json = nlohmann::ordered_json;

std::vector<std::string> Dataset::column_names() const {
  std::vector<std::string> names;
  const json& src = features.is_object() ? features : rows.empty() ? json::object() : rows.front();
  for (auto it = src.begin(); it != src.end(); ++it) names.push_back(it.key());
  return names;
}

const Dataset& DatasetDict::split(const std::string& name) const {
  auto it = splits.find(name);
  if (it != splits.end()) return it->second;
  std::string have;
  for (const auto& s : split_names) have += (have.empty() ? "" : ", ") + s;
  throw std::runtime_error("no split '" + name + "' in the dataset (splits: " + (have.empty() ? "none" : have) + ")");
}

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error(p.string() + ": cannot read");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json parse_json_file(const fs::path& p) {
  try {
    return json::parse(slurp(p));
  } catch (const json::exception& e) {
    throw std::runtime_error(p.string() + ": invalid JSON: " + e.what());
  }
}

// --- features -------------------------------------------------------------------------------

json value_feature(const std::string& dtype) { return json{{"dtype", dtype}, {"_type", "Value"}}; }

// The feature `datasets` would give an Arrow field it reads without metadata.
json feature_of_field(const arrow::Field& f) {
  using arrow::Type;
  switch (f.type) {
    case Type::Utf8: return value_feature("string");
    case Type::LargeUtf8: return value_feature("large_string");
    case Type::List: case Type::LargeList:
      return json{{"feature", feature_of_field(f.children[0])}, {"_type", f.type == Type::List ? "Sequence" : "LargeList"}};
    case Type::Struct: {
      json obj = json::object();
      for (const auto& c : f.children) obj[c.name] = feature_of_field(c);
      return obj;
    }
    case Type::Bool: return value_feature("bool");
    case Type::LargeBinary: return value_feature("large_binary");
    default: return value_feature(arrow::type_name(f.type));  // null, int8..uint64, float32/64, binary
  }
}

// The Arrow field `datasets` writes for a feature.
arrow::Field field_of_feature(const std::string& name, const json& feat) {
  using arrow::Type;
  arrow::Field f;
  f.name = name;
  auto bad = [&]() -> arrow::Field {
    throw std::runtime_error("column '" + name + "': unsupported feature " + feat.dump());
  };
  if (feat.is_array()) {  // [feature]: a list
    if (feat.size() != 1) return bad();
    f.type = Type::List;
    f.children.push_back(field_of_feature("item", feat[0]));
    return f;
  }
  if (!feat.is_object()) return bad();
  if (!feat.contains("_type")) {  // a dict of features: a struct
    f.type = Type::Struct;
    for (auto it = feat.begin(); it != feat.end(); ++it) f.children.push_back(field_of_feature(it.key(), it.value()));
    return f;
  }
  std::string kind = feat["_type"].is_string() ? feat["_type"].get<std::string>() : "";
  if (kind == "Value") {
    static const std::map<std::string, Type> dtypes = {
        {"null", Type::Null},     {"bool", Type::Bool},       {"int8", Type::Int8},       {"int16", Type::Int16},
        {"int32", Type::Int32},   {"int64", Type::Int64},     {"uint8", Type::UInt8},     {"uint16", Type::UInt16},
        {"uint32", Type::UInt32}, {"uint64", Type::UInt64},   {"float32", Type::Float32}, {"float64", Type::Float64},
        {"string", Type::Utf8},   {"large_string", Type::LargeUtf8}, {"binary", Type::Binary},
        {"large_binary", Type::LargeBinary}};
    std::string dtype = feat.value("dtype", "");
    auto it = dtypes.find(dtype);
    if (it == dtypes.end()) return bad();
    f.type = it->second;
    return f;
  }
  if (kind == "Sequence" || kind == "List" || kind == "LargeList") {
    if (!feat.contains("feature") || (feat.contains("length") && feat["length"] != -1)) return bad();
    const json& inner = feat["feature"];
    // datasets stores Sequence({dict}) as a struct of lists; not needed for text data.
    if (kind == "Sequence" && inner.is_object() && !inner.contains("_type")) return bad();
    f.type = kind == "LargeList" ? Type::LargeList : Type::List;
    f.children.push_back(field_of_feature("item", inner));
    return f;
  }
  if (kind == "ClassLabel") {
    f.type = Type::Int64;
    return f;
  }
  if (kind == "Image" || kind == "Audio") {  // struct{bytes: binary, path: string}
    f.type = Type::Struct;
    f.children = {field_of_feature("bytes", value_feature("binary")), field_of_feature("path", value_feature("string"))};
    return f;
  }
  return bad();
}

// Infers a feature from JSON values (nulls ignored; ints widen to float when mixed).
json infer_feature(const std::vector<const json*>& vals, const std::string& column) {
  std::string kind;  // "", "bool", "int", "float", "string", "list", "object"
  for (const json* v : vals) {
    if (v->is_null()) continue;
    std::string k = v->is_boolean() ? "bool" : v->is_number_float() ? "float" : v->is_number() ? "int"
                  : v->is_string() ? "string" : v->is_array() ? "list" : v->is_object() ? "object" : "binary";
    if (kind.empty() || kind == k) kind = k;
    else if ((kind == "int" && k == "float") || (kind == "float" && k == "int")) kind = "float";
    else throw std::runtime_error("column '" + column + "' mixes " + kind + " and " + k + " values");
  }
  if (kind.empty()) return value_feature("null");
  if (kind == "bool") return value_feature("bool");
  if (kind == "int") return value_feature("int64");
  if (kind == "float") return value_feature("float64");
  if (kind == "string") return value_feature("string");
  if (kind == "binary") return value_feature("binary");
  if (kind == "list") {
    std::vector<const json*> items;
    for (const json* v : vals)
      if (v->is_array())
        for (const json& x : *v) items.push_back(&x);
    return json{{"feature", infer_feature(items, column + ".item")}, {"_type", "Sequence"}};
  }
  json obj = json::object();  // struct: the union of keys in first-seen order
  for (const json* v : vals)
    if (v->is_object())
      for (auto it = v->begin(); it != v->end(); ++it)
        if (!obj.contains(it.key())) obj[it.key()] = nullptr;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    std::vector<const json*> sub;
    for (const json* v : vals)
      if (v->is_object() && v->contains(it.key())) sub.push_back(&(*v)[it.key()]);
    it.value() = infer_feature(sub, column + "." + it.key());
  }
  return obj;
}

// Features of rows (columns in first-seen order; a column missing from a row counts as null).
json infer_features(const std::vector<json>& rows) {
  json features = json::object();
  for (const json& r : rows)
    for (auto it = r.begin(); it != r.end(); ++it)
      if (!features.contains(it.key())) features[it.key()] = nullptr;
  for (auto it = features.begin(); it != features.end(); ++it) {
    std::vector<const json*> vals;
    for (const json& r : rows) {
      auto v = r.find(it.key());
      if (v != r.end()) vals.push_back(&*v);
    }
    it.value() = infer_feature(vals, it.key());
  }
  return features;
}

// Gives every row the same columns (first-seen order; missing ones null) and infers features.
Dataset rows_to_dataset(std::vector<json> rows) {
  std::vector<std::string> cols;
  {
    json seen = json::object();
    for (const json& r : rows)
      for (auto it = r.begin(); it != r.end(); ++it)
        if (!seen.contains(it.key())) seen[it.key()] = true, cols.push_back(it.key());
  }
  Dataset ds;
  for (json& r : rows) {
    bool same = r.size() == cols.size();
    size_t c = 0;
    for (auto it = r.begin(); same && it != r.end(); ++it, ++c) same = it.key() == cols[c];
    if (same) {
      ds.rows.push_back(std::move(r));
      continue;
    }
    json out = json::object();
    for (const auto& c : cols) out[c] = r.contains(c) ? std::move(r[c]) : json(nullptr);
    ds.rows.push_back(std::move(out));
  }
  ds.features = infer_features(ds.rows);
  return ds;
}

// --- loading ----------------------------------------------------------------------------------

Dataset load_json(const fs::path& p) {
  std::string text = slurp(p);
  std::vector<json> rows;
  json whole;
  bool parsed = true;
  try {
    whole = json::parse(text);
  } catch (const json::exception&) {
    parsed = false;
  }
  if (parsed && whole.is_array()) {
    for (size_t i = 0; i < whole.size(); ++i) {
      if (!whole[i].is_object())
        throw std::runtime_error(p.string() + ": expected a list of objects, but element " + std::to_string(i) +
                                 " is " + whole[i].type_name());
      rows.push_back(std::move(whole[i]));
    }
  } else if (parsed && whole.is_object()) {  // a single object: one row, as JSON lines would read it
    rows.push_back(std::move(whole));
  } else if (parsed) {
    throw std::runtime_error(p.string() + ": expected a list of objects or one object per line, found a " +
                             std::string(whole.type_name()));
  } else {  // JSON lines: one object per non-empty line
    std::istringstream in(text);
    std::string line;
    for (size_t lineno = 1; std::getline(in, line); ++lineno) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json obj;
      try {
        obj = json::parse(line);
      } catch (const json::exception& e) {
        throw std::runtime_error(p.string() + ": line " + std::to_string(lineno) + " is not valid JSON: " + e.what());
      }
      if (!obj.is_object())
        throw std::runtime_error(p.string() + ": line " + std::to_string(lineno) + " is a " + obj.type_name() +
                                 ", expected one object per line");
      rows.push_back(std::move(obj));
    }
  }
  return rows_to_dataset(std::move(rows));
}

Dataset load_arrow_folder(const fs::path& dir) {
  fs::path state_path = dir / "state.json";
  if (!fs::exists(state_path))
    throw std::runtime_error(dir.string() + ": not a saved Dataset folder (no state.json)");
  json state = parse_json_file(state_path);
  if (!state.is_object() || !state.contains("_data_files") || !state["_data_files"].is_array())
    throw std::runtime_error(state_path.string() + ": no _data_files list");
  Dataset ds;
  for (const json& df : state["_data_files"]) {
    if (!df.is_object() || !df.contains("filename") || !df["filename"].is_string())
      throw std::runtime_error(state_path.string() + ": a _data_files entry has no filename");
    std::string fname = df["filename"].get<std::string>();
    if (fname.find('/') != std::string::npos || fname == "..")
      throw std::runtime_error(state_path.string() + ": data file name '" + fname + "' leaves the folder");
    fs::path file = dir / fname;
    if (!fs::exists(file)) throw std::runtime_error(file.string() + ": data file listed in state.json is missing");
    arrow::Table t = arrow::read_stream_file(file.string());
    if (ds.features.is_null()) ds.features = features_of_schema(t.schema, file.string());
    for (auto& r : t.rows) ds.rows.push_back(std::move(r));
  }
  return ds;
}

// A short stable fingerprint of the written data (datasets uses a hash too; any 16 hex digits do).
std::string fingerprint(const std::string& data) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

void write_split(const Dataset& ds, const fs::path& dir) {
  fs::create_directories(dir);
  json features = ds.features.is_object() ? ds.features : infer_features(ds.rows);
  arrow::Schema schema;
  for (auto it = features.begin(); it != features.end(); ++it) schema.fields.push_back(field_of_feature(it.key(), it.value()));
  schema.metadata.emplace_back("huggingface", py_json_dumps(json{{"info", {{"features", features}}}}));
  std::string data = arrow::write_stream(schema, ds.rows);
  write_file((dir / "data-00000-of-00001.arrow").string(), data);
  json info = {{"citation", ""}, {"description", ""}, {"features", features}, {"homepage", ""}, {"license", ""}};
  write_file((dir / "dataset_info.json").string(), py_json_dumps(info, 2));
  json state = {{"_data_files", json::array({{{"filename", "data-00000-of-00001.arrow"}}})},
                {"_fingerprint", fingerprint(data)},
                {"_format_columns", nullptr},
                {"_format_kwargs", json::object()},
                {"_format_type", nullptr},
                {"_output_all_columns", false},
                {"_split", nullptr}};
  write_file((dir / "state.json").string(), py_json_dumps(state, 2));
}

}  // namespace

json features_of_schema(const arrow::Schema& schema, const std::string& file) {
  std::string hf = schema.metadata_value("huggingface");
  if (!hf.empty()) {
    try {
      json meta = json::parse(hf);
      if (meta.is_object() && meta.contains("info") && meta["info"].is_object() && meta["info"].contains("features"))
        return meta["info"]["features"];
    } catch (const json::exception& e) {
      throw std::runtime_error(file + ": invalid huggingface schema metadata: " + e.what());
    }
  }
  json features = json::object();
  for (const auto& f : schema.fields) features[f.name] = feature_of_field(f);
  return features;
}

DatasetDict load_dataset(const std::string& arg) {
  const std::string path = resolve_dataset(arg);  // a Hub id becomes its cached folder
  fs::path p(path);
  DatasetDict dd;
  if (!fs::exists(p)) throw std::runtime_error(path + ": no such file or folder");
  if (fs::is_directory(p)) {
    if (fs::exists(p / "dataset_dict.json")) {
      json meta = parse_json_file(p / "dataset_dict.json");
      if (!meta.is_object() || !meta.contains("splits") || !meta["splits"].is_array())
        throw std::runtime_error((p / "dataset_dict.json").string() + ": no \"splits\" list");
      for (const json& s : meta["splits"]) {
        if (!s.is_string()) throw std::runtime_error((p / "dataset_dict.json").string() + ": a split name is not a string");
        std::string name = s.get<std::string>();
        if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
          throw std::runtime_error((p / "dataset_dict.json").string() + ": invalid split name '" + name + "'");
        if (!fs::is_directory(p / name))
          throw std::runtime_error(path + ": split '" + name + "' is listed in dataset_dict.json but its folder " +
                                   (p / name).string() + " is missing");
        dd.split_names.push_back(name);
        dd.splits[name] = load_arrow_folder(p / name);
      }
    } else if (fs::exists(p / "state.json")) {
      dd.split_names.push_back("train");
      dd.splits["train"] = load_arrow_folder(p);
    } else if (is_datasets_cache_folder(path)) {
      return load_datasets_cache_folder(path);
    } else if (has_parquet_files(path)) {
      return load_parquet_folder(path);
    } else {
      throw std::runtime_error(path + ": not a save_to_disk folder (no dataset_dict.json or state.json), a datasets cache "
                               "folder (dataset_info.json + .arrow files) or a folder of .parquet files");
    }
    return dd;
  }
  std::string ext = p.extension().string();
  if (ext == ".parquet") {
    dd.split_names.push_back("train");
    dd.splits["train"] = load_parquet_files({path});
    return dd;
  }
  if (ext != ".json" && ext != ".jsonl")
    throw std::runtime_error(path + ": unsupported dataset file (expected a .json/.jsonl/.parquet file, a save_to_disk "
                             "folder, a folder of .parquet files or a Hub dataset id)");
  dd.split_names.push_back("train");
  try {
    dd.splits["train"] = load_json(p);
  } catch (const std::runtime_error& e) {  // column checks deep in the reader do not know the file
    if (std::string(e.what()).rfind(path, 0) == 0) throw;
    throw std::runtime_error(path + ": " + e.what());
  }
  return dd;
}

void save_to_disk(const DatasetDict& dd, const std::string& path) {
  fs::path target = fs::path(path).lexically_normal();
  if (target.filename().empty()) target = target.parent_path();
  fs::path tmp = target;
  tmp += ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp);
  try {
    fs::create_directories(tmp);
    for (const auto& name : dd.split_names) write_split(dd.split(name), tmp / name);
    write_file((tmp / "dataset_dict.json").string(), py_json_dumps(json{{"splits", dd.split_names}}));
    fs::remove_all(target);
    fs::rename(tmp, target);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace mor
