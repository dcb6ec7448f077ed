// The safetensors header without LibTorch (see safetensors_header.h).
#include "safetensors_header.h"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

namespace mor {

size_t safetensors_dtype_size(const std::string& name) {
  static const std::pair<const char*, size_t> kSizes[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8},
                                                          {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U8", 1},  {"BOOL", 1}};
  for (const auto& [n, sz] : kSizes)
    if (name == n) return sz;
  return 0;
}

namespace {
// The data section is the tensors back to back, as the safetensors library requires: byte ranges
// sorted by offset may neither overlap (two tensors aliasing the same bytes) nor leave gaps, and the
// last one ends where the file does.
void check_layout(const SafetensorsHeader& h, uint64_t data_size, const std::string& path_) {
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> ranges;
  for (const auto& [name, ti] : h.tensors) ranges.push_back({{ti.begin, ti.end}, name});
  std::sort(ranges.begin(), ranges.end());
  uint64_t at = 0;
  std::string prev;
  for (const auto& [r, name] : ranges) {  // overlaps first: an aliased tensor also leaves a gap elsewhere
    if (r.first < at)
      throw std::runtime_error(path_ + ": tensor '" + name + "': data [" + std::to_string(r.first) + ", " +
                               std::to_string(r.second) + ") overlaps tensor '" + prev + "' (ends at " + std::to_string(at) + ")");
    if (r.second > at) at = r.second, prev = name;
  }
  at = 0;
  prev.clear();
  for (const auto& [r, name] : ranges) {
    if (r.first > at)
      throw std::runtime_error(path_ + ": tensor '" + name + "': data starts at " + std::to_string(r.first) + ", leaving a gap of " +
                               std::to_string(r.first - at) + " bytes after " + (prev.empty() ? "the header" : "tensor '" + prev + "'"));
    at = r.second;
    prev = name;
  }
  if (at != data_size)
    throw std::runtime_error(path_ + ": " + std::to_string(data_size - at) + " bytes after the last tensor are not part of any tensor");
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* base, size_t size, const std::string& path) {
  auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };
  SafetensorsHeader out;
  if (size < 8) fail("truncated safetensors file: " + std::to_string(size) + " bytes, need at least 8");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  if (n > size - 8)
    fail("header length " + std::to_string(n) + " is past the end of the file (" + std::to_string(size) +
         " bytes); truncated or not a safetensors file");
  out.data_start = 8 + n;
  const uint64_t data_size = size - out.data_start;
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(reinterpret_cast<const char*>(base + 8), reinterpret_cast<const char*>(base + 8 + n));
  } catch (const std::exception& e) {
    fail(std::string("bad JSON header: ") + e.what());
  }
  if (!h.is_object()) fail("bad header: not a JSON object");
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("bad header: __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("bad header: __metadata__ value '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { fail("tensor '" + name + "': " + what); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad("header entry needs dtype, shape and data_offsets");
    if (!v["dtype"].is_string()) bad("dtype is not a string");
    HeaderTensor ti;
    ti.dtype = v["dtype"].get<std::string>();
    const size_t elem = safetensors_dtype_size(ti.dtype);
    if (!elem) bad("unsupported dtype '" + ti.dtype + "' (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)");
    if (!v["shape"].is_array()) bad("shape is not a list");
    uint64_t numel = 1;
    for (const auto& s : v["shape"]) {
      if (!s.is_number_unsigned()) bad("shape entries must be non-negative integers");
      const uint64_t dim = s.get<uint64_t>();
      // Checked: a shape whose element count overflows must not wrap to a size that happens to match.
      if (dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel) || numel > (uint64_t(1) << 56))
        bad("shape " + v["shape"].dump() + " is too large");
      ti.shape.push_back(int64_t(dim));
    }
    if (ti.shape.size() > 16) bad("shape has " + std::to_string(ti.shape.size()) + " dimensions (at most 16)");
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad("data_offsets must be two non-negative integers");
    ti.begin = off[0].get<uint64_t>();
    ti.end = off[1].get<uint64_t>();
    if (ti.end < ti.begin) bad("data_offsets end before begin");
    if (ti.end - ti.begin != numel * elem)
      bad("data_offsets span " + std::to_string(ti.end - ti.begin) + " bytes but shape and dtype need " +
          std::to_string(numel * elem));
    if (ti.end > data_size)
      bad("data [" + std::to_string(ti.begin) + ", " + std::to_string(ti.end) + ") is past the end of the data (" +
          std::to_string(data_size) + " bytes); truncated file");
    out.tensors[name] = std::move(ti);
  }
  check_layout(out, data_size, path);
  return out;
}

}  // namespace mor
