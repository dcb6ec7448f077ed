// tokenizer.json BPE (see tokenizer_bpe.h): the model's merge loop as the Rust crate's Word::merge_all
// (lowest rank first, then leftmost), added tokens as AddedVocabulary::find_matches (leftmost-longest,
// single_word / lstrip / rstrip), non-normalized tokens matched on the raw text and normalized ones on
// the normalized text.
#include "tokenizer_bpe.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "tokenizer_json.h"

namespace fs = std::filesystem;

namespace mor {

namespace {

using json = nlohmann::json;
using hf::next_cp;

class BpeModel {
 public:
  void load(const json& m, const std::string& where);
  void tokenize(const std::string& word, std::vector<int64_t>& out) const;
  int32_t id_of(const std::string& token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
  }
  const std::string* token_of(int64_t id) const {
    return id >= 0 && id < static_cast<int64_t>(vocab_r_.size()) && has_[id] ? &vocab_r_[id] : nullptr;
  }
  int64_t max_id() const { return static_cast<int64_t>(vocab_r_.size()) - 1; }
  int32_t unk_id() const { return unk_id_; }

 private:
  std::vector<int32_t> merge_word(const std::string& word) const;

  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> vocab_r_;
  std::vector<bool> has_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_{};
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

std::string opt_string(const json& m, const char* key, const std::string& where) {
  if (!m.contains(key) || m.at(key).is_null()) return "";
  if (!m.at(key).is_string()) throw std::runtime_error(where + ": model \"" + key + "\" must be a string or null");
  return m.at(key).get<std::string>();
}

bool opt_bool(const json& m, const char* key, const std::string& where) {
  if (!m.contains(key) || m.at(key).is_null()) return false;
  if (!m.at(key).is_boolean()) throw std::runtime_error(where + ": model \"" + key + "\" must be true or false");
  return m.at(key).get<bool>();
}

void BpeModel::load(const json& m, const std::string& where) {
  const json& vocab = m.contains("vocab") ? m.at("vocab") : json();
  if (!vocab.is_object()) throw std::runtime_error(where + ": model \"vocab\" must be an object of token: id");
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!hf::is_index(it.value(), 1ll << 31))
      throw std::runtime_error(where + ": vocab id of '" + it.key() + "' is not a non-negative integer");
    const int64_t id = it.value().get<int64_t>();
    vocab_.emplace(it.key(), static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  // Ids index a table: refuse a sparse vocabulary that would need far more rows than tokens.
  if (max_id >= 4 * static_cast<int64_t>(vocab_.size()) + 65536)
    throw std::runtime_error(where + ": vocab ids are too sparse (largest " + std::to_string(max_id) + " for " +
                             std::to_string(vocab_.size()) + " tokens)");
  vocab_r_.assign(static_cast<size_t>(max_id + 1), std::string());
  has_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [tok, id] : vocab_)
    if (!has_[id]) vocab_r_[id] = tok, has_[id] = true;

  if (m.contains("dropout") && !m.at("dropout").is_null() &&
      !(m.at("dropout").is_number() && m.at("dropout").get<double>() == 0.0))
    throw std::runtime_error(where + ": BPE dropout is not supported (inference tokenizers have dropout null)");
  byte_fallback_ = opt_bool(m, "byte_fallback", where);
  fuse_unk_ = opt_bool(m, "fuse_unk", where);
  ignore_merges_ = opt_bool(m, "ignore_merges", where);
  prefix_ = opt_string(m, "continuing_subword_prefix", where);
  suffix_ = opt_string(m, "end_of_word_suffix", where);
  const std::string unk = opt_string(m, "unk_token", where);
  if (!unk.empty()) {
    unk_id_ = id_of(unk);
    if (unk_id_ < 0) throw std::runtime_error(where + ": unk_token '" + unk + "' is not in the vocabulary");
  }
  for (int b = 0; b < 256; ++b) {
    char code[8];
    std::snprintf(code, sizeof(code), "<0x%02X>", b);
    byte_ids_[b] = id_of(code);
  }

  if (!m.contains("merges") || !m.at("merges").is_array())
    throw std::runtime_error(where + ": model \"merges\" must be a list");
  const json& merges = m.at("merges");
  merges_.reserve(merges.size());
  uint32_t rank = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& e = merges[i];
    std::string a, b;
    if (e.is_string()) {  // "a b"
      const std::string s = e.get<std::string>();
      if (s.rfind("#version", 0) == 0) continue;
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw std::runtime_error(where + ": merge " + std::to_string(i) + " '" + s + "' is not two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      throw std::runtime_error(where + ": merge " + std::to_string(i) + " must be \"a b\" or [\"a\", \"b\"]");
    }
    const int32_t ia = id_of(a), ib = id_of(b);
    const std::string joined = a + (b.size() >= prefix_.size() ? b.substr(prefix_.size()) : b);
    const int32_t inew = id_of(joined);
    for (const auto& [tok, id] : {std::pair<const std::string&, int32_t>{a, ia}, {b, ib}, {joined, inew}})
      if (id < 0)
        throw std::runtime_error(where + ": merge " + std::to_string(i) + " ('" + a + "', '" + b + "') uses '" + tok +
                                 "', which is not in the vocabulary");
    merges_[pair_key(ia, ib)] = Merge{rank++, inew};  // a repeated pair keeps its last rank, as the crate's map
  }
}

std::vector<int32_t> BpeModel::merge_word(const std::string& w) const {
  struct Sym {
    int32_t id;
    int prev, next;
    size_t len;
  };
  std::vector<Sym> syms;
  syms.reserve(w.size());
  auto add = [&](int32_t id, size_t len) {
    const int n = static_cast<int>(syms.size());
    if (n) syms.back().next = n;
    syms.push_back({id, n - 1, -1, len});
  };
  int32_t unk = -1;
  size_t unk_len = 0;
  for (size_t i = 0; i < w.size();) {
    const size_t at = i;
    next_cp(w, i);
    const size_t byte_len = i - at;
    std::string s = w.substr(at, byte_len);
    if (at > 0 && !prefix_.empty()) s = prefix_ + s;
    if (i == w.size() && !suffix_.empty()) s += suffix_;
    const int32_t id = id_of(s);
    if (id >= 0) {
      if (unk >= 0) add(unk, unk_len), unk = -1;
      add(id, byte_len);
      continue;
    }
    if (byte_fallback_ && std::all_of(s.begin(), s.end(), [&](char c) { return byte_ids_[static_cast<uint8_t>(c)] >= 0; })) {
      for (char c : s) add(byte_ids_[static_cast<uint8_t>(c)], 1);
      continue;
    }
    if (unk_id_ >= 0) {
      if (unk >= 0 && fuse_unk_) unk_len += byte_len;
      else {
        if (unk >= 0) add(unk, unk_len);
        unk = unk_id_;
        unk_len = byte_len;
      }
    }
  }
  if (unk >= 0) add(unk, unk_len);

  struct Cand {
    uint32_t rank;
    int pos;
    int32_t new_id;
    bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }  // min-heap
  };
  std::priority_queue<Cand> q;
  auto push = [&](int pos) {
    const int nx = syms[pos].next;
    if (nx < 0) return;
    auto it = merges_.find(pair_key(syms[pos].id, syms[nx].id));
    if (it != merges_.end()) q.push({it->second.rank, pos, it->second.new_id});
  };
  for (int p = 0; p + 1 < static_cast<int>(syms.size()); ++p) push(p);
  while (!q.empty()) {
    const Cand top = q.top();
    q.pop();
    Sym& cur = syms[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    Sym right = syms[cur.next];
    auto it = merges_.find(pair_key(cur.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // an expired entry
    cur.id = top.new_id;
    cur.len += right.len;
    syms[cur.next].len = 0;
    cur.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (cur.prev >= 0) push(cur.prev);
    push(top.pos);
  }
  std::vector<int32_t> ids;
  for (const auto& s : syms)
    if (s.len) ids.push_back(s.id);
  return ids;
}

void BpeModel::tokenize(const std::string& word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t id = id_of(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> g(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = merge_word(word);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() < 256) {
    std::lock_guard<std::mutex> g(cache_mu_);
    if (cache_.size() >= 100000) cache_.clear();
    cache_.emplace(word, std::move(ids));
  }
}

// ---------------------------------------------------------------- added tokens

struct AddedToken {
  int64_t id;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Leftmost-longest search over a set of patterns (what the crate's Aho-Corasick automaton finds).
class AddedMatcher {
 public:
  void add(std::string pattern, int token) {
    if (pattern.empty()) return;
    by_first_[static_cast<uint8_t>(pattern[0])].push_back(static_cast<int>(pats_.size()));
    pats_.push_back({std::move(pattern), token});
  }
  void finish() {
    for (auto& v : by_first_)
      std::stable_sort(v.begin(), v.end(), [&](int a, int b) { return pats_[a].first.size() > pats_[b].first.size(); });
  }
  bool empty() const { return pats_.empty(); }
  // First match at or after pos: {start, token index}, or {npos, -1}.
  std::pair<size_t, int> find(const std::string& s, size_t pos, size_t& len) const {
    for (size_t i = pos; i < s.size(); ++i)
      for (int k : by_first_[static_cast<uint8_t>(s[i])]) {
        const std::string& p = pats_[k].first;
        if (s.compare(i, p.size(), p) == 0) {
          len = p.size();
          return {i, pats_[k].second};
        }
      }
    return {std::string::npos, -1};
  }

 private:
  std::vector<std::pair<std::string, int>> pats_;
  std::array<std::vector<int>, 256> by_first_;
};

struct Seg {
  std::string text;
  int64_t id = -1;  // an added token, or -1
  bool at_start = false;
};

uint32_t cp_before(const std::string& s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return next_cp(s, i);
}

class JsonTokenizer : public detail::TokenizerImpl {
 public:
  BpeModel model;
  std::unique_ptr<hf::Normalizer> normalizer;
  std::unique_ptr<hf::PreTokenizer> pre;
  std::unique_ptr<hf::Decoder> decoder;
  std::vector<AddedToken> added;
  std::unordered_map<int64_t, int> added_by_id;
  std::unordered_map<std::string, int> added_by_content;
  AddedMatcher raw, norm;
  int64_t size = 0;

  void index_added() {
    for (size_t k = 0; k < added.size(); ++k) {
      const AddedToken& t = added[k];
      added_by_id.emplace(t.id, static_cast<int>(k));
      added_by_content.emplace(t.content, static_cast<int>(k));
      if (t.normalized) {
        std::string n = t.content;
        if (normalizer) normalizer->normalize(n);
        norm.add(n, static_cast<int>(k));
      } else {
        raw.add(t.content, static_cast<int>(k));
      }
    }
    raw.finish();
    norm.finish();
  }

  int64_t token_id(const std::string& content) const {
    auto it = added_by_content.find(content);
    if (it != added_by_content.end()) return added[it->second].id;
    return model.id_of(content);
  }

  void split_added(Seg in, const AddedMatcher& m, std::vector<Seg>& out) const {
    const std::string& s = in.text;
    if (in.id >= 0 || m.empty() || s.empty()) {
      out.push_back(std::move(in));
      return;
    }
    size_t start_offset = 0, pos = 0;
    while (pos < s.size()) {
      size_t len = 0;
      auto [start, k] = m.find(s, pos, len);
      if (k < 0) break;
      size_t stop = start + len;
      pos = stop;
      const AddedToken& t = added[k];
      if (t.single_word) {
        const bool before_ok = start == 0 || !hf::is_word_char(cp_before(s, start));
        size_t j = stop;
        const bool after_ok = stop == s.size() || !hf::is_word_char(next_cp(s, j));
        if (!before_ok || !after_ok) continue;
      }
      if (t.lstrip) {
        size_t ns = start;
        while (ns > start_offset && hf::is_unicode_space(cp_before(s, ns))) {
          --ns;
          while ((static_cast<uint8_t>(s[ns]) & 0xC0) == 0x80) --ns;
        }
        start = std::max(ns, start_offset);
      }
      if (t.rstrip) {
        for (size_t j = stop; j < s.size();) {
          if (!hf::is_unicode_space(next_cp(s, j))) break;
          stop = j;
        }
        pos = stop;
      }
      if (start_offset < start) out.push_back({s.substr(start_offset, start - start_offset), -1, in.at_start && start_offset == 0});
      out.push_back({s.substr(start, stop - start), t.id, false});
      start_offset = stop;
    }
    if (start_offset < s.size()) out.push_back({s.substr(start_offset), -1, in.at_start && start_offset == 0});
  }

  std::vector<int64_t> encode_text(const std::string& text) const override {
    if (size_t bad = hf::invalid_utf8_at(text); bad != std::string::npos)
      throw std::runtime_error("tokenizer: text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
    std::vector<Seg> first, second;
    split_added({text, -1, true}, raw, first);
    for (auto& seg : first) {
      if (seg.id < 0) {
        if (seg.text.empty()) continue;
        if (normalizer) normalizer->normalize(seg.text);
      }
      split_added(std::move(seg), norm, second);
    }
    std::vector<int64_t> ids;
    std::vector<hf::Piece> pieces;
    for (auto& seg : second) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      if (seg.text.empty()) continue;
      pieces.assign(1, hf::Piece{std::move(seg.text), seg.at_start});
      if (pre) pre->pre_tokenize(pieces);
      for (const auto& p : pieces) model.tokenize(p.text, ids);
    }
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    std::vector<std::string> toks;
    toks.reserve(ids.size());
    for (int64_t id : ids) {
      auto it = added_by_id.find(id);
      if (it != added_by_id.end()) {
        if (!(skip_special && added[it->second].special)) toks.push_back(added[it->second].content);
      } else if (const std::string* t = model.token_of(id)) {
        toks.push_back(*t);
      }
    }
    std::string out;
    if (decoder) {
      decoder->decode_chain(toks);
      for (auto& t : toks) out += t;
    } else {
      for (size_t i = 0; i < toks.size(); ++i) out += (i ? " " : "") + toks[i];
    }
    return out;
  }
  std::string decode_hf(const std::vector<int64_t>& ids) const override { return decode(ids, false); }
  int64_t vocab_size() const override { return size; }
  std::string id_to_piece(int64_t id) const override {
    auto it = added_by_id.find(id);
    if (it != added_by_id.end()) return added[it->second].content;
    if (const std::string* t = model.token_of(id)) return *t;
    throw std::runtime_error("tokenizer: id " + std::to_string(id) + " has no token");
  }
  bool is_special(int64_t id) const override {
    auto it = added_by_id.find(id);
    return it != added_by_id.end() && added[it->second].special;
  }
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json(const std::string& path) {
  try {
    return json::parse(read_text(path));
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": malformed JSON: " + e.what());
  }
}

void load_added(JsonTokenizer& t, const json& j, const std::string& where) {
  if (!j.contains("added_tokens") || j.at("added_tokens").is_null()) return;
  const json& list = j.at("added_tokens");
  if (!list.is_array()) throw std::runtime_error(where + ": \"added_tokens\" must be a list");
  for (const auto& a : list) {
    if (!a.is_object() || !a.contains("id") || !hf::is_index(a.at("id"), 1ll << 31) ||
        !a.contains("content") || !a.at("content").is_string())
      throw std::runtime_error(where + ": each added token needs a non-negative \"id\" and a string \"content\"");
    AddedToken k;
    k.id = a.at("id").get<int64_t>();
    k.content = a.at("content").get<std::string>();
    if (hf::invalid_utf8_at(k.content) != std::string::npos)
      throw std::runtime_error(where + ": added token " + std::to_string(k.id) + " is not valid UTF-8");
    auto flag = [&](const char* key, bool dflt) {
      if (!a.contains(key) || a.at(key).is_null()) return dflt;
      if (!a.at(key).is_boolean()) throw std::runtime_error(where + ": added token \"" + std::string(key) + "\" must be true or false");
      return a.at(key).get<bool>();
    };
    k.special = flag("special", false);
    k.single_word = flag("single_word", false);
    k.lstrip = flag("lstrip", false);
    k.rstrip = flag("rstrip", false);
    k.normalized = flag("normalized", !k.special);
    t.added.push_back(std::move(k));
  }
}

// tokenizer_config.json's token fields: "text", {"content": "text", ...} or null.
bool config_token(const json& cfg, const char* key, std::string& out, bool& present, const std::string& where) {
  present = cfg.contains(key);
  if (!present || cfg.at(key).is_null()) return false;
  const json& v = cfg.at(key);
  if (v.is_string()) out = v.get<std::string>();
  else if (v.is_object() && v.contains("content") && v.at("content").is_string()) out = v.at("content").get<std::string>();
  else throw std::runtime_error(where + ": \"" + key + "\" must be a string, an object with \"content\", or null");
  return true;
}

void apply_config(const JsonTokenizer& t, const std::string& dir, BpeSetup& s) {
  const std::string path = (fs::path(dir) / "tokenizer_config.json").string();
  if (dir.empty() || !fs::exists(path)) return;
  const json cfg = parse_json(path);
  if (!cfg.is_object()) throw std::runtime_error(path + ": expected a JSON object");
  auto lookup = [&](const char* key, int64_t& id) {
    std::string tok;
    bool present = false;
    if (config_token(cfg, key, tok, present, path)) {
      id = t.token_id(tok);
      if (id < 0) throw std::runtime_error(path + ": " + key + " '" + tok + "' is not in the vocabulary of tokenizer.json");
    } else if (present) {
      id = -1;
    }
  };
  lookup("bos_token", s.bos);
  lookup("eos_token", s.eos);
  lookup("pad_token", s.pad);
  auto flag = [&](const char* key, bool& v) {
    if (cfg.contains(key) && cfg.at(key).is_boolean()) v = cfg.at(key).get<bool>();
  };
  flag("add_bos_token", s.add_bos);
  flag("add_eos_token", s.add_eos);
  flag("clean_up_tokenization_spaces", s.clean_up);
}

}  // namespace

BpeSetup load_tokenizer_json(const std::string& path, const std::string& config_dir) {
  const json j = parse_json(path);
  auto t = std::make_shared<JsonTokenizer>();
  BpeSetup s;
  try {
    if (!j.is_object() || !j.contains("model") || !j.at("model").is_object())
      throw std::runtime_error(path + ": no \"model\" object (not a tokenizer.json)");
    const json& m = j.at("model");
    const std::string type = m.contains("type") && m.at("type").is_string() ? m.at("type").get<std::string>()
                             : m.contains("merges")                         ? "BPE"
                                                                            : "";
    if (type != "BPE")
      throw std::runtime_error(path + ": model type '" + (type.empty() ? m.value("type", json()).dump() : type) +
                               "' is not supported (mor reads BPE tokenizer.json models)");
    t->model.load(m, path);
    auto field = [&](const char* k) { return j.contains(k) ? j.at(k) : json(); };
    t->normalizer = hf::make_normalizer(field("normalizer"), path + ": normalizer");
    t->pre = hf::make_pre_tokenizer(field("pre_tokenizer"), path + ": pre_tokenizer");
    t->decoder = hf::make_decoder(field("decoder"), path + ": decoder");
    load_added(*t, j, path);
    t->index_added();
    int64_t max_id = t->model.max_id();
    for (const auto& a : t->added) max_id = std::max(max_id, a.id);
    if (max_id >= t->model.max_id() + 1 + 65536 + 4 * static_cast<int64_t>(t->added.size()))
      throw std::runtime_error(path + ": added token ids are too sparse (largest " + std::to_string(max_id) + ")");
    t->size = max_id + 1;
    const hf::SpecialTemplate tmpl = hf::parse_post_processor(field("post_processor"), path + ": post_processor");
    for (const auto* v : {&tmpl.prefix, &tmpl.suffix})
      for (int64_t id : *v)
        if (id < 0 || id >= t->size) throw std::runtime_error(path + ": post_processor id " + std::to_string(id) + " is outside the vocabulary");
    s.prefix = tmpl.prefix;
    s.suffix = tmpl.suffix;
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": malformed tokenizer.json: " + e.what());
  }
  s.unk = t->model.unk_id();
  if (s.prefix.size() == 1) s.bos = s.prefix[0];
  if (s.suffix.size() == 1) s.eos = s.suffix[0];
  s.add_bos = !s.prefix.empty();
  s.add_eos = !s.suffix.empty();
  try {
    apply_config(*t, config_dir, s);
  } catch (const json::exception& e) {
    throw std::runtime_error(config_dir + "/tokenizer_config.json: " + e.what());
  }
  // transformers' LlamaTokenizerFast rebuilds the template from add_bos_token/add_eos_token.
  if (s.add_bos && s.prefix.empty() && s.bos >= 0) s.prefix = {s.bos};
  if (s.add_eos && s.suffix.empty() && s.eos >= 0) s.suffix = {s.eos};
  s.impl = t;
  return s;
}

}  // namespace mor
