// A fault-injecting write shim for the full-disk tests (LD_PRELOAD=libmor_enospc.so), for machines where
// a test may not mount a small tmpfs. Writes to files under $MOR_ENOSPC_DIR count against a budget of
// $MOR_ENOSPC_AFTER bytes; past it write/pwrite/writev fail with ENOSPC (a write that crosses the budget
// is cut short, as a real full disk does), and statvfs there reports the budget left as free space.
// With $MOR_ENOSPC_LOG set, every counted write is logged as "path<TAB>bytes before<TAB>n" instead.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

std::atomic<long long> g_used{0};

const char* dir() {
  static const char* d = std::getenv("MOR_ENOSPC_DIR");
  return d;
}
long long budget() {
  static long long b = [] {
    const char* s = std::getenv("MOR_ENOSPC_AFTER");
    return s ? std::atoll(s) : -1;
  }();
  return b;
}

bool counted(int fd, char* path, size_t cap) {
  if (!dir() || fd < 0) return false;
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, cap - 1);
  if (n <= 0) return false;
  path[n] = '\0';
  const size_t dl = std::strlen(dir());
  return std::strncmp(path, dir(), dl) == 0;
}

void log_write(const char* path, long long before, size_t n) {
  static const char* log = std::getenv("MOR_ENOSPC_LOG");
  char line[4200];
  const int len = std::snprintf(line, sizeof line, "%s\t%lld\t%zu\n", path, before, n);
  const int fd = static_cast<int>(syscall(SYS_open, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (fd < 0) return;
  syscall(SYS_write, fd, line, len);
  syscall(SYS_close, fd);
}

// How many of `n` bytes may be written now; -1 (errno ENOSPC) when none.
ssize_t allow(int fd, size_t n) {
  char path[4096];
  if (!counted(fd, path, sizeof path)) return static_cast<ssize_t>(n);
  if (std::getenv("MOR_ENOSPC_LOG")) {
    log_write(path, g_used.fetch_add(static_cast<long long>(n)), n);
    return static_cast<ssize_t>(n);
  }
  const long long b = budget();
  if (b < 0) return static_cast<ssize_t>(n);
  const long long used = g_used.load();
  const long long left = b - used;
  if (n == 0) return 0;
  if (left <= 0) {
    errno = ENOSPC;
    return -1;
  }
  const size_t ok = static_cast<size_t>(left) < n ? static_cast<size_t>(left) : n;
  g_used.fetch_add(static_cast<long long>(ok));
  return static_cast<ssize_t>(ok);
}

template <typename F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

ssize_t write(int fd, const void* buf, size_t n) {
  static auto f = real<ssize_t (*)(int, const void*, size_t)>("write");
  const ssize_t k = allow(fd, n);
  if (k < 0) return -1;
  return f(fd, buf, static_cast<size_t>(k));
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  static auto f = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  const ssize_t k = allow(fd, n);
  if (k < 0) return -1;
  return f(fd, buf, static_cast<size_t>(k), off);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) {
  static auto f = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite64");
  const ssize_t k = allow(fd, n);
  if (k < 0) return -1;
  return f(fd, buf, static_cast<size_t>(k), off);
}

ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  static auto f = real<ssize_t (*)(int, const struct iovec*, int)>("writev");
  size_t total = 0;
  for (int i = 0; i < cnt; ++i) total += iov[i].iov_len;
  const ssize_t k = allow(fd, total);
  if (k < 0) return -1;
  if (static_cast<size_t>(k) == total) return f(fd, iov, cnt);
  // Cut short: write the allowed prefix piece by piece.
  static auto w = real<ssize_t (*)(int, const void*, size_t)>("write");
  size_t left = static_cast<size_t>(k), done = 0;
  for (int i = 0; i < cnt && left > 0; ++i) {
    const size_t part = iov[i].iov_len < left ? iov[i].iov_len : left;
    const ssize_t r = w(fd, iov[i].iov_base, part);
    if (r < 0) return done ? static_cast<ssize_t>(done) : -1;
    done += static_cast<size_t>(r);
    left -= static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

int statvfs(const char* path, struct statvfs* buf) {
  static auto f = real<int (*)(const char*, struct statvfs*)>("statvfs");
  const int r = f(path, buf);
  if (r == 0 && dir() && budget() >= 0 && std::strncmp(path, dir(), std::strlen(dir())) == 0) {
    const long long left = budget() - g_used.load();
    buf->f_bavail = buf->f_bfree = static_cast<unsigned long>(left > 0 ? left : 0) / (buf->f_frsize ? buf->f_frsize : 1);
  }
  return r;
}

}  // extern "C"
