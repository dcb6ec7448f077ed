// Text generation for a left-padded batch with the KV cache: prefill -> decode_one -> generate,
// greedy (temperature 0) or sampled (temperature, top-k, top-p, seeded), each sequence stopping at
// EOS; finished rows are dropped from the batch and padded with the pad id in the output, as HF does.
// Shapes: B batch, P longest prompt, S keys so far, V vocab, L generated steps.
#pragma once
#include "torch_api.h"

#include <cstdint>
#include <vector>

#include "llama.h"

namespace mor {

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  double temperature = 0.0;  // 0 = greedy (argmax)
  double top_p = 1.0;        // nucleus sampling; 1 = off
  int64_t top_k = 0;         // 0 = off
  uint64_t seed = 42;
  std::vector<int64_t> stop_ids;  // empty = {model eos_token_id}; the stop token is kept in the output
  int64_t pad_id = 0;             // left padding and filler after a row stopped (the reference uses 0)
  bool use_cache = true;          // false: recompute the whole sequence every step (a test reference)
};

struct GenerateOutput {
  // Per sequence: the new tokens, up to and including the stop token when one was produced.
  std::vector<std::vector<int64_t>> new_tokens;
  // HF's generate() output: [B, P + L] left-padded prompt + generated, stopped rows padded with pad_id.
  torch::Tensor sequences;
  int64_t prompt_len = 0;  // P
};

// Left-pads `prompts` with pad_id into ids [B, P] and attention mask [B, P] (int64, 1 = real).
std::pair<torch::Tensor, torch::Tensor> left_pad(const std::vector<std::vector<int64_t>>& prompts, int64_t pad_id);

// Position ids as transformers computes them in generation: cumsum(mask) - 1, pads set to 1.
torch::Tensor positions_from_mask(const torch::Tensor& mask);

// The running state of a batch being generated.
struct GenState {
  KVCache cache;
  torch::Tensor attention_mask;  // [B', S] over the cache (B' active rows)
  torch::Tensor rows;            // [B'] original batch index of each active row
  torch::Tensor logits;          // [B', V] float32 next-token logits
};

// Runs the prompts (already left-padded) through the model, filling a cache of `capacity` positions.
GenState prefill(LlamaForCausalLM& m, const torch::Tensor& ids, const torch::Tensor& mask, int64_t capacity);
// Appends one token per active row ([B'] int64) and returns the next logits [B', V].
torch::Tensor decode_one(LlamaForCausalLM& m, GenState& st, const torch::Tensor& next);
// Keeps only the active rows at positions `keep` ([B''] indices into the current rows).
void keep_rows(GenState& st, const torch::Tensor& keep);

// Next token per row from float32 logits [B, V]: argmax when temperature is 0, else HF's warpers in
// order (temperature, top-k, top-p) and a multinomial draw from `gen`.
torch::Tensor select_next(const torch::Tensor& logits, const GenerateOptions& o, at::Generator& gen);

// The whole loop, under NoGradGuard. Prompts must be non-empty.
GenerateOutput generate(LlamaForCausalLM& m, const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& o);

}  // namespace mor
