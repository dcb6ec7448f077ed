// Datasets as users have them: Hugging Face save_to_disk folders (DatasetDict or Dataset, Arrow IPC
// stream files), .json lists and .json/.jsonl lines. Rows are ordered JSON objects (column order kept);
// features follow the `datasets` spelling ({"dtype": "string", "_type": "Value"}, ...).
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mor {

using Row = nlohmann::ordered_json;  // one object per example; null, bool, numbers, strings, lists, objects

struct Dataset {
  std::vector<Row> rows;
  nlohmann::ordered_json features;  // `datasets` features, column -> feature; may be null when unknown
  std::vector<std::string> column_names() const;
};

// split name -> dataset, in the order dataset_dict.json lists them (a .json file or a single
// Dataset folder gives one split, "train").
struct DatasetDict {
  std::vector<std::string> split_names;
  std::map<std::string, Dataset> splits;
  const Dataset& split(const std::string& name) const;  // throws listing the splits present
};

// Loads any supported layout: a save_to_disk folder, a datasets-cache folder, a .parquet file or a
// folder of them (splits from the file names), a .json/.jsonl file, or a Hub dataset id found in the
// local caches (see dataset_sources.h). Throws with the file, and for Arrow/Parquet the column and
// offset, on bad input.
DatasetDict load_dataset(const std::string& path_or_hub_id);

// Writes a DatasetDict the way `datasets.save_to_disk` does, atomically (temporary folder + rename).
void save_to_disk(const DatasetDict& dd, const std::string& path);

}  // namespace mor
