// Routing options and router statistics: top-p routing and the z-loss on the fused path against
// their pure references (outputs, router logits, gradients), the per-layer routing flags and their
// place in mola_config.json, and the statistics of a padded batch against a pure loop.
#include <gtest/gtest.h>
#include "torch_api.h"

#include <cmath>
#include <random>

#include "adapter.h"
#include "allocation.h"
#include "helpers.h"
#include "llama.h"
#include "kernels_elem.h"
#include "moe_lora.h"
#include "router_stats.h"
#include "routing.h"
#include "tensor_checks.h"

using namespace mor;

namespace {

using test::expect_close;
using test::max_abs;

struct Out {
  torch::Tensor y, logits, gx, gr, gA, gB;
};

// One module forward + backward of a fixed random loss, through the fused or the reference path.
Out run_module(const ExpertSpec& spec, int64_t N, int64_t I, int64_t O, bool fused, bool dropout, uint64_t seed) {
  torch::manual_seed(seed);
  auto x = torch::randn({N, I}).requires_grad_(true);
  auto W = torch::randn({O, I}) * 0.3;
  const int64_t R = spec.total_rank();
  auto router = (torch::randn({spec.n_expert, I}) * 0.5).requires_grad_(true);
  auto A = (torch::randn({R, I}) * 0.3).requires_grad_(true);
  auto B = (torch::randn({O, R}) * 0.3).requires_grad_(true);
  auto G = torch::randn({N, O});
  auto H = torch::randn({N, spec.n_expert});
  // The fused path applies the draw (a sparse correction), the reference a masked copy of x.
  DropoutDraw drop;
  if (dropout) drop = {(torch::rand({N * I}) < 0.2).nonzero().squeeze(1), 1.25};
  auto xd = drop.defined() ? scaled_dropout_reference(x, drop.zero_index, drop.scale) : torch::Tensor();
  torch::Tensor logits, y;
  if (fused) {
    y = mola_fused_forward(x, W, router, A, B, spec, drop, &logits);
  } else {
    std::vector<torch::Tensor> As, Bs;
    for (int64_t e = 0; e < spec.n_expert; ++e) {
      As.push_back(A.narrow(0, spec.rank_offset(e), spec.ranks[e]));
      Bs.push_back(B.narrow(1, spec.rank_offset(e), spec.ranks[e]));
    }
    y = mola_reference_forward(x, W, router, As, Bs, spec, xd, &logits);
  }
  // The z-loss joins the differentiated objective, through the fast or the reference-checked function.
  auto z = spec.z_loss > 0 ? router_z_loss(logits) * spec.z_loss : torch::zeros({});
  ((y * G).sum() + (logits * H).sum() + z).backward();
  return {y.detach(), logits.detach(), x.grad(), router.grad(), A.grad(), B.grad()};
}

ModelConfig tiny_cfg() { return ModelConfig::llama(32, 48, 3, 4, 2, 64); }

}  // namespace

TEST(RouterTopP, FusedEqualsReferenceLoopWithGradients) {
  std::mt19937 rng(11);
  int n = 0, partial = 0;
  for (int64_t E : {2, 3, 5, 8})
    for (int64_t k = 1; k <= E; ++k)
      for (double p : {0.3, 0.6, 0.9, 1.0}) {
        ExpertSpec s;
        s.n_expert = E;
        s.top_k = k;
        for (int64_t e = 0; e < E; ++e) s.ranks.push_back(n % 2 ? 1 + int64_t(rng() % 5) : 3);
        s.router = "top_p";
        s.top_p = p;
        const int64_t N = 6 + int64_t(rng() % 20), I = 8 + int64_t(rng() % 16), O = 4 + int64_t(rng() % 12);
        const bool dropout = rng() % 2;
        auto f = run_module(s, N, I, O, true, dropout, 500 + n);
        auto r = run_module(s, N, I, O, false, dropout, 500 + n);
        std::string tag = "E=" + std::to_string(E) + " k=" + std::to_string(k) + " p=" + std::to_string(p);
        expect_close(f.logits, r.logits, tag + " logits");
        expect_close(f.y, r.y, tag + " y");
        expect_close(f.gx, r.gx, tag + " grad x");
        expect_close(f.gr, r.gr, tag + " grad router");
        expect_close(f.gA, r.gA, tag + " grad A");
        expect_close(f.gB, r.gB, tag + " grad B");
        auto rt = route_tokens(f.logits, s, torch::kFloat32);
        partial += rt.active.sum().item<int64_t>() < rt.active.numel();
        ++n;
      }
  EXPECT_EQ(n, 4 * (2 + 3 + 5 + 8));
  EXPECT_GT(partial, 20);  // top-p really drops experts in many cases (else the test checks top-k only)
}

TEST(RouterTopP, SelectionMatchesDefinition) {
  // probs (0.5, 0.3, 0.15, 0.05): p=0.8 keeps {0, 1} (0.5 < 0.8, 0.8 reaches 0.8); p=0.5 keeps {0};
  // p=0.81 keeps {0, 1, 2} within top_k 3; p=0.99 with top_k 2 stops at 2.
  auto logits = torch::log(torch::tensor({{0.5, 0.3, 0.15, 0.05}}, torch::kFloat32));
  ExpertSpec s{4, 3, {2, 2, 2, 2}};
  s.router = "top_p";
  auto active = [&](double p, int64_t k) {
    s.top_p = p;
    s.top_k = k;
    auto r = route_tokens(logits, s, torch::kFloat32);
    auto rr = route_tokens_reference(logits, s, torch::kFloat32);
    EXPECT_TRUE(torch::equal(r.active, rr.active));
    EXPECT_TRUE(torch::equal(r.index, rr.index));
    EXPECT_NEAR((r.weights.sum(1) - 1).abs().max().item<double>(), 0, 1e-6);
    return r.active.sum().item<int64_t>();
  };
  EXPECT_EQ(active(0.5, 3), 1);  // 0 < 0.5 keeps the first; 0.5 is not < 0.5
  EXPECT_EQ(active(0.79, 3), 2);
  EXPECT_EQ(active(0.81, 3), 3);
  EXPECT_EQ(active(0.99, 2), 2);
  s.top_p = 0.7;
  s.top_k = 3;
  auto r = route_tokens(logits, s, torch::kFloat32);
  EXPECT_NEAR(r.weights[0][0].item<double>(), 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(r.weights[0][1].item<double>(), 0.3 / 0.8, 1e-6);
  EXPECT_EQ(r.weights[0][2].item<double>(), 0.0);
}

TEST(RouterTopK, DefaultRoutingUnchanged) {
  // The default routing is the reference's: softmax(float32) -> topk -> renormalise, bit for bit;
  // the z-loss coefficient changes no forward value; top_p = 1 keeps all K experts.
  torch::manual_seed(8);
  auto l = torch::randn({15, 6});
  ExpertSpec s{6, 3, {2, 2, 2, 2, 2, 2}};
  auto r = route_tokens(l, s, torch::kFloat32);
  auto top = torch::topk(torch::softmax(l, -1), 3, -1);
  auto w = std::get<0>(top);
  EXPECT_TRUE(torch::equal(r.weights, w / w.sum(-1, true)));
  EXPECT_TRUE(torch::equal(r.index, std::get<1>(top)));
  EXPECT_TRUE(r.active.all().item<bool>());
  ExpertSpec z = s;
  z.z_loss = 0.3;
  auto a = run_module(s, 13, 12, 9, true, false, 3), b = run_module(z, 13, 12, 9, true, false, 3);
  EXPECT_TRUE(torch::equal(a.y, b.y));
  EXPECT_TRUE(torch::equal(a.gA, b.gA));
  EXPECT_FALSE(torch::equal(a.gr, b.gr));  // the z-loss reaches the router only
  ExpertSpec p1 = s;
  p1.router = "top_p";
  p1.top_p = 1.0;
  auto c = run_module(p1, 13, 12, 9, true, false, 3);
  expect_close(c.y, a.y, "top_p=1 vs top_k", 1e-6);
}

TEST(RouterZLoss, MatchesReferenceAndGradient) {
  torch::manual_seed(5);
  for (int64_t E : {1, 2, 7}) {
    auto l = (torch::randn({9, E}) * 3).requires_grad_(true);
    auto z = router_z_loss(l);
    EXPECT_NEAR(z.item<double>(), router_z_loss_reference(l), 1e-5 * std::max(1.0, z.item<double>()));
    z.backward();
    // d/dl_ne mean_n lse_n^2 = 2 lse_n softmax(l_n)_e / N
    auto lse = torch::logsumexp(l.detach(), -1, true);
    auto want = 2 * lse * torch::softmax(l.detach(), -1) / 9.0;
    expect_close(l.grad(), want, "z-loss grad E=" + std::to_string(E));
  }
  // Fused and reference paths with the z-loss in the objective: equal gradients.
  ExpertSpec s{5, 2, {2, 3, 2, 3, 2}};
  s.z_loss = 0.01;
  auto f = run_module(s, 11, 10, 7, true, true, 9);
  auto r = run_module(s, 11, 10, 7, false, true, 9);
  expect_close(f.gr, r.gr, "z grad router");
  expect_close(f.gx, r.gx, "z grad x");
}

TEST(RouterFlags, PerLayerValuesConfigRoundTripAndErrors) {
  auto cfg = tiny_cfg();
  auto alloc = Allocation::from_flags(cfg, "q_proj,up_proj", "2,3,4", "4", "1,2,2", 16, 0.05);
  const auto before = alloc.to_json().dump();
  RoutingFlags f;
  f.apply(alloc);  // defaults: nothing changes, not even the file
  EXPECT_EQ(alloc.to_json().dump(), before);
  f.router = "top_k,top_p,top_p";
  f.top_p = "0.8,0.5,0.9";
  f.z_loss = "0.001";
  f.apply(alloc);
  EXPECT_EQ(alloc.spec("model.layers.0.self_attn.q_proj").router, "top_k");
  EXPECT_EQ(alloc.spec("model.layers.1.mlp.up_proj").router, "top_p");
  EXPECT_EQ(alloc.spec("model.layers.1.mlp.up_proj").top_p, 0.5);
  EXPECT_EQ(alloc.spec("model.layers.2.self_attn.q_proj").z_loss, 0.001);
  auto j = alloc.to_json();
  EXPECT_EQ(j["modules"]["model.layers.2.mlp.up_proj"]["router"], "top_p");
  EXPECT_EQ(j["modules"]["model.layers.2.mlp.up_proj"]["top_p"], 0.9);
  EXPECT_FALSE(j["modules"]["model.layers.0.mlp.up_proj"].contains("top_p"));
  auto back = Allocation::from_json(nlohmann::json::parse(j.dump()), "mola_config.json");
  EXPECT_EQ(back.spec("model.layers.1.mlp.up_proj"), alloc.spec("model.layers.1.mlp.up_proj"));
  EXPECT_EQ(back.spec("model.layers.0.self_attn.q_proj"), alloc.spec("model.layers.0.self_attn.q_proj"));
  EXPECT_NE(alloc.table().find("routing layer 1: top_p p=0.5 z=0.001"), std::string::npos) << alloc.table();
  // A JSON object keyed by module path.
  auto dir = test::scratch_dir("router_flags");
  nlohmann::json obj;
  for (const auto& p : alloc.module_paths()) obj[p] = p.find("up_proj") != std::string::npos ? "top_p" : "top_k";
  test::write_file(dir + "/r.json", obj.dump());
  RoutingFlags g;
  g.router = dir + "/r.json";
  g.apply(alloc);
  EXPECT_EQ(alloc.spec("model.layers.0.mlp.up_proj").router, "top_p");
  EXPECT_EQ(alloc.spec("model.layers.1.self_attn.q_proj").router, "top_k");
  auto err = [&](RoutingFlags h) { return test::error_of([&] { h.apply(alloc); }); };
  RoutingFlags bad;
  bad.router = "top_q";
  EXPECT_EQ(err(bad), "--router: model.layers.0.mlp.up_proj: 'top_q' is not a router (top_k or top_p)");
  bad = RoutingFlags{};
  bad.top_p = "1.5";
  EXPECT_EQ(err(bad), "--router_top_p: model.layers.0.mlp.up_proj: 1.5 is not in (0, 1]");
  bad = RoutingFlags{};
  bad.z_loss = "0.1,0.2";
  EXPECT_EQ(err(bad), "--router_z_loss: expected one value or 3 comma-separated values (one per layer), got 2");
  bad = RoutingFlags{};
  bad.z_loss = "x";
  EXPECT_EQ(err(bad), "--router_z_loss: model.layers.0.mlp.up_proj: 'x' is not a number");
}

TEST(RouterZLoss, JoinsTheTrainingLossOnlyWhenOn) {
  auto cfg = tiny_cfg();
  auto m = random_llama(cfg, 1, torch::kFloat32, torch::kCPU);
  auto alloc = Allocation::from_flags(cfg, "q_proj,up_proj", "2,3,4", "4", "1,2,2", 16, 0.0);
  attach_adapters(m, alloc, 3);
  auto ids = torch::randint(64, {2, 8}, torch::kInt64);
  RouterLogits rl;
  ForwardArgs a;
  a.input_ids = ids;
  a.router_logits = &rl;
  auto logits = m->forward(a);
  auto off = compute_loss(m, logits, ids, rl, true);
  EXPECT_FALSE(off.z.defined());
  for (auto& mod : m->layer_modules(1))
    if (mod->has_adapter()) mod->set_routing("top_k", 0.8, 0.5);
  auto on = compute_loss(m, logits, ids, rl, true);
  ASSERT_TRUE(on.z.defined());
  // Layer 1 alone: the mean over its two modules of 0.5 * mean_t lse^2.
  double want = 0.5 * (router_z_loss_reference(rl[1][0]) + router_z_loss_reference(rl[1][1])) / 2;
  EXPECT_NEAR(on.z.item<double>(), want, 1e-5 * want);
  EXPECT_NEAR(on.loss.item<double>(), off.loss.item<double>() + want, 1e-5 * want);
}

TEST(RouterStats, FusedPathEqualsPureLoopOnPaddedBatchWithPerLayerExperts) {
  auto cfg = tiny_cfg();
  auto m = random_llama(cfg, 2, torch::kFloat32, torch::kCPU);
  // Per-layer E (2, 4, 3) and K (1, 2, 3), layer 2 routed top-p, and modules of one layer differing
  // in E through a per-module JSON file.
  auto dir = test::scratch_dir("router_stats");
  auto base = Allocation::from_flags(cfg, "q_proj,v_proj,down_proj", "2,4,3", "4", "1,2,3", 16, 0.0);
  nlohmann::json experts;
  for (const auto& p : base.module_paths()) experts[p] = base.spec(p).n_expert;
  experts["model.layers.1.self_attn.v_proj"] = 2;
  test::write_file(dir + "/e.json", experts.dump());
  auto alloc = Allocation::from_flags(cfg, "q_proj,v_proj,down_proj", dir + "/e.json", "4", "1,2,3", 16, 0.0);
  RoutingFlags rf;
  rf.router = "top_k,top_k,top_p";
  rf.top_p = "0.6";
  rf.apply(alloc);
  attach_adapters(m, alloc, 5);
  {
    torch::NoGradGuard ng;  // routers with more spread than the init, so selections vary
    for (auto& [k, t] : trainable_params(m))
      if (k.find(".router") != std::string::npos) t.normal_(0, 1.0);
  }
  auto layout = router_layout(m);
  ASSERT_EQ(layout[1].size(), 3u);
  EXPECT_EQ(layout[1][1].spec.n_expert, 2);
  RouterStats stats(layout, torch::kCPU);
  std::vector<RouterLogits> passes;
  std::vector<torch::Tensor> masks;
  torch::manual_seed(4);
  for (int pass = 0; pass < 2; ++pass) {
    const int64_t B = 3, T = 9;
    auto ids = torch::randint(1, 64, {B, T}, torch::kInt64);
    auto mask = torch::ones({B, T}, torch::kInt64);
    mask[0].narrow(0, 0, 4).zero_();  // left pads
    mask[2].narrow(0, 0, 1 + pass).zero_();
    ids.masked_fill_(mask == 0, 0);
    RouterLogits rl;
    ForwardArgs a;
    a.input_ids = ids;
    a.attention_mask = mask;
    a.router_logits = &rl;
    m->forward(a);
    stats.add(rl, mask.reshape({-1}));
    passes.push_back(rl);
    masks.push_back(mask);
  }
  auto got = stats.summary();
  auto want = router_stats_reference(layout, passes, masks);
  EXPECT_EQ(got.tokens, 2 * 27 - 4 - 1 - 4 - 2);
  ASSERT_EQ(got.tokens, want.tokens);
  ASSERT_EQ(got.layers.size(), 3u);
  int partial_top_p = 0;
  for (size_t il = 0; il < got.layers.size(); ++il) {
    EXPECT_NEAR(got.layers[il].balance_loss, want.layers[il].balance_loss, 1e-5);
    for (size_t i = 0; i < got.layers[il].modules.size(); ++i) {
      const auto &g = got.layers[il].modules[i], &w = want.layers[il].modules[i];
      std::string tag = "layer " + std::to_string(il) + " " + g.name;
      EXPECT_EQ(g.counts, w.counts) << tag;
      int64_t total = 0;
      for (auto c : g.counts) total += c;
      if (g.router == "top_k") EXPECT_EQ(total, got.tokens * g.top_k) << tag;
      else partial_top_p += total < got.tokens * g.top_k;
      for (int64_t e = 0; e < g.experts; ++e) {
        EXPECT_NEAR(g.prob[e], w.prob[e], 1e-6) << tag;
        EXPECT_NEAR(g.load[e], w.load[e], 1e-12) << tag;
      }
      EXPECT_NEAR(g.entropy, w.entropy, 1e-6) << tag;
      EXPECT_NEAR(g.entropy_norm, w.entropy_norm, 1e-6) << tag;
      EXPECT_NEAR(g.imbalance, w.imbalance, 1e-12) << tag;
      EXPECT_NEAR(g.active, w.active, 1e-12) << tag;
      EXPECT_GT(g.entropy, 0) << tag;
    }
  }
  EXPECT_GT(partial_top_p, 0);  // top-p left experts out somewhere
  // The layer's balance loss counts the pads (the reference's loss): it differs from the value over
  // real tokens only, which the statistics use.
  auto j = got.to_json();
  EXPECT_EQ(j["layers"].size(), 3u);
  EXPECT_EQ(j["layers"][1]["modules"][1]["experts"], 2);
  EXPECT_EQ(j["layers"][2]["modules"][0]["router"], "top_p");
  stats.reset();
  EXPECT_EQ(stats.summary().tokens, 0);
}
