// A small reader and writer for the Arrow IPC *stream* format, the `.arrow` files that Hugging Face
// `datasets` writes with save_to_disk. No Arrow library: the flatbuffers Schema/RecordBatch messages
// are parsed by hand with every offset and length checked, so a corrupt file is an error naming the
// file, the column and the byte offset, never a crash. Values come back as JSON (one object per row).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace mor::arrow {

// The column types supported (those `datasets` writes for text data).
enum class Type {
  Null, Bool, Int8, Int16, Int32, Int64, UInt8, UInt16, UInt32, UInt64, Float32, Float64,
  Utf8, LargeUtf8, Binary, LargeBinary, List, LargeList, Struct
};
const char* type_name(Type t);

struct Field {
  std::string name;
  Type type = Type::Null;
  bool nullable = true;
  std::vector<Field> children;  // List/LargeList: one ("item"); Struct: its fields
};

struct Schema {
  std::vector<Field> fields;
  std::vector<std::pair<std::string, std::string>> metadata;  // schema custom_metadata, in order
  // The value of metadata key `key`, or "" when absent.
  std::string metadata_value(const std::string& key) const;
};

// A whole stream: the schema and the rows of all its record batches, in order. Each row is an
// object with one member per top-level field. Strings come back as JSON strings (not checked for
// UTF-8), binary as JSON binary values, null slots as null, list as arrays, struct as objects.
struct Table {
  Schema schema;
  std::vector<nlohmann::ordered_json> rows;
};

// Parses a stream held in memory; `name` (the file path) prefixes every error. Also accepts the
// Arrow IPC *file* format ("ARROW1" magic), whose body is a stream.
Table read_stream(const std::string& bytes, const std::string& name);
Table read_stream_file(const std::string& path);

// Serialises rows as one schema message, one record batch and the end-of-stream marker. Every row
// must hold a value of the field's type (or null) for each field; throws naming column and row.
std::string write_stream(const Schema& schema, const std::vector<nlohmann::ordered_json>& rows);

}  // namespace mor::arrow
