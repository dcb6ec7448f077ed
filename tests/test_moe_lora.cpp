// The fused MoLA layer against the per-expert reference loop (outputs, router logits, gradients with
// respect to x, A, B and the router), the MolaLinear module, and the balance loss against a
// hand-computed case and a loop reference.
#include <gtest/gtest.h>
#include "torch_api.h"

#include <cmath>
#include <random>

#include "kernels.h"
#include "kernels_elem.h"
#include "moe_lora.h"
#include "tensor_checks.h"

using namespace mor;

namespace {

using test::expect_close;
using test::max_abs;
using test::max_diff;

struct Case {
  int64_t N, I, O;
  ExpertSpec spec;
  bool dropout;
  int64_t pad_rows;  // leading zero rows (left padding: every router score tied)
};

struct Grads {
  torch::Tensor y, logits, gx, gr, gA, gB;
};

Grads run(const Case& c, bool fused, uint64_t seed) {
  torch::manual_seed(seed);
  auto x = torch::randn({c.N, c.I});
  if (c.pad_rows) x.narrow(0, 0, c.pad_rows).zero_();
  x.requires_grad_(true);
  auto W = torch::randn({c.O, c.I}) * 0.3;
  const int64_t R = c.spec.total_rank();
  auto router = (torch::randn({c.spec.n_expert, c.I}) * 0.5).requires_grad_(true);
  auto A = (torch::randn({R, c.I}) * 0.3).requires_grad_(true);
  auto B = (torch::randn({c.O, R}) * 0.3).requires_grad_(true);
  auto G = torch::randn({c.N, c.O});
  auto H = torch::randn({c.N, c.spec.n_expert});
  // The fused path applies the draw (a sparse correction), the reference a masked copy of x.
  DropoutDraw drop;
  if (c.dropout) drop = {(torch::rand({c.N * c.I}) < 0.2).nonzero().squeeze(1), 1.25};
  auto xd = drop.defined() ? scaled_dropout_reference(x, drop.zero_index, drop.scale) : torch::Tensor();
  torch::Tensor logits, y;
  if (fused) {
    y = mola_fused_forward(x, W, router, A, B, c.spec, drop, &logits);
  } else {
    std::vector<torch::Tensor> As, Bs;
    for (int64_t e = 0; e < c.spec.n_expert; ++e) {
      As.push_back(A.narrow(0, c.spec.rank_offset(e), c.spec.ranks[e]));
      Bs.push_back(B.narrow(1, c.spec.rank_offset(e), c.spec.ranks[e]));
    }
    y = mola_reference_forward(x, W, router, As, Bs, c.spec, xd, &logits);
  }
  ((y * G).sum() + (logits * H).sum()).backward();
  return {y.detach(), logits.detach(), x.grad(), router.grad(), A.grad(), B.grad()};
}

}  // namespace

TEST(MolaFused, EqualsReferenceLoopOnRandomShapes) {
  std::mt19937 rng(7);
  int n_cases = 0;
  for (int64_t E : {1, 2, 3, 5, 8}) {
    for (int64_t k = 1; k <= E; ++k) {
      for (bool hetero : {false, true}) {
        Case c;
        c.N = 5 + int64_t(rng() % 20);
        c.I = 8 + int64_t(rng() % 24);
        c.O = 4 + int64_t(rng() % 20);
        c.spec.n_expert = E;
        c.spec.top_k = k;
        for (int64_t e = 0; e < E; ++e) c.spec.ranks.push_back(hetero ? 1 + int64_t(rng() % 6) : 4);
        c.spec.lora_alpha = 16;
        c.dropout = (rng() % 2) == 0;
        c.pad_rows = (rng() % 3 == 0) ? 2 : 0;
        auto f = run(c, true, 100 + n_cases);
        auto r = run(c, false, 100 + n_cases);
        std::string tag = "E=" + std::to_string(E) + " k=" + std::to_string(k) + (hetero ? " hetero" : " uniform") +
                          (c.dropout ? " dropout" : "") + (c.pad_rows ? " padded" : "");
        expect_close(f.logits, r.logits, tag + " router logits");
        expect_close(f.y, r.y, tag + " y");
        expect_close(f.gx, r.gx, tag + " grad x");
        expect_close(f.gr, r.gr, tag + " grad router");
        expect_close(f.gA, r.gA, tag + " grad A");
        expect_close(f.gB, r.gB, tag + " grad B");
        ++n_cases;
      }
    }
  }
  EXPECT_EQ(n_cases, 2 * (1 + 2 + 3 + 5 + 8));
}

TEST(MolaFused, TiedRouterScoresAndPadding) {
  // Identical router rows tie every score; zero (pad) rows tie them too. Both paths must pick the
  // same experts, and a token's output must not depend on which tied expert a loop visits first.
  Case c{12, 16, 10, ExpertSpec{4, 2, {2, 3, 2, 5}, 8.0, 0.0}, false, 3};
  torch::manual_seed(3);
  auto x = torch::randn({c.N, c.I});
  x.narrow(0, 0, c.pad_rows).zero_();
  auto W = torch::randn({c.O, c.I});
  auto row = torch::randn({1, c.I});
  auto router = torch::cat({row, row, torch::randn({2, c.I})}, 0);
  auto A = torch::randn({c.spec.total_rank(), c.I}) * 0.2;
  auto B = torch::randn({c.O, c.spec.total_rank()}) * 0.2;
  torch::Tensor lf, lr;
  auto yf = mola_fused_forward(x, W, router, A, B, c.spec, {}, &lf);
  std::vector<torch::Tensor> As, Bs;
  for (int64_t e = 0; e < 4; ++e) {
    As.push_back(A.narrow(0, c.spec.rank_offset(e), c.spec.ranks[e]));
    Bs.push_back(B.narrow(1, c.spec.rank_offset(e), c.spec.ranks[e]));
  }
  auto yr = mola_reference_forward(x, W, router, As, Bs, c.spec, {}, &lr);
  EXPECT_TRUE(torch::equal(lf.select(1, 0), lf.select(1, 1)));
  EXPECT_EQ(max_abs(lf.narrow(0, 0, c.pad_rows)), 0.0);
  expect_close(yf, yr, "tied y");
}

TEST(MolaLinear, AdapterInitAndFrozenBase) {
  MolaLinear m(32, 24);
  torch::nn::init::normal_(m->weight);
  torch::Generator gen = at::detail::createCPUGenerator(1234);
  m->add_adapter(ExpertSpec{3, 2, {4, 2, 4}, 16.0, 0.05}, &gen);
  EXPECT_FALSE(m->weight.requires_grad());
  EXPECT_TRUE(m->lora_A.requires_grad() && m->lora_B.requires_grad() && m->router.requires_grad());
  EXPECT_EQ(m->lora_A.sizes(), (std::vector<int64_t>{10, 32}));
  EXPECT_EQ(m->lora_B.sizes(), (std::vector<int64_t>{24, 10}));
  EXPECT_EQ(m->router.sizes(), (std::vector<int64_t>{3, 32}));
  EXPECT_EQ(m->lora_A.scalar_type(), torch::kFloat32);
  const double bound = 1.0 / std::sqrt(32.0);
  EXPECT_LE(max_abs(m->lora_A), bound);
  EXPECT_GT(max_abs(m->lora_A), 0.8 * bound);
  EXPECT_LE(max_abs(m->router), bound);
  EXPECT_EQ(max_abs(m->lora_B), 0.0);
  // Seeded: the same generator seed gives the same adapter.
  MolaLinear m2(32, 24);
  torch::Generator gen2 = at::detail::createCPUGenerator(1234);
  m2->add_adapter(ExpertSpec{3, 2, {4, 2, 4}, 16.0, 0.05}, &gen2);
  EXPECT_TRUE(torch::equal(m->lora_A, m2->lora_A));
  EXPECT_TRUE(torch::equal(m->router, m2->router));
  EXPECT_THROW(m->add_adapter(ExpertSpec{3, 2, {4, 2, 4}}, nullptr), std::runtime_error);
  MolaLinear m3(8, 8);
  EXPECT_THROW(m3->add_adapter(ExpertSpec{2, 3, {4, 4}}, nullptr), std::runtime_error);  // top_k > experts

  // Trainable parameters: exactly router, lora_A, lora_B.
  int n_trainable = 0;
  for (auto& p : m->named_parameters()) n_trainable += p.value().requires_grad();
  EXPECT_EQ(n_trainable, 3);
}

TEST(MolaLinear, ForwardEvalMatchesReferenceTrainingUsesDropoutOnlyOnAdapter) {
  MolaLinear m(16, 12);
  torch::manual_seed(5);
  torch::nn::init::normal_(m->weight);
  m->add_adapter(ExpertSpec{3, 2, {2, 2, 2}, 16.0, 0.5}, nullptr);
  {
    torch::NoGradGuard ng;
    m->lora_B.normal_();
  }
  auto x = torch::randn({2, 5, 16});
  m->eval();
  std::vector<torch::Tensor> sink;
  auto y = m->forward(x, &sink);
  ASSERT_EQ(sink.size(), 1u);
  EXPECT_EQ(sink[0].sizes(), (std::vector<int64_t>{10, 3}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 12}));
  std::vector<torch::Tensor> As, Bs;
  for (int64_t e = 0; e < 3; ++e) {
    As.push_back(m->lora_A.narrow(0, 2 * e, 2));
    Bs.push_back(m->lora_B.narrow(1, 2 * e, 2));
  }
  torch::Tensor lr;
  auto yr = mola_reference_forward(x.reshape({10, 16}), m->weight, m->router, As, Bs, m->spec(), {}, &lr);
  expect_close(y.reshape({10, 12}), yr, "module eval y");
  expect_close(sink[0], lr, "module eval logits");
  // Training: router logits are computed on x before dropout, the output changes (p = 0.5).
  m->train();
  sink.clear();
  auto yt = m->forward(x, &sink);
  expect_close(sink[0], lr, "training logits before dropout");
  EXPECT_GT(max_diff(yt.reshape({10, 12}), yr), 1e-3);
  // Without an adapter: plain x W^T, nothing pushed.
  MolaLinear base(16, 12);
  base->weight.copy_(m->weight.detach());
  sink.clear();
  expect_close(base->forward(x, &sink), torch::matmul(x, m->weight.t()), "base");
  EXPECT_TRUE(sink.empty());
}

TEST(MolaFused, Bfloat16CloseToFloat32) {
  Case c{64, 128, 96, ExpertSpec{4, 2, {8, 8, 8, 8}, 16.0, 0.0}, false, 0};
  torch::manual_seed(11);
  auto x = torch::randn({c.N, c.I});
  auto W = torch::randn({c.O, c.I}) * 0.1;
  auto router = torch::randn({4, c.I}) * 0.1;
  auto A = torch::randn({32, c.I}) * 0.1;
  auto B = torch::randn({c.O, 32}) * 0.01;
  auto y32 = mola_fused_forward(x, W, router, A, B, c.spec);
  auto y16 = mola_fused_forward(x.to(torch::kBFloat16), W.to(torch::kBFloat16), router, A, B, c.spec);
  EXPECT_EQ(y16.scalar_type(), torch::kBFloat16);
  EXPECT_LE(max_diff(y16.to(torch::kFloat32), y32), 0.03 * max_abs(y32));
}

TEST(BalanceLoss, HandComputedCaseAndGradient) {
  // Two modules of one layer, E = 3, top-2; p rows chosen so counts are [2, 3, 1]:
  //   [.5 .3 .2] -> {0,1}   [.1 .6 .3] -> {1,2}   [.7 .2 .1] -> {0,1}
  // f = [1/3, 1/2, 1/6], P = [1.3, 1.1, 0.6] / 3, loss = 3 * sum f P = 6.5 / 6.
  auto l1 = torch::tensor({0.5, 0.3, 0.2, 0.1, 0.6, 0.3}, torch::kFloat32).reshape({2, 3}).log() + 1.5;
  auto l2 = torch::tensor({0.7, 0.2, 0.1}, torch::kFloat32).reshape({1, 3}).log() - 0.25;
  l1.requires_grad_(true);
  l2.requires_grad_(true);
  auto loss = balance_loss({l1, l2}, 2);
  EXPECT_NEAR(loss.item<double>(), 6.5 / 6.0, 1e-6);
  EXPECT_NEAR(balance_loss_reference({l1, l2}, 2), 6.5 / 6.0, 1e-6);
  loss.backward();
  // dL/dz_nj = (E/N) p_nj (f_j - sum_e f_e p_ne); f carries no gradient.
  const double f[3] = {1.0 / 3, 0.5, 1.0 / 6};
  const double p[3][3] = {{.5, .3, .2}, {.1, .6, .3}, {.7, .2, .1}};
  for (int n = 0; n < 3; ++n) {
    double fp = 0;
    for (int e = 0; e < 3; ++e) fp += f[e] * p[n][e];
    for (int j = 0; j < 3; ++j) {
      double want = 3.0 / 3.0 * p[n][j] * (f[j] - fp);
      double got = n < 2 ? l1.grad()[n][j].item<double>() : l2.grad()[0][j].item<double>();
      EXPECT_NEAR(got, want, 1e-6) << n << "," << j;
    }
  }
}

TEST(BalanceLoss, MatchesLoopReferenceAndGroupsByExperts) {
  torch::manual_seed(9);
  for (int64_t E : {2, 4, 8}) {
    for (int64_t k = 1; k <= E; k += 1) {
      std::vector<torch::Tensor> ls = {torch::randn({17, E}), torch::randn({9, E}), torch::randn({30, E})};
      EXPECT_NEAR(balance_loss(ls, k).item<double>(), balance_loss_reference(ls, k), 1e-5) << E << " " << k;
    }
  }
  // k = E: every expert counted once per token, f uniform, loss = sum P = 1.
  EXPECT_NEAR(balance_loss({torch::randn({10, 4})}, 4).item<double>(), 1.0, 1e-6);
  // A layer whose modules differ in (E, k): groups summed.
  auto a = torch::randn({6, 2}), b = torch::randn({6, 2}), c = torch::randn({6, 4});
  ExpertSpec s2{2, 1, {8, 8}}, s4{4, 2, {8, 8, 8, 8}};
  double want = balance_loss_reference({a, b}, 1) + balance_loss_reference({c}, 2);
  EXPECT_NEAR(layer_balance_loss({a, c, b}, {s2, s4, s2}).item<double>(), want, 1e-5);
  EXPECT_THROW(layer_balance_loss({a}, {s2, s4}), std::runtime_error);
}

TEST(SparseDropout, BernoulliRateScaleAndGradient) {
  torch::manual_seed(21);
  for (double p : {0.05, 0.2, 0.5}) {
    auto x = torch::ones({400, 1000}, torch::TensorOptions().requires_grad(true));
    auto y = sparse_dropout(x, p);
    const double n = 400000.0, dropped = (y == 0).sum().item<double>() / n;
    // Binomial standard deviation ~ sqrt(p(1-p)/n) < 8e-4: 5 sigma.
    EXPECT_NEAR(dropped, p, 4e-3) << p;
    EXPECT_NEAR(y.max().item<double>(), 1.0 / (1.0 - p), 1e-6);
    EXPECT_NEAR(y.mean().item<double>(), 1.0, 6e-3);
    // Rows are independent: per-row drop counts spread like a binomial, not all equal.
    auto per_row = (y == 0).sum(1).to(torch::kFloat64);
    EXPECT_NEAR(per_row.var().item<double>(), 1000 * p * (1 - p), 0.25 * 1000 * p * (1 - p));
    y.sum().backward();
    EXPECT_TRUE(torch::equal(x.grad(), y.detach()));
  }
  auto x = torch::randn({3, 4});
  EXPECT_TRUE(torch::equal(sparse_dropout(x, 0.0), x));
  torch::manual_seed(5);
  auto a = sparse_dropout(torch::ones({64, 64}), 0.1);
  torch::manual_seed(5);
  EXPECT_TRUE(torch::equal(a, sparse_dropout(torch::ones({64, 64}), 0.1)));
}

// One expert in training (plain LoRA as MoLA writes it): the short path (no routing graph) against the
// full graph of MOR_FUSED=0, with dropout and the balance loss: the same output, logits and x/A/B
// gradients, and a defined, all-zero router gradient in both. With a z-loss the logits carry a
// gradient, so the full graph runs and the router's gradient is not zero.
TEST(MolaLinear, OneExpertShortPathEqualsFullGraph) {
  for (double z : {0.0, 0.01}) {
    std::vector<std::vector<torch::Tensor>> got(2);
    for (int fused : {0, 1}) {
      set_fused_enabled(fused == 1);
      MolaLinear m(24, 20);
      torch::manual_seed(11);
      torch::nn::init::normal_(m->weight);
      m->add_adapter(ExpertSpec{1, 1, {4}, 16.0, 0.1}, nullptr);
      m->set_routing("top_k", 0.8, z);
      {
        torch::NoGradGuard ng;
        m->lora_B.normal_();
      }
      m->train();
      auto x = torch::randn({3, 7, 24}).requires_grad_(true);
      auto G = torch::randn({3, 7, 20});
      std::vector<torch::Tensor> rl;
      auto y = m->forward(x, &rl);  // the dropout draws from the same seed in both runs
      ASSERT_EQ(rl.size(), 1u);
      auto loss = (y * G).sum() + balance_loss(rl, 1) * 0.5;
      if (z > 0) loss = loss + router_z_loss(rl[0]) * z;
      loss.backward();
      ASSERT_TRUE(m->router.grad().defined());
      got[fused] = {y.detach(), rl[0].detach(), x.grad(), m->lora_A.grad(), m->lora_B.grad(), m->router.grad()};
    }
    set_fused_enabled(true);
    const char* names[] = {"y", "logits", "x grad", "A grad", "B grad", "router grad"};
    for (size_t i = 0; i < got[0].size(); ++i) expect_close(got[1][i], got[0][i], names[i]);
    if (z == 0) {
      EXPECT_EQ(got[0][5].abs().max().item<double>(), 0.0);
      EXPECT_EQ(got[1][5].abs().max().item<double>(), 0.0);
    } else {
      EXPECT_GT(got[1][5].abs().max().item<double>(), 1e-6);
    }
  }
}

// forward_shared_input (one gemv_group call for decode rows) against the modules' own forwards:
// bitwise the same outputs and router logits, pushed in module order, for bf16 modules with and
// without adapters and a bias; the fallbacks (more than 8 rows, a top_p router, grad mode on).
TEST(MolaLinear, SharedInputForwardEqualsSeparateForwards) {
  torch::manual_seed(41);
  const auto bf = torch::kBFloat16;
  // q's 256 KiB of weights make the group run its parallel region at 2 threads
  MolaLinear q(256, 512, bf), k(256, 64, bf), v(256, 64, bf, torch::kCPU, /*bias=*/true);
  {
    torch::NoGradGuard ng;
    for (auto* m : {q.get(), k.get(), v.get()}) m->weight.normal_(0, 0.2);
    v->bias.normal_();
  }
  q->add_adapter(ExpertSpec{3, 2, {2, 4, 2}, 16.0, 0.0}, nullptr);
  v->add_adapter(ExpertSpec{2, 1, {8, 8}, 16.0, 0.0}, nullptr);
  {
    torch::NoGradGuard ng;
    q->lora_B.normal_();
    v->lora_B.normal_();
  }
  std::vector<MolaLinearImpl*> ms = {q.get(), k.get(), v.get()};
  for (auto* m : ms) m->eval();
  auto check = [&](const torch::Tensor& x, const std::string& what) {
    std::vector<torch::Tensor> got_rl, want_rl;
    auto got = forward_shared_input(ms, x, &got_rl);
    ASSERT_EQ(got.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      auto want = ms[i]->forward(x, &want_rl);
      EXPECT_EQ(got[i].sizes(), want.sizes()) << what << " " << i;
      EXPECT_TRUE(torch::equal(got[i], want)) << what << ", projection " << i;
    }
    ASSERT_EQ(got_rl.size(), 2u) << what;
    ASSERT_EQ(want_rl.size(), 2u) << what;
    for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(got_rl[i], want_rl[i])) << what << ", logits " << i;
  };
  {
    torch::NoGradGuard ng;
    check(torch::randn({2, 1, 256}).to(bf), "decode rows");
    check(torch::randn({1, 12, 256}).to(bf), "12 rows");
    v->set_routing("top_p", 0.5, 0.0);
    check(torch::randn({3, 1, 256}).to(bf), "top_p router");
    v->set_routing("top_k", 1.0, 0.0);
  }
  check(torch::randn({2, 1, 256}).to(bf), "grad mode on");
}
