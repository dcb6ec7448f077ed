// Parquet page contents: decompression (SNAPPY, GZIP, ZSTD) and the value/level encodings
// (PLAIN, RLE/bit-packed hybrid, dictionary indices, DELTA_BINARY_PACKED, DELTA_LENGTH_BYTE_ARRAY,
// DELTA_BYTE_ARRAY, BYTE_STREAM_SPLIT). Every read is checked against the page's bytes; errors go
// through PageContext::fail, which names the file, the column and the page's byte offset.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mor::parquet {

struct PageContext {
  std::string file, column;
  size_t page_offset = 0;  // the page header's byte offset in the file
  [[noreturn]] void fail(const std::string& msg) const;
};

// How a leaf column's values become JSON.
enum class ValueKind { Bool, Int32, UInt32, Int64, UInt64, Float, Double, String, Binary };

struct LeafType {
  int physical = 0;     // PhysicalType
  int type_length = 0;  // FIXED_LEN_BYTE_ARRAY width
  ValueKind kind = ValueKind::Int32;
};

// Decompresses `n` bytes with `codec` to exactly `expected` bytes.
std::string decompress(int codec, const uint8_t* src, size_t n, size_t expected, const PageContext& ctx);

// RLE/bit-packed hybrid, `count` values of `bit_width` bits (no length prefix), appended to `out`.
void decode_rle_hybrid(const uint8_t* d, size_t n, int bit_width, size_t count, std::vector<uint32_t>& out,
                       const PageContext& ctx);

// Decodes `count` values of `encoding` from d[0..n), appended to `out` as JSON.
void decode_values(int encoding, const LeafType& t, const uint8_t* d, size_t n, size_t count,
                   std::vector<nlohmann::ordered_json>& out, const PageContext& ctx);

}  // namespace mor::parquet
