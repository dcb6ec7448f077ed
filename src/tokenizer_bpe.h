// Hugging Face tokenizer.json with a BPE model (LLaMA-3, Qwen2, Mistral/TinyLlama/LLaMA-2 conversions):
// added tokens matched first and never split, then normalizer, pre-tokenizer and BPE merges (vocab,
// merges as "a b" or ["a","b"], byte_fallback, unk_token, fuse_unk, ignore_merges), decoded by the
// file's decoder. tokenizer_config.json beside it sets add_bos/add_eos and the bos/eos/pad tokens.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tokenizer_impl.h"

namespace mor {

// What loading a tokenizer.json gives the Tokenizer facade.
struct BpeSetup {
  std::shared_ptr<const detail::TokenizerImpl> impl;
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;  // -1: none
  std::vector<int64_t> prefix, suffix;              // put around the text when add_bos / add_eos
  bool add_bos = false, add_eos = false, clean_up = true;
};

// Loads `json_path`, and `config_dir`/tokenizer_config.json when present. Throws one line naming the
// file: malformed JSON, an unknown model/normalizer/pre-tokenizer/decoder type, a regex PCRE2 cannot
// compile (with its message and offset), merges naming tokens outside the vocabulary.
BpeSetup load_tokenizer_json(const std::string& json_path, const std::string& config_dir);

}  // namespace mor
