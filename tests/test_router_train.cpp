// Router statistics and routing options in real `mor train` runs on stories260K + the sampled
// ScienceQA data: router_stats.jsonl (one line per logging step, counts consistent with the tokens),
// top-p's active experts below top_k, the z-loss in the log, each option lowering the loss, the
// routing recorded in mola_config.json, and `mor train --report` (checked in headless Chromium when
// installed: plotted points and heatmap cells match the jsonl files).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "helpers.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using mor::test::q;
std::string model_dir() { return mor::test::testdata_dir() + "/stories260K"; }
std::string hf_data() { return mor::test::testdata_dir() + "/sampled_scienceqa_train_all.hf"; }

const std::vector<int64_t> kExperts = {4, 8, 2, 6, 4}, kTopK = {1, 2, 2, 1, 3};

std::string train_cmd(const std::string& out, const std::string& extra) {
  return "train --base_model " + q(model_dir()) + " --data_path " + q(hf_data()) + " --output_dir " + q(out) +
         " --batch_size 8 --micro_batch_size 4 --max_steps 12 --learning_rate 1e-2 --cutoff_len 96 --val_set_size 8" +
         " --warmup_steps 2 --logging_steps 2 --eval_steps 6 --save_steps 100 --obalance --dtype float32 --threads 2" +
         " --lora_target_modules q_proj,v_proj,down_proj --number_experts 4,8,2,6,4 --top_k 1,2,2,1,3 --lora_r 4" + extra;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream f(path);
  for (std::string l; std::getline(f, l);) out.push_back(json::parse(l));
  return out;
}

std::vector<double> losses(const std::string& out) {
  std::vector<double> v;
  const json st = json::parse(mor::test::read_file(out + "/trainer_state.json"));  // named: the loop must not dangle
  for (const auto& e : st["log_history"])
    if (e.contains("loss")) v.push_back(e["loss"].get<double>());
  return v;
}

size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

}  // namespace

TEST(RouterTrain, StatsJsonlEveryLoggingStepAndReport) {
  MOR_REQUIRE_TESTDATA();
  const std::string out = mor::test::scratch_dir("router_train_topk");
  auto r = mor::test::run_mor(train_cmd(out, " --report"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto stats = read_jsonl(out + "/router_stats.jsonl");
  ASSERT_EQ(stats.size(), 6u);
  for (size_t i = 0; i < stats.size(); ++i) {
    const auto& s = stats[i];
    EXPECT_EQ(s["step"], int64_t(2 * (i + 1)));
    const int64_t tokens = s["tokens"];
    EXPECT_GT(tokens, 2 * 8 * 20);  // two steps of 8 examples, at least 20 real tokens each
    ASSERT_EQ(s["layers"].size(), 5u);
    for (size_t l = 0; l < 5; ++l) {
      const auto& L = s["layers"][l];
      EXPECT_GT(L["balance_loss"].get<double>(), 0.0);
      ASSERT_EQ(L["modules"].size(), 3u);
      for (const auto& m : L["modules"]) {
        EXPECT_EQ(m["experts"], kExperts[l]);
        EXPECT_EQ(m["counts"].size(), size_t(kExperts[l]));
        int64_t sum = 0;
        for (auto c : m["counts"]) sum += c.get<int64_t>();
        EXPECT_EQ(sum, tokens * kTopK[l]) << "top-k: every real token counts K selections";
        double p = 0;
        for (auto v : m["prob"]) p += v.get<double>();
        EXPECT_NEAR(p, 1.0, 1e-4);
        EXPECT_EQ(m["active"].get<double>(), double(kTopK[l]));
        EXPECT_GE(m["imbalance"].get<double>(), 1.0);
        EXPECT_LE(m["entropy_norm"].get<double>(), 1.0 + 1e-6);
      }
    }
  }
  auto loss = losses(out);
  ASSERT_EQ(loss.size(), 6u);
  EXPECT_LT(loss.back(), loss.front());
  // The report: written at the end; plotted points and cells as many as the logs hold.
  const std::string page = out + "/report.html";
  ASSERT_TRUE(fs::exists(page)) << r.out;
  const std::string html = mor::test::read_file(page);
  EXPECT_EQ(count_of(html, "class=\"pt\" data-chart=\"loss\""), loss.size());
  EXPECT_EQ(count_of(html, "class=\"pt\" data-chart=\"entropy\""), stats.size() * 5);
  EXPECT_EQ(count_of(html, "class=\"cell\" data-chart=\"load-12-mean\""), size_t(4 + 8 + 2 + 6 + 4));
  if (std::system("command -v chromium >/dev/null 2>&1") != 0) GTEST_SKIP() << "chromium not installed: DOM check skipped";
  const std::string dom = out + "/dom.html";
  const std::string cmd = "chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
                          "--disable-background-networking --disable-component-update --disable-sync --user-data-dir=" +
                          mor::test::scratch_dir("router_train_chromium") + " --dump-dom file://" + page + " > " + dom +
                          " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const std::string d = mor::test::read_file(dom);
  EXPECT_EQ(count_of(d, "class=\"pt\" data-chart=\"loss\""), loss.size());
  EXPECT_EQ(count_of(d, "class=\"pt\" data-chart=\"entropy\""), stats.size() * 5);
  for (const auto& s : stats) {
    const std::string step = std::to_string(s["step"].get<int64_t>());
    const size_t cells = count_of(d, "class=\"cell\" data-chart=\"load-" + step + "-q_proj\"");
    EXPECT_TRUE(cells == 0 || cells == 24u) << step;  // shown snapshots have every layer's experts
  }
  EXPECT_EQ(count_of(d, "class=\"cell\" data-chart=\"load-12-v_proj\""), 24u);
}

TEST(RouterTrain, TopPAndZLossLowerTheLossAndAreRecorded) {
  MOR_REQUIRE_TESTDATA();
  const std::string top_p = mor::test::scratch_dir("router_train_topp");
  auto r = mor::test::run_mor(train_cmd(top_p, " --router top_p --router_top_p 0.6"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto lp = losses(top_p);
  EXPECT_LT(lp.back(), 0.8 * lp.front()) << lp.front() << " -> " << lp.back();
  auto stats = read_jsonl(top_p + "/router_stats.jsonl");
  ASSERT_EQ(stats.size(), 6u);
  int below = 0;
  for (const auto& L : stats.back()["layers"])
    for (const auto& m : L["modules"]) {
      EXPECT_EQ(m["router"], "top_p");
      EXPECT_LE(m["active"].get<double>(), m["top_k"].get<double>());
      EXPECT_GE(m["active"].get<double>(), 1.0);
      below += m["active"].get<double>() < m["top_k"].get<double>();
    }
  EXPECT_GT(below, 0) << "top-p never dropped an expert";
  auto cfg = json::parse(mor::test::read_file(top_p + "/mola_config.json"));
  EXPECT_EQ(cfg["modules"]["model.layers.1.self_attn.q_proj"]["router"], "top_p");
  EXPECT_EQ(cfg["modules"]["model.layers.1.self_attn.q_proj"]["top_p"], 0.6);

  // eval-scienceqa --router_stats: per subject/grade/category summaries of the prompt tokens, in the result.
  const std::string res = top_p + "/eval.json";
  auto ev = mor::test::run_mor("eval-scienceqa --test_dataset " + q(mor::test::testdata_dir() + "/sampled_scienceqa_json/test.json") +
                               " --base_model " + q(model_dir()) + " --mola_weights " + q(top_p) + " --save_path " + q(res) +
                               " --limit 12 --batch_size 4 --max_new_tokens 4 --threads 2 --quiet --router_stats");
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  auto rj = json::parse(mor::test::read_file(res));
  ASSERT_TRUE(rj.contains("router_stats"));
  const auto& rs = rj["router_stats"];
  EXPECT_EQ(rs["examples"], 12);
  const int64_t all_tokens = rs["all"]["tokens"];
  EXPECT_GT(all_tokens, 12 * 30);
  int64_t by_subject = 0, by_grade = 0;
  for (auto& [k, v] : rs["subject"].items()) by_subject += v["tokens"].get<int64_t>();
  for (auto& [k, v] : rs["grade"].items()) by_grade += v["tokens"].get<int64_t>();
  EXPECT_EQ(by_subject, all_tokens);  // every row has one subject and one grade
  EXPECT_EQ(by_grade, all_tokens);
  EXPECT_EQ(rs["subject"].size(), rj["by_group"]["subject"].size());
  EXPECT_EQ(rs["all"]["layers"][1]["modules"][0]["router"], "top_p");
  auto rep = mor::test::run_mor("report " + q(top_p) + " --eval " + q(res));
  ASSERT_EQ(rep.exit_code, 0) << rep.err;
  const std::string html = mor::test::read_file(top_p + "/report.html");
  EXPECT_EQ(count_of(html, "class=\"bar\" data-chart=\"eval0-subject\""), rj["by_group"]["subject"].size());
  EXPECT_GT(count_of(html, "class=\"pt\" data-chart=\"active\""), 0u);

  const std::string z = mor::test::scratch_dir("router_train_z");
  r = mor::test::run_mor(train_cmd(z, " --router_z_loss 0.01"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto lz = losses(z);
  EXPECT_LT(lz.back(), 0.8 * lz.front()) << lz.front() << " -> " << lz.back();
  int with_z = 0;
  const json zst = json::parse(mor::test::read_file(z + "/trainer_state.json"));
  for (const auto& e : zst["log_history"])
    if (e.contains("z_loss")) with_z += e["z_loss"].get<double>() > 0;
  EXPECT_EQ(with_z, 6);
  cfg = json::parse(mor::test::read_file(z + "/mola_config.json"));
  EXPECT_EQ(cfg["modules"]["model.layers.0.mlp.down_proj"]["z_loss"], 0.01);
  // Scoring picks the recorded routing up; an explicit flag overrides it.
  auto s = mor::test::run_mor("score --base_model " + q(model_dir()) + " --mola_weights " + q(z) + " --data_path " +
                              q(hf_data()) + " --cutoff_len 64 --threads 1 --batch_size 4");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_NE(s.out.find("\"z_loss\":"), std::string::npos);
  auto bad = mor::test::run_mor("score --base_model " + q(model_dir()) + " --mola_weights " + q(z) + " --data_path " +
                                q(hf_data()) + " --router top_q");
  EXPECT_NE(bad.err.find("--router: model.layers.0.self_attn.q_proj: 'top_q' is not a router"), std::string::npos) << bad.err;
}
