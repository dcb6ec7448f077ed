// eval-scienceqa: answer extraction as Python's re.findall does it, the result file's schema and
// arithmetic on a real adapter, batched == one-by-one generation, resume, the reference's .bin adapter.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "evaluate.h"
#include "helpers.h"

using mor::find_answers;
using mor::pick_answer;
using Strings = std::vector<std::string>;

TEST(Extract, OneMatch) {
  EXPECT_EQ(find_answers("Answer: The answer is B."), Strings{"B"});
  EXPECT_EQ(pick_answer(find_answers("Answer: The answer is B.")), "B");
}

TEST(Extract, NoMatch) {
  EXPECT_TRUE(find_answers("I think it is B.").empty());
  EXPECT_EQ(pick_answer(find_answers("I think it is B.")), "FAILED");
  EXPECT_TRUE(find_answers("The answer is b.").empty());  // [A-Z] only
}

TEST(Extract, TwoMatchesFail) {
  auto m = find_answers("The answer is A. No wait, The answer is C!");
  EXPECT_EQ(m, (Strings{"A", "C"}));
  EXPECT_EQ(pick_answer(m), "FAILED");
}

TEST(Extract, LetterAtVeryEndDoesNotMatch) {
  // The pattern needs one more character after the letter, as in the reference.
  EXPECT_TRUE(find_answers("Answer: The answer is C").empty());
  EXPECT_EQ(pick_answer(find_answers("Answer: The answer is C")), "FAILED");
}

TEST(Extract, DotMatchesAnyCharacterButNewline) {
  EXPECT_EQ(find_answers("The answer is D</s>"), Strings{"D"});
  EXPECT_EQ(find_answers("The answer is Dx"), Strings{"D"});
  EXPECT_TRUE(find_answers("The answer is D\n").empty());
  EXPECT_EQ(find_answers("The answer is E\xc3\xa9"), Strings{"E"});  // é after the letter
}

TEST(Extract, NonOverlappingLikeFindall) {
  // Python: re.findall(r'The answer is ([A-Z]).', 'The answer is The answer is A.') == ['T']
  EXPECT_EQ(find_answers("The answer is The answer is A."), Strings{"T"});
}

// ---------------------------------------------------------------------------------------------
// End to end on real files: stories260K (a real tiny LLaMA) with a MoLA adapter whose B matrices are
// random (so the adapter changes the outputs), the sample ScienceQA test split.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "adapter.h"
#include "allocation.h"
#include "llama.h"
#include "pyjson.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

std::string stories() { return mor::test::testdata_dir() + "/stories260K"; }
std::string sample_test_json() { return mor::test::testdata_dir() + "/sampled_scienceqa_json/test.json"; }

// An adapter trained here with `mor train` on the sample ScienceQA .hf: stories260K (5 layers),
// experts 2,2,3,4,4, top-k 1,2,2,2,3, rank 4, a few optimizer steps at a high learning rate so the
// adapter visibly changes what the model generates.
std::string trained_adapter() {
  static std::string dir = [] {
    std::string d = mor::test::scratch_dir("eval_adapter");
    auto r = mor::test::run_mor(
        "train --base_model " + stories() + " --data_path " + mor::test::testdata_dir() +
        "/sampled_scienceqa_train_all.hf --output_dir " + d + " --batch_size 8 --micro_batch_size 8 --max_steps 12"
        " --learning_rate 1e-2 --warmup_steps 2 --cutoff_len 128 --val_set_size 0 --lora_r 4"
        " --number_experts 2,2,3,4,4 --top_k 1,2,2,2,3 --logging_steps 4 --save_steps 1000 --obalance"
        " --dtype float32 --threads 2");
    if (r.exit_code != 0) throw std::runtime_error("mor train failed: " + r.err);
    return d;
  }();
  return dir;
}

ordered_json read_ojson(const std::string& path) { return ordered_json::parse(mor::test::read_file(path)); }

// Drops the "<unk>" pads that follow an early EOS in a batch (there are none one by one).
std::string strip_trailing_pads(std::string s) {
  while (s.size() >= 5 && s.compare(s.size() - 5, 5, "<unk>") == 0) s.resize(s.size() - 5);
  return s;
}

}  // namespace

TEST(EvalScienceQA, ResultFileSchemaAndArithmetic) {
  MOR_REQUIRE_TESTDATA();
  std::string out = mor::test::scratch_dir("eval_schema") + "/res.json";
  auto r = mor::test::run_mor("eval-scienceqa --test_dataset " + sample_test_json() + " --base_model " + stories() +
                              " --mola_weights " + trained_adapter() + " --save_path " + out +
                              " --batch_size 8 --limit 24 --max_new_tokens 24 --dtype float32 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = read_ojson(out);
  std::vector<std::string> keys;
  for (auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"acc", "correct", "len", "results", "outputs", "by_group"}));
  ASSERT_EQ(j["len"].get<int64_t>(), 24);
  ASSERT_EQ(j["results"].size(), 24u);
  ASSERT_EQ(j["outputs"].size(), 24u);
  EXPECT_DOUBLE_EQ(j["acc"].get<double>(), 100.0 * j["correct"].get<double>() / 24.0);
  auto rows = read_ojson(sample_test_json());
  int64_t correct = 0;
  for (size_t i = 0; i < 24; ++i) {
    auto again = mor::find_answers(j["outputs"][i].get<std::string>());
    EXPECT_EQ(ordered_json(again), j["results"][i]) << i;
    correct += mor::pick_answer(again) == rows[i]["answer"].get<std::string>();
  }
  EXPECT_EQ(correct, j["correct"].get<int64_t>());
  // The file is what Python's json.dump(indent=2, separators=(',', ': ')) writes.
  EXPECT_EQ(mor::test::read_file(out), mor::py_json_dumps(j, 2));
  EXPECT_TRUE(j["by_group"].contains("subject"));
  EXPECT_NE(r.out.find("accuracy: "), std::string::npos) << r.out;
}

TEST(EvalScienceQA, BatchedEqualsOneByOne) {
  MOR_REQUIRE_TESTDATA();
  std::string dir = mor::test::scratch_dir("eval_batch");
  for (int bs : {8, 1}) {
    auto r = mor::test::run_mor("eval-scienceqa --test_dataset " + sample_test_json() + " --base_model " + stories() +
                                " --mola_weights " + trained_adapter() + " --save_path " + dir + "/b" +
                                std::to_string(bs) + ".json --batch_size " + std::to_string(bs) +
                                " --limit 16 --max_new_tokens 48 --dtype float32 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  auto a = read_ojson(dir + "/b8.json"), b = read_ojson(dir + "/b1.json");
  EXPECT_EQ(a["results"], b["results"]);
  ASSERT_EQ(a["outputs"].size(), b["outputs"].size());
  int ended_early = 0;
  for (size_t i = 0; i < a["outputs"].size(); ++i) {
    std::string x = a["outputs"][i], y = b["outputs"][i];
    EXPECT_EQ(strip_trailing_pads(x), y) << i;
    ended_early += x != y;
  }
  std::cout << ended_early << " of 16 batched outputs carry <unk> pads after an early EOS\n";
}

TEST(EvalScienceQA, ReferenceBinAdapterGivesSameOutputs) {
  MOR_REQUIRE_TESTDATA();
  // tests/golden/mola_tiny holds one adapter twice: ours (safetensors + mola_config.json) and the
  // reference's (adapter_model.bin from torch.save + adapter_config.json), on a tiny random model.
  const std::string golden = mor::test::source_dir() + "/tests/golden/mola_tiny";
  std::string dir = mor::test::scratch_dir("eval_ref");
  std::string model = dir + "/model";
  fs::create_directories(model);
  for (auto f : {"config.json", "model.safetensors"}) fs::copy(golden + "/model/" + f, model + "/" + f);
  fs::copy(stories() + "/tokenizer.model", model + "/tokenizer.model");
  // The reference stores no experts or top-k, and our mixture of ranks needs per-module rank lists.
  auto alloc = read_ojson(golden + "/adapter/mola_config.json");
  ordered_json ranks = ordered_json::object();
  for (auto& [path, m] : alloc["modules"].items()) ranks[path] = m["ranks"];
  mor::test::write_file(dir + "/ranks.json", ranks.dump());
  std::string common = "eval-scienceqa --test_dataset " + sample_test_json() + " --base_model " + model +
                       " --batch_size 4 --limit 8 --max_new_tokens 16 --dtype float32 --quiet";
  auto ours = mor::test::run_mor(common + " --mola_weights " + golden + "/adapter --save_path " + dir + "/ours.json");
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  auto ref = mor::test::run_mor(common + " --mola_weights " + golden + "/adapter_ref --save_path " + dir +
                                "/ref.json --number_experts 2,3,4 --top_k 1,2,3 --lora_r " + dir + "/ranks.json");
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  EXPECT_EQ(mor::test::read_file(dir + "/ours.json"), mor::test::read_file(dir + "/ref.json"));
  // The reference's folder now needs no allocation flags (issue 10: they are read from its files, top-k
  // defaulting to the reference's 2), but a flag that disagrees with the files fails and writes nothing.
  auto bad = mor::test::run_mor(common + " --mola_weights " + golden + "/adapter_ref --save_path " + dir + "/x.json --lora_r 8");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("mor eval-scienceqa: error:"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(dir + "/x.json"));
}

TEST(EvalScienceQA, KilledMidwayThenResumedEqualsUninterrupted) {
  MOR_REQUIRE_TESTDATA();
  std::string dir = mor::test::scratch_dir("eval_resume");
  // 64 rows saved every 32 (--save_every; the reference's 200 would need 400 rows): a save happens at 32
  // and another at the end.
  auto rows = read_ojson(sample_test_json());
  ordered_json some = ordered_json::array();
  for (size_t i = 0; i < 64; ++i) some.push_back(rows.at(i % rows.size()));
  mor::test::write_file(dir + "/test.json", some.dump());
  std::string args = "eval-scienceqa --test_dataset " + dir + "/test.json --base_model " + stories() +
                     " --batch_size 8 --max_new_tokens 16 --dtype float32 --threads 1 --quiet --save_every 32 --save_path ";
  auto full = mor::test::run_mor(args + dir + "/full.json");
  ASSERT_EQ(full.exit_code, 0) << full.err;

  // Start the same run, kill it once the first 32 are saved, then resume.
  std::string part = dir + "/part.json";
  pid_t pid = fork();
  if (pid == 0) {
    std::string cmd = std::string(MOR_BINARY) + " " + args + part + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  bool saw_partial = false;
  for (int i = 0; i < 12000 && !saw_partial; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (fs::exists(part)) saw_partial = true;
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(saw_partial) << "the first save never appeared";
  auto partial = read_ojson(part);
  ASSERT_EQ(partial["len"].get<int64_t>(), 32) << "the run finished before it could be killed";
  auto resumed = mor::test::run_mor(args + part + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(mor::test::read_file(part), mor::test::read_file(dir + "/full.json"));
}
