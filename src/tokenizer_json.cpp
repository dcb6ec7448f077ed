// tokenizer.json pipeline pieces (see tokenizer_json.h), following the Rust `tokenizers` crate:
// split behaviours as NormalizedString::split, Metaspace/ByteLevel/Strip/ByteFallback as their
// decode_chain, regexes with PCRE2 (UTF + UCP) where the crate uses Oniguruma.
#include "tokenizer_json.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace mor::hf {

using json = nlohmann::json;

// ---------------------------------------------------------------- UTF-8

namespace {
// Length of the well-formed sequence starting at s[i] (1..4), or 0 with `bad` = bytes of the
// maximal ill-formed subpart (Unicode's "substitution of maximal subparts", as from_utf8_lossy).
size_t utf8_seq(const std::string& s, size_t i, size_t& bad) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) len = 2;
  else if (b == 0xE0) { len = 3; lo = 0xA0; }
  else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) len = 3;
  else if (b == 0xED) { len = 3; hi = 0x9F; }
  else if (b == 0xF0) { len = 4; lo = 0x90; }
  else if (b >= 0xF1 && b <= 0xF3) len = 4;
  else if (b == 0xF4) { len = 4; hi = 0x8F; }
  else { bad = 1; return 0; }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) { bad = k; return 0; }
    const auto c = static_cast<unsigned char>(s[i + k]);
    const unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) { bad = k; return 0; }
  }
  return len;
}
}  // namespace

size_t invalid_utf8_at(const std::string& s) {
  for (size_t i = 0, bad = 0; i < s.size();) {
    const size_t n = utf8_seq(s, i, bad);
    if (n == 0) return i;
    i += n;
  }
  return std::string::npos;
}

uint32_t next_cp(const std::string& s, size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  uint32_t cp;
  if (b < 0x80) { cp = b; i += 1; }
  else if (b < 0xE0) { cp = ((b & 0x1Fu) << 6) | cont(1); i += 2; }
  else if (b < 0xF0) { cp = ((b & 0x0Fu) << 12) | (cont(1) << 6) | cont(2); i += 3; }
  else { cp = ((b & 0x07u) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3); i += 4; }
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) out += static_cast<char>(cp);
  else if (cp < 0x800) { out += static_cast<char>(0xC0 | (cp >> 6)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_lossy(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0, bad = 0; i < s.size();) {
    const size_t n = utf8_seq(s, i, bad);
    if (n) { out.append(s, i, n); i += n; }
    else { out += "\xEF\xBF\xBD"; i += bad; }
  }
  return out;
}

bool is_unicode_space(uint32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

bool is_word_char(uint32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) return true;
  switch (u_charType(c)) {
    case U_NON_SPACING_MARK: case U_ENCLOSING_MARK: case U_COMBINING_SPACING_MARK:
    case U_DECIMAL_DIGIT_NUMBER: case U_CONNECTOR_PUNCTUATION: return true;
    default: return false;
  }
}

// ---------------------------------------------------------------- GPT-2 bytes <-> unicode

namespace {
struct ByteTables {
  std::array<std::string, 256> to_unicode;
  std::array<int, 0x180> to_byte;  // every code point of the alphabet is below U+0144
  ByteTables() {
    to_byte.fill(-1);
    std::array<uint32_t, 256> cp{};
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b) cp[b] = direct[b] ? static_cast<uint32_t>(b) : 256 + n++;
    for (int b = 0; b < 256; ++b) {
      append_utf8(to_unicode[b], cp[b]);
      to_byte[cp[b]] = b;
    }
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}
}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_tables().to_unicode[b]; }
int unicode_to_byte(uint32_t cp) { return cp < 0x180 ? byte_tables().to_byte[cp] : -1; }

// ---------------------------------------------------------------- PCRE2

Regex::Regex(const std::string& pattern, const std::string& where) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                &err, &off, nullptr);
  if (!c) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    throw std::runtime_error(where + ": regex cannot compile at offset " + std::to_string(off) + ": " +
                             reinterpret_cast<const char*>(msg) + ": " + pattern);
  }
  pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);  // the interpreter is used when JIT is unavailable
  code_ = std::shared_ptr<void>(c, [](void* p) { pcre2_code_free(static_cast<pcre2_code*>(p)); });
}

Regex Regex::literal(const std::string& text, const std::string& where) {
  // \Q...\E with any \E inside the text split out.
  std::string p = "\\Q";
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 2, "\\E") == 0) { p += "\\E\\\\E\\Q"; ++i; }
    else p += text[i];
  }
  return Regex(p + "\\E", where);
}

void Regex::find_all(const std::string& s, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_.get());
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  if (!md) throw std::bad_alloc();
  size_t pos = 0;
  while (pos <= s.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, PCRE2_NO_UTF_CHECK,
                               md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      throw std::runtime_error(std::string("tokenizer: regex match failed: ") + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t a = ov[0], b = std::max(ov[0], ov[1]);
    out.emplace_back(a, b);
    if (b > a) { pos = b; continue; }
    if (b >= s.size()) break;
    size_t next = b;
    next_cp(s, next);
    pos = next;
  }
}

// ---------------------------------------------------------------- JSON fields

bool is_index(const json& v, int64_t limit) {
  if (v.is_number_unsigned()) return v.get<uint64_t>() < static_cast<uint64_t>(limit);
  return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < limit;
}

namespace {

const json& need(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) throw std::runtime_error(where + ": missing \"" + key + "\"");
  return j.at(key);
}
std::string str_of(const json& j, const char* key, const std::string& where) {
  const json& v = need(j, key, where);
  if (!v.is_string()) throw std::runtime_error(where + ": \"" + key + "\" must be a string");
  return v.get<std::string>();
}
bool bool_of(const json& j, const char* key, bool dflt, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  if (!j.at(key).is_boolean()) throw std::runtime_error(where + ": \"" + key + "\" must be true or false");
  return j.at(key).get<bool>();
}
size_t count_of(const json& j, const char* key, const std::string& where) {
  const json& v = need(j, key, where);
  if (!is_index(v, 1 << 20))
    throw std::runtime_error(where + ": \"" + key + "\" must be a small non-negative integer");
  return v.get<size_t>();
}
uint32_t char_of(const json& j, const char* key, const std::string& where) {
  const std::string s = str_of(j, key, where);
  size_t i = 0;
  if (s.empty() || invalid_utf8_at(s) != std::string::npos || (next_cp(s, i), i != s.size()))
    throw std::runtime_error(where + ": \"" + key + "\" must be one character");
  i = 0;
  return next_cp(s, i);
}
std::string type_of(const json& j, const std::string& where) {
  if (!j.is_object()) throw std::runtime_error(where + ": expected an object with a \"type\"");
  return str_of(j, "type", where);
}
const json& array_of(const json& j, const char* key, const std::string& where) {
  const json& v = need(j, key, where);
  if (!v.is_array()) throw std::runtime_error(where + ": \"" + key + "\" must be a list");
  return v;
}

// {"String": "..."} or {"Regex": "..."}
Regex pattern_of(const json& j, const std::string& where) {
  const json& p = need(j, "pattern", where);
  if (p.is_object() && p.contains("String") && p.at("String").is_string())
    return Regex::literal(p.at("String").get<std::string>(), where + " pattern");
  if (p.is_object() && p.contains("Regex") && p.at("Regex").is_string())
    return Regex(p.at("Regex").get<std::string>(), where + " pattern");
  throw std::runtime_error(where + ": \"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
}

std::string replace_all(const Regex& re, const std::string& s, const std::string& content) {
  std::vector<std::pair<size_t, size_t>> m;
  re.find_all(s, m);
  if (m.empty()) return s;
  std::string out;
  size_t prev = 0;
  for (auto [a, b] : m) {
    out.append(s, prev, a - prev).append(content);
    prev = b;
  }
  return out.append(s, prev, std::string::npos);
}

// ---------------------------------------------------------------- split behaviours

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior behavior_of(const json& j, const std::string& where) {
  const std::string b = str_of(j, "behavior", where);
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  throw std::runtime_error(where + ": unknown split behavior '" + b + "'");
}

struct Span {
  size_t a, b;
  bool match;
};

// Pattern::find_matches: spans covering s, each flagged as a match or not.
std::vector<Span> cover(const std::string& s, const std::vector<std::pair<size_t, size_t>>& m, bool invert) {
  std::vector<Span> out;
  if (s.empty()) return {{0, 0, invert}};
  size_t prev = 0;
  for (auto [a, b] : m) {
    if (prev != a) out.push_back({prev, a, invert});
    out.push_back({a, b, !invert});
    prev = b;
  }
  if (prev != s.size()) out.push_back({prev, s.size(), invert});
  return out;
}

// NormalizedString::split, then PreTokenizedString's dropping of empty pieces.
void split_spans(const Piece& p, std::vector<Span> spans, Behavior beh, std::vector<Piece>& out) {
  std::vector<Span> keep;  // .match = remove
  bool prev_match = false;
  switch (beh) {
    case Behavior::Isolated:
      for (auto& s : spans) keep.push_back({s.a, s.b, false});
      break;
    case Behavior::Removed:
      keep = spans;
      break;
    case Behavior::Contiguous:
      for (auto& s : spans) {
        if (s.match == prev_match && !keep.empty()) keep.back().b = s.b;
        else keep.push_back({s.a, s.b, false});
        prev_match = s.match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (auto& s : spans) {
        if (s.match && !prev_match && !keep.empty()) keep.back().b = s.b;
        else keep.push_back({s.a, s.b, false});
        prev_match = s.match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !prev_match && !keep.empty()) keep.back().a = it->a;
        else keep.push_back({it->a, it->b, false});
        prev_match = it->match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
  }
  for (auto& k : keep)
    if (!k.match && k.b > k.a) out.push_back({p.text.substr(k.a, k.b - k.a), p.at_start && k.a == 0});
}

// Matches of single characters for which pred holds (the crate's `Fn(char) -> bool` pattern).
template <class Pred>
std::vector<std::pair<size_t, size_t>> char_matches(const std::string& s, Pred pred) {
  std::vector<std::pair<size_t, size_t>> m;
  for (size_t i = 0; i < s.size();) {
    const size_t a = i;
    if (pred(next_cp(s, i))) m.emplace_back(a, i);
  }
  return m;
}

// ---------------------------------------------------------------- normalizers

class UnicodeNorm : public Normalizer {
 public:
  UnicodeNorm(const UNormalizer2* n) : n_(n) {}
  void normalize(std::string& s) const override {
    if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return;
    UErrorCode e = U_ZERO_ERROR;
    std::vector<UChar> u16(s.size() + 1);
    int32_t len = 0;
    u_strFromUTF8(u16.data(), static_cast<int32_t>(u16.size()), &len, s.data(), static_cast<int32_t>(s.size()), &e);
    if (U_FAILURE(e)) throw std::runtime_error("tokenizer: text is not valid UTF-8");
    if (unorm2_isNormalized(n_, u16.data(), len, &e) && U_SUCCESS(e)) return;
    e = U_ZERO_ERROR;
    std::vector<UChar> norm(static_cast<size_t>(len) * 2 + 16);
    int32_t nlen = unorm2_normalize(n_, u16.data(), len, norm.data(), static_cast<int32_t>(norm.size()), &e);
    if (e == U_BUFFER_OVERFLOW_ERROR) {
      e = U_ZERO_ERROR;
      norm.resize(static_cast<size_t>(nlen) + 1);
      nlen = unorm2_normalize(n_, u16.data(), len, norm.data(), static_cast<int32_t>(norm.size()), &e);
    }
    if (U_FAILURE(e)) throw std::runtime_error(std::string("tokenizer: ICU normalization failed: ") + u_errorName(e));
    std::string out(static_cast<size_t>(nlen) * 3 + 1, '\0');
    int32_t olen = 0;
    u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &olen, norm.data(), nlen, &e);
    if (U_FAILURE(e)) throw std::runtime_error(std::string("tokenizer: ICU conversion failed: ") + u_errorName(e));
    out.resize(static_cast<size_t>(olen));
    s.swap(out);
  }

 private:
  const UNormalizer2* n_;
};

class ReplaceNorm : public Normalizer, public Decoder {
 public:
  ReplaceNorm(Regex re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  void normalize(std::string& s) const override { s = replace_all(re_, s, content_); }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = replace_all(re_, t, content_);
  }

 private:
  Regex re_;
  std::string content_;
};

class PrependNorm : public Normalizer {
 public:
  explicit PrependNorm(std::string p) : p_(std::move(p)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, p_);
  }

 private:
  std::string p_;
};

class StripNorm : public Normalizer {
 public:
  StripNorm(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override {
    size_t a = 0, b = s.size();
    if (left_)
      for (size_t i = 0; i < s.size();) {
        const size_t at = i;
        if (!is_unicode_space(next_cp(s, i))) { a = at; break; }
        a = i;
      }
    if (right_) {
      size_t last_end = a;
      for (size_t i = a; i < s.size();)
        if (!is_unicode_space(next_cp(s, i))) last_end = i;
      b = last_end;
    }
    s = s.substr(a, b - a);
  }

 private:
  bool left_, right_;
};

class NormSequence : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  void normalize(std::string& s) const override {
    for (auto& p : parts) p->normalize(s);
  }
};

const UNormalizer2* icu_instance(const std::string& type, const std::string& where) {
  UErrorCode e = U_ZERO_ERROR;
  const UNormalizer2* n = type == "NFC"    ? unorm2_getNFCInstance(&e)
                          : type == "NFD"  ? unorm2_getNFDInstance(&e)
                          : type == "NFKC" ? unorm2_getNFKCInstance(&e)
                                           : unorm2_getNFKDInstance(&e);
  if (U_FAILURE(e) || !n) throw std::runtime_error(where + ": ICU has no " + type + " normalizer: " + u_errorName(e));
  return n;
}

// ---------------------------------------------------------------- pre-tokenizers

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space),
        use_regex_(use_regex),
        re_(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", "ByteLevel") {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    std::vector<std::pair<size_t, size_t>> m;
    for (auto& p : pieces) {
      Piece q = p;
      if (add_prefix_space_ && (q.text.empty() || q.text[0] != ' ')) q.text.insert(0, " ");
      if (use_regex_) {
        m.clear();
        re_.find_all(q.text, m);
        split_spans(q, cover(q.text, m, false), Behavior::Isolated, out);
      } else if (!q.text.empty()) {
        out.push_back(std::move(q));
      }
    }
    for (auto& p : out) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text) mapped += byte_to_unicode(c);
      p.text.swap(mapped);
    }
    pieces.swap(out);
  }

 private:
  bool add_prefix_space_, use_regex_;
  Regex re_;
};

class SplitPre : public PreTokenizer {
 public:
  SplitPre(Regex re, Behavior b, bool invert) : re_(std::move(re)), b_(b), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    std::vector<std::pair<size_t, size_t>> m;
    for (auto& p : pieces) {
      m.clear();
      re_.find_all(p.text, m);
      split_spans(p, cover(p.text, m, invert_), b_, out);
    }
    pieces.swap(out);
  }

 private:
  Regex re_;
  Behavior b_;
  bool invert_;
};

// Splits on characters for which pred holds (Digits, WhitespaceSplit).
template <class Pred>
class CharSplitPre : public PreTokenizer {
 public:
  CharSplitPre(Pred pred, Behavior b) : pred_(pred), b_(b) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (auto& p : pieces) split_spans(p, cover(p.text, char_matches(p.text, pred_), false), b_, out);
    pieces.swap(out);
  }

 private:
  Pred pred_;
  Behavior b_;
};
template <class Pred>
std::unique_ptr<PreTokenizer> char_split(Pred pred, Behavior b) {
  return std::make_unique<CharSplitPre<Pred>>(pred, b);
}

enum class Prepend { Always, First, Never };

Prepend prepend_scheme_of(const json& j, const std::string& where) {
  Prepend scheme = Prepend::Always;
  if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
    const std::string s = str_of(j, "prepend_scheme", where);
    if (s == "always") scheme = Prepend::Always;
    else if (s == "first") scheme = Prepend::First;
    else if (s == "never") scheme = Prepend::Never;
    else throw std::runtime_error(where + ": unknown prepend_scheme '" + s + "'");
  }
  if (!bool_of(j, "add_prefix_space", true, where)) {
    if (scheme != Prepend::Always && scheme != Prepend::Never)  // the crate's own check
      throw std::runtime_error(where + ": add_prefix_space does not match declared prepend_scheme");
    scheme = Prepend::Never;
  }
  return scheme;
}

class MetaspacePre : public PreTokenizer {
 public:
  MetaspacePre(uint32_t rep, Prepend scheme, bool split) : scheme_(scheme), split_(split), re_(std::string(), "") {
    append_utf8(rep_, rep);
    re_ = Regex::literal(rep_, "Metaspace");
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    std::vector<std::pair<size_t, size_t>> m;
    for (auto& p : pieces) {
      Piece q{std::string(), p.at_start};
      for (char c : p.text) {
        if (c == ' ') q.text += rep_;
        else q.text += c;
      }
      const bool starts = q.text.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (scheme_ == Prepend::Always || (scheme_ == Prepend::First && q.at_start))) q.text.insert(0, rep_);
      if (split_) {
        m.clear();
        re_.find_all(q.text, m);
        split_spans(q, cover(q.text, m, false), Behavior::MergedWithNext, out);
      } else if (!q.text.empty()) {
        out.push_back(std::move(q));
      }
    }
    pieces.swap(out);
  }

 private:
  std::string rep_;
  Prepend scheme_;
  bool split_;
  Regex re_;
};

class PreSequence : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (auto& p : parts) p->pre_tokenize(pieces);
  }
};

// ---------------------------------------------------------------- decoders

class ByteLevelDec : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      const size_t mark = bytes.size();
      bool ok = true;
      for (size_t i = 0; i < t.size() && ok;) {
        const int b = unicode_to_byte(next_cp(t, i));
        if (b < 0) ok = false;
        else bytes += static_cast<char>(b);
      }
      if (!ok) bytes.resize(mark), bytes += t;  // a token outside the alphabet: its own bytes
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ByteFallbackDec : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t pending_n = 0;
    auto flush = [&] {
      if (!pending_n) return;
      if (invalid_utf8_at(pending) == std::string::npos) out.push_back(pending);
      else for (size_t k = 0; k < pending_n; ++k) out.push_back("\xEF\xBF\xBD");
      pending.clear();
      pending_n = 0;
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4])))
        byte = std::stoi(t.substr(3, 2), nullptr, 16);
      if (byte >= 0) {
        pending += static_cast<char>(byte);
        ++pending_n;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDec : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class StripDec : public Decoder {
 public:
  StripDec(uint32_t c, size_t start, size_t stop) : c_(c), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<uint32_t> cps;
      for (size_t i = 0; i < t.size();) cps.push_back(next_cp(t, i));
      size_t a = 0, b = cps.size();
      for (size_t i = 0; i < start_ && i < cps.size() && cps[i] == c_; ++i) a = i + 1;
      for (size_t i = 0; i < stop_ && i < cps.size() && cps[cps.size() - 1 - i] == c_; ++i) b = cps.size() - 1 - i;
      std::string s;
      for (size_t i = a; i < b; ++i) append_utf8(s, cps[i]);
      t.swap(s);
    }
  }

 private:
  uint32_t c_;
  size_t start_, stop_;
};

class MetaspaceDec : public Decoder {
 public:
  MetaspaceDec(uint32_t rep, Prepend scheme) : rep_(rep), scheme_(scheme) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string s;
      const std::string& t = tokens[k];
      for (size_t i = 0; i < t.size();) {
        const uint32_t c = next_cp(t, i);
        if (c != rep_) append_utf8(s, c);
        else if (!(k == 0 && scheme_ != Prepend::Never)) s += ' ';
      }
      tokens[k].swap(s);
    }
  }

 private:
  uint32_t rep_;
  Prepend scheme_;
};

class DecSequence : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> parts;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& p : parts) p->decode_chain(tokens);
  }
};

}  // namespace

// ---------------------------------------------------------------- factories

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j, where);
  const std::string w = where + " " + t;
  if (t == "NFC" || t == "NFD" || t == "NFKC" || t == "NFKD") return std::make_unique<UnicodeNorm>(icu_instance(t, w));
  if (t == "Replace") return std::make_unique<ReplaceNorm>(pattern_of(j, w), str_of(j, "content", w));
  if (t == "Prepend") return std::make_unique<PrependNorm>(str_of(j, "prepend", w));
  if (t == "Strip") return std::make_unique<StripNorm>(bool_of(j, "strip_left", true, w), bool_of(j, "strip_right", true, w));
  if (t == "Sequence") {
    auto seq = std::make_unique<NormSequence>();
    for (const auto& n : array_of(j, "normalizers", w))
      if (auto p = make_normalizer(n, w)) seq->parts.push_back(std::move(p));
    return seq;
  }
  throw std::runtime_error(where + " type '" + t + "' is not supported");
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j, where);
  const std::string w = where + " " + t;
  if (t == "ByteLevel")
    return std::make_unique<ByteLevelPre>(bool_of(j, "add_prefix_space", true, w), bool_of(j, "use_regex", true, w));
  if (t == "Split") return std::make_unique<SplitPre>(pattern_of(j, w), behavior_of(j, w), bool_of(j, "invert", false, w));
  if (t == "Metaspace")
    return std::make_unique<MetaspacePre>(char_of(j, "replacement", w), prepend_scheme_of(j, w), bool_of(j, "split", true, w));
  if (t == "Digits") {
    auto digit = [](uint32_t c) {
      const int8_t ct = u_charType(static_cast<UChar32>(c));
      return ct == U_DECIMAL_DIGIT_NUMBER || ct == U_LETTER_NUMBER || ct == U_OTHER_NUMBER;
    };
    return char_split(digit, bool_of(j, "individual_digits", false, w) ? Behavior::Isolated : Behavior::Contiguous);
  }
  if (t == "WhitespaceSplit") return char_split(is_unicode_space, Behavior::Removed);
  if (t == "Whitespace") return std::make_unique<SplitPre>(Regex(R"(\w+|[^\w\s]+)", w), Behavior::Removed, true);
  if (t == "Sequence") {
    auto seq = std::make_unique<PreSequence>();
    for (const auto& p : array_of(j, "pretokenizers", w))
      if (auto q = make_pre_tokenizer(p, w)) seq->parts.push_back(std::move(q));
    return seq;
  }
  throw std::runtime_error(where + " type '" + t + "' is not supported");
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string t = type_of(j, where);
  const std::string w = where + " " + t;
  if (t == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (t == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (t == "Fuse") return std::make_unique<FuseDec>();
  if (t == "Strip") return std::make_unique<StripDec>(char_of(j, "content", w), count_of(j, "start", w), count_of(j, "stop", w));
  if (t == "Replace") return std::make_unique<ReplaceNorm>(pattern_of(j, w), str_of(j, "content", w));
  if (t == "Metaspace") return std::make_unique<MetaspaceDec>(char_of(j, "replacement", w), prepend_scheme_of(j, w));
  if (t == "Sequence") {
    auto seq = std::make_unique<DecSequence>();
    for (const auto& d : array_of(j, "decoders", w))
      if (auto q = make_decoder(d, w)) seq->parts.push_back(std::move(q));
    return seq;
  }
  throw std::runtime_error(where + " type '" + t + "' is not supported");
}

namespace {
std::vector<int64_t> special_ids(const json& specials, const std::string& name, const std::string& where) {
  if (!specials.is_object() || !specials.contains(name))
    throw std::runtime_error(where + ": template uses '" + name + "', which is not in special_tokens");
  const json& ids = array_of(specials.at(name), "ids", where + " special token " + name);
  std::vector<int64_t> out;
  for (const auto& i : ids) {
    if (!is_index(i, 1ll << 31)) throw std::runtime_error(where + ": special token " + name + " has a bad id");
    out.push_back(i.get<int64_t>());
  }
  return out;
}

// `name` as a special token, or "" for the sequence ($A, $0, $, $B ...); the string form "<s> $A:0".
std::string template_item(const json& item, const std::string& where) {
  if (item.is_string()) {
    std::string s = item.get<std::string>();
    if (!s.empty() && s[0] == '$') return "";
    const size_t colon = s.rfind(':');
    return colon == std::string::npos ? s : s.substr(0, colon);
  }
  if (item.is_object() && item.contains("SpecialToken")) return str_of(item.at("SpecialToken"), "id", where);
  if (item.is_object() && item.contains("Sequence")) return "";
  throw std::runtime_error(where + ": bad template item " + item.dump());
}
}  // namespace

SpecialTemplate parse_post_processor(const json& j, const std::string& where) {
  SpecialTemplate out;
  if (j.is_null()) return out;
  const std::string t = type_of(j, where);
  const std::string w = where + " " + t;
  if (t == "ByteLevel") return out;
  if (t == "TemplateProcessing") {
    json single = need(j, "single", w);
    if (single.is_string()) {  // "<s> $A </s>"
      json items = json::array();
      std::string s = single.get<std::string>(), cur;
      for (char c : s + " ") {
        if (c == ' ') { if (!cur.empty()) items.push_back(cur); cur.clear(); }
        else cur += c;
      }
      single = items;
    }
    if (!single.is_array()) throw std::runtime_error(w + ": \"single\" must be a list");
    bool seen_seq = false;
    for (const auto& item : single) {
      const std::string name = template_item(item, w);
      if (name.empty()) { seen_seq = true; continue; }
      auto ids = special_ids(need(j, "special_tokens", w), name, w);
      auto& dst = seen_seq ? out.suffix : out.prefix;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    return out;
  }
  if (t == "BertProcessing" || t == "RobertaProcessing") {
    for (const char* k : {"cls", "sep"}) {
      const json& v = need(j, k, w);
      if (!v.is_array() || v.size() != 2 || !is_index(v[1], 1ll << 31))
        throw std::runtime_error(w + ": \"" + k + "\" must be [token, id]");
      (std::string(k) == "cls" ? out.prefix : out.suffix).push_back(v[1].get<int64_t>());
    }
    return out;
  }
  if (t == "Sequence") {
    for (const auto& p : array_of(j, "processors", w)) {
      auto part = parse_post_processor(p, w);
      out.prefix.insert(out.prefix.end(), part.prefix.begin(), part.prefix.end());
      out.suffix.insert(out.suffix.end(), part.suffix.begin(), part.suffix.end());
    }
    return out;
  }
  throw std::runtime_error(where + " type '" + t + "' is not supported");
}

}  // namespace mor::hf
