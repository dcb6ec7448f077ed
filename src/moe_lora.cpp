// Mixture-of-LoRA-experts linear layer (see moe_lora.h): the fused forward (one matmul against all
// experts' A stacked, gates applied per expert block, one matmul against all B stacked), the
// reference per-expert loop it is tested against, and the router balance loss.
// Shapes: N tokens, I in, O out, E experts, K top-k, R = sum of ranks.
#include "moe_lora.h"

#include <algorithm>

#include "gemv.h"
#include "kernels.h"
#include "kernels_elem.h"

#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>

namespace mor {

int64_t ExpertSpec::total_rank() const { return std::accumulate(ranks.begin(), ranks.end(), int64_t{0}); }

int64_t ExpertSpec::rank_offset(int64_t e) const {
  return std::accumulate(ranks.begin(), ranks.begin() + e, int64_t{0});
}

bool ExpertSpec::uniform_rank() const {
  for (auto r : ranks) if (r != ranks.front()) return false;
  return true;
}

bool ExpertSpec::operator==(const ExpertSpec& o) const {
  return n_expert == o.n_expert && top_k == o.top_k && ranks == o.ranks && lora_alpha == o.lora_alpha &&
         lora_dropout == o.lora_dropout && router == o.router && top_p == o.top_p && z_loss == o.z_loss;
}

// Routing shared by both paths: p = softmax(float32(logits)) [N, E]; top-k; renormalised weights in
// x's dtype. Returns (w [N, K], idx [N, K]).
static std::pair<torch::Tensor, torch::Tensor> route(const torch::Tensor& logits, int64_t k, torch::Dtype dt) {
  auto p = torch::softmax(logits.to(torch::kFloat32), -1);
  auto top = torch::topk(p, k, -1);
  auto w = std::get<0>(top);
  w = w / w.sum(-1, /*keepdim=*/true);
  return {w.to(dt), std::get<1>(top)};
}

// Top-p routing: the K most probable experts, of which the prefix whose probability mass before it is
// below top_p stays active (the first always does); weights renormalised over the active ones.
static RouteResult route_top_p(const torch::Tensor& logits, const ExpertSpec& spec, torch::Dtype dt) {
  RouteResult r;
  r.probs = torch::softmax(logits.to(torch::kFloat32), -1);
  auto top = torch::topk(r.probs, spec.top_k, -1);
  auto v = std::get<0>(top);
  r.index = std::get<1>(top);
  auto vd = v.detach();
  r.active = (vd.cumsum(-1) - vd) < spec.top_p;  // [N, K] mass strictly before each candidate
  auto w = v * r.active.to(v.scalar_type());
  r.weights = (w / w.sum(-1, /*keepdim=*/true)).to(dt);
  return r;
}

RouteResult route_tokens(const torch::Tensor& logits, const ExpertSpec& spec, torch::Dtype dt) {
  if (spec.router == "top_p") return route_top_p(logits, spec, dt);
  RouteResult r;
  r.probs = torch::softmax(logits.to(torch::kFloat32), -1);
  auto top = torch::topk(r.probs, spec.top_k, -1);
  auto w = std::get<0>(top);
  r.weights = (w / w.sum(-1, /*keepdim=*/true)).to(dt);
  r.index = std::get<1>(top);
  r.active = torch::ones(r.index.sizes(), r.index.options().dtype(torch::kBool));
  return r;
}

RouteResult route_tokens_reference(const torch::Tensor& logits, const ExpertSpec& spec, torch::Dtype dt) {
  if (spec.router != "top_p") return route_tokens(logits, spec, dt);
  const int64_t N = logits.size(0), E = logits.size(1), K = spec.top_k;
  RouteResult r;
  r.probs = torch::softmax(logits.to(torch::kFloat32), -1);
  auto pc = r.probs.detach().to(torch::kCPU).contiguous();
  auto acc = pc.accessor<float, 2>();
  std::vector<int64_t> index(N * K);
  std::vector<uint8_t> active(N * K);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int64_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return acc[n][a] > acc[n][b]; });
    double mass = 0;
    for (int64_t j = 0; j < K; ++j) {
      index[n * K + j] = order[j];
      active[n * K + j] = mass < spec.top_p;
      mass += acc[n][order[j]];
    }
  }
  auto dev = logits.device();
  r.index = torch::tensor(index, torch::kInt64).reshape({N, K}).to(dev);
  r.active = torch::tensor(std::vector<int64_t>(active.begin(), active.end()), torch::kInt64).reshape({N, K}).to(dev).to(torch::kBool);
  auto w = r.probs.gather(1, r.index) * r.active.to(torch::kFloat32);
  r.weights = (w / w.sum(-1, /*keepdim=*/true)).to(dt);
  return r;
}

static std::pair<torch::Tensor, torch::Tensor> weights_and_index(const RouteResult& r) { return {r.weights, r.index}; }

torch::Tensor router_z_loss(const torch::Tensor& logits) {
  auto lse = torch::logsumexp(logits.to(torch::kFloat32), -1);  // [N]
  return (lse * lse).mean();
}

double router_z_loss_reference(const torch::Tensor& logits) {
  auto c = logits.detach().to(torch::kFloat64).cpu().contiguous();
  auto acc = c.accessor<double, 2>();
  double total = 0;
  for (int64_t n = 0; n < c.size(0); ++n) {
    double mx = -INFINITY, s = 0;
    for (int64_t e = 0; e < c.size(1); ++e) mx = std::max(mx, acc[n][e]);
    for (int64_t e = 0; e < c.size(1); ++e) s += std::exp(acc[n][e] - mx);
    const double lse = mx + std::log(s);
    total += lse * lse;
  }
  return total / double(c.size(0));
}

namespace {

// B [O, R] with each expert's scaling lora_alpha / r_e folded into its columns, on the float32
// parameter before the cast to the compute dtype dt.
torch::Tensor scaled_lora_B(const torch::Tensor& lora_B, const ExpertSpec& spec, torch::Dtype dt) {
  if (spec.uniform_rank()) return (lora_B * (spec.lora_alpha / double(spec.ranks.front()))).to(dt);
  std::vector<float> col_scale;
  col_scale.reserve(lora_B.size(1));
  for (int64_t e = 0; e < spec.n_expert; ++e)
    col_scale.insert(col_scale.end(), spec.ranks[e], float(spec.lora_alpha / spec.ranks[e]));
  auto cs = torch::tensor(col_scale, torch::TensorOptions().dtype(torch::kFloat32)).to(lora_B.device());
  return (lora_B * cs).to(dt);
}

// Identity on a; the router's gradient is the exact zero a one-expert router gets in the reference.
struct OneExpertRouterFn : public torch::autograd::Function<OneExpertRouterFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& router) {
    ctx->save_for_backward({router});
    return a.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {grads[0], torch::zeros_like(ctx->get_saved_variables()[0])};
  }
};

}  // namespace

// y0 = x W^T and the adapter's input products: the router logits [N, E] (undefined for the one-expert
// short path, which leaves the router out) and a = dropout(x) A^T [N, R].
static std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> input_products(
    const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& router, const torch::Tensor& lora_A,
    const DropoutDraw& drop, bool with_router) {
  const auto dt = x.scalar_type();
  const int64_t E = with_router ? router.size(0) : 0, R = lora_A.size(0);
  auto wc = with_router ? torch::cat({router, lora_A}, 0).to(dt) : lora_A.to(dt);
  torch::Tensor y0, h;
  if (adapter_input_gemm_ok(x, drop)) {
    std::tie(y0, h) = adapter_input_gemm(x, weight, wc, E, drop);
  } else {
    y0 = torch::mm(x, weight.t());
    if (drop.defined()) {  // the masked copy feeds A alone; the router reads x
      auto a = torch::mm(scaled_dropout(x, drop.zero_index, drop.scale), wc.narrow(0, E, R).t());
      return {y0, with_router ? torch::mm(x, wc.narrow(0, 0, E).t()) : torch::Tensor(), a};
    }
    h = torch::mm(x, wc.t());
  }
  if (!with_router) return {y0, torch::Tensor(), h};
  return {y0, h.narrow(1, 0, E), h.narrow(1, E, R)};
}

torch::Tensor mola_fused_forward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& router,
                                 const torch::Tensor& lora_A, const torch::Tensor& lora_B, const ExpertSpec& spec,
                                 const DropoutDraw& drop, torch::Tensor* router_logits_out, bool logits_grad) {
  const auto dt = x.scalar_type();
  const int64_t N = x.size(0), E = spec.n_expert, R = lora_A.size(0);
  // E = K = 1 without a differentiated logit (see moe_lora.h): the gate is 1, a * 1 = a.
  const bool one_expert = !logits_grad && E == 1 && spec.top_k == 1 && fused_enabled();
  auto [y0, logits, a] = input_products(x, weight, router, lora_A, drop, !one_expert);
  if (one_expert) {
    a = OneExpertRouterFn::apply(a, router);
    if (router_logits_out) {
      torch::NoGradGuard ng;
      *router_logits_out = torch::mm(x, router.to(dt).t());
    }
    return y0.addmm_(a, scaled_lora_B(lora_B, spec, dt).t());  // in place: see below
  }
  auto [w, idx] = spec.router == "top_p" ? weights_and_index(route_tokens(logits, spec, dt)) : route(logits, spec.top_k, dt);
  // Dense gates [N, E]: the renormalised weight where selected, zero elsewhere.
  auto gates = torch::zeros({N, E}, x.options()).scatter(1, idx, w);
  if (spec.uniform_rank()) {
    const int64_t r = spec.ranks.front();
    a = (a.reshape({N, E, r}) * gates.unsqueeze(2)).reshape({N, R});
  } else {
    std::vector<int64_t> col_expert;
    col_expert.reserve(R);
    for (int64_t e = 0; e < E; ++e) col_expert.insert(col_expert.end(), spec.ranks[e], e);
    auto ce = torch::tensor(col_expert, torch::TensorOptions().dtype(torch::kInt64)).to(x.device());
    a = a * gates.index_select(1, ce);
  }
  // In place: y0 is no saved tensor of its GEMM's backward, and an out-of-place addmm would first copy
  // it whole (at [1024, 5632] about 1 ms a module).
  auto y = y0.addmm_(a, scaled_lora_B(lora_B, spec, dt).t());
  if (router_logits_out) *router_logits_out = logits;
  return y;
}

torch::Tensor mola_reference_forward(const torch::Tensor& x, const torch::Tensor& weight,
                                     const torch::Tensor& router, const std::vector<torch::Tensor>& A,
                                     const std::vector<torch::Tensor>& B, const ExpertSpec& spec,
                                     const torch::Tensor& x_dropped, torch::Tensor* router_logits_out) {
  const auto dt = x.scalar_type();
  auto y = torch::mm(x, weight.t());
  auto logits = torch::mm(x, router.to(dt).t());
  auto [w, idx] =
      spec.router == "top_p" ? weights_and_index(route_tokens_reference(logits, spec, dt)) : route(logits, spec.top_k, dt);
  auto xd = x_dropped.defined() ? x_dropped : x;
  for (int64_t e = 0; e < spec.n_expert; ++e) {
    auto hit = (idx == e);                       // [N, K]
    auto rows = hit.any(1).nonzero().squeeze(1);  // tokens that chose expert e
    if (rows.numel() == 0) continue;
    auto we = (w * hit.to(dt)).sum(1).index_select(0, rows).unsqueeze(1);  // [n, 1]
    auto cur = xd.index_select(0, rows);
    auto out = torch::mm(torch::mm(cur, A[e].to(dt).t()), B[e].to(dt).t()) * (spec.lora_alpha / spec.ranks[e]) * we;
    y = y.index_add(0, rows, out);
  }
  if (router_logits_out) *router_logits_out = logits;
  return y;
}

torch::Tensor balance_loss(const std::vector<torch::Tensor>& logits, int64_t top_k) {
  if (logits.empty()) throw std::runtime_error("balance_loss: no router logits");
  auto l = torch::cat(logits, 0).to(torch::kFloat32);  // [N, E]
  const int64_t E = l.size(1);
  auto p = torch::softmax(l, -1);
  auto idx = std::get<1>(torch::topk(p.detach(), top_k, -1)).reshape({-1});
  auto counts = torch::zeros({E}, l.options()).index_add(0, idx, torch::ones({idx.numel()}, l.options()));
  auto f = counts / counts.sum();
  auto P = p.mean(0);
  return (f * P).sum() * double(E);
}

double balance_loss_reference(const std::vector<torch::Tensor>& logits, int64_t top_k) {
  std::vector<std::vector<double>> probs;
  int64_t E = 0;
  for (const auto& t : logits) {
    auto c = t.detach().to(torch::kFloat64).cpu().contiguous();
    E = c.size(1);
    auto acc = c.accessor<double, 2>();
    for (int64_t n = 0; n < c.size(0); ++n) {
      double mx = -INFINITY;
      for (int64_t e = 0; e < E; ++e) mx = std::max(mx, acc[n][e]);
      std::vector<double> p(E);
      double s = 0;
      for (int64_t e = 0; e < E; ++e) s += (p[e] = std::exp(acc[n][e] - mx));
      for (auto& v : p) v /= s;
      probs.push_back(p);
    }
  }
  std::vector<double> counts(E, 0.0), P(E, 0.0);
  for (const auto& p : probs) {
    std::vector<int64_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
    for (int64_t j = 0; j < top_k; ++j) counts[order[j]] += 1;
    for (int64_t e = 0; e < E; ++e) P[e] += p[e] / double(probs.size());
  }
  double total = std::accumulate(counts.begin(), counts.end(), 0.0), loss = 0;
  for (int64_t e = 0; e < E; ++e) loss += counts[e] / total * P[e];
  return loss * double(E);
}

torch::Tensor layer_balance_loss(const std::vector<torch::Tensor>& logits, const std::vector<ExpertSpec>& specs) {
  if (logits.size() != specs.size())
    throw std::runtime_error("layer_balance_loss: " + std::to_string(logits.size()) + " router logits for " +
                             std::to_string(specs.size()) + " adapted modules");
  std::map<std::pair<int64_t, int64_t>, std::vector<torch::Tensor>> groups;
  for (size_t i = 0; i < logits.size(); ++i) groups[{specs[i].n_expert, specs[i].top_k}].push_back(logits[i]);
  torch::Tensor total;
  for (auto& [key, ls] : groups) {
    auto l = balance_loss(ls, key.second);
    total = total.defined() ? total + l : l;
  }
  return total;
}

torch::Tensor sparse_dropout(const torch::Tensor& x, double p) {
  if (p <= 0) return x;
  auto d = draw_dropout(x, p);
  return scaled_dropout(x, d.zero_index, d.scale);
}

MolaLinearImpl::MolaLinearImpl(int64_t in, int64_t out, torch::Dtype dtype, torch::Device device, bool with_bias)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}, torch::TensorOptions().dtype(dtype).device(device)),
                              /*requires_grad=*/false);
  if (with_bias)
    bias = register_parameter("bias", torch::zeros({out}, torch::TensorOptions().dtype(dtype).device(device)),
                              /*requires_grad=*/false);
}

void MolaLinearImpl::add_adapter(const ExpertSpec& spec, torch::Generator* gen) {
  if (has_adapter()) throw std::runtime_error("MolaLinear: adapter already present");
  if (spec.n_expert < 1 || spec.top_k < 1 || spec.top_k > spec.n_expert || int64_t(spec.ranks.size()) != spec.n_expert)
    throw std::runtime_error("MolaLinear: invalid expert spec (experts " + std::to_string(spec.n_expert) + ", top_k " +
                             std::to_string(spec.top_k) + ", " + std::to_string(spec.ranks.size()) + " ranks)");
  for (auto r : spec.ranks)
    if (r < 1) throw std::runtime_error("MolaLinear: expert rank must be >= 1");
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(weight.device());
  const double bound = 1.0 / std::sqrt(double(in_features));  // kaiming_uniform(a=sqrt(5)) on [*, I]
  auto r = torch::empty({spec.n_expert, in_features}, torch::kFloat32);
  auto a = torch::empty({spec.total_rank(), in_features}, torch::kFloat32);
  {
    torch::NoGradGuard ng;
    // Drawn on the CPU so a seed gives the same adapter on every device.
    c10::optional<at::Generator> g;
    if (gen) g = *gen;
    r.uniform_(-bound, bound, g);
    a.uniform_(-bound, bound, g);
  }
  spec_ = spec;
  router = register_parameter("router", r.to(opts));
  lora_A = register_parameter("lora_A", a.to(opts));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, spec.total_rank()}, opts));
}

void MolaLinearImpl::set_routing(const std::string& router_kind, double top_p, double z_loss) {
  if (!has_adapter()) throw std::runtime_error("MolaLinear: set_routing without an adapter");
  if (router_kind != "top_k" && router_kind != "top_p")
    throw std::runtime_error("MolaLinear: router must be top_k or top_p, got '" + router_kind + "'");
  if (!(top_p > 0 && top_p <= 1)) throw std::runtime_error("MolaLinear: top_p must be in (0, 1], got " + std::to_string(top_p));
  if (!(z_loss >= 0)) throw std::runtime_error("MolaLinear: z_loss must be >= 0, got " + std::to_string(z_loss));
  spec_.router = router_kind;
  spec_.top_p = top_p;
  spec_.z_loss = z_loss;
}

torch::Tensor MolaLinearImpl::forward(const torch::Tensor& x, std::vector<torch::Tensor>* router_logits) {
  if (!has_adapter()) {
    // Inference: the skinny bf16 kernel of gemv.h where it applies (decode), else the same matmul.
    auto y = !is_training() ? linear_nograd(x, weight) : torch::matmul(x, weight.t());
    return bias.defined() ? y.add_(bias) : y;
  }
  auto shape = x.sizes().vec();
  auto x2 = x.reshape({-1, in_features});
  torch::Tensor logits, y;
  if (!is_training() && !torch::GradMode::is_enabled() && spec_.router == "top_k" && fused_ok(x2, weight)) {
    // Inference (eval mode, no graph): adapter weights cast once, routing in one kernel (kernels.h).
    if (!infer_) infer_ = std::make_shared<MolaInferWeights>();
    y = mola_infer_forward(x2, weight, router, lora_A, lora_B, spec_.top_k, spec_.ranks, spec_.lora_alpha, *infer_,
                           router_logits ? &logits : nullptr);
  } else {
    DropoutDraw drop;
    if (is_training() && spec_.lora_dropout > 0) drop = draw_dropout(x2, spec_.lora_dropout);
    // The logits feed the balance loss and, with z_loss > 0, the z-loss (adapter.h).
    y = mola_fused_forward(x2, weight, router, lora_A, lora_B, spec_, drop, router_logits ? &logits : nullptr,
                           /*logits_grad=*/spec_.z_loss > 0);
  }
  if (router_logits) router_logits->push_back(logits);
  if (bias.defined()) y = y + bias;  // PEFT: base_layer(x) (with its bias) + the adapters' sum
  shape.back() = out_features;
  return y.reshape(shape);
}

bool MolaLinearImpl::group_projection(const torch::Tensor& x2, GemvProjection& p) {
  if (is_training()) return false;
  p = GemvProjection{};
  p.w = weight;
  if (!has_adapter()) return true;
  if (torch::GradMode::is_enabled() || spec_.router != "top_k" || !fused_ok(x2, weight)) return false;
  if (!infer_) infer_ = std::make_shared<MolaInferWeights>();
  refresh_infer_weights(router, lora_A, lora_B, spec_.ranks, spec_.lora_alpha, x2.scalar_type(), *infer_);
  p.ra = infer_->ra;
  p.bt = infer_->bt;
  p.n_expert = spec_.n_expert;
  p.top_k = spec_.top_k;
  p.col_expert = &infer_->col_expert;
  return true;
}

std::vector<torch::Tensor> forward_shared_input(const std::vector<MolaLinearImpl*>& modules, const torch::Tensor& x,
                                                std::vector<torch::Tensor>* router_logits) {
  std::vector<torch::Tensor> out;
  const int64_t I = x.size(-1), rows = I > 0 ? x.numel() / I : 0;
  std::vector<GemvProjection> ps(modules.size());
  bool group = rows >= 1 && rows <= kGemvMaxRows;
  auto x2 = group ? x.reshape({rows, I}) : x;
  for (size_t i = 0; group && i < modules.size(); ++i) group = modules[i]->group_projection(x2, ps[i]);
  if (!group || !gemv_group_ok(x2, ps)) {
    for (auto* m : modules) out.push_back(m->forward(x, router_logits));
    return out;
  }
  torch::NoGradGuard ng;
  gemv_group(x2, ps);
  auto shape = x.sizes().vec();
  for (size_t i = 0; i < modules.size(); ++i) {
    auto y = ps[i].y;
    if (ps[i].ra.defined() && router_logits) router_logits->push_back(ps[i].h.narrow(1, 0, ps[i].n_expert));
    if (modules[i]->bias.defined()) y.add_(modules[i]->bias);
    shape.back() = modules[i]->out_features;
    out.push_back(y.view(shape));
  }
  return out;
}

}  // namespace mor
