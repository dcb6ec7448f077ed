// A C shim over libsentencepiece, built as its own module (libmor_spm.so) and loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by tokenizer.cpp. Why: Debian's libsentencepiece carries a
// private copy of protobuf-lite 3.14 whose symbols clash with the libprotobuf 3.21 that LibTorch
// needs; linked into one process, one of the two binds to the other's symbols (a crash at load, or
// "compiled against version 3.14.0" when the model is parsed). Loaded deep-bound and local, the
// shim's sentencepiece uses its own protobuf and nothing leaks into the global namespace.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using sentencepiece::SentencePieceProcessor;

namespace {
char* dup(const std::string& s, size_t* len) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = 0;
  if (len) *len = s.size();
  return out;
}
SentencePieceProcessor* sp(void* p) { return static_cast<SentencePieceProcessor*>(p); }
}  // namespace

extern "C" {

void* mor_spm_new() { return new SentencePieceProcessor(); }
void mor_spm_delete(void* p) { delete sp(p); }
void mor_spm_free(void* buf) { std::free(buf); }

// Returns nullptr on success, else a malloc'd error message.
char* mor_spm_load(void* p, const char* path) {
  auto st = sp(p)->Load(path);
  return st.ok() ? nullptr : dup(st.ToString(), nullptr);
}

// malloc'd ids; *n their count; nullptr (and *n = -1) on failure.
int* mor_spm_encode(void* p, const char* text, size_t len, int* n) {
  std::vector<int> ids;
  auto st = sp(p)->Encode(std::string(text, len), &ids);
  if (!st.ok()) { *n = -1; return nullptr; }
  *n = static_cast<int>(ids.size());
  int* out = static_cast<int*>(std::malloc(sizeof(int) * (ids.size() + 1)));
  if (!ids.empty()) std::memcpy(out, ids.data(), sizeof(int) * ids.size());
  return out;
}

char* mor_spm_decode_ids(void* p, const int* ids, int n, size_t* len) {
  std::string out;
  auto st = sp(p)->Decode(std::vector<int>(ids, ids + n), &out);
  return st.ok() ? dup(out, len) : nullptr;
}

// pieces: n NUL-terminated strings.
char* mor_spm_decode_pieces(void* p, const char* const* pieces, int n, size_t* len) {
  std::vector<std::string> v(pieces, pieces + n);
  std::string out;
  auto st = sp(p)->Decode(v, &out);
  return st.ok() ? dup(out, len) : nullptr;
}

char* mor_spm_id_to_piece(void* p, int id, size_t* len) { return dup(sp(p)->IdToPiece(id), len); }
int mor_spm_piece_size(void* p) { return sp(p)->GetPieceSize(); }
int mor_spm_bos_id(void* p) { return sp(p)->bos_id(); }
int mor_spm_eos_id(void* p) { return sp(p)->eos_id(); }
int mor_spm_unk_id(void* p) { return sp(p)->unk_id(); }
int mor_spm_pad_id(void* p) { return sp(p)->pad_id(); }

}  // extern "C"
