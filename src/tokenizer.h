// The model's tokenizer behind one interface (tokenizer_impl.h) with two implementations: sentencepiece's
// tokenizer.model as Hugging Face's LlamaTokenizer uses it (here; sentencepiece itself lives in a
// deep-bound module, libmor_spm.so, see src/spm_shim/spm_shim.cpp) and Hugging Face's tokenizer.json
// BPE (tokenizer_bpe.h). BOS prepended / EOS appended as tokenizer_config.json (add_bos_token,
// add_eos_token) or the tokenizer.json post-processor say; every EOS id of generation_config.json;
// decoding that skips special tokens (what `mor generate` prints) and decoding that keeps them as
// text like `batch_decode`.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mor {

namespace detail {
class TokenizerImpl;
}

// llama.cpp's LLAMA_VOCAB_TYPE_SPM / _BPE.
enum class TokenizerKind { SentencePiece, Bpe };
const char* tokenizer_kind_name(TokenizerKind k);  // "spm" | "bpe"

class Tokenizer {
 public:
  // From a model directory: tokenizer.json when present, else tokenizer.model (as transformers'
  // AutoTokenizer prefers the fast tokenizer), with tokenizer_config.json and generation_config.json
  // beside it when present; or a direct path to a .model or .json file. Throws naming the file when
  // missing, unreadable or unsupported.
  static Tokenizer load(const std::string& dir_or_model_file);
  // The kind load() would pick for the same path, without loading (tokenizer.json present -> Bpe).
  static TokenizerKind kind_of(const std::string& dir_or_model_file);
  // Trains a LLaMA-style sentencepiece BPE model (byte fallback, unk 0, bos 1, eos 2) on a text file,
  // one sentence a line, and writes `out_dir/tokenizer.model` (for the embedded default model).
  static void train(const std::string& corpus_file, const std::string& out_dir, int64_t vocab_size);

  // BOS (when add_bos) + pieces (+ EOS when add_eos). An empty text gives BOS alone.
  std::vector<int64_t> encode(const std::string& text) const;
  std::vector<int64_t> encode(const std::string& text, bool add_bos, bool add_eos) const;

  // Skips special tokens (bos, eos, unk, pad ids); sentencepiece's own decoding (no leading space).
  // tokenizer.json: the file's decoder over the ids, special added tokens skipped, no clean-up
  // (transformers' decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)).
  std::string decode(const std::vector<int64_t>& ids) const;
  // Keeps special tokens as text (<s>, </s>, <unk>) and applies clean_up_tokenization_spaces,
  // as transformers' LlamaTokenizer.batch_decode does by default (tokenizer.json: the fast tokenizer's
  // decode with special tokens kept, clean-up as tokenizer_config.json says, default on).
  std::string decode_hf(const std::vector<int64_t>& ids) const;

  // transformers' clean_up_tokenization: " ." -> ".", " ?" -> "?", " !" -> "!", " ," -> ",", " ' " -> "'",
  // " n't" -> "n't", " 'm" -> "'m", " 's" -> "'s", " 've" -> "'ve", " 're" -> "'re" (in that order).
  static std::string clean_up_tokenization(std::string s);

  // 1 + the largest id (tokenizer.json: model vocab and added tokens, as len(tokenizer)); a model's
  // vocab_size must be at least this.
  int64_t vocab_size() const;
  TokenizerKind kind() const { return kind_; }
  int64_t bos_id() const { return bos_id_; }  // -1 when the tokenizer has none
  int64_t eos_id() const { return eos_id_; }  // the tokenizer's eos_token; -1 when none
  // eos_id() then each generation_config.json eos_token_id (an int or a list) not already listed:
  // generation stops at any of them.
  const std::vector<int64_t>& eos_ids() const { return eos_ids_; }
  int64_t unk_id() const { return unk_id_; }
  int64_t pad_id() const { return pad_id_; }
  // spm: bos, eos, unk (and pad when the model has one); tokenizer.json: added tokens marked special.
  bool is_special(int64_t id) const;
  std::string id_to_piece(int64_t id) const;
  bool add_bos = true, add_eos = false;
  bool clean_up_tokenization_spaces = true;  // applied by decode_hf

 private:
  void check_ids(const std::vector<int64_t>& ids) const;  // throws on ids outside the vocabulary
  std::shared_ptr<const detail::TokenizerImpl> impl_;
  TokenizerKind kind_ = TokenizerKind::SentencePiece;
  int64_t bos_id_ = 1, eos_id_ = 2, unk_id_ = 0, pad_id_ = -1;
  std::vector<int64_t> prefix_, suffix_;  // what add_bos / add_eos put around the pieces
  std::vector<int64_t> eos_ids_;
};

// The alpaca template of the reference scripts (and a JSON file with prompt_input, prompt_no_input,
// response_split). generate_prompt(instruction, input, output) = template + output.
struct PromptTemplate {
  std::string prompt_input, prompt_no_input, response_split = "### Response:";
  static PromptTemplate alpaca();
  static PromptTemplate from_name_or_file(const std::string& name_or_path);  // "alpaca" | "none" | file.json
  std::string generate_prompt(const std::string& instruction, const std::string& input = "",
                              const std::string& output = "") const;
  // Part after the first response_split and before any second one, trimmed.
  std::string get_response(const std::string& text) const;
};

}  // namespace mor
