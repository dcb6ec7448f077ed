// `mor report`: one self-contained HTML page (inline SVG and CSS, one small inline script to pick
// the module of the load heatmaps; nothing fetched) for a training run and optional eval results:
// loss / eval loss / learning rate / grad norm / tokens/s curves (trainer_state.json log_history, or
// metrics.jsonl), expert-load heatmaps (layers x experts) at a few steps from router_stats.jsonl,
// router entropy (and top-p's active experts, balance loss) per layer over time, the allocation
// table (mola_config.json), and per eval result the accuracy overall and by group as bars with the
// routing per group when the result holds router_stats.
#pragma once
#include <string>
#include <vector>

namespace mor {

struct ReportOptions {
  std::string run_dir;
  std::vector<std::string> evals;  // eval-scienceqa result files
  std::string out;                 // "" = RUN_DIR/report.html
};

// The page. Throws naming the file when the run folder holds no training log or a file is malformed.
std::string report_html(const ReportOptions& opt);
// Writes the page (temp file + rename); returns its path.
std::string write_report(const ReportOptions& opt);

// Which of n snapshots the heatmaps show: up to `k` indices spread evenly, always the last.
std::vector<size_t> snapshot_indices(size_t n, size_t k = 4);

}  // namespace mor
