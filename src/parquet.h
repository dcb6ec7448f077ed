// A Parquet reader written from the published format (no Parquet library): the Thrift footer
// (parquet_thrift.h), data pages v1 and v2 and dictionary pages; PLAIN, RLE/bit-packed levels,
// RLE_DICTIONARY/PLAIN_DICTIONARY, RLE booleans, DELTA_BINARY_PACKED, DELTA_LENGTH_BYTE_ARRAY,
// DELTA_BYTE_ARRAY and BYTE_STREAM_SPLIT; UNCOMPRESSED, SNAPPY, GZIP and ZSTD pages; nullable and
// nested columns (structs, 3-level and legacy 2-level lists). Rows come back as JSON exactly as the
// Arrow reader (arrow.h) gives them, and the schema as arrow::Field trees, so both feed one path.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "arrow.h"

namespace mor::parquet {

// The schema (top-level fields as Arrow types: Utf8 for STRING/UTF8/ENUM/JSON byte arrays, Binary
// for other byte arrays, Int8..UInt64 from the INT logical/converted types, Float32/Float64, Bool,
// List, Struct), the file's key_value_metadata in `schema.metadata` (the "huggingface" entry holds
// the `datasets` features), and the rows of all row groups in order: strings as JSON strings,
// binary as JSON binary values, nulls as null, lists as arrays, structs as objects.
struct Table {
  arrow::Schema schema;
  std::vector<nlohmann::ordered_json> rows;
  size_t row_groups = 0;
};

// Parses a whole file held in memory; `name` (the file path) prefixes every error, which also names
// the column and the byte offset where that applies.
Table read_parquet(const std::string& bytes, const std::string& name);
Table read_parquet_file(const std::string& path);

}  // namespace mor::parquet
