// `mor score` against the PyTorch twin (scripts/twin_mola.py -> tests/golden/mola_tiny): a random tiny
// LLaMA with MoLA adapters differing per layer (experts 2/3/4, ranks 4 / mixture 2,4,2 / 8, top-k
// 1/2/3), per-example cross-entropy and per-batch aux loss within 1e-4, with and without --obalance,
// both train_on_inputs settings, batch size 1 and a left-padded batch of 4.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "helpers.h"

using namespace mor;
namespace fs = std::filesystem;

namespace {

std::string golden() { return test::source_dir() + "/tests/golden/mola_tiny"; }

// The golden model plus the stories260K tokenizer (512 pieces) it was tokenized with.
std::string model_dir() {
  static std::string dir = [] {
    auto d = test::scratch_dir("score_model");
    for (auto f : {"config.json", "model.safetensors"}) fs::create_symlink(golden() + "/model/" + f, d + "/" + f);
    for (auto f : {"tokenizer.model", "tokenizer_config.json"})
      fs::create_symlink(test::testdata_dir() + "/stories260K/" + f, d + "/" + f);
    return d;
  }();
  return dir;
}

std::vector<nlohmann::json> lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream is(out);
  std::string l;
  while (std::getline(is, l))
    if (!l.empty()) v.push_back(nlohmann::json::parse(l));
  return v;
}

}  // namespace

TEST(Score, MatchesTwinPerExampleCeAndAux) {
  MOR_REQUIRE_TESTDATA();
  auto g = nlohmann::json::parse(test::read_file(golden() + "/golden.json"));
  double max_ce = 0, max_aux = 0, max_loss = 0;
  int checked = 0;
  for (const auto& s : g["settings"]) {
    const bool toi = s["train_on_inputs"], ob = s["obalance"];
    const int bs = s["batch_size"];
    std::string args = "score --base_model " + model_dir() + " --mola_weights " + golden() + "/adapter --data_path " +
                       golden() + "/data.json --cutoff_len 256 --dtype float32 --threads 1 --batch_size " +
                       std::to_string(bs) + " --train_on_inputs " + (toi ? "True" : "False") + (ob ? " --obalance" : "");
    auto r = test::run_mor(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto out = lines(r.out);
    const auto& want = s["rows"];
    ASSERT_EQ(out.size(), want.size() + 1) << r.out;
    std::string tag = std::string("toi=") + (toi ? "1" : "0") + " bs=" + std::to_string(bs) + " ob=" + (ob ? "1" : "0");
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(out[i]["index"], want[i]["index"]) << tag;
      EXPECT_EQ(out[i]["n_tokens"], want[i]["n_tokens"]) << tag << " row " << i;
      EXPECT_EQ(out[i]["n_label_tokens"], want[i]["n_label_tokens"]) << tag << " row " << i;
      double dce = std::abs(out[i]["ce"].get<double>() - want[i]["ce"].get<double>());
      double daux = std::abs(out[i]["aux"].get<double>() - want[i]["aux"].get<double>());
      double dloss = std::abs(out[i]["loss"].get<double>() - want[i]["loss"].get<double>());
      EXPECT_LE(dce, 1e-4) << tag << " row " << i;
      EXPECT_LE(daux, 1e-4) << tag << " row " << i;
      EXPECT_LE(dloss, 1e-4) << tag << " row " << i;
      max_ce = std::max(max_ce, dce), max_aux = std::max(max_aux, daux), max_loss = std::max(max_loss, dloss);
      ++checked;
    }
    const auto& sum = out.back();
    EXPECT_TRUE(sum["summary"].get<bool>());
    EXPECT_EQ(sum["n_examples"], want.size());
  }
  EXPECT_EQ(checked, 8 * 8);
  std::printf("twin parity: max |ce diff| %.3g, max |aux diff| %.3g, max |loss diff| %.3g\n", max_ce, max_aux, max_loss);
}

TEST(Score, BaseModelWithoutAdapterAndBadInput) {
  MOR_REQUIRE_TESTDATA();
  auto r = test::run_mor("score --base_model " + model_dir() + " --data_path " + golden() +
                         "/data.json --dtype float32 --threads 1 --batch_size 8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = lines(r.out);
  ASSERT_EQ(out.size(), 9u);
  EXPECT_EQ(out[0]["aux"].get<double>(), 0.0);  // no adapter: no balance loss
  EXPECT_GT(out[0]["ce"].get<double>(), 1.0);
  r = test::run_mor("score --base_model " + model_dir() + " --data_path " + golden() + "/nope.json");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("mor score: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nope.json"), std::string::npos) << r.err;
  // The reference's adapter folder needs the allocation flags; wrong flags fail on the first mismatch.
  r = test::run_mor("score --base_model " + model_dir() + " --mola_weights " + golden() + "/adapter_ref --data_path " +
                    golden() + "/data.json --dtype float32");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("has no mola_config.json"), std::string::npos) << r.err;
  r = test::run_mor("score --base_model " + model_dir() + " --mola_weights " + golden() + "/adapter_ref --data_path " +
                    golden() + "/data.json --dtype float32 --number_experts 2,3,4 --lora_r 4 --top_k 1,2,3");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("has shape [2, 32], expected [4, 32]"), std::string::npos) << r.err;
}
