// A checked, streaming file writer (the one behind write_file / write_file_atomic of files.h) and the
// free-space note of full-disk messages. Every write(2) and the close are checked: a full disk is one
// error naming the file, the bytes needed and the space left (statvfs); the partial file is removed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace mor {

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
