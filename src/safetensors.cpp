// safetensors reader/writer and sharded model weights (see safetensors.h). Format: 8-byte little-
// endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, ...,
// "__metadata__": {str: str}}, then the data section; offsets are relative to its start.
#include "safetensors.h"

#include "file_writer.h"
#include "safetensors_header.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace fs = std::filesystem;

namespace mor {

namespace {

struct DtypeEntry {
  const char* name;
  torch::Dtype dtype;
  size_t size;
};
const DtypeEntry kDtypes[] = {
    {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2},
    {"F64", torch::kFloat64, 8}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

}  // namespace

torch::Dtype safetensors_dtype(const std::string& name) {
  if (auto* d = find_dtype(name)) return d->dtype;
  throw std::runtime_error("unsupported safetensors dtype '" + name + "'");
}

std::string safetensors_dtype_name(torch::Dtype dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  throw std::runtime_error(std::string("cannot store dtype ") + c10::toString(dtype) + " in safetensors");
}

std::shared_ptr<SafeTensorsFile> SafeTensorsFile::open(const std::string& path) {
  std::shared_ptr<SafeTensorsFile> f(new SafeTensorsFile());
  f->self_ = f;
  f->path_ = path;
  auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (fstat(f->fd_, &st) != 0) fail(std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail("not a regular file");
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ < 8) fail("truncated safetensors file: " + std::to_string(f->size_) + " bytes, need at least 8");
  // Private writable mapping: pages are copy-on-write, so a tensor view written by mistake never
  // changes the file and never faults.
  void* p = mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, f->fd_, 0);
  if (p == MAP_FAILED) fail(std::string("cannot mmap: ") + std::strerror(errno));
  f->base_ = static_cast<uint8_t*>(p);

  const SafetensorsHeader h = parse_safetensors_header(f->base_, f->size_, path);
  f->data_start_ = h.data_start;
  for (const auto& [name, t] : h.tensors) f->tensors_[name] = TensorInfo{t.dtype, t.shape, t.begin, t.end};
  f->metadata_ = h.metadata;
  return f;
}

SafeTensorsFile::~SafeTensorsFile() {
  if (base_) munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

std::vector<std::string> SafeTensorsFile::keys() const {
  std::vector<std::string> k;
  for (const auto& [name, _] : tensors_) k.push_back(name);
  return k;
}

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw std::runtime_error(path_ + ": no tensor '" + name + "'");
  return it->second;
}

torch::Tensor SafeTensorsFile::get(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const torch::Dtype dtype = safetensors_dtype(ti.dtype);
  uint8_t* ptr = base_ + data_start_ + ti.begin;
  const size_t elem = find_dtype(ti.dtype)->size;
  if (ti.end == ti.begin) return torch::empty(ti.shape, torch::TensorOptions().dtype(dtype));
  if (reinterpret_cast<uintptr_t>(ptr) % elem != 0) {
    // Misaligned data (legal in the format): copy into an aligned tensor.
    torch::Tensor t = torch::empty(ti.shape, torch::TensorOptions().dtype(dtype));
    std::memcpy(t.data_ptr(), ptr, ti.end - ti.begin);
    return t;
  }
  std::shared_ptr<const SafeTensorsFile> keep = self_.lock();
  return torch::from_blob(ptr, ti.shape, [keep](void*) {}, torch::TensorOptions().dtype(dtype));
}

void SafeTensorsFile::release(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const long page = sysconf(_SC_PAGESIZE);
  uintptr_t b = reinterpret_cast<uintptr_t>(base_ + data_start_ + ti.begin);
  uintptr_t e = reinterpret_cast<uintptr_t>(base_ + data_start_ + ti.end);
  b = (b + page - 1) / page * page;  // only whole pages inside the tensor
  e = e / page * page;
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  std::set<std::string> seen;
  uint64_t offset = 0;
  // Data laid out in name order (the header's JSON object is name-sorted too), deterministic bytes.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors[a].first < tensors[b].first; });
  for (size_t i : order) {
    const auto& [name, t0] = tensors[i];
    if (name == "__metadata__" || !seen.insert(name).second)
      throw std::runtime_error(path + ": duplicate or reserved tensor name '" + name + "'");
    torch::Tensor t = t0.detach().to(torch::kCPU).contiguous();
    const uint64_t nbytes = t.numel() * t.element_size();
    h[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())},
               {"shape", t.sizes().vec()},
               {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(t);
  }
  std::string header = h.dump();
  while ((8 + header.size()) % 8 != 0) header += ' ';  // keep the data section 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    FileWriter out(tmp);
    out.expect_total(8 + header.size() + offset);
    uint64_t n = header.size();
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    out.write(len, 8);
    out.write(header.data(), header.size());
    for (const auto& t : data) out.write(t.data_ptr(), t.numel() * t.element_size());
    out.close();
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + ec.message());
  }
}

TensorStore TensorStore::open_file(const std::string& path) {
  TensorStore s;
  s.description_ = path;
  s.files_.push_back(SafeTensorsFile::open(path));
  for (const auto& k : s.files_[0]->keys()) s.where_[k] = 0;
  return s;
}

TensorStore TensorStore::open_model_dir(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) return open_file(single.string());
  if (!fs::exists(index)) {
    std::string extra;
    if (fs::exists(fs::path(dir) / "pytorch_model.bin") || fs::exists(fs::path(dir) / "pytorch_model.bin.index.json"))
      extra = " (only pytorch_model.bin found: convert it to safetensors)";
    throw std::runtime_error(dir + ": no model.safetensors or model.safetensors.index.json" + extra);
  }
  nlohmann::json j;
  {
    std::ifstream in(index);
    if (!in) throw std::runtime_error(index.string() + ": cannot read");
    try {
      j = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      throw std::runtime_error(index.string() + ": bad JSON: " + e.what());
    }
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw std::runtime_error(index.string() + ": no \"weight_map\" object");
  TensorStore s;
  s.description_ = index.string();
  std::map<std::string, size_t> file_idx;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) throw std::runtime_error(index.string() + ": weight_map['" + it.key() + "'] is not a string");
    const std::string shard = it.value().get<std::string>();
    if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
      throw std::runtime_error(index.string() + ": bad shard name '" + shard + "'");
    auto f = file_idx.find(shard);
    if (f == file_idx.end()) {
      s.files_.push_back(SafeTensorsFile::open((fs::path(dir) / shard).string()));
      f = file_idx.emplace(shard, s.files_.size() - 1).first;
    }
    if (!s.files_[f->second]->contains(it.key()))
      throw std::runtime_error(s.files_[f->second]->path() + ": tensor '" + it.key() + "' listed in " + index.string() +
                               " is missing");
    s.where_[it.key()] = f->second;
  }
  // Tensors in a shard but not in the index would be silently ignored: they count as unused.
  for (size_t i = 0; i < s.files_.size(); ++i)
    for (const auto& k : s.files_[i]->keys())
      if (!s.where_.count(k))
        throw std::runtime_error(s.files_[i]->path() + ": tensor '" + k + "' is not listed in " + index.string());
  return s;
}

std::vector<std::string> TensorStore::keys() const {
  std::vector<std::string> k;
  for (const auto& [name, _] : where_) k.push_back(name);
  return k;
}

const TensorInfo& TensorStore::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw std::runtime_error(description_ + ": no tensor '" + name + "'");
  return files_[it->second]->info(name);
}

torch::Tensor TensorStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw std::runtime_error(description_ + ": no tensor '" + name + "'");
  return files_[it->second]->get(name);
}

void TensorStore::release(const std::string& name) const {
  auto it = where_.find(name);
  if (it != where_.end()) files_[it->second]->release(name);
}

std::string TensorStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? description_ : files_[it->second]->path();
}

}  // namespace mor
