// ScienceQA evaluation as the reference evaluation_scienceqa.py does it: alpaca prompts in batches,
// greedy generation, batch_decode-style text, the response after "### Response:", answer extraction with
// `The answer is ([A-Z]).`, and the result file json.dump(indent=2) writes — saved every 200 examples (--save_every),
// resumable. Beyond the reference: accuracy by subject/grade/category and log-probability scoring.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "allocation.h"
#include "routing.h"

namespace mor {

struct EvalOptions {
  std::string test_dataset = "./scienceqa/scienceq_test.json";
  std::string base_model = "NousResearch/Llama-2-7b-hf";
  std::string mola_weights;  // empty: the base model alone
  std::string save_path = "./results/mola_test_sciqa.json";
  // Allocation flags: optional when the adapter folder records them (mola_config.json); when given
  // they must agree with it. The reference's adapters record no experts or top-k: then they are needed.
  AllocationFlags allocation;
  RoutingFlags routing;       // explicitly given ones override what mola_config.json recorded
  bool router_stats = false;  // router statistics per subject/grade/category in the result ("router_stats")
  int64_t batch_size = 8;
  int64_t max_new_tokens = 128;
  std::string scoring = "generate";  // generate | logprob
  std::string prompt_template = "alpaca";
  bool resume = false;
  std::string dtype = "auto", device = "cpu";
  int threads = 0;
  int64_t limit = 0;  // evaluate only the first `limit` rows (0 = all)
  int64_t save_every = 200;  // the result file is rewritten each time this many more are done (the reference: 200)
  bool quiet = false;
};

struct EvalSummary {
  double acc = 0;  // percent
  int64_t correct = 0, len = 0;
  nlohmann::ordered_json by_group;  // {"subject": {"natural science": {"acc", "correct", "len"}}, ...}
};

// re.findall(r'The answer is ([A-Z]).', text) with Python's '.' (any character but a newline).
std::vector<std::string> find_answers(const std::string& response);
// The single match, or "FAILED" when there is none or more than one.
std::string pick_answer(const std::vector<std::string>& matches);

EvalSummary evaluate_scienceqa(const EvalOptions& opt);

}  // namespace mor
