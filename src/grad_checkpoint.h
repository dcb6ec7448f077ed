// Gradient checkpointing for training: the one LLaMA forward (LlamaForCausalLMImpl::forward_hidden)
// with each decoder layer run without saving activations and recomputed (same dropout draws) in
// backward. LibTorch has no checkpoint utility, so a custom autograd Function reruns the layer under
// grad and backpropagates through it reentrantly; it plugs into the layer loop as ForwardArgs::run_layer.
#pragma once
#include "torch_api.h"

#include "llama.h"

namespace mor {

// A ForwardArgs::run_layer: the layer without a graph now, rerun under grad in backward.
torch::Tensor checkpointed_layer(LlamaDecoderLayerImpl& layer, const torch::Tensor& h, const AttentionContext& ctx,
                                 std::vector<torch::Tensor>* router_logits);

// model->forward(args) with run_layer = checkpointed_layer, for training inputs (no cache, all
// positions): float32 logits [B, T, V]; router logits go to args.router_logits as usual. Activation
// memory: one layer's worth plus each layer's input.
torch::Tensor forward_checkpointed(LlamaForCausalLM& model, const ForwardArgs& args);

}  // namespace mor
