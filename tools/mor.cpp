// mor: one binary, one subcommand per task; each accepts the Python MoLA scripts' flag names.
#include <cstring>
#include <iostream>
#include <string>

#include "commands.h"

namespace {
struct Command {
  const char* name;
  int (*fn)(int, char**);
  const char* help;
};
const Command kCommands[] = {
    {"quickstart", mor::cmd_quickstart, "make a tiny model and dataset, train MoLA adapters, evaluate before/after"},
    {"prepare-scienceqa", mor::cmd_prepare_scienceqa, "ScienceQA -> text-only science_qa.hf + scienceq_{train,validation,test}.json"},
    {"train", mor::cmd_train, "train mixture-of-LoRA-experts adapters on a frozen LLaMA"},
    {"eval-scienceqa", mor::cmd_eval_scienceqa, "batched greedy generation, answer extraction, accuracy JSON"},
    {"generate", mor::cmd_generate, "generate text for one prompt (greedy or sampled)"},
    {"score", mor::cmd_score, "per-example cross-entropy and balance loss on a dataset"},
    {"download", mor::cmd_download, "download a Hub model or dataset into the Hugging Face cache (shared with Python)"},
    {"route", mor::cmd_route, "per-token expert choices and weights of every layer's router for a prompt"},
    {"report", mor::cmd_report, "one self-contained HTML page: training curves, expert load, routing, eval accuracy"},
    {"params", mor::cmd_params, "per-layer adapter allocation and trainable parameter count from config.json"},
};

void usage(std::ostream& os) {
  os << "usage: mor <command> [flags]   (mor <command> --help for its flags; mor --version)\n\ncommands:\n";
  for (const auto& c : kCommands) os << "  " << c.name << std::string(20 - std::strlen(c.name), ' ') << c.help << "\n";
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) { usage(std::cerr); return 2; }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") { usage(std::cout); return 0; }
  if (cmd == "--version" || cmd == "version") { std::cout << mor::build_info() << "\n"; return 0; }
  for (const auto& c : kCommands)
    if (cmd == c.name) return c.fn(argc - 1, argv + 1);
  std::cerr << "mor: error: unknown command '" << cmd << "'\n";
  usage(std::cerr);
  return 2;
}
