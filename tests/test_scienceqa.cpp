// mor prepare-scienceqa: the row rules reproduce the real MoLA sample rows, the output on a fixture
// (tests/fixtures/scienceqa, expected bytes made by make_fixture.py with Python's json.dump) is
// byte-identical from both input kinds, and bad problems fail with a clear message and no output.
#include <filesystem>

#include "dataset.h"
#include "helpers.h"
#include "pyjson.h"
#include "scienceqa.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using namespace mor;
using mor::test::error_of;
using mor::test::read_file;
using mor::test::run_mor;
using mor::test::scratch_dir;
using mor::test::testdata_dir;
using mor::test::write_file;

static std::string fixture() { return mor::test::source_dir() + "/tests/fixtures/scienceqa"; }
static const char* kSplits[] = {"train", "validation", "test"};

TEST(ScienceQA, RowRulesReproduceTheSampleRows) {
  MOR_REQUIRE_TESTDATA();
  size_t na = 0, checked = 0;
  for (const char* split : kSplits) {
    json rows = json::parse(read_file(testdata_dir() + "/sampled_scienceqa_json/" + split + ".json"));
    for (const json& row : rows) {
      json problem = row;  // the sample keeps the source columns; answer back to an index
      problem["answer"] = row["answer"].get<std::string>()[0] - 'A';
      EXPECT_EQ(scienceqa_row(problem, "sample"), row);
      na += row["instruction"].get<std::string>().rfind("Context: N/A\n", 0) == 0;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 600u);
  EXPECT_GT(na, 0u);  // the sample does contain empty hints
}

static void expect_fixture_output(const std::string& out) {
  for (const char* split : kSplits) {
    std::string name = std::string("scienceq_") + split + ".json";
    EXPECT_EQ(read_file(out + "/" + name), read_file(fixture() + "/expected/" + name)) << name;
  }
  DatasetDict dd = load_dataset(out + "/science_qa.hf");
  ASSERT_EQ(dd.split_names, (std::vector<std::string>{"train", "validation", "test"}));
  for (const char* split : kSplits) {
    json expected = json::parse(read_file(fixture() + "/expected/scienceq_" + std::string(split) + ".json"));
    EXPECT_EQ(json(dd.split(split).rows), expected) << split;
    EXPECT_EQ(dd.split(split).features, scienceqa_features());
  }
}

TEST(ScienceQA, ReleaseFolderGivesPythonBytes) {
  std::string out = scratch_dir("sqa-release") + "/scienceqa";
  auto r = run_mor("prepare-scienceqa --dataset " + fixture() + " --save_path " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("train: kept 3 of 4 problems"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("validation: kept 1 of 2 problems"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("test: kept 2 of 3 problems"), std::string::npos) << r.out;
  expect_fixture_output(out);
  if (!testdata_dir().empty()) {  // the features file is the one `datasets` wrote for the sample
    EXPECT_EQ(read_file(out + "/science_qa.hf/train/dataset_info.json"),
              read_file(testdata_dir() + "/sampled_scienceqa_train_all.hf/train/dataset_info.json"));
  }
  // Running again over the existing folder replaces the outputs.
  r = run_mor("prepare-scienceqa --dataset " + fixture() + "/problems.json --save-path " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_fixture_output(out);
}

// The fixture as a save_to_disk copy of derek-thomas/ScienceQA (Image column, integer answers).
static std::string write_hf_copy(const std::string& dir) {
  json problems = json::parse(read_file(fixture() + "/problems.json"));
  json pid_splits = json::parse(read_file(fixture() + "/pid_splits.json"));
  DatasetDict dd;
  json features = json::object();
  features["image"] = {{"_type", "Image"}};
  json s = {{"dtype", "string"}, {"_type", "Value"}};
  features["question"] = s;
  features["choices"] = {{"feature", s}, {"_type", "Sequence"}};
  features["answer"] = {{"dtype", "int8"}, {"_type", "Value"}};
  for (const char* c : {"hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution"}) features[c] = s;
  for (auto [split, key] : std::vector<std::pair<std::string, std::string>>{{"train", "train"}, {"validation", "val"}, {"test", "test"}}) {
    Dataset ds;
    ds.features = features;
    for (const json& id : pid_splits[key]) {
      const json& p = problems[id.get<std::string>()];
      json row = json::object();
      for (auto it = features.begin(); it != features.end(); ++it) row[it.key()] = p[it.key()];
      if (!p["image"].is_null()) row["image"] = {{"bytes", json::binary({0x89, 'P', 'N', 'G'})}, {"path", nullptr}};
      ds.rows.push_back(row);
    }
    dd.split_names.push_back(split);
    dd.splits[split] = ds;
  }
  std::string path = dir + "/ScienceQA.hf";
  save_to_disk(dd, path);
  return path;
}

TEST(ScienceQA, HfCopyGivesTheSameBytes) {
  std::string dir = scratch_dir("sqa-hf");
  std::string hf = write_hf_copy(dir);
  // The image column really holds images for the image problems.
  EXPECT_TRUE(load_dataset(hf).split("train").rows[2]["image"]["bytes"].is_binary());
  auto r = run_mor("prepare-scienceqa --dataset " + hf + " --save-path " + dir + "/out");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("train: kept 3 of 4 problems"), std::string::npos) << r.out;
  expect_fixture_output(dir + "/out");
  // A copy without its validation split is refused by name.
  DatasetDict dd = load_dataset(hf);
  dd.split_names = {"train", "test"};
  save_to_disk(dd, dir + "/two.hf");
  r = run_mor("prepare-scienceqa --dataset " + dir + "/two.hf --save-path " + dir + "/out2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mor prepare-scienceqa: error: " + dir + "/two.hf: no 'validation' split (a ScienceQA copy has train, validation and test)\n");
  EXPECT_FALSE(fs::exists(dir + "/out2"));
}

TEST(ScienceQA, BadProblemsFailWithoutOutput) {
  json p = json::parse(read_file(fixture() + "/problems.json"))["1"];
  json q = p;
  q.erase("choices");
  EXPECT_EQ(error_of([&] { scienceqa_row(q, "problem 'x'"); }), "problem 'x' has no 'choices'");
  q = p;
  q["answer"] = 2;
  EXPECT_EQ(error_of([&] { scienceqa_row(q, "problem 'x'"); }), "problem 'x': answer index 2 is out of range for 2 choices");
  q["answer"] = -1;
  EXPECT_EQ(error_of([&] { scienceqa_row(q, "problem 'x'"); }), "problem 'x': answer index -1 is out of range for 2 choices");
  q = p;
  q["choices"] = json::array({"a", "b", "c", "d", "e", "f"});
  EXPECT_EQ(error_of([&] { scienceqa_row(q, "problem 'x'"); }), "problem 'x' has 6 choices; at most 5 (A-E)");
  q = p;
  q["hint"] = 3;
  EXPECT_EQ(error_of([&] { scienceqa_row(q, "problem 'x'"); }), "problem 'x': 'hint' is number, expected a string");

  // Through the command: one line naming the file and problem, non-zero exit, nothing written.
  std::string dir = scratch_dir("sqa-bad");
  json problems = json::parse(read_file(fixture() + "/problems.json"));
  problems["9"].erase("choices");
  fs::create_directories(dir + "/in");
  write_file(dir + "/in/problems.json", problems.dump());
  fs::copy_file(fixture() + "/pid_splits.json", dir + "/in/pid_splits.json");
  auto r = run_mor("prepare-scienceqa --dataset " + dir + "/in --save_path " + dir + "/out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mor prepare-scienceqa: error: " + dir + "/in/problems.json: problem '9' has no 'choices'\n");
  EXPECT_FALSE(fs::exists(dir + "/out"));
  EXPECT_TRUE(fs::is_empty(dir)  || std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);

  problems = json::parse(read_file(fixture() + "/problems.json"));
  problems["7"]["answer"] = 5;
  write_file(dir + "/in/problems.json", problems.dump());
  r = run_mor("prepare-scienceqa --dataset " + dir + "/in --save_path " + dir + "/out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("problem '7': answer index 5 is out of range for 2 choices"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/out"));

  fs::remove(dir + "/in/pid_splits.json");
  r = run_mor("prepare-scienceqa --dataset " + dir + "/in --save_path " + dir + "/out");
  EXPECT_NE(r.err.find("pid_splits.json: missing (needed beside problems.json)"), std::string::npos) << r.err;
  r = run_mor("prepare-scienceqa --dataset " + dir + "/nowhere --save_path " + dir + "/out");
  EXPECT_NE(r.err.find("nowhere: no such file or folder"), std::string::npos) << r.err;
  r = run_mor("prepare-scienceqa --save_path " + dir + "/out");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--dataset is required"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/out"));
}

// Hints with leading/trailing whitespace of every kind Python's str.strip() removes (spaces, tabs,
// newlines, NBSP, U+3000, U+001F, ...) and some it keeps (U+200B, U+FEFF): the context is the
// stripped hint, byte for byte as scripts/scienceqa_hints_golden.py writes it with Debian's python3.
TEST(ScienceQA, StrippedHintsGivePythonBytes) {
  const std::string in = mor::test::source_dir() + "/tests/fixtures/scienceqa_hints";
  std::string out = scratch_dir("sqa-hints") + "/out";
  auto r = run_mor("prepare-scienceqa --dataset " + in + " --save_path " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("train: kept 4 of 5 problems"), std::string::npos) << r.out;
  for (const char* split : kSplits) {
    std::string name = std::string("scienceq_") + split + ".json";
    EXPECT_EQ(read_file(out + "/" + name), read_file(in + "/expected/" + name)) << name;
  }
  // The fixture really exercises the rule: padded hints, stripped contexts, an all-space hint.
  json train = json::parse(read_file(out + "/scienceq_train.json"));
  EXPECT_EQ(train[0]["hint"], "  hint with spaces  ");
  EXPECT_EQ(train[0]["instruction"].get<std::string>().rfind("Context: hint with spaces\nQuestion:", 0), 0u);
  json val = json::parse(read_file(out + "/scienceq_validation.json"));
  size_t na = 0;
  for (const json& row : val) na += row["instruction"].get<std::string>().rfind("Context: N/A\n", 0) == 0;
  EXPECT_EQ(na, 1u);
}
