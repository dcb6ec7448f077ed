// `mor route` on a hand-made model whose routing is known: one-hot token embeddings, zero o_proj and
// down_proj weights (so every layer's input is the embedding itself), and router rows chosen so that
// token t's logits in layer l are known integers; the printed experts and weights are checked
// against them, as JSON and as a table, for one module and all.
#include <gtest/gtest.h>
#include "torch_api.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "adapter.h"
#include "allocation.h"
#include "helpers.h"
#include "llama.h"
#include "routing.h"
#include "tokenizer.h"

using namespace mor;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kC = 16, kL = 2;

// Logit of expert e for a token whose embedding is one-hot at j, in layer l of module m (0 q, 1 gate).
double hand_logit(int64_t l, int64_t m, int64_t e, int64_t j, int64_t E) { return double((e + j + l + m) % E) * 1.5; }

struct Made {
  std::string model, adapter;
  std::vector<int64_t> experts = {3, 4};  // per layer
  std::vector<int64_t> top_k = {1, 2};
};

// The model folder (config, weights, the stories260K tokenizer) and the adapter folder.
Made make_model(const std::string& name, const std::string& router) {
  Made d;
  auto root = test::scratch_dir(name);
  d.model = root + "/model";
  d.adapter = root + "/adapter";
  auto cfg = ModelConfig::llama(kC, 24, kL, 2, 2, 512);
  auto m = random_llama(cfg, 3, torch::kFloat32, torch::kCPU);
  auto alloc = Allocation::from_flags(cfg, "q_proj,gate_proj", "3,4", "2", "1,2", 16, 0.0);
  RoutingFlags rf;
  rf.router = router;
  rf.top_p = "0.7";
  rf.apply(alloc);
  attach_adapters(m, alloc, 1);
  torch::NoGradGuard ng;
  auto emb = m->model->embed_tokens->weight;
  emb.zero_();
  for (int64_t t = 0; t < 512; ++t) emb[t][t % kC] = 0.5;  // rms-normed to sqrt(C/(1 + 4 C eps)) e_j
  const double norm = 1.0 / std::sqrt(0.25 / double(kC) + cfg.rms_norm_eps) * 0.5;  // x_j after RMSNorm
  for (int64_t l = 0; l < kL; ++l) {
    auto mods = m->layer_modules(l);
    mods[3]->weight.zero_();  // o_proj
    mods[6]->weight.zero_();  // down_proj
    int64_t mi = 0;
    for (int idx : {0, 4}) {  // q_proj, gate_proj
      auto& r = mods[idx]->router;
      const int64_t E = r.size(0);
      for (int64_t e = 0; e < E; ++e)
        for (int64_t j = 0; j < kC; ++j) r[e][j] = hand_logit(l, mi, e, j, E) / norm;
      ++mi;
    }
  }
  save_llama(m, d.model);
  fs::copy(test::testdata_dir() + "/stories260K/tokenizer.model", d.model + "/tokenizer.model");
  save_adapter(m, alloc, d.adapter, d.model);
  return d;
}

// The expected (experts, weights) of a token with one-hot index j in layer l, module m.
std::pair<std::vector<int64_t>, std::vector<double>> expected(int64_t l, int64_t m, int64_t j, const Made& d,
                                                              bool top_p) {
  const int64_t E = d.experts[l], K = d.top_k[l];
  std::vector<double> p(E);
  double z = 0;
  for (int64_t e = 0; e < E; ++e) z += (p[e] = std::exp(hand_logit(l, m, e, j, E)));
  std::vector<int64_t> order(E);
  for (int64_t e = 0; e < E; ++e) order[e] = e;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  std::vector<int64_t> ex;
  std::vector<double> w;
  double mass = 0, sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    if (top_p && !(mass < 0.7)) break;
    ex.push_back(order[k]);
    w.push_back(p[order[k]]);
    mass += p[order[k]] / z;
    sum += p[order[k]];
  }
  for (auto& v : w) v /= sum;
  return {ex, w};
}

void check_json(const Made& d, const nlohmann::json& j, bool top_p, const std::vector<std::string>& modules) {
  ASSERT_EQ(j["modules"], modules);
  ASSERT_GT(j["tokens"].size(), 2u);
  for (const auto& t : j["tokens"]) {
    const int64_t id = t["id"], jj = id % kC;
    ASSERT_EQ(t["layers"].size(), size_t(kL));
    for (int64_t l = 0; l < kL; ++l)
      for (size_t mi = 0; mi < modules.size(); ++mi) {
        const int64_t m = modules[mi] == "q_proj" ? 0 : 1;
        auto [ex, w] = expected(l, m, jj, d, top_p);
        const auto& got = t["layers"][l][modules[mi]];
        EXPECT_EQ(got["experts"].get<std::vector<int64_t>>(), ex) << "token " << id << " layer " << l << " " << modules[mi];
        ASSERT_EQ(got["weights"].size(), w.size());
        for (size_t k = 0; k < w.size(); ++k) EXPECT_NEAR(got["weights"][k].get<double>(), w[k], 2e-6);
      }
  }
}

}  // namespace

TEST(RouteCmd, HandMadeRoutingAsJsonAndTable) {
  MOR_REQUIRE_TESTDATA();
  auto d = make_model("route_topk", "top_k");
  auto r = test::run_mor("route --base_model " + d.model + " --mola_weights " + d.adapter +
                         " --prompt \"Once upon a time\" --json --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  check_json(d, j, false, {"q_proj", "gate_proj"});
  // The tokens are the tokenizer's: BOS first.
  auto tok = Tokenizer::load(d.model);
  auto ids = tok.encode("Once upon a time");
  ASSERT_EQ(j["tokens"].size(), ids.size());
  EXPECT_EQ(j["tokens"][0]["id"], ids[0]);
  // One module, as a table: a header and one row per token and layer with "e:w" cells.
  auto t = test::run_mor("route --base_model " + d.model + " --mola_weights " + d.adapter +
                         " --prompt \"Once upon a time\" --module gate_proj --threads 1");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  std::istringstream is(t.out);
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(is, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 1 + ids.size() * kL);
  EXPECT_EQ(lines[0].substr(0, 3), "pos");
  EXPECT_NE(lines[0].find("gate_proj"), std::string::npos);
  EXPECT_EQ(lines[0].find("q_proj"), std::string::npos);
  // Row of token 1, layer 1: its two experts with 3-decimal weights.
  auto [ex, w] = expected(1, 1, ids[1] % kC, d, false);
  char cell[64];
  std::snprintf(cell, sizeof cell, "%lld:%.3f %lld:%.3f", (long long)ex[0], w[0], (long long)ex[1], w[1]);
  EXPECT_NE(lines[4].find(cell), std::string::npos) << lines[4] << " lacks " << cell;
}

TEST(RouteCmd, TopPRecordedInTheAdapterAndErrors) {
  MOR_REQUIRE_TESTDATA();
  auto d = make_model("route_topp", "top_p");
  auto r = test::run_mor("route --base_model " + d.model + " --mola_weights " + d.adapter +
                         " --prompt \"The cat sat\" --json --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  check_json(d, nlohmann::json::parse(r.out), true, {"q_proj", "gate_proj"});
  // An explicit --router top_k overrides what mola_config.json recorded.
  auto o = test::run_mor("route --base_model " + d.model + " --mola_weights " + d.adapter +
                         " --prompt \"The cat sat\" --json --router top_k --threads 1");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  check_json(d, nlohmann::json::parse(o.out), false, {"q_proj", "gate_proj"});
  auto e = test::run_mor("route --base_model " + d.model + " --mola_weights " + d.adapter + " --prompt hi --module o_proj");
  EXPECT_NE(e.exit_code, 0);
  EXPECT_NE(e.err.find("mor route: error: --module o_proj: no layer carries an adapter on o_proj"), std::string::npos) << e.err;
  e = test::run_mor("route --base_model " + d.model + " --mola_weights " + d.adapter + " --prompt hi --module x_proj");
  EXPECT_NE(e.err.find("--module 'x_proj': expected all or one of"), std::string::npos) << e.err;
}
