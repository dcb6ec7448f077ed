// Thrift compact protocol decoding of the Parquet footer and page headers (see parquet_thrift.h).
// Compact protocol: a field header byte holds the field-id delta (high nibble; 0 = an explicit
// zigzag i16 follows) and the type (low nibble); ints are zigzag varints; binary is a varint length
// and bytes; lists a size/type byte (size 15 = a varint size follows). Unknown fields are skipped,
// nesting is bounded, and every length is checked against the bytes that remain.
#include "parquet_thrift.h"

#include <functional>
#include <stdexcept>

namespace mor::parquet {

const char* physical_type_name(int t) {
  static const char* names[] = {"BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"};
  return t >= 0 && t < 8 ? names[t] : "unknown";
}
const char* codec_name(int c) {
  static const char* names[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
  return c >= 0 && c < 8 ? names[c] : "unknown";
}
const char* encoding_name(int e) {
  static const char* names[] = {"PLAIN", "GROUP_VAR_INT", "PLAIN_DICTIONARY", "RLE", "BIT_PACKED", "DELTA_BINARY_PACKED",
                                "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY", "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};
  return e >= 0 && e < 10 ? names[e] : "unknown";
}

namespace {

enum CType { kStop = 0, kTrue = 1, kFalse = 2, kByte = 3, kI16 = 4, kI32 = 5, kI64 = 6, kDouble = 7, kBinary = 8,
             kListT = 9, kSetT = 10, kMapT = 11, kStruct = 12 };

class Reader {
 public:
  Reader(const uint8_t* d, size_t n, size_t base, std::string file, std::string what)
      : d_(d), n_(n), base_(base), file_(std::move(file)), what_(std::move(what)) {}

  [[noreturn]] void fail(const std::string& msg) const {
    throw std::runtime_error(file_ + ": " + what_ + ": " + msg + " (byte " + std::to_string(base_ + pos_) + ")");
  }
  size_t pos() const { return pos_; }

  uint8_t byte() {
    if (pos_ >= n_) fail("truncated");
    return d_[pos_++];
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }
  int64_t zigzag() {
    uint64_t v = varint();
    return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
  }
  int32_t i32() {
    int64_t v = zigzag();
    if (v < INT32_MIN || v > INT32_MAX) fail("i32 value " + std::to_string(v) + " out of range");
    return static_cast<int32_t>(v);
  }
  std::string binary() {
    uint64_t len = varint();
    if (len > n_ - pos_) fail("string of " + std::to_string(len) + " bytes runs past the end");
    std::string s(reinterpret_cast<const char*>(d_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

  // Reads a struct, calling on_field(id, type) for each field; on_field reads the value or returns
  // false to have it skipped.
  void read_struct(const std::function<bool(int id, int type)>& on_field) {
    if (++depth_ > 32) fail("structures nested too deeply");
    int last = 0;
    for (;;) {
      uint8_t h = byte();
      int type = h & 0x0f;
      if (type == kStop) break;
      int delta = h >> 4;
      int id = delta ? last + delta : static_cast<int>(zigzag());
      last = id;
      if (type == kTrue || type == kFalse) {
        bool_value_ = type == kTrue;
      }
      if (!on_field(id, type)) skip(type);
    }
    --depth_;
  }
  bool bool_field() const { return bool_value_; }  // the value of the boolean field being visited

  // A list header: returns the size and sets *elem_type.
  size_t list_header(int* elem_type) {
    uint8_t h = byte();
    *elem_type = h & 0x0f;
    uint64_t size = h >> 4;
    if (size == 15) size = varint();
    if (size > n_ - pos_) fail("list of " + std::to_string(size) + " elements is longer than the bytes left");
    return static_cast<size_t>(size);
  }

  void expect(int type, int want, const char* field) {
    bool ok = type == want || (want == kTrue && type == kFalse);
    if (!ok) fail(std::string("field '") + field + "' has thrift type " + std::to_string(type) + ", expected " + std::to_string(want));
  }
  int32_t i32_field(int type, const char* field) {
    expect(type, kI32, field);
    return i32();
  }
  int64_t i64_field(int type, const char* field) {
    if (type != kI64 && type != kI32) expect(type, kI64, field);
    return zigzag();
  }

  void skip(int type) {
    if (++depth_ > 32) fail("structures nested too deeply");
    switch (type) {
      case kTrue: case kFalse: break;  // the value is in the field header
      case kByte: byte(); break;
      case kI16: case kI32: case kI64: varint(); break;
      case kDouble:
        if (n_ - pos_ < 8) fail("truncated");
        pos_ += 8;
        break;
      case kBinary: {
        uint64_t len = varint();
        if (len > n_ - pos_) fail("binary of " + std::to_string(len) + " bytes runs past the end");
        pos_ += static_cast<size_t>(len);
        break;
      }
      case kListT: case kSetT: {
        int et;
        size_t size = list_header(&et);
        for (size_t i = 0; i < size; ++i) {
          if (et == kTrue || et == kFalse) byte();  // booleans in lists take one byte each
          else skip(et);
        }
        break;
      }
      case kMapT: {
        uint64_t size = varint();
        if (size > n_ - pos_) fail("map of " + std::to_string(size) + " entries is longer than the bytes left");
        if (size) {
          uint8_t kv = byte();
          for (uint64_t i = 0; i < size; ++i) {
            for (int t : {kv >> 4, kv & 0x0f}) {
              if (t == kTrue || t == kFalse) byte();
              else skip(t);
            }
          }
        }
        break;
      }
      case kStruct: read_struct([](int, int) { return false; }); break;
      default: fail("unknown thrift type " + std::to_string(type));
    }
    --depth_;
  }

  template <class F>
  void list_of_structs(int type, const char* field, F each) {
    expect(type, kListT, field);
    int et;
    size_t size = list_header(&et);
    if (size && et != kStruct) fail(std::string("field '") + field + "' is not a list of structs");
    for (size_t i = 0; i < size; ++i) each();
  }
  std::vector<std::string> list_of_strings(int type, const char* field) {
    expect(type, kListT, field);
    int et;
    size_t size = list_header(&et);
    if (size && et != kBinary) fail(std::string("field '") + field + "' is not a list of strings");
    std::vector<std::string> out;
    for (size_t i = 0; i < size; ++i) out.push_back(binary());
    return out;
  }

 private:
  const uint8_t* d_;
  size_t n_, pos_ = 0, base_;
  std::string file_, what_;
  int depth_ = 0;
  bool bool_value_ = false;
};

void read_logical(Reader& r, SchemaElement& e) {
  r.read_struct([&](int id, int type) {
    if (type != kStruct) return false;
    e.logical = id;
    if (id == kLInteger) {
      r.read_struct([&](int iid, int itype) {
        if (iid == 1 && itype == kByte) e.int_bits = static_cast<int8_t>(r.byte());
        else if (iid == 1 && (itype == kI16 || itype == kI32)) e.int_bits = r.i32();  // some writers widen the i8
        else if (iid == 2 && (itype == kTrue || itype == kFalse)) e.int_signed = r.bool_field();
        else return false;
        return true;
      });
      return true;
    }
    return false;  // the other members' contents are not needed
  });
}

SchemaElement read_schema_element(Reader& r) {
  SchemaElement e;
  r.read_struct([&](int id, int type) {
    switch (id) {
      case 1: e.type = r.i32_field(type, "SchemaElement.type"); return true;
      case 2: e.type_length = r.i32_field(type, "SchemaElement.type_length"); return true;
      case 3: e.repetition = r.i32_field(type, "SchemaElement.repetition_type"); return true;
      case 4: r.expect(type, kBinary, "SchemaElement.name"); e.name = r.binary(); return true;
      case 5: e.num_children = r.i32_field(type, "SchemaElement.num_children"); return true;
      case 6: e.converted = r.i32_field(type, "SchemaElement.converted_type"); return true;
      case 10: r.expect(type, kStruct, "SchemaElement.logicalType"); read_logical(r, e); return true;
      default: return false;
    }
  });
  return e;
}

ColumnMeta read_column_meta(Reader& r) {
  ColumnMeta m;
  r.read_struct([&](int id, int type) {
    switch (id) {
      case 1: m.type = r.i32_field(type, "ColumnMetaData.type"); return true;
      case 3: m.path = r.list_of_strings(type, "ColumnMetaData.path_in_schema"); return true;
      case 4: m.codec = r.i32_field(type, "ColumnMetaData.codec"); return true;
      case 5: m.num_values = r.i64_field(type, "ColumnMetaData.num_values"); return true;
      case 7: m.total_compressed_size = r.i64_field(type, "ColumnMetaData.total_compressed_size"); return true;
      case 9: m.data_page_offset = r.i64_field(type, "ColumnMetaData.data_page_offset"); return true;
      case 11: m.dictionary_page_offset = r.i64_field(type, "ColumnMetaData.dictionary_page_offset"); return true;
      default: return false;
    }
  });
  return m;
}

RowGroup read_row_group(Reader& r) {
  RowGroup g;
  r.read_struct([&](int id, int type) {
    if (id == 1) {
      r.list_of_structs(type, "RowGroup.columns", [&] {
        ColumnChunk c;
        r.read_struct([&](int cid, int ctype) {
          if (cid == 1) {
            r.expect(ctype, kBinary, "ColumnChunk.file_path");
            c.file_path = r.binary();
          } else if (cid == 3) {
            r.expect(ctype, kStruct, "ColumnChunk.meta_data");
            c.meta = read_column_meta(r);
            c.has_meta = true;
          } else {
            return false;
          }
          return true;
        });
        g.columns.push_back(std::move(c));
      });
      return true;
    }
    if (id == 3) {
      g.num_rows = r.i64_field(type, "RowGroup.num_rows");
      return true;
    }
    return false;
  });
  return g;
}

}  // namespace

FileMetaData parse_file_metadata(const uint8_t* data, size_t size, size_t base, const std::string& file) {
  Reader r(data, size, base, file, "file metadata");
  FileMetaData md;
  r.read_struct([&](int id, int type) {
    switch (id) {
      case 2: r.list_of_structs(type, "FileMetaData.schema", [&] { md.schema.push_back(read_schema_element(r)); }); return true;
      case 3: md.num_rows = r.i64_field(type, "FileMetaData.num_rows"); return true;
      case 4: r.list_of_structs(type, "FileMetaData.row_groups", [&] { md.row_groups.push_back(read_row_group(r)); }); return true;
      case 5:
        r.list_of_structs(type, "FileMetaData.key_value_metadata", [&] {
          std::pair<std::string, std::string> kv;
          r.read_struct([&](int kid, int ktype) {
            if (kid != 1 && kid != 2) return false;
            r.expect(ktype, kBinary, "KeyValue");
            (kid == 1 ? kv.first : kv.second) = r.binary();
            return true;
          });
          md.key_value_metadata.push_back(std::move(kv));
        });
        return true;
      default: return false;
    }
  });
  return md;
}

size_t parse_page_header(const uint8_t* data, size_t avail, size_t base, const std::string& file,
                         const std::string& column, PageHeader* out) {
  Reader r(data, avail, base, file, "column '" + column + "': page header");
  PageHeader h;
  bool data_v1 = false, dict = false, v2 = false;
  r.read_struct([&](int id, int type) {
    switch (id) {
      case 1: h.type = r.i32_field(type, "PageHeader.type"); return true;
      case 2: h.uncompressed_size = r.i32_field(type, "PageHeader.uncompressed_page_size"); return true;
      case 3: h.compressed_size = r.i32_field(type, "PageHeader.compressed_page_size"); return true;
      case 5:
        r.expect(type, kStruct, "PageHeader.data_page_header");
        data_v1 = true;
        r.read_struct([&](int did, int dtype) {
          switch (did) {
            case 1: h.num_values = r.i32_field(dtype, "DataPageHeader.num_values"); return true;
            case 2: h.encoding = r.i32_field(dtype, "DataPageHeader.encoding"); return true;
            case 3: h.def_encoding = r.i32_field(dtype, "DataPageHeader.definition_level_encoding"); return true;
            case 4: h.rep_encoding = r.i32_field(dtype, "DataPageHeader.repetition_level_encoding"); return true;
            default: return false;
          }
        });
        return true;
      case 7:
        r.expect(type, kStruct, "PageHeader.dictionary_page_header");
        dict = true;
        r.read_struct([&](int did, int dtype) {
          if (did == 1) h.num_values = r.i32_field(dtype, "DictionaryPageHeader.num_values");
          else if (did == 2) h.encoding = r.i32_field(dtype, "DictionaryPageHeader.encoding");
          else return false;
          return true;
        });
        return true;
      case 8:
        r.expect(type, kStruct, "PageHeader.data_page_header_v2");
        v2 = true;
        r.read_struct([&](int did, int dtype) {
          switch (did) {
            case 1: h.num_values = r.i32_field(dtype, "DataPageHeaderV2.num_values"); return true;
            case 2: h.num_nulls = r.i32_field(dtype, "DataPageHeaderV2.num_nulls"); return true;
            case 3: h.num_rows = r.i32_field(dtype, "DataPageHeaderV2.num_rows"); return true;
            case 4: h.encoding = r.i32_field(dtype, "DataPageHeaderV2.encoding"); return true;
            case 5: h.def_length = r.i32_field(dtype, "DataPageHeaderV2.definition_levels_byte_length"); return true;
            case 6: h.rep_length = r.i32_field(dtype, "DataPageHeaderV2.repetition_levels_byte_length"); return true;
            case 7:
              r.expect(dtype, kTrue, "DataPageHeaderV2.is_compressed");
              h.is_compressed = r.bool_field();
              return true;
            default: return false;
          }
        });
        return true;
      default: return false;
    }
  });
  h.has_body = (h.type == kDataPage && data_v1) || (h.type == kDictionaryPage && dict) || (h.type == kDataPageV2 && v2);
  *out = h;
  return r.pos();
}

}  // namespace mor::parquet
