// Writing a file so that readers never see a partial one: the bytes go to `<path>.tmp`, then one rename
// replaces the target. Every JSON/text file mor writes goes through here; tensors and datasets have
// their own writers (safetensors.cpp, dataset.cpp) built on the same rule.
#pragma once
#include <string>
#include <vector>

namespace mor {

// Writes `data` to `path` as it is (for files inside a folder that is itself staged under a temporary
// name and renamed when complete). Throws std::runtime_error naming the file when the write fails.
void write_file(const std::string& path, const std::string& data);

// Throws std::runtime_error naming the file when the write or the rename fails.
void write_file_atomic(const std::string& path, const std::string& data);

// "a, b, c": the lists of names that error messages give.
std::string join(const std::vector<std::string>& v, const std::string& sep = ", ");

}  // namespace mor
