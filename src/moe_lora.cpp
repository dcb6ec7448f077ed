// Mixture-of-LoRA-experts linear layer (see moe_lora.h). Base-only path for now; the adapter
// (fused experts, router, balance loss) lands with the MoLA-adapter issue.
#include "moe_lora.h"

#include <stdexcept>

namespace mor {

MolaLinearImpl::MolaLinearImpl(int64_t in, int64_t out, torch::Dtype dtype, torch::Device device)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}, torch::TensorOptions().dtype(dtype).device(device)),
                              /*requires_grad=*/false);
}

void MolaLinearImpl::add_adapter(const ExpertSpec&, torch::Generator*) {
  throw std::runtime_error("MoLA adapters are not implemented yet");
}

torch::Tensor MolaLinearImpl::forward(const torch::Tensor& x, std::vector<torch::Tensor>*) {
  return torch::matmul(x, weight.t());
}

}  // namespace mor
