// Training examples as the reference builds them: alpaca prompt -> tokens (BOS + pieces, cut at
// cutoff_len, EOS appended when room), labels with the user prompt masked to -100 unless
// train_on_inputs, and left-padded micro-batches rounded up to a multiple of 8. Shared by train and score.
#pragma once
#include "torch_api.h"

#include <cstdint>
#include <vector>

#include "dataset.h"
#include "tokenizer.h"

namespace mor {

struct ExampleOptions {
  int64_t cutoff_len = 256;
  bool train_on_inputs = true;
  bool add_eos_token = true;
};

struct TokenizedExample {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;  // -100 where masked
};

// Needs `instruction` and `output` columns (`input` optional); throws naming the missing column.
TokenizedExample tokenize_example(const Row& row, const Tokenizer& tok, const PromptTemplate& tmpl,
                                  const ExampleOptions& opt);

struct Batch {
  torch::Tensor input_ids;       // [B, T] int64, left-padded with pad_id
  torch::Tensor attention_mask;  // [B, T] int64, 0 on pads
  torch::Tensor labels;          // [B, T] int64, -100 on pads
};

// Left-pads to the longest example rounded up to a multiple of `pad_to_multiple_of`.
Batch collate(const std::vector<const TokenizedExample*>& examples, int64_t pad_id = 0,
              int64_t pad_to_multiple_of = 8);

}  // namespace mor
