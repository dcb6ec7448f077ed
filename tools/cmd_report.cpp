// mor report: one self-contained HTML page for a training run and eval results (see src/report.h).
#include <iostream>

#include "cli.h"
#include "commands.h"
#include "report.h"

int mor::cmd_report(int argc, char** argv) {
  ReportOptions o;
  return run_command(
      "report", "One self-contained HTML page: training curves, expert load, routing, allocation, eval accuracy", argc,
      argv,
      [&](CLI::App& app) {
        app.add_option("run_dir", o.run_dir, "training output folder (trainer_state.json, router_stats.jsonl, ...)")->required();
        add_opt(app, "eval", o.evals, "eval-scienceqa result file(s) to include (repeatable)");
        add_opt(app, "out", o.out, "the HTML file (default RUN_DIR/report.html)");
      },
      [&]() {
        std::cout << "mor report: wrote " << write_report(o) << "\n";
        return 0;
      });
}
