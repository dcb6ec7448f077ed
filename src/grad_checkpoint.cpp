// Gradient checkpointing (see grad_checkpoint.h). Shapes: B batch, T tokens, C hidden, E experts.
#include "grad_checkpoint.h"

#include <stdexcept>

namespace mor {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One decoder layer: forward without a graph; backward reruns it with the generator state it had
// (dropout masks repeat), then backpropagates the incoming gradients through the rerun. The layer's
// adapter gradients accumulate into their .grad directly (they are leaves); `anchor` (a scalar that
// requires grad) makes the engine call backward even when the layer input carries no gradient.
struct LayerCheckpoint : public torch::autograd::Function<LayerCheckpoint> {
  static variable_list forward(AutogradContext* c, torch::Tensor h, torch::Tensor anchor, int64_t layer_ptr,
                               torch::Tensor cos, torch::Tensor sin, torch::Tensor mask, bool want_router) {
    auto gen = at::globalContext().defaultGenerator(h.device());
    c->saved_data["rng"] = gen.get_state();
    c->saved_data["layer"] = layer_ptr;
    c->saved_data["cos"] = cos;
    c->saved_data["sin"] = sin;
    c->saved_data["has_mask"] = mask.defined();
    if (mask.defined()) c->saved_data["mask"] = mask;
    c->saved_data["want_router"] = want_router;
    c->saved_data["h"] = h;
    auto* layer = reinterpret_cast<LlamaDecoderLayerImpl*>(layer_ptr);
    AttentionContext actx;
    actx.cos = cos;
    actx.sin = sin;
    actx.mask = mask;
    std::vector<torch::Tensor> rl;
    torch::Tensor out;
    {
      torch::NoGradGuard ng;
      out = layer->forward(h, actx, nullptr, want_router ? &rl : nullptr);
    }
    variable_list res{out};
    res.insert(res.end(), rl.begin(), rl.end());
    return res;
  }

  static variable_list backward(AutogradContext* c, variable_list grads) {
    auto h = c->saved_data["h"].toTensor();
    auto gen = at::globalContext().defaultGenerator(h.device());
    auto state_now = gen.get_state();
    gen.set_state(c->saved_data["rng"].toTensor());
    auto* layer = reinterpret_cast<LlamaDecoderLayerImpl*>(c->saved_data["layer"].toInt());
    AttentionContext actx;
    actx.cos = c->saved_data["cos"].toTensor();
    actx.sin = c->saved_data["sin"].toTensor();
    if (c->saved_data["has_mask"].toBool()) actx.mask = c->saved_data["mask"].toTensor();
    const bool want_router = c->saved_data["want_router"].toBool();
    auto hin = h.detach().requires_grad_(true);
    std::vector<torch::Tensor> rl;
    torch::Tensor out;
    {
      torch::AutoGradMode grad_on(true);
      out = layer->forward(hin, actx, nullptr, want_router ? &rl : nullptr);
    }
    gen.set_state(state_now);
    variable_list outs, gs;
    if (grads[0].defined()) { outs.push_back(out); gs.push_back(grads[0]); }
    for (size_t i = 0; i < rl.size() && i + 1 < grads.size(); ++i)
      if (grads[i + 1].defined() && rl[i].requires_grad()) { outs.push_back(rl[i]); gs.push_back(grads[i + 1]); }
    if (!outs.empty()) torch::autograd::backward(outs, gs);
    return {hin.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor forward_checkpointed(LlamaForCausalLM& model, const ForwardArgs& a) {
  auto& m = *model;
  if (a.cache || a.last_only) throw std::runtime_error("forward_checkpointed: training inputs only (no cache)");
  if (!a.input_ids.defined() || a.input_ids.dim() != 2) throw std::runtime_error("input_ids must be [B, T]");
  const int64_t B = a.input_ids.size(0), T = a.input_ids.size(1);
  auto ids = a.input_ids.to(m.device, torch::kLong);
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(m.device);
  // The same rotary tables and mask as LlamaForCausalLMImpl::forward_hidden (no past).
  torch::Tensor pos = a.position_ids.defined() ? a.position_ids.to(m.device, torch::kLong)
                                               : torch::arange(0, T, lopt).unsqueeze(0).expand({B, T});
  auto cs = rope_cos_sin(pos, m.cfg);
  torch::Tensor cos = cs.first.to(m.dtype), sin = cs.second.to(m.dtype), mask;
  if (T > 1) mask = torch::arange(T, lopt).view({1, 1, 1, T}) > torch::arange(T, lopt).view({1, 1, T, 1});
  if (a.attention_mask.defined()) {
    auto pad = (a.attention_mask.to(m.device) == 0).view({B, 1, 1, T});
    mask = mask.defined() ? (mask | pad) : pad;
  }
  if (a.router_logits) a.router_logits->clear();
  auto anchor = torch::zeros({}, torch::TensorOptions().device(m.device)).requires_grad_(true);
  auto h = m.model->embed_tokens->forward(ids);
  for (auto& layer : m.model->layer_list) {
    variable_list res = LayerCheckpoint::apply(h, anchor, reinterpret_cast<int64_t>(layer.get()), cos, sin, mask,
                                               a.router_logits != nullptr);
    h = res[0];
    if (a.router_logits) a.router_logits->emplace_back(res.begin() + 1, res.end());
  }
  return m.logits_from_hidden(m.model->norm->forward(h));
}

}  // namespace mor
