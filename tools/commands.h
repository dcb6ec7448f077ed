// The subcommands of `mor`, one thin main each (tools/cmd_*.cpp); argv[0] is the subcommand name.
#pragma once
#include <string>

namespace mor {
int cmd_generate(int argc, char** argv);          // tools/cmd_generate.cpp
int cmd_prepare_scienceqa(int argc, char** argv); // tools/cmd_prepare_scienceqa.cpp
int cmd_params(int argc, char** argv);            // tools/cmd_params.cpp
int cmd_score(int argc, char** argv);             // tools/cmd_score.cpp
int cmd_train(int argc, char** argv);             // tools/cmd_train.cpp
int cmd_eval_scienceqa(int argc, char** argv);    // tools/cmd_eval_scienceqa.cpp
int cmd_quickstart(int argc, char** argv);        // tools/cmd_quickstart.cpp
int cmd_download(int argc, char** argv);          // tools/cmd_download.cpp
int cmd_route(int argc, char** argv);             // tools/cmd_route.cpp
int cmd_report(int argc, char** argv);            // tools/cmd_report.cpp
std::string build_info();  // `mor --version`: LibTorch version, CUDA, CPU bf16 (src/cli.cpp)
}  // namespace mor
