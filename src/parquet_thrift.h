// The Parquet file footer and page headers, decoded from the Thrift compact protocol by hand
// (parquet-format's parquet.thrift, only the fields mor needs; unknown fields are skipped). Every
// read is bounds-checked: a corrupt footer is a std::runtime_error naming the file, what was being
// read and the byte offset in the file, never a crash.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mor::parquet {

// parquet.thrift enums (the numbers on disk).
enum PhysicalType { kBoolean = 0, kInt32 = 1, kInt64 = 2, kInt96 = 3, kFloat = 4, kDouble = 5, kByteArray = 6, kFixedLenByteArray = 7 };
enum Repetition { kRequired = 0, kOptional = 1, kRepeated = 2 };
enum Codec { kUncompressed = 0, kSnappy = 1, kGzip = 2, kLzo = 3, kBrotli = 4, kLz4 = 5, kZstd = 6, kLz4Raw = 7 };
enum Encoding {
  kPlain = 0, kPlainDictionary = 2, kRle = 3, kBitPacked = 4, kDeltaBinaryPacked = 5, kDeltaLengthByteArray = 6,
  kDeltaByteArray = 7, kRleDictionary = 8, kByteStreamSplit = 9
};
enum PageType { kDataPage = 0, kIndexPage = 1, kDictionaryPage = 2, kDataPageV2 = 3 };
// ConvertedType values mor interprets.
enum Converted { kUtf8 = 0, kMap = 1, kMapKeyValue = 2, kList = 3, kEnum = 4, kDecimal = 5, kDate = 6,
                 kUint8 = 11, kUint16 = 12, kUint32 = 13, kUint64 = 14, kInt8 = 15, kInt16 = 16, kInt32C = 17,
                 kInt64C = 18, kJson = 19, kBson = 20 };
// LogicalType union members (the field id inside the LogicalType struct).
enum Logical { kLString = 1, kLMap = 2, kLList = 3, kLEnum = 4, kLDecimal = 5, kLDate = 6, kLTime = 7,
               kLTimestamp = 8, kLInteger = 10, kLNull = 11, kLJson = 12, kLBson = 13, kLUuid = 14, kLFloat16 = 15 };

const char* physical_type_name(int t);
const char* codec_name(int c);
const char* encoding_name(int e);

struct SchemaElement {
  int type = -1;          // PhysicalType; -1 for a group
  int type_length = 0;    // FIXED_LEN_BYTE_ARRAY width
  int repetition = -1;    // Repetition; -1 when absent (the root)
  std::string name;
  int num_children = 0;
  int converted = -1;     // ConvertedType or -1
  int logical = -1;       // Logical (the LogicalType union member) or -1
  int int_bits = 0;       // LogicalType INTEGER: bitWidth and isSigned
  bool int_signed = true;
};

struct ColumnMeta {
  int type = -1;
  std::vector<std::string> path;
  int codec = 0;
  int64_t num_values = 0;
  int64_t total_compressed_size = 0;
  int64_t data_page_offset = -1;
  int64_t dictionary_page_offset = -1;
};

struct ColumnChunk {
  std::string file_path;  // set when the chunk lives in another file (not supported)
  bool has_meta = false;
  ColumnMeta meta;
};

struct RowGroup {
  std::vector<ColumnChunk> columns;
  int64_t num_rows = 0;
};

struct FileMetaData {
  std::vector<SchemaElement> schema;  // depth-first, the root first
  int64_t num_rows = 0;
  std::vector<RowGroup> row_groups;
  std::vector<std::pair<std::string, std::string>> key_value_metadata;
};

struct PageHeader {
  int type = -1;
  int32_t uncompressed_size = 0, compressed_size = 0;
  // DATA_PAGE / DATA_PAGE_V2 / DICTIONARY_PAGE, whichever `type` says.
  int32_t num_values = 0;
  int encoding = 0;
  int def_encoding = kRle, rep_encoding = kRle;  // v1
  int32_t num_nulls = 0, num_rows = 0;           // v2
  int32_t def_length = 0, rep_length = 0;        // v2: level bytes before the (maybe compressed) values
  bool is_compressed = true;                     // v2
  bool has_body = false;                         // the header struct that `type` needs was present
};

// `what` prefixes errors after the file name ("file metadata", "column 'x' page header").
// `base` is the byte offset of data[0] in the file, for the messages.
FileMetaData parse_file_metadata(const uint8_t* data, size_t size, size_t base, const std::string& file);
// Parses one page header at data[0..avail); returns its encoded length.
size_t parse_page_header(const uint8_t* data, size_t avail, size_t base, const std::string& file,
                         const std::string& column, PageHeader* out);

}  // namespace mor::parquet
