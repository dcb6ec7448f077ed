// Adapter folders as the reference writes them (no mola_config.json): the allocation is read from
// the files themselves (adapter_config.json's r, lora_alpha, target_modules; experts per module and
// every expert's rank from the weights' keys and shapes), only top-k comes from the flags, and every
// allocation flag the user gave is checked against the files (ours or the reference's).
#pragma once
#include <optional>
#include <string>

#include "allocation.h"
#include "llama.h"

namespace mor {

// The allocation flags as given on the command line: unset = not given.
struct GivenAllocationFlags {
  std::optional<std::string> target_modules, number_experts, lora_r, top_k;
  std::optional<double> lora_alpha;
  std::string top_k_flag = "--top_k";  // how the command spells top-k (generate: --experts_top_k)
  // Top-k when the folder has none and no flag gives it (evaluation_scienceqa.py's default "2,...,2";
  // capped at a module's experts); 0 = the flag is required.
  int64_t default_top_k = 0;
};
// The ones of `f` the user passed (after parsing).
GivenAllocationFlags given_flags(const AllocationFlags& f);

// The allocation of a reference adapter folder `dir` (no mola_config.json) for a model of `cfg`.
// Throws one clear error when the files are inconsistent, top-k is missing, or a given flag
// disagrees with the files (naming both values).
Allocation infer_reference_allocation(const ModelConfig& cfg, const std::string& dir, const GivenAllocationFlags& flags);

// Checks the given flags against an allocation read from `source` (mola_config.json or the
// reference's files); the first disagreement is one error naming the flag, the file and both values.
void check_flags_against(const Allocation& alloc, const ModelConfig& cfg, const GivenAllocationFlags& flags,
                         const std::string& source);

// What eval-scienceqa, score and generate do with --mola_weights: ours (mola_config.json, flags
// optional but checked) or the reference's (infer_reference_allocation); then load_adapter.
Allocation load_adapter_folder(LlamaForCausalLM& model, const std::string& dir, const GivenAllocationFlags& flags);

}  // namespace mor
