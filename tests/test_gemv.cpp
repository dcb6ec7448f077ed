// The skinny bf16 GEMM kernel (src/gemv.h) against its float32 reference and torch::mm: M = 1..8,
// K and N off the 32-lane width, strided and offset activation rows, the in-place accumulate form;
// the dispatch (linear_nograd) against the ops it replaces; and the low-rank update of decode rows
// (add_low_rank_nograd_) against addmm_ in float32 and bf16.
// Tolerance: both sides sum the same exact float32 products (bf16 x bf16 fits in float32) in a
// different order, so they differ by the float32 ordering error, at most K 2^-24 sum|x_k w_k|, before
// the one rounding to bf16, which that difference can move by at most one bf16 step.
#include <gtest/gtest.h>

#include "gemv.h"
#include "kernels.h"

using namespace mor;

namespace {

bool kernel_here() {
  torch::NoGradGuard ng;
  return gemv_ok(torch::zeros({1, 8}, torch::kBFloat16), torch::zeros({4, 8}, torch::kBFloat16));
}

torch::Tensor rand_bf16(std::vector<int64_t> shape, uint64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn(shape, g, torch::kFloat32).to(torch::kBFloat16);
}

// Checks got against want (bf16 [M, N]) within the bound above; returns the largest error in bf16
// steps of want and the fraction of bitwise-equal values, for the log.
std::pair<double, double> check_within(const torch::Tensor& got, const torch::Tensor& want, const torch::Tensor& x,
                                       const torch::Tensor& w) {
  EXPECT_EQ(got.sizes(), want.sizes());
  EXPECT_EQ(got.scalar_type(), torch::kBFloat16);
  auto g = got.to(torch::kFloat32), r = want.to(torch::kFloat32);
  auto step = torch::pow(2.0, torch::floor(torch::log2(r.abs().clamp_min(1e-30))) - 7);
  auto mag = torch::mm(x.to(torch::kFloat32).abs(), w.to(torch::kFloat32).abs().t());
  auto bound = step + mag * (double(x.size(1)) * std::ldexp(1.0, -24));
  auto err = (g - r).abs();
  EXPECT_TRUE((err <= bound).all().item<bool>()) << "max excess " << (err - bound).max().item<double>();
  const double equal = (g == r).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(equal, 0.97) << "bitwise-equal fraction";
  return {(err / step).max().item<double>(), equal};
}

}  // namespace

TEST(Gemv, MatchesReferenceAndMmOddShapes) {
  if (!kernel_here()) GTEST_SKIP() << "no AVX512-BF16 on this CPU (or fused kernels off)";
  torch::NoGradGuard ng;
  double worst = 0, least_equal = 1;
  uint64_t seed = 1;
  for (int64_t K : {1, 31, 33, 100, 1029})
    for (int64_t N : {1, 3, 37, 259})
      for (int64_t M = 1; M <= kGemvMaxRows; ++M) {
        auto x = rand_bf16({M, K}, seed++), w = rand_bf16({N, K}, seed++);
        auto y = gemv_bf16(x, w);
        auto [e1, q1] = check_within(y, gemv_bf16_reference(x, w), x, w);
        auto [e2, q2] = check_within(y, torch::mm(x, w.t()), x, w);
        worst = std::max({worst, e1, e2});
        least_equal = std::min({least_equal, q1, q2});
        if (HasFailure()) {
          ADD_FAILURE() << "M " << M << " K " << K << " N " << N;
          return;
        }
      }
  std::printf("gemv vs reference/mm: max error %.2f bf16 steps, bitwise-equal fraction >= %.4f\n", worst, least_equal);
}

// The blocking (W rows per block: 6 for M > 4 at K <= 1536, else 4; one or two passes over x's rows,
// a remainder of single rows) moves no value: each row of an M-row call is bitwise the one-row call.
TEST(Gemv, RowsAreBitwiseIndependentOfTheBlocking) {
  if (!kernel_here()) GTEST_SKIP() << "no AVX512-BF16 on this CPU (or fused kernels off)";
  torch::NoGradGuard ng;
  uint64_t seed = 500;
  for (int64_t K : {33, 1024, 1537})
    for (int64_t N : {5, 37, 260}) {
      auto w = rand_bf16({N, K}, seed++);
      for (int64_t M = 2; M <= kGemvMaxRows; ++M) {
        auto x = rand_bf16({M, K}, seed++);
        auto y = gemv_bf16(x, w);
        for (int64_t m = 0; m < M; ++m)
          ASSERT_TRUE(torch::equal(y[m], gemv_bf16(x.narrow(0, m, 1), w)[0])) << "M " << M << " K " << K << " N " << N
                                                                            << " row " << m;
      }
    }
}

TEST(Gemv, StridedAndOffsetRowsAndAccumulate) {
  if (!kernel_here()) GTEST_SKIP() << "no AVX512-BF16 on this CPU (or fused kernels off)";
  torch::NoGradGuard ng;
  const int64_t K = 77, N = 45;
  auto wide = rand_bf16({9, K + 19}, 11), w = rand_bf16({N, K}, 12);
  for (int64_t M : {1, 3, 8}) {
    // Rows 1..M of columns 5..5+K: row stride K + 19 and a start offset, as h.narrow(1, E, R) is.
    auto x = wide.narrow(0, 1, M).narrow(1, 5, K);
    if (M > 1) {
      ASSERT_FALSE(x.is_contiguous());  // one row: an offset view, contiguous
    }
    check_within(gemv_bf16(x, w), gemv_bf16_reference(x, w), x, w);
    auto acc0 = rand_bf16({M, N}, 13 + M);
    auto acc = acc0.clone();
    auto out = gemv_bf16(x, w, acc);
    EXPECT_EQ(out.data_ptr(), acc.data_ptr()) << "accumulates in place";
    check_within(acc, gemv_bf16_reference(x, w, acc0), x, w);
    check_within(acc, acc0.clone().addmm_(x.contiguous(), w.t()), x, w);
  }
}

TEST(Gemv, DispatchFallsBackAndRefuses) {
  torch::NoGradGuard ng;
  auto x = rand_bf16({2, 1, 64}, 21), w = rand_bf16({40, 64}, 22);
  // 3-D input, 2 rows: the kernel where available, the matmul's shape either way.
  auto y = linear_nograd(x, w);
  ASSERT_EQ(y.sizes(), torch::IntArrayRef({2, 1, 40}));
  auto want = torch::matmul(x, w.t());
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat32), want.to(torch::kFloat32), 1e-2, 1e-2));
  // Fused kernels off: exactly the matmul and addmm_.
  set_fused_enabled(false);
  EXPECT_FALSE(gemv_ok(x.view({2, 64}), w));
  EXPECT_TRUE(torch::equal(linear_nograd(x, w), want));
  auto acc = rand_bf16({2, 40}, 23), acc2 = acc.clone();
  auto a = rand_bf16({2, 16}, 27), b = rand_bf16({40, 16}, 28);
  add_low_rank_nograd_(acc, a, b, b.t().contiguous());
  EXPECT_TRUE(torch::equal(acc, acc2.addmm_(a, b.t())));
  set_fused_enabled(true);
  // Refused: more than 8 rows, float32, a column stride, a gradient wanted.
  EXPECT_FALSE(gemv_ok(rand_bf16({9, 64}, 24), w));
  EXPECT_FALSE(gemv_ok(x.view({2, 64}).to(torch::kFloat32), w.to(torch::kFloat32)));
  EXPECT_FALSE(gemv_ok(rand_bf16({64, 2}, 25).t(), w));
  EXPECT_THROW(gemv_bf16(rand_bf16({9, 64}, 26), w), std::runtime_error);
  {
    torch::AutoGradMode on(true);
    auto xg = x.view({2, 64}).clone().requires_grad_(true);
    EXPECT_FALSE(gemv_ok(xg, w));
    EXPECT_TRUE(linear_nograd(xg, w).requires_grad());  // the matmul, with its graph
  }
}

// acc += a bt for decode rows: a a strided view of a wider [M, E + R] tensor (as the routing leaves
// it), R and O off the vector width and the 256-column chunks, M = 1 and 8; float32 within the
// ordering error, bf16 within one step of addmm_'s one rounding (mostly bitwise equal).
TEST(Gemv, LowRankUpdateMatchesAddmm) {
  torch::NoGradGuard ng;
  torch::manual_seed(29);
  for (int64_t M : {1, 3, 8})
    for (int64_t R : {5, 16, 64}) {
      const int64_t O = 600, E = 3;
      auto h = torch::randn({M, E + R}), b = torch::randn({O, R}) * 0.1, acc = torch::randn({M, O});
      auto a = h.narrow(1, E, R);
      auto want = acc.clone().addmm_(a.contiguous(), b.t());
      auto got = acc.clone();
      add_low_rank_nograd_(got, a, b, b.t().contiguous());
      EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5)) << M << " " << R << ": " << (got - want).abs().max().item<double>();
      // bf16: against float32 sums of the exact products and one rounding
      auto hb = h.to(torch::kBFloat16), bb = b.to(torch::kBFloat16), accb = acc.to(torch::kBFloat16);
      auto ab = hb.narrow(1, E, R);
      auto wantb = (accb.to(torch::kFloat32) + torch::mm(ab.to(torch::kFloat32), bb.to(torch::kFloat32).t())).to(torch::kBFloat16);
      auto gotb = accb.clone();
      add_low_rank_nograd_(gotb, ab, bb, bb.t().contiguous());
      const auto gf = gotb.to(torch::kFloat32), wf = wantb.to(torch::kFloat32);
      EXPECT_GE((gf == wf).to(torch::kFloat64).mean().item<double>(), 0.99) << M << " " << R;
      EXPECT_TRUE(((gf - wf).abs() <= wf.abs() * (1.0 / 128) + 1e-6).all().item<bool>()) << M << " " << R;  // a step
    }
  // more rows than the kernel takes, or the kernels off: addmm_ on b^T itself
  auto acc = torch::randn({9, 40}), a = torch::randn({9, 4}), b = torch::randn({40, 4});
  auto want = acc.clone().addmm_(a, b.t());
  EXPECT_TRUE(torch::equal(add_low_rank_nograd_(acc, a, b, b.t().contiguous()), want));
  set_fused_enabled(false);
  auto acc1 = torch::randn({2, 40}), a1 = torch::randn({2, 4});
  auto want1 = acc1.clone().addmm_(a1, b.t());
  EXPECT_TRUE(torch::equal(add_low_rank_nograd_(acc1, a1, b, b.t().contiguous()), want1));
  set_fused_enabled(true);
}

namespace {

// One projection of a gemv_group test: W, and an adapter's [router; A] and scaled B when E > 0.
struct GroupCase {
  int64_t N, E, top_k;
  std::vector<int64_t> ranks;
};

// The separate calls gemv_group replaces (mola_infer_forward's unfused steps), bf16 throughout.
std::pair<torch::Tensor, torch::Tensor> separate_calls(const torch::Tensor& x, const GemvProjection& p,
                                                       const torch::Tensor& bs) {
  auto y = linear_nograd(x, p.w);
  if (!p.ra.defined()) return {y, {}};
  auto h = linear_nograd(x, p.ra);
  route_gate_(h, p.n_expert, p.top_k, *p.col_expert);
  add_low_rank_nograd_(y, h.narrow(1, p.n_expert, p.ra.size(0) - p.n_expert), bs, p.bt);
  return {y, h};
}

}  // namespace

// gemv_group against the separate kernels: bitwise equal outputs, router logits and gated A
// products, for M = 1, 3, 8, one thread (serial path) and two (the parallel region), N off the
// 4-row blocks and 64-column units, mixed adapters (none, uneven ranks, top-1/2), K off 32.
TEST(Gemv, GroupIsBitwiseTheSeparateCalls) {
  if (!kernel_here()) GTEST_SKIP() << "no AVX512-BF16 on this CPU (or fused kernels off)";
  torch::NoGradGuard ng;
  const int threads = at::get_num_threads();
  const std::vector<std::vector<GroupCase>> groups = {
      {{1030, 3, 2, {2, 5, 4}}, {37, 0, 0, {}}, {260, 2, 1, {8, 8}}},  // ~0.6 MB: parallel at 2 threads
      {{70, 4, 2, {3, 3, 3, 3}}},                                     // small: serial at any count
      {{515, 0, 0, {}}, {129, 1, 1, {6}}}};
  uint64_t seed = 100;
  for (int nt : {1, 2}) {
    at::set_num_threads(nt);
    for (const auto& g : groups)
      for (int64_t M : {1, 3, 8}) {
        const int64_t K = 203;
        auto x = rand_bf16({M, K}, ++seed);
        std::vector<GemvProjection> ps(g.size());
        std::vector<torch::Tensor> bss(g.size());
        std::vector<std::vector<int64_t>> cols(g.size());
        for (size_t i = 0; i < g.size(); ++i) {
          ps[i].w = rand_bf16({g[i].N, K}, ++seed);
          if (g[i].E == 0) continue;
          int64_t R = 0;
          for (int64_t e = 0; e < g[i].E; ++e) cols[i].insert(cols[i].end(), g[i].ranks[e], e), R += g[i].ranks[e];
          ps[i].ra = rand_bf16({g[i].E + R, K}, ++seed);
          bss[i] = (rand_bf16({g[i].N, R}, ++seed).to(torch::kFloat32) * 0.3).to(torch::kBFloat16);
          ps[i].bt = bss[i].t().contiguous();
          ps[i].n_expert = g[i].E;
          ps[i].top_k = g[i].top_k;
          ps[i].col_expert = &cols[i];
        }
        ASSERT_TRUE(gemv_group_ok(x, ps));
        gemv_group(x, ps);
        for (size_t i = 0; i < g.size(); ++i) {
          auto [y, h] = separate_calls(x, ps[i], bss[i]);
          EXPECT_TRUE(torch::equal(ps[i].y, y)) << nt << " threads, M " << M << ", projection " << i;
          if (h.defined()) EXPECT_TRUE(torch::equal(ps[i].h, h)) << nt << " threads, M " << M << ", projection " << i;
          else EXPECT_FALSE(ps[i].h.defined());
        }
      }
  }
  at::set_num_threads(threads);
  // refused: a float32 W, an adapter whose B^T does not match W's rows, more than 8 rows
  auto x = rand_bf16({1, 16}, 1);
  std::vector<GemvProjection> bad(1);
  bad[0].w = torch::randn({8, 16});
  EXPECT_FALSE(gemv_group_ok(x, bad));
  std::vector<int64_t> col = {0, 0};
  bad[0] = GemvProjection{rand_bf16({8, 16}, 2), rand_bf16({3, 16}, 3), rand_bf16({2, 7}, 4), 1, 1, &col, {}, {}};
  EXPECT_FALSE(gemv_group_ok(x, bad));
  EXPECT_THROW(gemv_group(x, bad), std::runtime_error);
  bad[0].bt = rand_bf16({2, 8}, 5);
  EXPECT_TRUE(gemv_group_ok(x, bad));
  EXPECT_FALSE(gemv_group_ok(rand_bf16({9, 16}, 6), bad));
}
