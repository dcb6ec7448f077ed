// Forward+backward cost of MoLA at LLaMA-7B width (4096 hidden, 11008 MLP, 256 tokens, bf16 frozen
// base, float32 adapters), for one target module (q_proj shape) and a whole decoder layer: base only,
// plain LoRA r=8, MoLA 2/4/8 experts top-2 fused, and the same MoLA as a per-expert loop (the
// reference's formulation). Prints milliseconds per iteration and ratios; not pass/fail.
// Usage: bench_moe_lora [threads=2] [rounds=3] (each figure: the fastest of the rounds, configurations interleaved)
#include "torch_api.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels_elem.h"
#include "moe_lora.h"

using namespace mor;

namespace {

enum class Mode { Base, Lora, Fused, Loop };

// One projection with its adapter, switchable between the implementations.
struct Proj {
  torch::Tensor W, router, A, B;
  std::vector<torch::Tensor> As, Bs;
  ExpertSpec spec;
  Mode mode = Mode::Base;

  // W: the frozen base weight, shared by every variant (so they all read the same memory).
  Proj(const torch::Tensor& base, Mode m, int64_t E, int64_t r) : W(base), mode(m) {
    const int64_t out = W.size(0), in = W.size(1);
    if (m == Mode::Base) return;
    if (m == Mode::Lora) E = 1;
    spec = ExpertSpec{E, m == Mode::Lora ? 1 : std::min<int64_t>(2, E), std::vector<int64_t>(E, r), 16.0, 0.05};
    router = (torch::randn({E, in}) * 0.02).requires_grad_(true);
    A = (torch::randn({E * r, in}) * 0.02).requires_grad_(true);
    B = (torch::randn({out, E * r}) * 0.02).requires_grad_(true);
    for (int64_t e = 0; e < E; ++e) {
      As.push_back(A.narrow(0, e * r, r));
      Bs.push_back(B.narrow(1, e * r, r));
    }
  }
  torch::Tensor operator()(const torch::Tensor& x) const {
    auto x2 = x.reshape({-1, x.size(-1)});
    torch::Tensor y, logits;
    // Dropout on the adapter input, as in training (p = 0.05).
    auto drop = mode == Mode::Base ? DropoutDraw{} : draw_dropout(x2, 0.05);
    auto xd = mode == Mode::Base || mode == Mode::Fused ? torch::Tensor() : scaled_dropout(x2, drop.zero_index, drop.scale);
    switch (mode) {
      case Mode::Base: y = torch::mm(x2, W.t()); break;
      case Mode::Lora:
        y = torch::addmm(torch::mm(x2, W.t()), torch::mm(xd, A.to(x.scalar_type()).t()),
                         (B * (16.0 / spec.ranks[0])).to(x.scalar_type()).t());
        break;
      case Mode::Fused: y = mola_fused_forward(x2, W, router, A, B, spec, drop, &logits); break;
      case Mode::Loop: y = mola_reference_forward(x2, W, router, As, Bs, spec, xd, &logits); break;
    }
    auto shape = x.sizes().vec();
    shape.back() = W.size(0);
    return y.reshape(shape);
  }
};

torch::Tensor rms(const torch::Tensor& x) {
  auto xf = x.to(torch::kFloat32);
  return (xf * torch::rsqrt(xf.pow(2).mean(-1, true) + 1e-6)).to(x.scalar_type());
}

// A LLaMA decoder layer (RMSNorm, causal attention with 32 heads, SwiGLU MLP); RoPE omitted (same
// cost in every variant).
struct Layer {
  std::vector<Proj> p;  // q k v o gate up down
  Layer(const std::vector<torch::Tensor>& base, Mode m, int64_t E, int64_t r) {
    for (const auto& w : base) p.emplace_back(w, m, E, r);
  }
  torch::Tensor operator()(const torch::Tensor& x) const {
    const int64_t B = x.size(0), T = x.size(1), H = 32, D = 128;
    auto h = rms(x);
    auto q = p[0](h).view({B, T, H, D}).transpose(1, 2);
    auto k = p[1](h).view({B, T, H, D}).transpose(1, 2);
    auto v = p[2](h).view({B, T, H, D}).transpose(1, 2);
    auto s = torch::matmul(q, k.transpose(2, 3)) / std::sqrt(double(D));
    auto mask = torch::ones({T, T}, torch::kBool).triu(1);
    s = s.masked_fill(mask, -1e4);
    auto a = torch::matmul(torch::softmax(s.to(torch::kFloat32), -1).to(x.scalar_type()), v);
    auto x1 = x + p[3](a.transpose(1, 2).reshape({B, T, H * D}));
    auto h2 = rms(x1);
    return x1 + p[6](torch::silu(p[4](h2)) * p[5](h2));
  }
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 3;
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  const int64_t T = 256, C = 4096;
  std::printf("MoLA forward+backward, LLaMA-7B width, %lld tokens, bf16 base, fp32 adapters, %d threads, %d iters\n",
              (long long)T, threads, iters);
  struct Cfg {
    std::string name;
    Mode mode;
    int64_t E;
  };
  std::vector<Cfg> cfgs = {{"base only", Mode::Base, 0},      {"LoRA r=8", Mode::Lora, 1},
                           {"MoLA 2 exp top-2", Mode::Fused, 2}, {"MoLA 4 exp top-2", Mode::Fused, 4},
                           {"MoLA 8 exp top-2", Mode::Fused, 8}, {"loop 2 exp top-2", Mode::Loop, 2},
                           {"loop 4 exp top-2", Mode::Loop, 4},  {"loop 8 exp top-2", Mode::Loop, 8}};
  // The machine may be shared: configurations run interleaved, round after round, and each reports
  // its fastest round (the least disturbed), after one warm-up round.
  auto x0 = (torch::randn({1, T, C})).to(torch::kBFloat16);
  auto gy = torch::randn({1, T, C}).to(torch::kBFloat16);
  const int64_t F = 11008;
  std::vector<torch::Tensor> base;
  for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{{C, C}, {C, C}, {C, C}, {C, C}, {C, F}, {C, F}, {F, C}})
    base.push_back((torch::randn({out, in}) * 0.02).to(torch::kBFloat16));
  std::vector<Proj> projs;
  std::vector<Layer> layers;
  for (const auto& c : cfgs) {
    projs.emplace_back(base[0], c.mode, c.E, 8);
    layers.emplace_back(base, c.mode, c.E, 8);
  }
  const size_t n = cfgs.size();
  std::vector<double> mod_ms(n, 1e30), layer_ms(n, 1e30);
  for (int round = 0; round <= iters; ++round) {
    for (size_t i = 0; i < n; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      {
        auto x = x0.clone().requires_grad_(true);
        projs[i](x).backward(gy);
      }
      double m = ms_since(t0);
      t0 = std::chrono::steady_clock::now();
      {
        auto x = x0.clone().requires_grad_(true);
        layers[i](x).backward(gy);
      }
      double l = ms_since(t0);
      if (round > 0) mod_ms[i] = std::min(mod_ms[i], m), layer_ms[i] = std::min(layer_ms[i], l);
    }
    std::fprintf(stderr, "round %d done\n", round);
  }
  const double base_mod = mod_ms[0], base_layer = layer_ms[0];
  for (size_t i = 0; i < n; ++i)
    std::printf("%-18s module %8.2f ms (x%.3f of base)   layer %8.1f ms (x%.3f of base)\n", cfgs[i].name.c_str(),
                mod_ms[i], mod_ms[i] / base_mod, layer_ms[i], layer_ms[i] / base_layer);
  for (int i = 0; i < 3; ++i)
    std::printf("fused vs loop, %s: module %.2fx faster, layer %.2fx faster; adapter overhead (time over base) "
                "module %.2fx smaller, layer %.2fx smaller\n",
                cfgs[2 + i].name.c_str(), mod_ms[5 + i] / mod_ms[2 + i], layer_ms[5 + i] / layer_ms[2 + i],
                (mod_ms[5 + i] - base_mod) / std::max(1e-9, mod_ms[2 + i] - base_mod),
                (layer_ms[5 + i] - base_layer) / std::max(1e-9, layer_ms[2 + i] - base_layer));
  return 0;
}
