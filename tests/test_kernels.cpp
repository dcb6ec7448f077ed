// The fused forward kernels (src/kernels.h) against their pure references: float32 within 1e-6
// relative, bfloat16 equal to the reference's rounding (at most one bf16 ulp apart, and almost all
// values bitwise equal), masks with all-masked rows, odd sizes that miss the vector width; and the
// eval-mode model that uses them against the PyTorch twin and against the op-by-op path.
#include <gtest/gtest.h>

#include <cstring>

#include "adapter.h"
#include "allocation.h"
#include "generate.h"
#include "helpers.h"
#include "kernels.h"
#include "kernels_rows.h"
#include "llama.h"
#include "safetensors.h"
#include "tensor_checks.h"

using namespace mor;

namespace {

// Fraction of elements that are bitwise equal, and the largest difference in units of the
// reference's bf16 spacing.
struct Cmp {
  double equal_frac, max_ulps;
};
Cmp compare_bf16(const torch::Tensor& got, const torch::Tensor& want) {
  auto g = got.to(torch::kFloat32), w = want.to(torch::kFloat32);
  const double equal = (g == w).to(torch::kFloat64).mean().item<double>();
  // bf16 spacing at |w|: 2^(floor(log2|w|) - 7), with a floor for tiny values.
  auto spacing = torch::pow(2.0, torch::floor(torch::log2(w.abs().clamp_min(1e-30))) - 7);
  const double ulps = ((g - w).abs() / spacing).max().item<double>();
  return {equal, ulps};
}

void expect_close_f32(const torch::Tensor& got, const torch::Tensor& want, double atol = 1e-7) {
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, atol)) << "max diff " << (got - want).abs().max().item<double>();
}

// max_ulps 2 where bf16 rounds after every op of a chain fed by exp (a last-bit difference of our
// float32 exp from Sleef's can move an intermediate by one bf16 step).
void expect_bf16_rounding(const torch::Tensor& got, const torch::Tensor& want, double min_equal = 0.99,
                          double max_ulps = 1.0) {
  ASSERT_EQ(got.sizes(), want.sizes());
  ASSERT_EQ(got.scalar_type(), torch::kBFloat16);
  auto c = compare_bf16(got, want);
  EXPECT_GE(c.equal_frac, min_equal);
  EXPECT_LE(c.max_ulps, max_ulps);
}

// The bf16 cached attention no further from the float64 op sequence than the bf16 op sequence is.
void expect_no_less_exact(const torch::Tensor& got, const torch::Tensor& want, const torch::Tensor& q,
                          const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask, double div) {
  auto d = [](const torch::Tensor& t) { return t.to(torch::kFloat64); };
  auto exact = attention_cached_reference(d(q), d(k), d(v), mask, div);
  const double err_got = (d(got) - exact).abs().max().item<double>();
  const double err_ref = (d(want) - exact).abs().max().item<double>();
  EXPECT_LE(err_got, 1.5 * err_ref + 1e-3) << "kernel " << err_got << " vs reference " << err_ref;
}

// Causal mask over S = past + T keys plus left padding of row 1: bool [B, 1, T, S], true = masked.
torch::Tensor causal_pad_mask(int64_t B, int64_t T, int64_t past, int64_t pad) {
  const int64_t S = past + T;
  auto k = torch::arange(S).view({1, 1, 1, S}), q = torch::arange(past, S).view({1, 1, T, 1});
  auto m = (k > q).expand({B, 1, T, S}).clone();
  m.select(0, 1).narrow(-1, 0, pad).fill_(true);  // row 1: the first `pad` keys are pads
  return m;
}

}  // namespace

TEST(Kernels, AttentionProbsMatchReference) {
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  const int64_t B = 2, H = 3, T = 5, past = 2, S = past + T;
  auto mask = causal_pad_mask(B, T, past, 4);  // row 1, query 0 (key 2) sees pads 0..3 and key 3+: not all masked
  mask.select(0, 1).select(1, 0).fill_(true);   // an all-masked query row: uniform in the reference
  // sqrt(128), head_dim 128's divisor, is not a bf16 value: LibTorch 1.13 divides bf16 by its
  // bf16 rounding (11.3125), and the kernel must too (with the float divisor 1/3 of the values differ).
  for (double div : {8.0, std::sqrt(128.0)})
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto scores = (torch::randn({B, H, T, S}) * 6).to(dt);
    auto want = attention_probs_reference(scores, mask, div);
    auto got = attention_probs(scores.clone(), mask, div);
    if (dt == torch::kFloat32) expect_close_f32(got, want);
    else expect_bf16_rounding(got, want, 0.95);
    // the all-masked row is uniform; masked keys of other rows get exactly 0
    EXPECT_TRUE(torch::allclose(got.select(0, 1).select(1, 0).to(torch::kFloat32),
                                torch::full({H, S}, 1.0 / S), 1e-2, 1e-3));
    EXPECT_EQ(got.select(0, 0).select(1, 0).narrow(-1, past + 1, T - 1).abs().sum().item<double>(), 0.0);
  }
  // No mask, a long row (vector loop plus tail), a divisor that is not a power of two.
  auto s = torch::randn({1, 2, 3, 333}) * 20;
  expect_close_f32(attention_probs(s.clone(), {}, std::sqrt(128.0)), attention_probs_reference(s, {}, std::sqrt(128.0)));
  auto sb = (torch::randn({2, 4, 3, 333}) * 4).to(torch::kBFloat16);
  expect_bf16_rounding(attention_probs(sb.clone(), {}, std::sqrt(128.0)), attention_probs_reference(sb, {}, std::sqrt(128.0)),
                       0.99);
}

// Decode attention read in place from narrowed cache views, grouped query heads (H = 3 Hkv),
// against matmul -> softmax -> matmul; one and three query rows, left padding, an all-masked row,
// head dims with and without a tail beyond 16-lane chunks.
TEST(Kernels, AttentionCachedMatchesReference) {
  torch::NoGradGuard ng;
  torch::manual_seed(11);
  const int64_t B = 2, Hkv = 2, H = 6, cap = 50, past = 21;
  for (int64_t D : {40, 64})  // the portable loops; the AVX-512 one (whole 16-lane chunks)
  for (int64_t T : {1, 3})
    for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
      const int64_t S = past + T;
      auto kc = torch::randn({B, Hkv, cap, D}).to(dt), vc = torch::randn({B, Hkv, cap, D}).to(dt);
      auto k = kc.narrow(2, 0, S), v = vc.narrow(2, 0, S);
      auto q = torch::randn({B, T, H, D}).to(dt).transpose(1, 2);  // the projection layout's view
      auto mask = causal_pad_mask(B, T, past, 5);
      mask.select(0, 1).select(1, 0).fill_(true);  // all masked: uniform weights in both
      auto want = attention_cached_reference(q, k, v, mask, std::sqrt(double(D)));
      auto got = attention_cached(q, k, v, mask, std::sqrt(double(D)));
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{B, H, T, D}));
      // float32: the reference's sums are OpenBLAS's, in another order (with FMAs on an AVX2 CPU):
      // a few 1e-7 apart on outputs of size 1, where a wrong term would be O(0.1).
      if (dt == torch::kFloat32) {
        expect_close_f32(got, want, 1e-6);
      } else {
        // Bitwise equal on this data where LibTorch's bf16 GEMMs sum in float32; the float32 sums run
        // in another order than the GEMMs', so elsewhere a score can round one bf16 step apart.
        if (test::bf16_mm_sums_in_float32()) expect_bf16_rounding(got, want, 0.99, 1.0);
        expect_no_less_exact(got, want, q, k, v, mask, std::sqrt(double(D)));
      }
      // no mask at all: the unmasked reference
      auto q1 = q.narrow(2, 0, 1);
      auto g1 = attention_cached(q1, k, v, {}, 8.0), w1 = attention_cached_reference(q1, k, v, {}, 8.0);
      if (dt == torch::kFloat32) {
        expect_close_f32(g1, w1, 1e-6);
      } else {
        if (test::bf16_mm_sums_in_float32()) expect_bf16_rounding(g1, w1, 0.99, 1.0);
        expect_no_less_exact(g1, w1, q1, k, v, {}, 8.0);
      }
    }
  auto q = torch::randn({1, 3, 1, 8}), k = torch::randn({1, 2, 4, 8});
  EXPECT_THROW(attention_cached(q, k, k, {}, 1.0), std::runtime_error);  // 3 heads over 2 kv heads
}

TEST(Kernels, SiluMulMatchesReference) {
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  auto g = torch::randn({3, 1500}) * 4, u = torch::randn({3, 1500});
  g[0][0] = 95.0;  // exp(-g) underflows
  g[0][1] = -95.0;  // exp(-g) would overflow
  expect_close_f32(silu_mul(g, u), silu_mul_reference(g, u));
  auto gb = g.to(torch::kBFloat16), ub = u.to(torch::kBFloat16);
  expect_bf16_rounding(silu_mul(gb, ub), silu_mul_reference(gb, ub));
  EXPECT_THROW(silu_mul(g, u.narrow(1, 0, 10)), std::runtime_error);
}

TEST(Kernels, RmsNormMatchesReference) {
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  auto x = torch::randn({2, 7, 100}) * 3, w = torch::rand({100}) + 0.5;
  expect_close_f32(rms_norm_fused(x, w, 1e-5), rms_norm_reference(x, w, 1e-5));
  auto xb = x.to(torch::kBFloat16), wb = w.to(torch::kBFloat16);
  expect_bf16_rounding(rms_norm_fused(xb, wb, 1e-6), rms_norm_reference(xb, wb, 1e-6));
  // a non-contiguous input (a narrowed view)
  auto wide = torch::randn({4, 200});
  expect_close_f32(rms_norm_fused(wide.narrow(1, 50, 100), w, 1e-5), rms_norm_reference(wide.narrow(1, 50, 100), w, 1e-5));
}

TEST(Kernels, RopeMatchesReference) {
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  const int64_t B = 2, T = 5, H = 3, D = 16;
  auto pos = torch::tensor({3, 4, 5, 6, 7, 1, 1, 0, 1, 2}, torch::kLong).view({B, T});
  auto [c, s] = rope_cos_sin(pos, D, 10000.0);
  auto x = torch::randn({B, T, H, D});
  expect_close_f32(apply_rope_fused(x, c, s), apply_rope(x, c, s));
  auto xb = x.to(torch::kBFloat16), cb = c.to(torch::kBFloat16), sb = s.to(torch::kBFloat16);
  auto want = apply_rope(xb, cb, sb);
  expect_bf16_rounding(apply_rope_fused(xb, cb, sb), want);
  // and against the HF layout reference [B, H, T, D]
  auto ref = apply_rope_reference(x.transpose(1, 2), c, s).transpose(1, 2);
  expect_close_f32(apply_rope_fused(x, c, s), ref.contiguous());
}

TEST(Kernels, RouteGateMatchesReference) {
  torch::NoGradGuard ng;
  torch::manual_seed(7);
  const int64_t E = 4, K = 2;
  const std::vector<int64_t> col_expert = {0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};  // ranks 2,4,6,8
  const int64_t R = col_expert.size();
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto h = torch::randn({37, E + R}).to(dt);
    auto want = route_gate_reference(h, E, K, col_expert);
    auto got = h.clone();
    route_gate_(got, E, K, col_expert);
    EXPECT_TRUE(torch::equal(got.narrow(1, 0, E), h.narrow(1, 0, E)));  // router logits kept
    if (dt == torch::kFloat32) expect_close_f32(got.narrow(1, E, R), want);
    else expect_bf16_rounding(got.narrow(1, E, R).contiguous(), want);
    // exactly K experts' columns are non-zero per row (random values are never 0)
    for (int64_t n = 0; n < 37; ++n) {
      int64_t expect = 0;
      auto row = got[n].narrow(0, E, R);
      std::vector<bool> used(E, false);
      for (int64_t j = 0; j < R; ++j)
        if (row[j].item<float>() != 0) used[col_expert[j]] = true;
      for (bool u : used) expect += u;
      EXPECT_EQ(expect, K);
    }
  }
  auto bad = torch::randn({3, 5});
  EXPECT_THROW(route_gate_(bad, E, K, col_expert), std::runtime_error);
}

TEST(Kernels, AttentionProbsBackwardMatchesReference) {
  torch::manual_seed(8);
  const int64_t B = 2, H = 2, T = 4, past = 1, S = past + T;
  auto mask = causal_pad_mask(B, T, past, 3);
  mask.select(0, 1).select(1, 0).fill_(true);  // an all-masked row: its gradient is zero (masked_fill)
  for (double div : {8.0, std::sqrt(128.0)})
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto s0 = (torch::randn({B, H, T, S}) * 4).to(dt);
    auto up = torch::randn({B, H, T, S}).to(dt);
    auto a = s0.clone().requires_grad_(true), b = s0.clone().requires_grad_(true);
    auto pa = attention_probs_train(a, mask, div);
    auto pb = attention_probs_reference(b, mask, div);
    (pa * up).sum().backward();
    (pb * up).sum().backward();
    if (dt == torch::kFloat32) {
      expect_close_f32(pa.detach(), pb.detach());
      EXPECT_TRUE(torch::allclose(a.grad(), b.grad(), 1e-4, 1e-6)) << (a.grad() - b.grad()).abs().max().item<double>();
    } else {
      expect_bf16_rounding(pa.detach(), pb.detach(), 0.95);
      // the float32 sums differ in order, so compare within a bf16 step of the gradient's scale
      const double scale = b.grad().abs().max().item<double>();
      EXPECT_LE((a.grad() - b.grad()).abs().max().item<double>(), scale / 64);
    }
    EXPECT_EQ(a.grad().select(0, 1).select(1, 0).abs().sum().item<double>(), 0.0);
  }
}

TEST(Kernels, SiluMulBackwardMatchesReference) {
  torch::manual_seed(9);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto g0 = (torch::randn({5, 1100}) * 3).to(dt), u0 = torch::randn({5, 1100}).to(dt), up = torch::randn({5, 1100}).to(dt);
    auto ga = g0.clone().requires_grad_(true), ua = u0.clone().requires_grad_(true);
    auto gb = g0.clone().requires_grad_(true), ub = u0.clone().requires_grad_(true);
    (silu_mul_train(ga, ua) * up).sum().backward();
    (silu_mul_reference(gb, ub) * up).sum().backward();
    if (dt == torch::kFloat32) {
      expect_close_f32(ga.grad(), gb.grad());
      expect_close_f32(ua.grad(), ub.grad());
    } else {
      expect_bf16_rounding(ga.grad(), gb.grad(), 0.98, 2.0);
      expect_bf16_rounding(ua.grad(), ub.grad(), 0.98, 2.0);
    }
  }
}

TEST(Kernels, SwitchTurnsFusedPathsOff) {
  auto x = torch::randn({2, 3});
  set_fused_enabled(false);
  EXPECT_FALSE(fused_ok(x));
  EXPECT_FALSE(kernel_ok(x));
  set_fused_enabled(true);
  torch::NoGradGuard ng;
  EXPECT_TRUE(fused_ok(x));
  EXPECT_FALSE(fused_ok(x.to(torch::kFloat64)));
}

TEST(Kernels, EvalModeTwinLogits) {
  // tests/test_llama.cpp checks the training-mode path; eval mode takes the fused kernels.
  const std::string dir = test::source_dir() + "/tests/golden/twin_llama";
  auto m = load_llama(dir, torch::kFloat32, torch::kCPU);
  m->eval();
  auto g = SafeTensorsFile::open(dir + "/golden.safetensors");
  ForwardArgs a;
  a.input_ids = g->get("input_ids");
  a.attention_mask = g->get("attention_mask");
  a.position_ids = g->get("position_ids");
  torch::NoGradGuard ng;
  auto logits = m->forward(a);
  auto ref = g->get("logits_gen_positions");
  const double d = ((logits - ref).abs().max() / ref.abs().max()).item<double>();
  EXPECT_LT(d, 1e-4);
  EXPECT_TRUE(torch::allclose(logits, ref, 1e-4, 1e-5));
}

TEST(Kernels, FusedAndOpPathsAgreeWithAdapters) {
  torch::manual_seed(1234);
  ModelConfig cfg = ModelConfig::llama(64, 96, 2, 8, 2, 101);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    auto m = random_llama(cfg, 11, dt, torch::kCPU);
    // bfloat16 with every expert active: the fused path computes the router logits in one GEMM with the A
    // matrices, so they round differently from the op path's, and where two experts nearly tie a token's
    // top-k choice could differ between the paths (with it its logits, by a whole expert). The selection
    // itself is checked in float32; in bfloat16 the gates (softmax weights) and the fused GEMMs are.
    auto alloc = Allocation::from_flags(cfg, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "2,4", "8,4",
                                        dt == torch::kFloat32 ? "2" : "2,4", 16.0, 0.05);
    attach_adapters(m, alloc, 3);
    for (auto& [name, p] : trainable_params(m))
      if (name.find("lora_B") != std::string::npos) p.detach().normal_(0.0, 0.05);
    m->eval();
    torch::NoGradGuard ng;
    const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9, 33, 70, 12, 4}, {1, 40, 2}};
    GenerateOptions o;
    o.max_new_tokens = 12;
    o.stop_ids = {-1};
    auto [ids, mask] = left_pad(prompts, 0);
    ForwardArgs a;
    a.input_ids = ids;
    a.attention_mask = mask;
    a.position_ids = positions_from_mask(mask);
    RouterLogits rl_on, rl_off;
    a.router_logits = &rl_on;
    auto on = m->forward(a);
    auto gen_on = generate(m, prompts, o);
    set_fused_enabled(false);
    a.router_logits = &rl_off;
    auto off = m->forward(a);
    auto gen_off = generate(m, prompts, o);
    set_fused_enabled(true);
    const double d = ((on - off).abs().max() / off.abs().max()).item<double>();
    EXPECT_LT(d, dt == torch::kFloat32 ? 1e-5 : 2e-2) << torch::toString(dt);
    ASSERT_EQ(rl_on.size(), rl_off.size());
    EXPECT_TRUE(torch::allclose(rl_on[1][3].to(torch::kFloat32), rl_off[1][3].to(torch::kFloat32), 1e-2, 1e-3))
        << torch::toString(dt);
    if (dt == torch::kFloat32) {
      EXPECT_EQ(gen_on.new_tokens, gen_off.new_tokens);
    }
    // the adapter copies follow the parameters: after an in-place change the output changes
    auto before = m->forward(a);
    for (auto& [name, p] : trainable_params(m))
      if (name.find("lora_B") != std::string::npos) p.detach().mul_(2.0);
    auto after = m->forward(a);
    set_fused_enabled(false);
    auto after_off = m->forward(a);
    set_fused_enabled(true);
    EXPECT_GT((after - before).abs().max().item<double>(), 1e-3);
    EXPECT_LT(((after - after_off).abs().max() / after_off.abs().max()).item<double>(), dt == torch::kFloat32 ? 1e-5 : 2e-2);
  }
}

#if MOR_HAVE_AVX512
namespace {
// lane_sums<C> against C calls of _mm512_reduce_add_ps, bitwise; true when all agree.
template <int C>
MOR_AVX512 bool lane_sums_agree(const float* data) {
  __m512 acc[C];
  for (int i = 0; i < C; ++i) acc[i] = _mm512_loadu_ps(data + 16 * i);
  float got[C];
  kern::lane_sums<C>(acc, got);
  bool ok = true;
  for (int i = 0; i < C; ++i) {
    const float want = _mm512_reduce_add_ps(acc[i]);
    ok = ok && std::memcmp(&got[i], &want, sizeof(float)) == 0;
  }
  return ok;
}
}  // namespace

// The shared 16-lane sums of the gemv and decode-attention kernels are the halving tree of
// _mm512_reduce_add_ps, so batching sums never moves a value: values of mixed magnitudes (where
// any other order rounds differently), for 1 to 16 accumulators.
TEST(Kernels, LaneSumsAreReduceAddBitwise) {
  if (!kern::cpu_has_avx512f()) GTEST_SKIP() << "no AVX-512 on this CPU";
  torch::manual_seed(3);
  for (int trial = 0; trial < 50; ++trial) {
    auto v = (torch::randn({16 * 16}) * torch::pow(10.0, torch::randint(-4, 5, {16 * 16}))).contiguous();
    const float* d = v.data_ptr<float>();
    EXPECT_TRUE(lane_sums_agree<1>(d));
    EXPECT_TRUE(lane_sums_agree<3>(d));
    EXPECT_TRUE(lane_sums_agree<4>(d));
    EXPECT_TRUE(lane_sums_agree<8>(d));
    EXPECT_TRUE(lane_sums_agree<12>(d));
    EXPECT_TRUE(lane_sums_agree<16>(d));
  }
}
#endif

// Decode attention's rows of one kv group share each pass over the keys and values (up to four
// rows): bitwise what each query head computes alone, for G = 4 and 2 query rows, D = 64 and 128
// (the two widths with multi-row weighted sums), bf16 and float32, with a padding mask.
TEST(Kernels, AttentionCachedGroupedRowsEqualHeadsAlone) {
  torch::NoGradGuard ng;
  torch::manual_seed(17);
  const int64_t B = 2, Hkv = 2, G = 4, H = G * Hkv, past = 37;
  for (int64_t D : {64, 128})
    for (int64_t T : {1, 2})
      for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
        const int64_t S = past + T;
        auto k = torch::randn({B, Hkv, S, D}).to(dt), v = torch::randn({B, Hkv, S, D}).to(dt);
        auto q = torch::randn({B, T, H, D}).to(dt).transpose(1, 2);
        auto mask = causal_pad_mask(B, T, past, 3);
        auto got = attention_cached(q, k, v, mask, std::sqrt(double(D)));
        for (int64_t h = 0; h < H; ++h) {
          auto kh = k.narrow(1, h / G, 1), vh = v.narrow(1, h / G, 1);
          auto alone = attention_cached(q.narrow(1, h, 1), kh, vh, mask.narrow(1, 0, 1), std::sqrt(double(D)));
          EXPECT_TRUE(torch::equal(got.narrow(1, h, 1), alone)) << "D " << D << " T " << T << " head " << h;
        }
      }
}
