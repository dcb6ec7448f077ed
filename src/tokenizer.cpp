// The Tokenizer facade, its sentencepiece implementation (tokenizer.model as transformers' slow
// LlamaTokenizer uses it) and the alpaca prompt template (see tokenizer.h).
#include "tokenizer.h"

#include "tokenizer_bpe.h"
#include "tokenizer_impl.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <cstring>
#include <stdexcept>

namespace fs = std::filesystem;

namespace mor {

// Build-time paths of the sentencepiece module and training helper (CMake defines them for this file).
#ifndef MOR_SPM_SHIM
#define MOR_SPM_SHIM ""
#endif
#ifndef MOR_SPM_TRAIN
#define MOR_SPM_TRAIN ""
#endif

namespace {

// The C functions of libmor_spm.so, resolved once.
struct Spm {
  void* (*create)();
  void (*destroy)(void*);
  void (*free_buf)(void*);
  char* (*load)(void*, const char*);
  int* (*encode)(void*, const char*, size_t, int*);
  char* (*decode_ids)(void*, const int*, int, size_t*);
  char* (*decode_pieces)(void*, const char* const*, int, size_t*);
  char* (*id_to_piece)(void*, int, size_t*);
  int (*piece_size)(void*);
  int (*bos_id)(void*);
  int (*eos_id)(void*);
  int (*unk_id)(void*);
  int (*pad_id)(void*);
};

// Where a file built beside mor is looked for: $ENV, the build-time path, next to the running binary.
std::vector<std::string> companion_paths(const char* env, const char* built_at, const char* name) {
  std::vector<std::string> candidates;
  if (const char* e = std::getenv(env); e && *e) candidates.push_back(e);
  if (built_at && *built_at) candidates.push_back(built_at);
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    exe[n] = 0;
    candidates.push_back((fs::path(exe).parent_path() / name).string());
  }
  return candidates;
}

const Spm& spm() {
  static const Spm api = [] {
    std::vector<std::string> tried;
    std::vector<std::string> candidates = companion_paths("MOR_SPM_SHIM", MOR_SPM_SHIM, "libmor_spm.so");
    candidates.push_back("libmor_spm.so");
    void* h = nullptr;
    for (const auto& c : candidates) {
      h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (h) break;
      tried.push_back(c + " (" + dlerror() + ")");
    }
    if (!h) {
      std::string msg = "cannot load the sentencepiece shim libmor_spm.so; tried:";
      for (const auto& t : tried) msg += " " + t + ";";
      throw std::runtime_error(msg);
    }
    auto sym = [h](const char* name) {
      void* s = dlsym(h, name);
      if (!s) throw std::runtime_error(std::string("libmor_spm.so lacks ") + name);
      return s;
    };
    Spm a;
    a.create = reinterpret_cast<void* (*)()>(sym("mor_spm_new"));
    a.destroy = reinterpret_cast<void (*)(void*)>(sym("mor_spm_delete"));
    a.free_buf = reinterpret_cast<void (*)(void*)>(sym("mor_spm_free"));
    a.load = reinterpret_cast<char* (*)(void*, const char*)>(sym("mor_spm_load"));
    a.encode = reinterpret_cast<int* (*)(void*, const char*, size_t, int*)>(sym("mor_spm_encode"));
    a.decode_ids = reinterpret_cast<char* (*)(void*, const int*, int, size_t*)>(sym("mor_spm_decode_ids"));
    a.decode_pieces = reinterpret_cast<char* (*)(void*, const char* const*, int, size_t*)>(sym("mor_spm_decode_pieces"));
    a.id_to_piece = reinterpret_cast<char* (*)(void*, int, size_t*)>(sym("mor_spm_id_to_piece"));
    a.piece_size = reinterpret_cast<int (*)(void*)>(sym("mor_spm_piece_size"));
    a.bos_id = reinterpret_cast<int (*)(void*)>(sym("mor_spm_bos_id"));
    a.eos_id = reinterpret_cast<int (*)(void*)>(sym("mor_spm_eos_id"));
    a.unk_id = reinterpret_cast<int (*)(void*)>(sym("mor_spm_unk_id"));
    a.pad_id = reinterpret_cast<int (*)(void*)>(sym("mor_spm_pad_id"));
    return a;
  }();
  return api;
}

// Takes ownership of a malloc'd buffer from the shim.
std::string take(char* buf, const size_t& len, const char* what) {  // len by reference: filled by the call producing buf
  if (!buf) throw std::runtime_error(std::string("tokenizer: sentencepiece failed to ") + what);
  std::string s(buf, len);
  spm().free_buf(buf);
  return s;
}

// sentencepiece's tokenizer.model, as transformers' slow LlamaTokenizer uses it.
class SpmTokenizer : public detail::TokenizerImpl {
 public:
  std::shared_ptr<void> sp;  // a SentencePieceProcessor inside libmor_spm.so (see src/spm_shim/)
  int bos = 1, eos = 2, unk = 0, pad = -1;

  std::vector<int64_t> encode_text(const std::string& text) const override {
    std::vector<int64_t> ids;
    if (text.empty()) return ids;
    int n = 0;
    int* buf = spm().encode(sp.get(), text.data(), text.size(), &n);
    if (!buf) throw std::runtime_error("tokenizer: sentencepiece cannot encode the text");
    ids.assign(buf, buf + n);
    spm().free_buf(buf);
    return ids;
  }
  bool is_special(int64_t id) const override {
    return id == bos || id == eos || id == unk || (pad >= 0 && id == pad);
  }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    std::vector<int> keep;
    for (int64_t id : ids)
      if (!skip_special || !is_special(id)) keep.push_back(static_cast<int>(id));
    size_t len = 0;
    char* buf = spm().decode_ids(sp.get(), keep.data(), static_cast<int>(keep.size()), &len);
    return take(buf, len, "decode");
  }
  std::string decode_hf(const std::vector<int64_t>& ids) const override {
    // LlamaTokenizer.convert_tokens_to_string (transformers 4.3x, legacy): runs of ordinary pieces are
    // decoded by sentencepiece; each special token is appended as its text, preceded by a space unless
    // it is first or follows another special token.
    std::string out;
    std::vector<std::string> run;
    bool prev_special = false;
    auto flush = [&]() {
      std::vector<const char*> ptrs;
      for (const auto& r : run) ptrs.push_back(r.c_str());
      size_t len = 0;
      out += take(spm().decode_pieces(sp.get(), ptrs.data(), static_cast<int>(ptrs.size()), &len), len, "decode");
      run.clear();
    };
    for (size_t i = 0; i < ids.size(); ++i) {
      const int id = static_cast<int>(ids[i]);
      if (is_special(id)) {
        if (!prev_special && i != 0) out += " ";
        flush();
        out += id_to_piece(id);
        prev_special = true;
      } else {
        run.push_back(id_to_piece(id));
        prev_special = false;
      }
    }
    flush();
    return out;
  }
  int64_t vocab_size() const override { return spm().piece_size(sp.get()); }
  std::string id_to_piece(int64_t id) const override {
    size_t len = 0;
    return take(spm().id_to_piece(sp.get(), static_cast<int>(id), &len), len, "map an id to its piece");
  }
};

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(p.string() + ": bad JSON: " + e.what());
  }
}

// generation_config.json's eos_token_id: an int or a list of ints.
std::vector<int64_t> generation_eos(const fs::path& dir) {
  const fs::path p = dir / "generation_config.json";
  std::vector<int64_t> out;
  if (dir.empty() || !fs::exists(p)) return out;
  const nlohmann::json j = read_json(p);
  if (!j.is_object() || !j.contains("eos_token_id") || j["eos_token_id"].is_null()) return out;
  const auto& e = j["eos_token_id"];
  auto one = [&](const nlohmann::json& v) {
    if (!v.is_number_integer()) throw std::runtime_error(p.string() + ": eos_token_id must be an integer or a list of integers");
    out.push_back(v.get<int64_t>());
  };
  if (e.is_array()) for (const auto& v : e) one(v);
  else one(e);
  return out;
}

}  // namespace

const char* tokenizer_kind_name(TokenizerKind k) { return k == TokenizerKind::Bpe ? "bpe" : "spm"; }

TokenizerKind Tokenizer::kind_of(const std::string& path) {
  const fs::path p = path;
  const bool json = fs::is_directory(p) ? fs::exists(p / "tokenizer.json") : p.extension() == ".json";
  return json ? TokenizerKind::Bpe : TokenizerKind::SentencePiece;
}

Tokenizer Tokenizer::load(const std::string& path) {
  fs::path model = path;
  fs::path dir;
  if (fs::is_directory(model)) {
    dir = model;
    model = fs::exists(dir / "tokenizer.json") ? dir / "tokenizer.json" : dir / "tokenizer.model";
    if (!fs::exists(model)) throw std::runtime_error(path + ": missing tokenizer.model");
  } else {
    if (!fs::exists(model)) throw std::runtime_error(path + ": tokenizer model not found (missing tokenizer.model)");
    dir = model.parent_path();
  }
  Tokenizer t;
  if (model.extension() == ".json") {
    BpeSetup s = load_tokenizer_json(model.string(), dir.string());
    t.impl_ = s.impl;
    t.kind_ = TokenizerKind::Bpe;
    t.bos_id_ = s.bos;
    t.eos_id_ = s.eos;
    t.unk_id_ = s.unk;
    t.pad_id_ = s.pad;
    t.prefix_ = s.prefix;
    t.suffix_ = s.suffix;
    t.add_bos = s.add_bos;
    t.add_eos = s.add_eos;
    t.clean_up_tokenization_spaces = s.clean_up;
  } else {
    auto sp = std::make_shared<SpmTokenizer>();
    const Spm& api = spm();
    sp->sp = std::shared_ptr<void>(api.create(), api.destroy);
    if (char* err = api.load(sp->sp.get(), model.string().c_str())) {
      std::string e = take(err, std::strlen(err), "load");
      throw std::runtime_error(model.string() + ": cannot load sentencepiece model: " + e);
    }
    sp->bos = api.bos_id(sp->sp.get());
    sp->eos = api.eos_id(sp->sp.get());
    sp->unk = api.unk_id(sp->sp.get());
    sp->pad = api.pad_id(sp->sp.get());
    t.bos_id_ = sp->bos;
    t.eos_id_ = sp->eos;
    t.unk_id_ = sp->unk;
    t.pad_id_ = sp->pad;
    if (t.bos_id_ >= 0) t.prefix_ = {t.bos_id_};
    if (t.eos_id_ >= 0) t.suffix_ = {t.eos_id_};
    t.impl_ = sp;
    const fs::path cfg = dir / "tokenizer_config.json";
    if (!dir.empty() && fs::exists(cfg)) {
      const nlohmann::json j = read_json(cfg);
      if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) t.add_bos = j["add_bos_token"].get<bool>();
      if (j.contains("add_eos_token") && j["add_eos_token"].is_boolean()) t.add_eos = j["add_eos_token"].get<bool>();
    }
  }
  if (t.eos_id_ >= 0) t.eos_ids_.push_back(t.eos_id_);
  for (int64_t e : generation_eos(dir))
    if (std::find(t.eos_ids_.begin(), t.eos_ids_.end(), e) == t.eos_ids_.end()) t.eos_ids_.push_back(e);
  return t;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text) const { return encode(text, add_bos, add_eos); }

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool bos, bool eos) const {
  std::vector<int64_t> pieces = impl_->encode_text(text);
  std::vector<int64_t> ids;
  ids.reserve(pieces.size() + prefix_.size() + suffix_.size());
  if (bos) ids.insert(ids.end(), prefix_.begin(), prefix_.end());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (eos) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

bool Tokenizer::is_special(int64_t id) const { return impl_->is_special(id); }

void Tokenizer::check_ids(const std::vector<int64_t>& ids) const {
  const int64_t n = vocab_size();
  for (int64_t id : ids)
    if (id < 0 || id >= n)
      throw std::runtime_error("tokenizer: id " + std::to_string(id) + " outside the vocabulary (" + std::to_string(n) + ")");
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  check_ids(ids);
  return impl_->decode(ids, /*skip_special=*/true);
}

std::string Tokenizer::clean_up_tokenization(std::string s) {
  static const std::pair<const char*, const char*> kRep[] = {
      {" .", "."},    {" ?", "?"},     {" !", "!"},     {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRep) {  // sequential str.replace, as Python does
    const std::string f = from, t = to;
    std::string r;
    r.reserve(s.size());
    size_t pos = 0;
    for (size_t hit; (hit = s.find(f, pos)) != std::string::npos; pos = hit + f.size()) r.append(s, pos, hit - pos).append(t);
    r.append(s, pos, std::string::npos);
    s.swap(r);
  }
  return s;
}

std::string Tokenizer::decode_hf(const std::vector<int64_t>& ids) const {
  check_ids(ids);
  std::string out = impl_->decode_hf(ids);
  return clean_up_tokenization_spaces ? clean_up_tokenization(out) : out;
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }

std::string Tokenizer::id_to_piece(int64_t id) const {
  check_ids({id});
  return impl_->id_to_piece(id);
}

void Tokenizer::train(const std::string& corpus_file, const std::string& out_dir, int64_t vocab_size) {
  if (!fs::exists(corpus_file)) throw std::runtime_error(corpus_file + ": training corpus not found");
  fs::create_directories(out_dir);
  const std::string prefix = (fs::path(out_dir) / "tokenizer.tmp").string();
  // LLaMA's conventions: BPE, byte fallback, unk 0 / bos 1 / eos 2, no pad, digits split, identity
  // normalisation; deterministic (one thread, no sentence sampling).
  const std::string args = "--input=" + corpus_file + " --model_prefix=" + prefix + " --vocab_size=" +
                           std::to_string(vocab_size) +
                           " --model_type=bpe --byte_fallback=true --split_digits=true --unk_id=0 --bos_id=1 --eos_id=2"
                           " --pad_id=-1 --character_coverage=1.0 --normalization_rule_name=identity"
                           " --add_dummy_prefix=true --remove_extra_whitespaces=false --num_threads=1"
                           " --input_sentence_size=0 --shuffle_input_sentence=false --minloglevel=2 --hard_vocab_limit=false";
  const auto candidates = companion_paths("MOR_SPM_TRAIN", MOR_SPM_TRAIN, "mor-spm-train");
  std::string tool;
  for (const auto& c : candidates)
    if (fs::exists(c)) { tool = c; break; }
  if (tool.empty()) throw std::runtime_error("cannot find the mor-spm-train helper (build it, or set MOR_SPM_TRAIN)");
  const std::string log = prefix + ".log";
  const std::string cmd = "'" + tool + "' '" + args + "' >'" + log + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream in(log);
    std::string last, line;
    while (std::getline(in, line)) if (!line.empty()) last = line;
    throw std::runtime_error("sentencepiece training on " + corpus_file + " failed: " + last);
  }
  fs::remove(log);
  fs::rename(prefix + ".model", fs::path(out_dir) / "tokenizer.model");
  fs::remove(prefix + ".vocab");
}

// ---- prompt templates ----

PromptTemplate PromptTemplate::alpaca() {
  PromptTemplate t;
  t.prompt_input =
      "Below is an instruction that describes a task, paired with an input that provides further context. "
      "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}"
      "\n\n### Response:\n";
  t.prompt_no_input =
      "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
      "### Instruction:\n{instruction}\n\n### Response:\n";
  t.response_split = "### Response:";
  return t;
}

PromptTemplate PromptTemplate::from_name_or_file(const std::string& name) {
  if (name == "alpaca") return alpaca();
  if (name == "none") {
    PromptTemplate t;
    t.prompt_no_input = "{instruction}";
    t.prompt_input = "{instruction}\n{input}";
    t.response_split = "";
    return t;
  }
  if (!fs::exists(name))
    throw std::runtime_error("template '" + name + "': not alpaca, none, or an existing JSON file");
  std::ifstream in(name);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(name + ": bad JSON: " + e.what());
  }
  PromptTemplate t;
  for (const char* k : {"prompt_input", "prompt_no_input", "response_split"})
    if (!j.contains(k) || !j[k].is_string()) throw std::runtime_error(name + ": template needs a string \"" + k + "\"");
  t.prompt_input = j["prompt_input"].get<std::string>();
  t.prompt_no_input = j["prompt_no_input"].get<std::string>();
  t.response_split = j["response_split"].get<std::string>();
  return t;
}

static std::string fill(const std::string& tmpl, const std::string& instruction, const std::string& input) {
  // Python str.format with the two fields used by the templates.
  std::string out;
  for (size_t i = 0; i < tmpl.size();) {
    if (tmpl.compare(i, 13, "{instruction}") == 0) { out += instruction; i += 13; }
    else if (tmpl.compare(i, 7, "{input}") == 0) { out += input; i += 7; }
    else if (tmpl.compare(i, 2, "{{") == 0) { out += '{'; i += 2; }
    else if (tmpl.compare(i, 2, "}}") == 0) { out += '}'; i += 2; }
    else out += tmpl[i++];
  }
  return out;
}

std::string PromptTemplate::generate_prompt(const std::string& instruction, const std::string& input,
                                            const std::string& output) const {
  return (input.empty() ? fill(prompt_no_input, instruction, input) : fill(prompt_input, instruction, input)) + output;
}

static bool py_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string PromptTemplate::get_response(const std::string& text) const {
  std::string part = text;
  if (!response_split.empty()) {
    size_t a = text.find(response_split);
    if (a == std::string::npos) return "";
    a += response_split.size();
    size_t b = text.find(response_split, a);
    part = text.substr(a, b == std::string::npos ? std::string::npos : b - a);
  }
  size_t s = 0, e = part.size();
  while (s < e && py_space(part[s])) ++s;
  while (e > s && py_space(part[e - 1])) --e;
  return part.substr(s, e - s);
}

}  // namespace mor
