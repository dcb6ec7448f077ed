// Where a dataset argument (--dataset, --data_path, --test_dataset) points, and the layouts the
// Hugging Face tools leave on disk: a local path as given, or a Hub dataset id ("derek-thomas/ScienceQA")
// found in the `datasets` cache (Arrow files a `load_dataset` prepared) or in the Hub cache (the repo's
// files, parquet). Also split names from data file names, as `datasets` derives them.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "arrow.h"
#include "dataset.h"

namespace mor {

// $HF_DATASETS_CACHE, else $HF_HOME/datasets, else $XDG_CACHE_HOME/huggingface/datasets, else
// ~/.cache/huggingface/datasets (what `datasets` uses).
std::string datasets_cache_dir();
// $HF_HUB_CACHE (or the older $HUGGINGFACE_HUB_CACHE), else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub (what huggingface_hub uses).
std::string hub_cache_dir();

// "name" or "org/name" with Hub-legal characters (letters, digits, '-', '_', '.'; no "--" or "..").
bool looks_like_hub_id(const std::string& s);

// datasets' camelcase_to_snakecase ("ScienceQA" -> "science_qa"), which names the cache folders.
std::string camelcase_to_snakecase(const std::string& name);

// One look in a cache: the folder found ("" when none) and a line for each place looked.
struct CacheLookup {
  std::string path;
  std::vector<std::string> looked;
};
// The `datasets` cache: {root}/{org}___{snake(name)}/{config}/{version}/{hash}/ (datasets >= 2.14)
// or {root}/{org}___parquet/{org}--{name}-{id}/{version}/{hash}/ (older; also json/csv/arrow/text
// builders); the most recently modified hash folder with a dataset_info.json wins, as in datasets.
// Several configurations of the dataset in the cache are an error naming them.
CacheLookup find_in_datasets_cache(const std::string& repo_id);
// The Hub cache: {root}/datasets--{org}--{name}/snapshots/{contents of refs/main}/.
CacheLookup find_in_hub_cache(const std::string& repo_id);

// The local path a dataset argument names. An existing file or folder is returned as given; else a
// Hub dataset id is looked up in the `datasets` cache, then the Hub cache; else one error listing
// every place looked. (The download fallback slots in after the two caches.)
std::string resolve_dataset(const std::string& path_or_hub_id);

// Split names for data files given relative to the dataset folder ('/'-separated), as `datasets`
// infers them: "data/{split}-00000-of-00001*.*" names any split; else train/validation/test keywords
// (train, training; validation, valid, dev, val; test, testing, eval, evaluation) in a folder name,
// else in the file name, delimited by '-', '_', '.', ' ' or digits; else everything is "train".
// Splits come back in that order (train, validation, test, then others by name), files sorted.
std::vector<std::pair<std::string, std::vector<std::string>>> splits_from_file_names(std::vector<std::string> files);

// The `datasets` features of an Arrow or Parquet schema: the "huggingface" metadata's info.features
// when present (as `datasets` writes it), else derived from the fields; `file` names errors.
nlohmann::ordered_json features_of_schema(const arrow::Schema& schema, const std::string& file);

// Loaders of the folders above (load_dataset in dataset.h dispatches to them).
bool is_datasets_cache_folder(const std::string& dir);  // dataset_info.json + *.arrow, no state.json
DatasetDict load_datasets_cache_folder(const std::string& dir);
bool has_parquet_files(const std::string& dir);  // *.parquet anywhere below
DatasetDict load_parquet_folder(const std::string& dir);
Dataset load_parquet_files(const std::vector<std::string>& files);

}  // namespace mor
