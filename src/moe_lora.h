// Mixture-of-LoRA-experts linear layer (MoLA): a frozen base weight plus E LoRA experts behind a
// learned top-k router, computed fused (all experts' A stacked, all B stacked), the balance loss,
// and a per-expert reference loop that the fused path is tested against.
// Shapes: N = B*T tokens, I in_features, O out_features, E experts, K top-k, R = sum of expert ranks.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace mor {

// One module's expert layout (see allocation.h for how it is chosen per layer and module).
struct ExpertSpec {
  int64_t n_expert = 0;        // E
  int64_t top_k = 0;           // K
  std::vector<int64_t> ranks;  // r_e, size E
  double lora_alpha = 16.0;    // scaling of expert e = lora_alpha / r_e
  double lora_dropout = 0.05;
};

// The frozen base projection y = x W^T, optionally carrying a MoLA adapter.
// Parameter names follow Hugging Face: "weight" (base, frozen, compute dtype).
class MolaLinearImpl : public torch::nn::Module {
 public:
  MolaLinearImpl(int64_t in_features, int64_t out_features, torch::Dtype dtype = torch::kFloat32,
                 torch::Device device = torch::kCPU);

  // Adds float32 trainable adapter parameters: router [E, I], lora_A [R, I], lora_B [O, R].
  // R and A uniform in +-1/sqrt(I) (kaiming_uniform a=sqrt(5)), B zero, drawn from `gen` when given.
  void add_adapter(const ExpertSpec& spec, torch::Generator* gen = nullptr);
  bool has_adapter() const { return spec_.n_expert > 0; }
  const ExpertSpec& spec() const { return spec_; }

  // x [..., I] -> [..., O]. When an adapter is present and `router_logits` is non-null, pushes this
  // module's router logits [N, E] (graph-attached, x's dtype) for the balance loss.
  torch::Tensor forward(const torch::Tensor& x, std::vector<torch::Tensor>* router_logits = nullptr);

  int64_t in_features, out_features;
  torch::Tensor weight;                   // [O, I] frozen base
  torch::Tensor router, lora_A, lora_B;   // adapter (undefined without one)

 private:
  ExpertSpec spec_;
};
TORCH_MODULE(MolaLinear);

}  // namespace mor
