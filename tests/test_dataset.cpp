// Dataset loading and saving: the real `datasets`-written sample equals its JSON twin, our
// save_to_disk output reads back identical and matches the layout `datasets` writes, JSON/JSONL
// inputs, and bad inputs fail with messages naming what is wrong.
#include <filesystem>

#include "dataset.h"
#include "helpers.h"
#include "pyjson.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using namespace mor;
using mor::test::error_of;
using mor::test::read_file;
using mor::test::scratch_dir;
using mor::test::testdata_dir;
using mor::test::write_file;

static std::string sample_hf() { return testdata_dir() + "/sampled_scienceqa_train_all.hf"; }

TEST(Dataset, SampleHfEqualsSampleJson) {
  MOR_REQUIRE_TESTDATA();
  DatasetDict dd = load_dataset(sample_hf());
  ASSERT_EQ(dd.split_names, (std::vector<std::string>{"train", "validation", "test"}));
  for (const auto& split : dd.split_names) {
    const Dataset& ds = dd.split(split);
    ASSERT_EQ(ds.rows.size(), 200u) << split;
    DatasetDict js = load_dataset(testdata_dir() + "/sampled_scienceqa_json/" + split + ".json");
    ASSERT_EQ(js.split("train").rows.size(), 200u);
    for (size_t i = 0; i < 200; ++i) ASSERT_EQ(ds.rows[i], js.split("train").rows[i]) << split << " row " << i;
    EXPECT_EQ(ds.column_names(),
              (std::vector<std::string>{"image", "question", "choices", "answer", "hint", "task", "grade", "subject",
                                        "topic", "category", "skill", "lecture", "solution", "input", "instruction",
                                        "output"}));
    EXPECT_EQ(ds.features["choices"].dump(), R"({"feature":{"dtype":"string","_type":"Value"},"_type":"Sequence"})");
    EXPECT_EQ(ds.features["image"].dump(), R"({"dtype":"null","_type":"Value"})");
  }
  // A known value, to be sure the comparison is not vacuous.
  EXPECT_EQ(dd.split("train").rows[0]["answer"], "A");
  EXPECT_EQ(dd.split("train").rows[0]["choices"][1], "Logan likes to wear a blue sweater to match his blue eyes.");
  EXPECT_THROW(dd.split("dev"), std::runtime_error);
  EXPECT_NE(error_of([&] { dd.split("dev"); }).find("splits: train, validation, test"), std::string::npos);
}

TEST(Dataset, RewrittenSampleReadsBackIdenticalWithDatasetsLayout) {
  MOR_REQUIRE_TESTDATA();
  DatasetDict dd = load_dataset(sample_hf());
  std::string out = scratch_dir("rewrite") + "/sample.hf";
  save_to_disk(dd, out);
  DatasetDict back = load_dataset(out);
  ASSERT_EQ(back.split_names, dd.split_names);
  for (const auto& split : dd.split_names) {
    ASSERT_EQ(back.split(split).rows, dd.split(split).rows) << split;
    EXPECT_EQ(back.split(split).features, dd.split(split).features);
    // dataset_info.json is byte-identical to the one `datasets` wrote.
    EXPECT_EQ(read_file(out + "/" + split + "/dataset_info.json"), read_file(sample_hf() + "/" + split + "/dataset_info.json"));
    // state.json equal apart from the fingerprint.
    json ours = json::parse(read_file(out + "/" + split + "/state.json"));
    json theirs = json::parse(read_file(sample_hf() + "/" + split + "/state.json"));
    EXPECT_EQ(ours["_fingerprint"].get<std::string>().size(), 16u);
    ours["_fingerprint"] = theirs["_fingerprint"];
    EXPECT_EQ(py_json_dumps(ours, 2), read_file(sample_hf() + "/" + split + "/state.json"));
  }
  EXPECT_EQ(read_file(out + "/dataset_dict.json"), read_file(sample_hf() + "/dataset_dict.json"));
  EXPECT_FALSE(fs::exists(out + ".tmp-" + std::to_string(::getpid())));
}

TEST(Dataset, RoundTripAllTypesAndInference) {
  json rows = json::parse(R"([
    {"s": "héllo \ud83d\ude00", "i": 3, "f": 2.5, "b": true, "n": null, "l": [1, 2], "o": {"x": "a", "y": [true]}},
    {"s": null, "i": -9007199254740993, "f": 1, "b": false, "n": null, "l": [], "o": null},
    {"s": "", "i": null, "f": null, "b": null, "n": null, "l": null, "o": {"x": null, "y": []}}
  ])");
  std::string dir = scratch_dir("roundtrip");
  write_file(dir + "/in.json", rows.dump());
  DatasetDict dd = load_dataset(dir + "/in.json");
  EXPECT_EQ(dd.split("train").features.dump(),
            R"({"s":{"dtype":"string","_type":"Value"},"i":{"dtype":"int64","_type":"Value"},)"
            R"("f":{"dtype":"float64","_type":"Value"},"b":{"dtype":"bool","_type":"Value"},)"
            R"("n":{"dtype":"null","_type":"Value"},"l":{"feature":{"dtype":"int64","_type":"Value"},"_type":"Sequence"},)"
            R"("o":{"x":{"dtype":"string","_type":"Value"},"y":{"feature":{"dtype":"bool","_type":"Value"},"_type":"Sequence"}}})");
  save_to_disk(dd, dir + "/out.hf");
  DatasetDict back = load_dataset(dir + "/out.hf");
  const auto& got = back.split("train").rows;
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], rows[0]);
  EXPECT_EQ(got[1]["i"].get<int64_t>(), -9007199254740993LL);
  EXPECT_EQ(got[1]["f"].get<double>(), 1.0);  // widened to float64
  EXPECT_EQ(got[1]["o"], nullptr);
  EXPECT_EQ(got[2], rows[2]);
  // Saving over an existing folder replaces it.
  save_to_disk(back, dir + "/out.hf");
  EXPECT_EQ(load_dataset(dir + "/out.hf").split("train").rows, got);
}

TEST(Dataset, JsonLinesAndSingleDatasetFolder) {
  std::string dir = scratch_dir("jsonl");
  write_file(dir + "/a.jsonl", "{\"a\": 1, \"b\": \"x\"}\n\n{\"b\": \"y\", \"a\": 2}\n{\"a\": 3}\n");
  DatasetDict dd = load_dataset(dir + "/a.jsonl");
  ASSERT_EQ(dd.split_names, std::vector<std::string>{"train"});
  const auto& rows = dd.split("train").rows;
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].dump(), R"({"a":2,"b":"y"})");  // column order of the first row
  EXPECT_EQ(rows[2].dump(), R"({"a":3,"b":null})");
  // A single Dataset folder (state.json at the top) is split "train".
  save_to_disk(dd, dir + "/dd.hf");
  DatasetDict single = load_dataset(dir + "/dd.hf/train");
  EXPECT_EQ(single.split("train").rows, rows);
}

TEST(Dataset, BadInputsNameTheProblem) {
  std::string dir = scratch_dir("bad");
  write_file(dir + "/nums.json", "[1, 2]");
  EXPECT_NE(error_of([&] { load_dataset(dir + "/nums.json"); }).find("nums.json: expected a list of objects, but element 0 is number"),
            std::string::npos);
  write_file(dir + "/obj.json", "{\n  \"a\": [1, 2]\n}\n");  // one (pretty-printed) object: one row
  EXPECT_EQ(load_dataset(dir + "/obj.json").split("train").rows.at(0).dump(), R"({"a":[1,2]})");
  write_file(dir + "/str.json", "\"text\"");
  EXPECT_NE(error_of([&] { load_dataset(dir + "/str.json"); }).find("str.json: expected a list of objects"), std::string::npos);
  write_file(dir + "/lines.jsonl", "{\"a\": 1}\n[2]\n");
  EXPECT_NE(error_of([&] { load_dataset(dir + "/lines.jsonl"); }).find("line 2 is a array, expected one object per line"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_dataset(dir + "/missing.json"); }).find("missing.json: no such file or folder"), std::string::npos);

  DatasetDict dd;
  dd.split_names = {"train", "test"};
  dd.splits["train"].rows = {json{{"a", "x"}}};
  dd.splits["test"].rows = {json{{"a", "y"}}};
  save_to_disk(dd, dir + "/d.hf");
  fs::remove_all(dir + "/d.hf/test");
  EXPECT_NE(error_of([&] { load_dataset(dir + "/d.hf"); })
                .find("split 'test' is listed in dataset_dict.json but its folder " + dir + "/d.hf/test is missing"),
            std::string::npos);
  fs::remove(dir + "/d.hf/train/data-00000-of-00001.arrow");
  fs::remove(dir + "/d.hf/dataset_dict.json");
  EXPECT_NE(error_of([&] { load_dataset(dir + "/d.hf"); }).find("not a save_to_disk folder"), std::string::npos);
  EXPECT_NE(error_of([&] { load_dataset(dir + "/d.hf/train"); }).find("data file listed in state.json is missing"),
            std::string::npos);

  // A value that does not fit the declared feature is refused, and nothing is left behind.
  dd.splits["test"].features = json{{"a", {{"dtype", "int64"}, {"_type", "Value"}}}};
  EXPECT_NE(error_of([&] { save_to_disk(dd, dir + "/e.hf"); }).find("column 'a' value 0: expected integer in range, got string"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir + "/e.hf"));
  EXPECT_FALSE(fs::exists(dir + "/e.hf.tmp-" + std::to_string(::getpid())));
}
