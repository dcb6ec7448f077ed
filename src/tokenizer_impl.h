// The interface behind Tokenizer (tokenizer.h), as llama.cpp's llm_tokenizer_spm/bpe: one
// implementation over sentencepiece's tokenizer.model (tokenizer.cpp), one over Hugging Face's
// tokenizer.json (tokenizer_bpe.cpp). BOS/EOS placement stays in Tokenizer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mor::detail {

class TokenizerImpl {
 public:
  virtual ~TokenizerImpl() = default;
  // The text's pieces, without the special tokens the post-processor adds around them.
  virtual std::vector<int64_t> encode_text(const std::string& text) const = 0;
  // Ids are checked by the caller (0 <= id < vocab_size()).
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special) const = 0;
  // As transformers' batch_decode with special tokens kept, before clean_up_tokenization.
  virtual std::string decode_hf(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::string id_to_piece(int64_t id) const = 0;
  virtual bool is_special(int64_t id) const = 0;
};

}  // namespace mor::detail
