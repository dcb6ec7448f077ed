// Checked file writes (temporary name + rename), see files.h and file_writer.h. POSIX write(2) in a loop
// rather than std::ofstream: a stream's error bit says neither which errno nor how far the write got. A
// failed write or close removes the partial file, and a full disk says how much was needed and is free.
#include "files.h"

#include "file_writer.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace fs = std::filesystem;

namespace mor {

namespace {
std::string human_bytes(uint64_t b) {
  char buf[64];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", double(b) / double(1ull << 30));
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1ull << 20));
  else if (b >= (1ull << 10)) std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / double(1ull << 10));
  else std::snprintf(buf, sizeof buf, "%llu bytes", (unsigned long long)b);
  return buf;
}
}  // namespace

std::string free_space_note(const std::string& path) {
  fs::path p(path);
  struct statvfs st;
  for (int i = 0; i < 2; ++i) {
    if (::statvfs(p.c_str(), &st) == 0)
      return human_bytes(uint64_t(st.f_bavail) * uint64_t(st.f_frsize)) + " free on its file system";
    p = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  }
  return "free space unknown";
}

FileWriter::FileWriter(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    throw std::runtime_error(path + ": cannot create: " + std::strerror(err));
  }
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

void FileWriter::fail(int err, const std::string& what) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(path_.c_str());
  std::string msg = path_ + ": " + what + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) {
    const uint64_t need = std::max(expected_, written_);
    msg += " (needs " + human_bytes(need) + ", " + free_space_note(path_) + "; nothing was kept)";
  }
  throw std::runtime_error(msg);
}

void FileWriter::write(const void* data, size_t n) {
  if (fd_ < 0) throw std::runtime_error(path_ + ": write after close");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const size_t chunk = std::min<size_t>(n, size_t(1) << 30);
    const ssize_t w = ::write(fd_, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(errno, "cannot write");
    }
    if (w == 0) fail(ENOSPC, "cannot write");
    p += w;
    n -= size_t(w);
    written_ += uint64_t(w);
  }
}

void FileWriter::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  if (::close(fd) != 0) {
    const int err = errno;
    fd_ = -1;
    ::unlink(path_.c_str());
    std::string msg = path_ + ": cannot write (close): " + std::strerror(err);
    if (err == ENOSPC || err == EDQUOT)
      msg += " (needs " + human_bytes(std::max(expected_, written_)) + ", " + free_space_note(path_) + "; nothing was kept)";
    throw std::runtime_error(msg);
  }
  fd_ = -1;
}

void write_file(const std::string& path, const std::string& data) {
  FileWriter w(path);
  w.expect_total(data.size());
  w.write(data.data(), data.size());
  w.close();
}

void write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  write_file(tmp, data);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + ec.message());
  }
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

}  // namespace mor
