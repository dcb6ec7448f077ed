// The safetensors header alone, without LibTorch: the 8-byte length, the JSON {name: {dtype, shape,
// data_offsets}, "__metadata__": {...}} and every check on it (sizes against the file, checked element
// counts, byte ranges back to back with no overlap, gap or trailing bytes). SafeTensorsFile uses it; the
// sanitizer fuzz build (tests/fuzz_parsers_asan.cpp) runs it without torch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mor {

// One header entry (the same fields as TensorInfo of safetensors.h, which carries LibTorch).
struct HeaderTensor {
  std::string dtype;           // safetensors name: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

struct SafetensorsHeader {
  std::map<std::string, HeaderTensor> tensors;
  std::map<std::string, std::string> metadata;
  size_t data_start = 0;  // 8 + header length
};

// Bytes per element of a safetensors dtype name; 0 when unsupported.
size_t safetensors_dtype_size(const std::string& name);

// Parses and validates the header of a file of `size` bytes at `base`; throws std::runtime_error
// starting with `path` on any defect.
SafetensorsHeader parse_safetensors_header(const uint8_t* base, size_t size, const std::string& path);

}  // namespace mor
