// ScienceQA preparation, as the seed's preparation_scienceqa_data.py does it: keep the problems
// without an image, build the alpaca-style instruction/input/output rows MoLA trains on, and write
// science_qa.hf (DatasetDict train/validation/test) plus scienceq_{split}.json (Python json.dump bytes).
#pragma once
#include <string>
#include <vector>

#include "dataset.h"

namespace mor {

// One problem (question, choices, answer index, hint, task, grade, subject, topic, category, skill,
// lecture, solution) to the output row: image, question, choices, answer (letter), hint, task, grade,
// subject, topic, category, skill, lecture, solution, input, instruction, output.
// `where` names the problem in errors (e.g. "problems.json: problem '12'").
Row scienceqa_row(const Row& problem, const std::string& where);

// The features of the output rows (image null, choices a sequence of strings, the rest strings).
nlohmann::ordered_json scienceqa_features();

struct ScienceQASplitCount {
  std::string split;
  size_t total = 0, kept = 0;
};

// Reads either input kind: a folder with problems.json + pid_splits.json (the original release), or
// a save_to_disk copy of derek-thomas/ScienceQA. Returns splits train, validation, test of kept rows.
DatasetDict prepare_scienceqa(const std::string& dataset_path, std::vector<ScienceQASplitCount>* counts = nullptr);

// Writes save_path/science_qa.hf and save_path/scienceq_{train,validation,test}.json, through a
// temporary folder renamed at the end.
void write_scienceqa(const DatasetDict& dd, const std::string& save_path);

}  // namespace mor
