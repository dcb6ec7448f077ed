// The base projection and adapter input GEMM with the dropout as a sparse correction (adapter_gemm.h)
// against its dense reference (the masked copy of x through torch ops): outputs and the gradients of
// x, the base weight and [router; A] on random shapes and draws (repeated positions, whole rows and
// columns dropped, no draw, an empty draw), float32 and bfloat16; bad indexes by message; the draw.
#include <gtest/gtest.h>
#include "torch_api.h"

#include <random>

#include "adapter_gemm.h"
#include "helpers.h"
#include "tensor_checks.h"

using namespace mor;

namespace {

using test::expect_close;

struct Outputs {
  std::vector<torch::Tensor> out;  // y0, h, grad x, grad weight, grad wc
};

Outputs run(bool fast, const torch::Tensor& x0, const torch::Tensor& w0, const torch::Tensor& wc0, int64_t n_plain,
        const DropoutDraw& drop, const torch::Tensor& G, const torch::Tensor& H, bool weight_grad) {
  auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(weight_grad),
       wc = wc0.clone().requires_grad_(true);
  auto [y0, h] =
      fast ? adapter_input_gemm(x, w, wc, n_plain, drop) : adapter_input_gemm_reference(x, w, wc, n_plain, drop);
  ((y0.to(torch::kFloat32) * G).sum() + (h.to(torch::kFloat32) * H).sum()).backward();
  Outputs r{{y0.detach(), h.detach(), x.grad(), weight_grad ? w.grad() : torch::zeros({1}), wc.grad()}};
  for (auto& t : r.out) t = t.to(torch::kFloat32);
  return r;
}

}  // namespace

TEST(AdapterInputGemm, EqualsMaskedReferenceOnRandomShapesAndDraws) {
  std::mt19937 rng(17);
  int n_cases = 0, n_rounded = 0;
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    for (int c = 0; c < 24; ++c) {
      // R past 64 now and then: the AVX-512 sums hold 64 columns in registers, then start another block.
      const int64_t N = 1 + rng() % 40, I = 1 + rng() % 150, O = 1 + rng() % 30,
                    R = c % 5 == 4 ? 40 + rng() % 100 : 1 + rng() % 20, n_plain = (c % 4 == 0) ? 0 : int64_t(rng() % 9),
                    P = n_plain + R;
      torch::manual_seed(300 + c);
      auto x = torch::randn({N, I}).to(dt), w = (torch::randn({O, I}) * 0.3).to(dt),
           wc = (torch::randn({P, I}) * 0.3).to(dt);
      auto G = torch::randn({N, O}), H = torch::randn({N, P});
      DropoutDraw drop;
      drop.scale = c % 3 == 0 ? 1.0 / 0.95 : 1.25;
      const int64_t n = N * I;
      switch (c % 6) {
        case 0: break;  // no draw: plain x everywhere, only the fused backward GEMM
        case 1: drop.zero_index = torch::empty({0}, torch::kInt64); break;
        case 2:  // row 0 and column 0 dropped whole, plus repeats
          drop.zero_index = torch::cat({torch::arange(I), torch::arange(N) * I, torch::arange(I)});
          break;
        default: drop.zero_index = torch::randint(n, {std::max<int64_t>(1, n / 5)}, torch::kInt64); break;
      }
      const bool weight_grad = c % 2 == 1;
      auto f = run(true, x, w, wc, n_plain, drop, G, H, weight_grad);
      auto r = run(false, x, w, wc, n_plain, drop, G, H, weight_grad);
      // bf16: the reference rounds x * scale before its GEMM and the fast path rounds after it.
      const double tol = dt == torch::kFloat32 ? 1e-5 : 3e-2;
      const std::string tag = std::string(dt == torch::kFloat32 ? "f32" : "bf16") + " N=" + std::to_string(N) +
                              " I=" + std::to_string(I) + " P=" + std::to_string(P) + " case " + std::to_string(c);
      const char* names[] = {"y0", "h", "grad x", "grad weight", "grad wc"};
      if (dt == torch::kFloat32 || test::bf16_mm_sums_in_float32()) {
        for (size_t i = 0; i < f.out.size(); ++i) expect_close(f.out[i], r.out[i], tag + " " + names[i], tol);
      } else {  // the reference's GEMMs round their partial sums here: each side against float64
        auto d = [](const torch::Tensor& t) { return t.to(torch::kFloat64); };
        auto e = run(false, d(x), d(w), d(wc), n_plain, drop, G, H, weight_grad);
        for (size_t i = 0; i < f.out.size(); ++i) {
          const double err_f = test::max_diff(f.out[i], e.out[i]), err_r = test::max_diff(r.out[i], e.out[i]);
          EXPECT_LE(err_f, 1.5 * err_r + 1e-2 * std::max(1.0, test::max_abs(e.out[i])))
              << tag << " " << names[i] << ": fast path " << err_f << ", reference " << err_r << " from float64";
        }
      }
      if (drop.defined() && drop.zero_index.numel() > 0) {
        // The dropout block really changed: the correction ran, not plain x's product.
        auto plain = torch::mm(x, wc.narrow(0, n_plain, R).t()).to(torch::kFloat32);
        n_rounded += (f.out[1].narrow(1, n_plain, R) - plain).abs().max().item<double>() > 1e-3;
      }
      ++n_cases;
    }
  }
  EXPECT_EQ(n_cases, 48);
  EXPECT_GE(n_rounded, 20);
}

TEST(AdapterInputGemm, ADroppedElementContributesNothing) {
  // x = 1 everywhere with every element of row 1 dropped: h's dropout block is 0 there and
  // scale * sum(A) elsewhere; grad x at row 1 is the base and router terms only.
  const int64_t N = 3, I = 5, O = 2, E = 1, R = 2;
  auto x = torch::ones({N, I}).requires_grad_(true);
  auto w = torch::full({O, I}, 0.5), wc = torch::arange(double((E + R) * I)).reshape({E + R, I}).to(torch::kFloat32);
  wc.requires_grad_(true);
  DropoutDraw drop{torch::arange(I, 2 * I), 2.0};
  auto [y0, h] = adapter_input_gemm(x, w, wc, E, drop);
  auto hc = h.detach();
  EXPECT_FLOAT_EQ(hc[1][1].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(hc[1][2].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(hc[0][1].item<float>(), 2.0f * (5 + 6 + 7 + 8 + 9));
  EXPECT_FLOAT_EQ(hc[1][0].item<float>(), 0 + 1 + 2 + 3 + 4);  // the router row is never dropped
  (y0.sum() + h.sum()).backward();
  // grad x[1, i] = sum_o w[o, i] + router[i] (no A term); rows 0, 2 add 2 * (A[0, i] + A[1, i]).
  auto gx = x.grad();
  EXPECT_FLOAT_EQ(gx[1][3].item<float>(), 1.0f + 3.0f);
  EXPECT_FLOAT_EQ(gx[0][3].item<float>(), 1.0f + 3.0f + 2.0f * (8 + 13));
  // grad A[r, i] = 2 * (number of undropped rows) = 4; grad router = 3.
  EXPECT_FLOAT_EQ(wc.grad()[2][4].item<float>(), 4.0f);
  EXPECT_FLOAT_EQ(wc.grad()[0][4].item<float>(), 3.0f);
}

TEST(AdapterInputGemm, NoRowsUnderDropoutLeaveTheDrawUnused) {
  // wc all router (n_plain = P): the draw changes nothing, and the values are plain x's GEMMs.
  torch::manual_seed(8);
  auto x = torch::randn({6, 20}), w = torch::randn({3, 20}), wc = torch::randn({4, 20});
  auto G = torch::randn({6, 3}), H = torch::randn({6, 4});
  DropoutDraw drop{torch::randint(120, {30}, torch::kInt64), 1.25};
  auto f = run(true, x, w, wc, 4, drop, G, H, true);
  auto r = run(false, x, w, wc, 4, DropoutDraw{}, G, H, true);
  for (size_t i = 0; i < f.out.size(); ++i)
    expect_close(f.out[i], r.out[i], "n_plain = P, output " + std::to_string(i), 1e-5);
}

TEST(AdapterInputGemm, CorrectionsGiveTheSameBitsForAnyThreadCount) {
  // Threads split the draw's rows (forward h, grad x, the sets) and columns (grad A): each sum keeps one
  // order. I = 130 is no multiple of a bitmap word, so rows share words at their ends.
  torch::manual_seed(31);
  const int64_t N = 301, I = 130, O = 7, n_plain = 3, R = 40;
  auto x = torch::randn({N, I}).to(torch::kBFloat16), w = (torch::randn({O, I}) * 0.3).to(torch::kBFloat16),
       wc = (torch::randn({n_plain + R, I}) * 0.3).to(torch::kBFloat16);
  auto G = torch::randn({N, O}), H = torch::randn({N, n_plain + R});
  DropoutDraw drop{torch::randint(N * I, {N * I / 10}, torch::kInt64), 1.0 / 0.9};
  const int threads = torch::get_num_threads();
  std::vector<Outputs> runs, plain;
  for (int t : {1, 2, 3}) {
    torch::set_num_threads(t);
    runs.push_back(run(true, x, w, wc, n_plain, drop, G, H, false));
    plain.push_back(run(true, x, w, wc, n_plain, DropoutDraw{}, G, H, false));
  }
  torch::set_num_threads(threads);
  for (size_t t = 1; t < plain.size(); ++t)
    for (size_t i = 0; i < plain[t].out.size(); ++i)
      if (!torch::equal(plain[t].out[i], plain[0].out[i]))
        GTEST_SKIP() << "this LibTorch's own GEMMs differ with the thread count; nothing to compare";
  for (size_t t = 1; t < runs.size(); ++t)
    for (size_t i = 0; i < runs[t].out.size(); ++i)
      EXPECT_TRUE(torch::equal(runs[t].out[i], runs[0].out[i])) << "output " << i << ", " << t + 1 << " threads";
}

TEST(AdapterInputGemm, RejectsBadInputsByMessage) {
  auto x = torch::randn({2, 3}), w = torch::randn({4, 3}), wc = torch::randn({5, 3});
  EXPECT_EQ(test::error_of([&] { adapter_input_gemm(x, w, wc, 1, DropoutDraw{torch::tensor({int64_t(6)}), 2.0}); }),
            "adapter_input_gemm: dropout index 6 outside [0, 6)");
  EXPECT_EQ(test::error_of([&] { adapter_input_gemm(x, w, wc.to(torch::kBFloat16), 1, DropoutDraw{}); }),
            "adapter_input_gemm: x, weight and wc must share one dtype");
  EXPECT_NE(test::error_of([&] { adapter_input_gemm(x, w, wc, 6, DropoutDraw{}); }).find("n_plain"), std::string::npos);
  EXPECT_EQ(test::error_of([&] { draw_dropout(x, 1.0); }), "draw_dropout: p must be in (0, 1), got 1.000000");
}

TEST(AdapterInputGemm, DrawIsSeededAndApplicabilityFollowsDensity) {
  auto x = torch::zeros({100, 40});
  torch::manual_seed(4);
  auto a = draw_dropout(x, 0.05);
  torch::manual_seed(4);
  auto b = draw_dropout(x, 0.05);
  EXPECT_TRUE(torch::equal(a.zero_index, b.zero_index));
  EXPECT_DOUBLE_EQ(a.scale, 1.0 / 0.95);
  EXPECT_NEAR(double(a.zero_index.numel()), 4000 * -std::log(0.95), 5 * std::sqrt(4000 * 0.0513));
  EXPECT_TRUE(adapter_input_gemm_ok(x, a));
  EXPECT_TRUE(adapter_input_gemm_ok(x, DropoutDraw{}));
  EXPECT_FALSE(adapter_input_gemm_ok(x, draw_dropout(x, 0.5)));  // ~2000 of 4000 elements: the dense path
  EXPECT_FALSE(adapter_input_gemm_ok(x.to(torch::kFloat64), a));
}
