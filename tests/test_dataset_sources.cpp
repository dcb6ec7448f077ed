// Dataset sources: split names from file names as `datasets` infers them, the cache folders the
// environment selects, Hub ids found in the datasets cache then the Hub cache (else one error listing
// every place), and ScienceQA read from four sources — the release folder, save_to_disk, the datasets
// cache's .arrow files and Hub-cache parquet (fixtures written by parquet-wasm) — giving identical rows
// and byte-identical `mor prepare-scienceqa` output.
#include <cstdlib>
#include <filesystem>

#include "arrow.h"
#include "dataset.h"
#include "dataset_sources.h"
#include "helpers.h"
#include "pyjson.h"
#include "scienceqa.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using namespace mor;
using mor::test::error_of;
using mor::test::read_file;
using mor::test::run_mor;
using mor::test::scratch_dir;
using mor::test::write_file;
using Splits = std::vector<std::pair<std::string, std::vector<std::string>>>;

// Sets environment variables for one scope; restores them after.
class EnvGuard {
 public:
  void set(const std::string& k, const std::string& v) {
    save(k);
    setenv(k.c_str(), v.c_str(), 1);
  }
  void unset(const std::string& k) {
    save(k);
    unsetenv(k.c_str());
  }
  ~EnvGuard() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second.first) setenv(it->first.c_str(), it->second.second.c_str(), 1);
      else unsetenv(it->first.c_str());
    }
  }

 private:
  void save(const std::string& k) {
    const char* v = std::getenv(k.c_str());
    saved_.push_back({k, {v != nullptr, v ? v : ""}});
  }
  std::vector<std::pair<std::string, std::pair<bool, std::string>>> saved_;
};

// Points every cache variable at `root` (so the user's real caches are never read).
void isolate(EnvGuard& env, const std::string& root) {
  for (const char* k : {"HF_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"}) env.unset(k);
  env.set("HF_HOME", root + "/hf_home");
  env.set("HF_HUB_OFFLINE", "1");  // the caches only: an uncached id is not downloaded (tests/test_hub.cpp does that)
}

TEST(DatasetSources, SplitNamesFromFileNames) {
  EXPECT_EQ(splits_from_file_names({"data/validation-00000-of-00001-6c73.parquet", "data/train-00001-of-00002-aa.parquet",
                                    "data/train-00000-of-00002-aa.parquet", "data/test-00000-of-00001-f0.parquet"}),
            (Splits{{"train", {"data/train-00000-of-00002-aa.parquet", "data/train-00001-of-00002-aa.parquet"}},
                    {"validation", {"data/validation-00000-of-00001-6c73.parquet"}},
                    {"test", {"data/test-00000-of-00001-f0.parquet"}}}));
  // The sharded pattern names any split.
  EXPECT_EQ(splits_from_file_names({"data/extra-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"}),
            (Splits{{"train", {"data/train-00000-of-00001.parquet"}}, {"extra", {"data/extra-00000-of-00001.parquet"}}}));
  // Keywords in file names: dev is validation, eval is test.
  EXPECT_EQ(splits_from_file_names({"test.parquet", "dev.parquet", "my_train_1.parquet"}),
            (Splits{{"train", {"my_train_1.parquet"}}, {"validation", {"dev.parquet"}}, {"test", {"test.parquet"}}}));
  // Keywords in folder names win over file names.
  EXPECT_EQ(splits_from_file_names({"training/test_part.parquet", "eval/0.parquet"}),
            (Splits{{"train", {"training/test_part.parquet"}}, {"test", {"eval/0.parquet"}}}));
  // A keyword must stand alone: "pretraining" and "contest" are not splits; nothing matches -> train.
  EXPECT_EQ(splits_from_file_names({"pretraining.parquet", "contest.parquet"}),
            (Splits{{"train", {"contest.parquet", "pretraining.parquet"}}}));
}

TEST(DatasetSources, CacheFoldersFollowTheEnvironment) {
  EnvGuard env;
  isolate(env, "/r");
  env.set("HOME", "/home/u");
  EXPECT_EQ(datasets_cache_dir(), "/r/hf_home/datasets");
  EXPECT_EQ(hub_cache_dir(), "/r/hf_home/hub");
  env.unset("HF_HOME");
  EXPECT_EQ(datasets_cache_dir(), "/home/u/.cache/huggingface/datasets");
  EXPECT_EQ(hub_cache_dir(), "/home/u/.cache/huggingface/hub");
  env.set("XDG_CACHE_HOME", "/x");
  EXPECT_EQ(hub_cache_dir(), "/x/huggingface/hub");
  env.set("HF_DATASETS_CACHE", "/d");
  env.set("HF_HUB_CACHE", "/h");
  EXPECT_EQ(datasets_cache_dir(), "/d");
  EXPECT_EQ(hub_cache_dir(), "/h");
  EXPECT_EQ(camelcase_to_snakecase("ScienceQA"), "science_qa");
  EXPECT_EQ(camelcase_to_snakecase("SQuAD"), "s_qu_ad");  // as Python's datasets.naming gives
  EXPECT_EQ(camelcase_to_snakecase("TinyStories2Data"), "tiny_stories2_data");
  EXPECT_TRUE(looks_like_hub_id("derek-thomas/ScienceQA"));
  EXPECT_TRUE(looks_like_hub_id("squad"));
  EXPECT_FALSE(looks_like_hub_id("/abs/path"));
  EXPECT_FALSE(looks_like_hub_id("a/b/c"));
  EXPECT_FALSE(looks_like_hub_id("../x"));
  EXPECT_FALSE(looks_like_hub_id("org--x/y"));
}

TEST(DatasetSources, AnUncachedHubIdListsEveryPlaceLooked) {
  std::string root = scratch_dir("sources-none");
  EnvGuard env;
  isolate(env, root);
  std::string e = error_of([] { load_dataset("derek-thomas/ScienceQA"); });
  EXPECT_EQ(e, "derek-thomas/ScienceQA: no such file or folder, and no cached copy of the Hub dataset 'derek-thomas/ScienceQA'; looked in: " +
                   root + "/hf_home/datasets/derek-thomas___science_qa/{config}/{version}/{hash}/ (the datasets cache); " +
                   root + "/hf_home/datasets/derek-thomas___parquet/derek-thomas--ScienceQA-*/{version}/{hash}/ (older datasets versions); " +
                   root + "/hf_home/hub/datasets--derek-thomas--ScienceQA/snapshots/{refs/main}/ (the Hub cache)");
  // A path that is not an id stays a plain missing-file error.
  EXPECT_EQ(error_of([&] { load_dataset(root + "/nothing.parquet"); }), root + "/nothing.parquet: no such file or folder");
}

// --- ScienceQA from four sources --------------------------------------------------------------

std::string sqa_fixture() { return mor::test::source_dir() + "/tests/fixtures/scienceqa"; }
std::string parquet_fixture() { return mor::test::source_dir() + "/tests/fixtures/parquet/scienceqa"; }
const std::vector<std::pair<std::string, std::string>> kSplitKeys = {{"train", "train"}, {"validation", "val"}, {"test", "test"}};

json hf_features() {
  json s = {{"dtype", "string"}, {"_type", "Value"}};
  json f = json::object();
  f["image"] = {{"_type", "Image"}};
  f["question"] = s;
  f["choices"] = {{"feature", s}, {"_type", "Sequence"}};
  f["answer"] = {{"dtype", "int8"}, {"_type", "Value"}};
  for (const char* c : {"hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution"}) f[c] = s;
  return f;
}

// derek-thomas/ScienceQA's rows for the release fixture's problems (as make_fixtures.mjs writes them).
DatasetDict hf_rows() {
  json problems = json::parse(read_file(sqa_fixture() + "/problems.json"));
  json pid_splits = json::parse(read_file(sqa_fixture() + "/pid_splits.json"));
  json features = hf_features();
  DatasetDict dd;
  for (const auto& [split, key] : kSplitKeys) {
    Dataset ds;
    ds.features = features;
    for (const json& id : pid_splits[key]) {
      const json& p = problems[id.get<std::string>()];
      json row = json::object();
      for (auto it = features.begin(); it != features.end(); ++it) row[it.key()] = p[it.key()];
      row["image"] = p["image"].is_null() ? json(nullptr) : json{{"bytes", json::binary({0x89, 'P', 'N', 'G'})}, {"path", nullptr}};
      ds.rows.push_back(row);
    }
    dd.split_names.push_back(split);
    dd.splits[split] = ds;
  }
  return dd;
}

// The datasets cache as `load_dataset("derek-thomas/ScienceQA")` leaves it: in `dir` (the hash
// folder), Arrow stream files {prefix}-{split}[-SSSSS-of-NNNNN].arrow (train in two shards) and
// dataset_info.json with the splits, beside a cache-*.arrow file of a .map(). The Arrow schema is the one save_to_disk writes for the features.
std::string write_datasets_cache(const fs::path& dir, const std::string& prefix, const DatasetDict& dd) {
  fs::create_directories(dir);
  std::string tmp = dir.string() + ".tmp.hf";
  save_to_disk(dd, tmp);
  arrow::Schema schema = arrow::read_stream_file(tmp + "/train/data-00000-of-00001.arrow").schema;
  fs::remove_all(tmp);
  json splits = json::object();
  for (const auto& name : dd.split_names) {
    const auto& rows = dd.split(name).rows;
    std::vector<std::vector<json>> shards;
    if (name == "train") shards = {{rows.begin(), rows.begin() + 2}, {rows.begin() + 2, rows.end()}};
    else shards = {rows};
    json lengths = json::array();
    for (size_t s = 0; s < shards.size(); ++s) {
      char suffix[32];
      std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu", s, shards.size());
      std::string file = prefix + "-" + name + (shards.size() > 1 ? suffix : "") + ".arrow";
      write_file((dir / file).string(), arrow::write_stream(schema, shards[s]));
      lengths.push_back(shards[s].size());
    }
    splits[name] = {{"name", name}, {"num_bytes", 0}, {"num_examples", rows.size()},
                    {"shard_lengths", shards.size() > 1 ? lengths : json(nullptr)}, {"dataset_name", prefix}};
  }
  json info = {{"description", ""}, {"citation", ""}, {"homepage", ""}, {"license", ""}, {"features", hf_features()},
               {"builder_name", "parquet"}, {"dataset_name", prefix}, {"config_name", "default"},
               {"version", {{"version_str", "0.0.0"}, {"major", 0}, {"minor", 0}, {"patch", 0}}}, {"splits", splits}};
  write_file((dir / "dataset_info.json").string(), py_json_dumps(info, 2));
  write_file((dir / "cache-5b1a2c3d4e5f6789.arrow").string(), "a .map() result: never read");
  return dir.string();
}

// The Hub cache as huggingface_hub leaves it: blobs named by hash, snapshot links, refs/main.
std::string write_hub_cache(const std::string& root) {
  fs::path repo = fs::path(root) / "datasets--derek-thomas--ScienceQA";
  std::string commit = "6ad4d55ab2bb5a5b8c9e4f8b5c0e5d3a9ef7e0c1";
  fs::path snap = repo / "snapshots" / commit;
  fs::create_directories(snap / "data");
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "refs");
  write_file((repo / "refs" / "main").string(), commit);
  int k = 0;
  auto add = [&](const std::string& rel, const std::string& bytes) {
    std::string blob = "blob" + std::to_string(k++);
    write_file((repo / "blobs" / blob).string(), bytes);
    fs::create_symlink(fs::path(rel.find('/') != std::string::npos ? "../../../blobs" : "../../blobs") / blob, snap / rel);
  };
  for (const auto& e : fs::directory_iterator(parquet_fixture()))
    add("data/" + e.path().filename().string(), read_file(e.path().string()));
  add("README.md", "---\nlicense: cc-by-sa-4.0\n---\n# ScienceQA\n");
  // An older snapshot that refs/main no longer names: never read.
  fs::create_directories(repo / "snapshots" / "0000000000000000000000000000000000000000" / "data");
  write_file((repo / "snapshots" / "0000000000000000000000000000000000000000" / "data" / "train-00000-of-00001.parquet").string(), "junk");
  return snap.string();
}

void expect_same(const DatasetDict& a, const DatasetDict& b, const std::string& what) {
  ASSERT_EQ(a.split_names, b.split_names) << what;
  for (const auto& s : a.split_names) {
    EXPECT_EQ(json(a.split(s).rows), json(b.split(s).rows)) << what << " split " << s;
    EXPECT_EQ(a.split(s).features, b.split(s).features) << what << " split " << s;
  }
}

std::vector<std::string> files_under(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path().lexically_relative(dir).generic_string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(DatasetSources, ScienceQAFromFourSourcesIsIdentical) {
  std::string root = scratch_dir("sources-sqa");
  DatasetDict hf = hf_rows();
  std::string saved = root + "/ScienceQA.hf";
  save_to_disk(hf, saved);
  std::string dc_hash = write_datasets_cache(fs::path(root) / "dc" / "derek-thomas___science_qa" / "default" / "0.0.0" /
                                                 "0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6", "science_qa", hf);
  std::string snapshot = write_hub_cache(root + "/hub");

  // The raw rows: identical from save_to_disk, the datasets cache and the Hub cache's parquet files.
  expect_same(load_dataset(saved), hf, "save_to_disk");
  expect_same(load_dataset(dc_hash), hf, "datasets cache");
  expect_same(load_dataset(snapshot), hf, "hub cache parquet");
  EXPECT_TRUE(load_dataset(snapshot).split("train").rows[2]["image"]["bytes"].is_binary());

  // The Hub id: the datasets cache first, then the Hub cache.
  EnvGuard env;
  isolate(env, root);
  env.set("HF_DATASETS_CACHE", root + "/dc");
  env.set("HF_HUB_CACHE", root + "/hub");
  EXPECT_EQ(resolve_dataset("derek-thomas/ScienceQA"), dc_hash);
  env.set("HF_DATASETS_CACHE", root + "/empty");
  EXPECT_EQ(resolve_dataset("derek-thomas/ScienceQA"), snapshot);

  // prepare_scienceqa: the same rows from all four, and the same bytes written.
  DatasetDict release = prepare_scienceqa(sqa_fixture());
  write_scienceqa(release, root + "/lib-release");
  std::vector<std::pair<std::string, DatasetDict>> prepared;
  prepared.emplace_back("save_to_disk", prepare_scienceqa(saved));
  prepared.emplace_back("hub cache", prepare_scienceqa("derek-thomas/ScienceQA"));
  env.set("HF_DATASETS_CACHE", root + "/dc");
  prepared.emplace_back("datasets cache", prepare_scienceqa("derek-thomas/ScienceQA"));
  for (size_t k = 0; k < prepared.size(); ++k) {
    expect_same(prepared[k].second, release, "prepare from " + prepared[k].first);
    std::string out = root + "/lib-" + std::to_string(k);
    write_scienceqa(prepared[k].second, out);
    ASSERT_EQ(files_under(out), files_under(root + "/lib-release"));
    for (const auto& n : files_under(out)) EXPECT_EQ(read_file(out + "/" + n), read_file(root + "/lib-release/" + n)) << prepared[k].first << ": " << n;
  }

  // `mor prepare-scienceqa`: byte-identical output from each (the child inherits the environment).
  std::vector<std::pair<std::string, std::string>> runs = {
      {"release", sqa_fixture()}, {"save_to_disk", saved}, {"datasets-cache", "derek-thomas/ScienceQA"}, {"hub-cache", ""}};
  for (auto& [label, arg] : runs) {
    if (label == "hub-cache") {
      env.set("HF_DATASETS_CACHE", root + "/empty");
      arg = "derek-thomas/ScienceQA";
    }
    auto r = run_mor("prepare-scienceqa --dataset " + arg + " --save_path " + root + "/out-" + label);
    ASSERT_EQ(r.exit_code, 0) << label << ": " << r.err;
    EXPECT_NE(r.out.find("train: kept 3 of 4 problems"), std::string::npos) << label << ": " << r.out;
  }
  std::string first = root + "/out-release";
  auto names = files_under(first);
  EXPECT_EQ(names.size(), 3u + 1 + 3 * 3);  // 3 json, dataset_dict.json, 3 x (arrow, dataset_info, state)
  for (const char* split : {"train", "validation", "test"}) {
    std::string f = std::string("scienceq_") + split + ".json";
    EXPECT_EQ(read_file(first + "/" + f), read_file(sqa_fixture() + "/expected/" + f)) << f;
  }
  for (const auto& [label, arg] : runs) {
    std::string out = root + "/out-" + label;
    ASSERT_EQ(files_under(out), names) << label;
    for (const auto& n : names) EXPECT_EQ(read_file(out + "/" + n), read_file(first + "/" + n)) << label << ": " << n;
  }
}

TEST(DatasetSources, OlderDatasetsCacheLayoutAndSeveralConfigs) {
  std::string root = scratch_dir("sources-legacy");
  DatasetDict hf = hf_rows();
  EnvGuard env;
  isolate(env, root);
  env.set("HF_DATASETS_CACHE", root + "/dc");
  // datasets < 2.14: {org}___parquet/{org}--{name}-{16 hex}/0.0.0/{hash}/parquet-{split}.arrow.
  std::string legacy = write_datasets_cache(fs::path(root) / "dc" / "derek-thomas___parquet" / "derek-thomas--ScienceQA-3d7f9c8ef8b56a4a" /
                                                "0.0.0" / "2a3b91fbd88a2c90d1dbbb32b460cf621d31bd5b05b934492fdef7d8d6f236ec", "parquet", hf);
  EXPECT_EQ(resolve_dataset("derek-thomas/ScienceQA"), legacy);
  expect_same(load_dataset("derek-thomas/ScienceQA"), hf, "legacy layout");
  // Two configurations of the current layout: an error naming both.
  for (const char* config : {"default", "other"})
    write_datasets_cache(fs::path(root) / "dc" / "derek-thomas___science_qa" / config / "0.0.0" / "abc", "science_qa", hf);
  EXPECT_EQ(error_of([] { resolve_dataset("derek-thomas/ScienceQA"); }),
            "derek-thomas/ScienceQA: the datasets cache holds several configurations (default, other) in " + root +
                "/dc/derek-thomas___science_qa; pass the folder of the one to use");
}

TEST(DatasetSources, ParquetFolderWithSplitsFromFileNames) {
  std::string dir = scratch_dir("sources-pqdir") + "/sqa";
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(parquet_fixture())) {
    std::string name = e.path().filename().string();
    std::string split = name.substr(0, name.find('-'));
    fs::copy_file(e.path(), dir + "/" + (split == "validation" ? "dev" : split) + ".parquet");  // train/dev/test.parquet
  }
  DatasetDict dd = load_dataset(dir);
  expect_same(dd, hf_rows(), "train/dev/test.parquet");
  // prepare-scienceqa reads the folder too.
  auto r = run_mor("prepare-scienceqa --dataset " + dir + " --save_path " + dir + "-out");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(dir + "-out/scienceq_test.json"), read_file(sqa_fixture() + "/expected/scienceq_test.json"));
}

}  // namespace
