// The pipeline pieces of a Hugging Face tokenizer.json, with the semantics of the Rust `tokenizers`
// crate: normalizers (NFC/NFD/NFKC/NFKD via ICU, Replace, Prepend, Strip, Sequence), pre-tokenizers
// (ByteLevel, Split, Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence), decoders (ByteLevel,
// ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence), the post-processor's special tokens, a
// PCRE2 regex (UTF + UCP, as Oniguruma's Unicode classes) and the GPT-2 byte<->unicode table.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace mor::hf {

// ---- UTF-8 ----
// Index of the first byte that is not part of valid UTF-8, or npos.
size_t invalid_utf8_at(const std::string& s);
// The code point at s[i] (valid UTF-8 assumed); i advances past it.
uint32_t next_cp(const std::string& s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);
// Lossy decoding as Rust's String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
std::string utf8_lossy(const std::string& bytes);
bool is_unicode_space(uint32_t cp);  // Unicode White_Space (Rust's char::is_whitespace, regex \s)
bool is_word_char(uint32_t cp);      // Rust regex's Unicode \w

// A JSON integer (signed or unsigned) with 0 <= v < limit.
bool is_index(const nlohmann::json& v, int64_t limit);

// ---- GPT-2 byte-level alphabet ----
const std::string& byte_to_unicode(uint8_t b);  // UTF-8 of the code point byte b stands for
int unicode_to_byte(uint32_t cp);               // -1 when cp is not in the alphabet

// ---- PCRE2 regex ----
class Regex {
 public:
  // `where` names the file and field for the error: "<where>: regex cannot compile at offset N: msg: pattern".
  Regex(const std::string& pattern, const std::string& where);
  static Regex literal(const std::string& text, const std::string& where);  // an escaped literal
  // Non-overlapping matches left to right as [start, end) byte ranges; after an empty match the
  // search moves one character on (Oniguruma's find_iter).
  void find_all(const std::string& s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  std::shared_ptr<void> code_;  // pcre2_code_8
};

// A piece of text moving through the pipeline; at_start: it begins at offset 0 of the original text
// (Metaspace's prepend_scheme "first").
struct Piece {
  std::string text;
  bool at_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Each returns nullptr for a JSON null and throws "<where>: ..." for an unknown type or a bad field.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where);

// The special tokens the post-processor puts around a single sequence (TemplateProcessing's
// "single", BertProcessing/RobertaProcessing's cls/sep; none for ByteLevel), as ids.
struct SpecialTemplate {
  std::vector<int64_t> prefix, suffix;
};
SpecialTemplate parse_post_processor(const nlohmann::json& j, const std::string& where);

}  // namespace mor::hf
