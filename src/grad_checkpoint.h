// Gradient checkpointing for training: the LLaMA forward with each decoder layer run without saving
// activations and recomputed (same dropout draws) in backward. LibTorch has no checkpoint utility, so
// a custom autograd Function reruns the layer under grad and backpropagates through it reentrantly.
#pragma once
#include <torch/torch.h>

#include "llama.h"

namespace mor {

// Same result as model->forward(args) for training inputs (no cache, all positions): float32 logits
// [B, T, V]; router logits go to args.router_logits as usual. Activation memory: one layer's worth
// plus each layer's input.
torch::Tensor forward_checkpointed(LlamaForCausalLM& model, const ForwardArgs& args);

}  // namespace mor
