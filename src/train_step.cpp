// One training micro-step and the gradient arithmetic around it (see trainer.h): collate, forward and
// loss (forward_loss: the chunked lm_head + cross-entropy), backward; clipping and float16 unscaling
// on the device without host syncs; the validation loss. Shapes: B micro-batch, T padded length.
#include <cmath>

#include "adapter.h"
#include "dataset.h"
#include "grad_checkpoint.h"
#include "trainer.h"

namespace mor {

StepResult train_step(LlamaForCausalLM& model, const std::vector<const TokenizedExample*>& batch,
                      const TrainStepOptions& o) {
  Batch b = collate(batch);
  RouterLogits rl;
  ForwardArgs a;
  a.input_ids = b.input_ids;  // on the host: forward_hidden checks the ids there and moves them
  a.attention_mask = b.attention_mask;
  a.router_logits = &rl;
  if (o.gradient_checkpointing) a.run_layer = checkpointed_layer;
  LossParts lp = forward_loss(model, a, b.labels.to(model->device), o.obalance);
  if (o.router_stats) o.router_stats->add(rl, a.attention_mask);
  torch::Tensor scaled = lp.loss / o.loss_divisor;
  if (o.loss_scale != 1) scaled = scaled * o.loss_scale;
  scaled.backward();
  StepResult r;
  r.loss = lp.loss.detach();
  r.aux = lp.aux.defined() ? lp.aux.detach() : torch::zeros({}, r.loss.options());
  if (lp.z.defined()) r.z = lp.z.detach();
  for (const auto* e : batch) r.tokens += static_cast<int64_t>(e->input_ids.size());
  return r;
}

torch::Tensor clip_gradients(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return torch::zeros({}, torch::kFloat64);
  if (max_norm <= 0) {
    std::vector<torch::Tensor> sq;
    for (auto& g : grads) sq.push_back(g.to(torch::kFloat64).pow(2).sum());
    return torch::stack(sq).sum().sqrt();
  }
  std::vector<torch::Tensor> norms;
  for (auto& g : grads) norms.push_back(g.norm(2));
  // Exactly as LibTorch's clip_grad_norm_ (1.13 and 2.x): coefficient in the gradients' dtype, clamped at 1.
  torch::Tensor total = norms.size() == 1 ? norms[0] : torch::stack(norms).norm(2);
  torch::Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (auto& g : grads) g.mul_(coef);
  return total;
}

void unscale_gradients(const std::vector<torch::Tensor>& params, double scale, torch::Tensor& found_inf) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) {
    found_inf = torch::zeros({}, torch::kFloat32);
    return;
  }
  const auto dev = grads[0].device();
  found_inf = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(dev));
  if (dev.is_cuda()) {  // one fused kernel (LibTorch has it for CUDA)
    auto inv = torch::full({}, 1.0 / scale, torch::TensorOptions().dtype(torch::kFloat32).device(dev));
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv);
    return;
  }
  std::vector<torch::Tensor> bad;
  for (auto& g : grads) {
    g.mul_(1.0 / scale);
    bad.push_back(g.isfinite().all().logical_not());
  }
  found_inf = torch::stack(bad).any().to(torch::kFloat32);
}

double evaluate_loss(LlamaForCausalLM& model, const std::vector<TokenizedExample>& examples, int64_t batch_size,
                     bool obalance) {
  torch::NoGradGuard ng;
  const bool was_training = model->is_training();
  model->eval();
  torch::Tensor sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(model->device));
  int64_t count = 0;
  for (size_t i = 0; i < examples.size(); i += batch_size) {
    std::vector<const TokenizedExample*> ptrs;
    for (size_t j = i; j < std::min(examples.size(), i + batch_size); ++j) ptrs.push_back(&examples[j]);
    Batch b = collate(ptrs);
    RouterLogits rl;
    ForwardArgs a;
    a.input_ids = b.input_ids.to(model->device);
    a.attention_mask = b.attention_mask.to(model->device);
    a.router_logits = &rl;
    LossParts lp = forward_loss(model, a, b.labels.to(model->device), obalance);
    sum += lp.loss.to(torch::kFloat64) * static_cast<double>(ptrs.size());
    count += static_cast<int64_t>(ptrs.size());
  }
  if (was_training) model->train();
  return count ? sum.item<double>() / static_cast<double>(count) : std::nan("");
}

}  // namespace mor
