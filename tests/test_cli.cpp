// The `mor` dispatcher and the shared flag plumbing: dashed spellings, True/False booleans, errors.
#include <gtest/gtest.h>

#include <torch/version.h>

#include "cli.h"
#include "helpers.h"

using mor::test::run_mor;

TEST(Cli, HelpListsCommands) {
  auto r = run_mor("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* c : {"train", "eval-scienceqa", "generate", "prepare-scienceqa", "score", "params"})
    EXPECT_NE(r.out.find(c), std::string::npos) << c;
}

TEST(Cli, UnknownCommandFails) {
  auto r = run_mor("frobnicate");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
}

// The version line names the LibTorch the binary was built against (the headers' TORCH_VERSION) and
// whether it is a CUDA build, so users can tell which build they run.
TEST(Cli, VersionNamesLibTorchAndCuda) {
  auto r = run_mor("--version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("LibTorch " TORCH_VERSION), std::string::npos) << r.out;
  const bool cuda_build = r.out.find(" with CUDA (") != std::string::npos;
  EXPECT_NE(cuda_build, r.out.find("(CPU only)") != std::string::npos) << r.out;
  if (!cuda_build) {
    EXPECT_FALSE(torch::cuda::is_available());
  }
  EXPECT_NE(r.out.find(mor::cpu_has_fast_bf16() ? "has AVX512-BF16" : "lacks AVX512-BF16"), std::string::npos) << r.out;
}

static int parse(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
  app.parse(args);
  return 0;
}

TEST(Cli, UnderscoreAndDashSpellings) {
  for (std::string spelling : {"--base_model", "--base-model"}) {
    CLI::App app;
    std::string v = "x";
    mor::add_opt(app, "base_model", v, "model");
    parse(app, {spelling, "dir"});
    EXPECT_EQ(v, "dir");
  }
}

TEST(Cli, BooleanFlagForms) {
  struct Case { std::vector<std::string> args; bool expect; };
  for (const auto& c : std::vector<Case>{{{"--obalance"}, true}, {{"--obalance", "False"}, false},
                                         {{"--obalance", "True"}, true}, {{"--obalance", "false"}, false},
                                         {{}, true}}) {
    CLI::App app;
    bool v = c.args.empty();  // default
    mor::add_bool(app, "obalance", v, "balance");
    parse(app, c.args);
    EXPECT_EQ(v, c.expect);
  }
  CLI::App app;
  bool v = false;
  mor::add_bool(app, "obalance", v, "balance");
  EXPECT_THROW(parse(app, {"--obalance", "maybe"}), CLI::ValidationError);
}
