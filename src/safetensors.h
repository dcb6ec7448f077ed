// safetensors reader (memory-mapped, zero-copy views, every offset checked against the file size)
// and writer (metadata map, temp file + rename), plus the Hugging Face sharded layout
// (model.safetensors.index.json -> weight_map). Errors name the file and the tensor.
#pragma once
#include "torch_api.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mor {

struct TensorInfo {
  std::string dtype;           // safetensors name: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

class SafeTensorsFile {
 public:
  // Maps the file and validates its header; throws std::runtime_error naming the file on any defect
  // (too short, header length past the end, bad JSON, unsupported dtype, offsets past the end, ...).
  static std::shared_ptr<SafeTensorsFile> open(const std::string& path);
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> keys() const;  // sorted
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;  // throws naming the tensor when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor over the mapped bytes (zero-copy when aligned, else a copy). The view keeps the
  // mapping alive; it is copy-on-write, so writing into it never touches the file.
  torch::Tensor get(const std::string& name) const;
  // Drops the tensor's pages from memory after it was converted (keeps peak RSS low while loading).
  void release(const std::string& name) const;

 private:
  SafeTensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  size_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<SafeTensorsFile> self_;
};

// torch dtype <-> safetensors dtype name; throws on anything unsupported.
torch::Dtype safetensors_dtype(const std::string& name);
std::string safetensors_dtype_name(torch::Dtype dtype);

// Writes `tensors` (any device/layout; written contiguous from CPU) with `metadata` under the
// "__metadata__" key, to `path + ".tmp"` then renamed over `path`. Names must be unique.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The weights of a model directory: model.safetensors, or the shards listed by
// model.safetensors.index.json (every listed shard must exist and hold the tensors mapped to it).
class TensorStore {
 public:
  static TensorStore open_model_dir(const std::string& dir);
  static TensorStore open_file(const std::string& path);
  std::vector<std::string> keys() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;
  torch::Tensor get(const std::string& name) const;
  void release(const std::string& name) const;
  std::string file_of(const std::string& name) const;
  const std::string& description() const { return description_; }  // for error messages

 private:
  std::vector<std::shared_ptr<SafeTensorsFile>> files_;
  std::map<std::string, size_t> where_;
  std::string description_;
};

}  // namespace mor
