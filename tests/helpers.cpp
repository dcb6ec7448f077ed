// Helpers shared by the tests (see helpers.h).
#include "helpers.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace mor::test {

std::string source_dir() { return MOR_SOURCE_DIR; }

std::string testdata_dir() {
  if (const char* env = std::getenv("MOR_TESTDATA")) return fs::exists(env) ? env : "";
  fs::path p = fs::path(MOR_SOURCE_DIR).parent_path() / "shared" / "testdata";
  return fs::exists(p / "README.md") ? p.string() : "";
}

static fs::path scratch_root() {
  static fs::path root = [] {
    fs::path base = fs::temp_directory_path() / ("mor-test-" + std::to_string(::getpid()));
    fs::remove_all(base);
    fs::create_directories(base);
    static struct Cleanup {
      fs::path p;
      ~Cleanup() { if (!std::getenv("MOR_KEEP_SCRATCH")) fs::remove_all(p); }
    } cleanup{base};
    return base;
  }();
  return root;
}

std::string scratch_dir(const std::string& name) {
  fs::path p = scratch_root() / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
  if (!f) throw std::runtime_error("cannot write " + path);
}

RunResult run_mor(const std::string& args) {
  fs::path dir = scratch_root() / "run";
  fs::create_directories(dir);
  std::string out = (dir / "stdout").string(), err = (dir / "stderr").string();
  std::string cmd = std::string(MOR_BINARY) + " " + args + " >" + out + " 2>" + err + " </dev/null";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

}  // namespace mor::test
