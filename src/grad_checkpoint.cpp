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

torch::Tensor checkpointed_layer(LlamaDecoderLayerImpl& layer, const torch::Tensor& h, const AttentionContext& ctx,
                                 std::vector<torch::Tensor>* router_logits) {
  if (ctx.past != 0) throw std::runtime_error("gradient checkpointing: training inputs only (no cache)");
  // A scalar that requires grad: the engine then calls backward even when h carries no gradient.
  auto anchor = torch::zeros({}, torch::TensorOptions().device(h.device())).requires_grad_(true);
  variable_list res = LayerCheckpoint::apply(h, anchor, reinterpret_cast<int64_t>(&layer), ctx.cos, ctx.sin, ctx.mask,
                                             router_logits != nullptr);
  if (router_logits) router_logits->insert(router_logits->end(), res.begin() + 1, res.end());
  return res[0];
}

torch::Tensor forward_checkpointed(LlamaForCausalLM& model, const ForwardArgs& args) {
  if (args.cache || args.last_only) throw std::runtime_error("forward_checkpointed: training inputs only (no cache)");
  ForwardArgs a = args;
  a.run_layer = checkpointed_layer;
  return model->forward(a);
}

}  // namespace mor
