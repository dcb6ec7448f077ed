// Fixtures for the bad-input, full-disk and kill -9 tests: a writable copy of the stories260K model, a
// small valid adapter for it, crafted safetensors files, JSON edits, and a snapshot of a folder tree
// (path -> type, size, mtime, content hash) to prove that a failed command left nothing new or changed.
#pragma once
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace mor::test::bad {

// `dir`/model: config.json, model.safetensors, tokenizer.model of stories260K (writable copies).
std::string copy_model(const std::string& dir);
// `dir`/adapter: adapter_model.safetensors + adapter_config.json + mola_config.json for stories260K
// (q_proj, v_proj; 2 experts of rank 2, top-1), made once per process and copied.
std::string copy_adapter(const std::string& dir);
// The alpaca-style training rows of the sample dataset (first n) written as JSON to `path`.
void write_train_json(const std::string& path, int n);
// The first n rows of the sample ScienceQA test split as a JSON list at `path`.
void write_test_json(const std::string& path, int n);

nlohmann::json read_json(const std::string& path);
void write_json(const std::string& path, const nlohmann::json& j);

// A safetensors file as header JSON + data bytes, and back.
struct RawSafetensors {
  nlohmann::json header;
  std::string data;
};
RawSafetensors read_raw(const std::string& path);
void write_raw(const std::string& path, const RawSafetensors& st, int64_t claimed_header_len = -1);

// Every entry under `root`: relative path -> "d" or "f <size> <mtime ns> <hash>".
using Snapshot = std::map<std::string, std::string>;
Snapshot snapshot(const std::string& root);
// Human-readable differences ("" when equal).
std::string diff(const Snapshot& before, const Snapshot& after);

// Checks of one failed command's stderr: "" when fine, else what is wrong.
std::string check_one_line_error(const std::string& err, const std::string& cmd, const std::string& expect);

}  // namespace mor::test::bad
