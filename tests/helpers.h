// Helpers shared by the tests: where the real test data lives (../shared/testdata, skipped with a
// message when absent), scratch folders, running the `mor` binary and capturing what it prints.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace mor::test {

// ../shared/testdata beside the repo root, or $MOR_TESTDATA; "" when absent.
std::string testdata_dir();

// Skips the current test with a clear message when the shared test data is missing.
#define MOR_REQUIRE_TESTDATA()                                                             \
  do {                                                                                     \
    if (::mor::test::testdata_dir().empty())                                               \
      GTEST_SKIP() << "../shared/testdata not found beside the repo root (set MOR_TESTDATA)"; \
  } while (0)

// A fresh empty directory under the build's temp area, removed at process exit.
std::string scratch_dir(const std::string& name);

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs `mor <args>` (args already shell-quoted as needed) and captures stdout/stderr.
RunResult run_mor(const std::string& args);

// The message of the std::exception `f` throws, or "(no error)".
std::string error_of(const std::function<void()>& f);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);
std::string source_dir();  // repo root
// Single-quoted for the shell (test paths hold no quotes).
std::string q(const std::string& s);

}  // namespace mor::test
