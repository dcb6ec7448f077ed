// Writing a file so that readers never see a partial one: the bytes go to `<path>.tmp`, then one rename
// replaces the target. Every JSON/text file mor writes goes through here; tensors and datasets have
// their own writers (safetensors.cpp, dataset.cpp) built on the same rule. Every write and close is
// checked: a full disk is one error naming the file, the bytes needed and the space left (statvfs),
// and the temporary file is removed.
#pragma once
#include <cstdint>
#include <string>

namespace mor {

// Writes `data` to `path` as it is (for files inside a folder that is itself staged under a temporary
// name and renamed when complete). Throws std::runtime_error naming the file when the write fails;
// removes the partial file then.
void write_file(const std::string& path, const std::string& data);

// Throws std::runtime_error naming the file when the write or the rename fails; no `.tmp` is left.
void write_file_atomic(const std::string& path, const std::string& data);

// Streams a file in pieces (a large safetensors file) with the same checks: open() creates `path`,
// write() appends, close() checks the close; any failure throws naming `path`, and the destructor of an
// unclosed writer removes the partial file.
class FileWriter {
 public:
  explicit FileWriter(const std::string& path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;
  void write(const void* data, size_t n);
  void close();
  // How much was to be written in all (for the message when the disk fills); defaults to what was written.
  void expect_total(uint64_t bytes) { expected_ = bytes; }

 private:
  [[noreturn]] void fail(int err, const std::string& what);
  std::string path_;
  int fd_ = -1;
  uint64_t written_ = 0, expected_ = 0;
};

// "N bytes free on the file system of PATH" (statvfs of PATH or its folder), for error messages.
std::string free_space_note(const std::string& path);

}  // namespace mor
