// Arrow IPC stream reader/writer (see arrow.h). Format references: the Arrow columnar format and IPC
// chapters (arrow.apache.org/docs/format/Columnar.html) and format/Schema.fbs + Message.fbs for the
// flatbuffers tables. A stream is a sequence of messages
//     0xFFFFFFFF | int32 metadata length | flatbuffer Message (padded to 8) | body (bodyLength bytes)
// ended by 0xFFFFFFFF 0x00000000. The first message is the Schema; each RecordBatch message lists one
// FieldNode (length, null_count) per field in depth-first order and the (offset, length) in its body
// of each buffer. All integers are little-endian; this code assumes a little-endian host (x86, ARM).
#include "arrow.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace mor::arrow {

using json = nlohmann::ordered_json;

const char* type_name(Type t) {
  static const char* names[] = {"null",   "bool",    "int8",      "int16",  "int32",        "int64",
                                "uint8",  "uint16",  "uint32",    "uint64", "float32",      "float64",
                                "utf8",   "large_utf8", "binary", "large_binary", "list", "large_list",
                                "struct"};
  return names[static_cast<int>(t)];
}

std::string Schema::metadata_value(const std::string& key) const {
  for (const auto& kv : metadata)
    if (kv.first == key) return kv.second;
  return "";
}

namespace {

template <class T>
T load(const uint8_t* p) {  // unaligned little-endian load; the caller has checked the bounds
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// ----------------------------------------------------------------------------------------------
// Reading flatbuffers. A table starts with an int32 soffset to its vtable (vtable = table - soffset);
// the vtable holds uint16 vtable size, uint16 table size, then one uint16 per field: the field's
// offset inside the table, 0 when absent. References (strings, vectors, tables) are uint32 offsets
// relative to where they are stored; vectors and strings start with a uint32 element count.

struct Fb {  // one message's metadata bytes; `base` is their offset in the file (for messages)
  const uint8_t* p;
  size_t n;
  size_t base;
  const std::string& name;

  [[noreturn]] void bad(size_t at, const std::string& what) const {
    throw std::runtime_error(name + ": corrupt message metadata at byte " + std::to_string(base + at) +
                             ": " + what);
  }
  void need(size_t at, size_t len, const char* what) const {
    if (at > n || len > n - at) bad(at, std::string(what) + " runs past the end of the metadata");
  }
  template <class T>
  T get(size_t at, const char* what) const {
    need(at, sizeof(T), what);
    return load<T>(p + at);
  }
  // Follows the uint32 reference stored at `at`.
  size_t deref(size_t at, const char* what) const {
    uint32_t off = get<uint32_t>(at, what);
    if (off == 0 || off >= n - at) bad(at, std::string(what) + " reference points outside the metadata");
    return at + off;
  }
};

struct FbTable {
  const Fb* fb;
  size_t pos;
  size_t vt;
  uint16_t vt_size;

  FbTable(const Fb& f, size_t at) : fb(&f), pos(at) {
    int64_t vtable = static_cast<int64_t>(at) - f.get<int32_t>(at, "table");
    if (vtable < 0 || static_cast<size_t>(vtable) >= f.n) f.bad(at, "table's vtable lies outside the metadata");
    vt = static_cast<size_t>(vtable);
    vt_size = f.get<uint16_t>(vt, "vtable");
    if (vt_size < 4 || vt_size % 2) f.bad(vt, "vtable size " + std::to_string(vt_size) + " is invalid");
    f.need(vt, vt_size, "vtable");
  }
  size_t field(int id) const {  // position of field `id`, 0 when absent
    size_t entry = 4 + 2 * static_cast<size_t>(id);
    if (entry + 2 > vt_size) return 0;
    uint16_t off = fb->get<uint16_t>(vt + entry, "vtable entry");
    return off ? pos + off : 0;
  }
  template <class T>
  T scalar(int id, T def) const {
    size_t at = field(id);
    return at ? fb->get<T>(at, "table field") : def;
  }
  size_t ref(int id) const {  // target of a reference field, 0 when absent
    size_t at = field(id);
    return at ? fb->deref(at, "table field") : 0;
  }
  std::string str(int id) const {
    size_t at = ref(id);
    if (!at) return "";
    uint32_t len = fb->get<uint32_t>(at, "string");
    fb->need(at + 4, len, "string");
    return std::string(reinterpret_cast<const char*>(fb->p + at + 4), len);
  }
  // A vector field: element count and position of the first element (0, 0 when absent).
  std::pair<size_t, size_t> vec(int id, size_t elem_size) const {
    size_t at = ref(id);
    if (!at) return {0, 0};
    size_t count = fb->get<uint32_t>(at, "vector");
    fb->need(at + 4, count * elem_size, "vector");
    return {count, at + 4};
  }
  FbTable table_at_vector(size_t elem_pos) const { return FbTable(*fb, fb->deref(elem_pos, "vector element")); }
};

// Message header kinds (Message.fbs MessageHeader) and Type union tags (Schema.fbs Type).
enum : uint8_t { kSchema = 1, kDictionaryBatch = 2, kRecordBatch = 3 };
enum : uint8_t {
  kNull = 1, kInt = 2, kFloatingPoint = 3, kBinary = 4, kUtf8 = 5, kBool = 6, kList = 12, kStruct = 13,
  kLargeBinary = 19, kLargeUtf8 = 20, kLargeList = 21
};

const char* union_type_name(uint8_t t) {
  static const char* names[] = {"NONE",     "Null",      "Int",          "FloatingPoint", "Binary",
                                "Utf8",     "Bool",      "Decimal",      "Date",          "Time",
                                "Timestamp", "Interval", "List",         "Struct",        "Union",
                                "FixedSizeBinary", "FixedSizeList", "Map", "Duration",   "LargeBinary",
                                "LargeUtf8", "LargeList", "RunEndEncoded", "BinaryView", "Utf8View",
                                "ListView", "LargeListView"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

// `budget` caps the fields parsed: corrupt metadata may make tables refer to themselves.
Field parse_field(const FbTable& t, const std::string& parent, int depth, int& budget) {
  const Fb& fb = *t.fb;
  if (depth > 64) fb.bad(t.pos, "fields nested more than 64 deep");
  if (--budget < 0) fb.bad(t.pos, "more than 100000 fields");
  Field f;
  f.name = t.str(0);
  f.nullable = t.scalar<uint8_t>(1, 0) != 0;
  std::string path = parent.empty() ? f.name : parent + "." + f.name;
  uint8_t tag = t.scalar<uint8_t>(2, 0);
  auto unsupported = [&](const std::string& what) -> Type {
    throw std::runtime_error(fb.name + ": column '" + path + "' has Arrow type " + what +
                             ", which mor cannot read (metadata byte " + std::to_string(fb.base + t.pos) + ")");
  };
  if (t.field(4)) unsupported("dictionary-encoded");
  size_t type_pos = t.ref(3);
  switch (tag) {
    case kNull: f.type = Type::Null; break;
    case kBool: f.type = Type::Bool; break;
    case kUtf8: f.type = Type::Utf8; break;
    case kLargeUtf8: f.type = Type::LargeUtf8; break;
    case kBinary: f.type = Type::Binary; break;
    case kLargeBinary: f.type = Type::LargeBinary; break;
    case kList: f.type = Type::List; break;
    case kLargeList: f.type = Type::LargeList; break;
    case kStruct: f.type = Type::Struct; break;
    case kInt: {
      if (!type_pos) fb.bad(t.pos, "column '" + path + "': Int type without its table");
      FbTable it(fb, type_pos);
      int32_t bits = it.scalar<int32_t>(0, 0);
      bool is_signed = it.scalar<uint8_t>(1, 0) != 0;
      switch (bits) {
        case 8: f.type = is_signed ? Type::Int8 : Type::UInt8; break;
        case 16: f.type = is_signed ? Type::Int16 : Type::UInt16; break;
        case 32: f.type = is_signed ? Type::Int32 : Type::UInt32; break;
        case 64: f.type = is_signed ? Type::Int64 : Type::UInt64; break;
        default: unsupported("Int with bitWidth " + std::to_string(bits));
      }
      break;
    }
    case kFloatingPoint: {
      if (!type_pos) fb.bad(t.pos, "column '" + path + "': FloatingPoint type without its table");
      int16_t precision = FbTable(fb, type_pos).scalar<int16_t>(0, 0);
      if (precision == 1) f.type = Type::Float32;
      else if (precision == 2) f.type = Type::Float64;
      else unsupported(precision == 0 ? "float16" : "FloatingPoint precision " + std::to_string(precision));
      break;
    }
    default: unsupported(union_type_name(tag));
  }
  auto [count, first] = t.vec(5, 4);
  for (size_t i = 0; i < count; ++i)
    f.children.push_back(parse_field(t.table_at_vector(first + 4 * i), path, depth + 1, budget));
  bool is_list = f.type == Type::List || f.type == Type::LargeList;
  if (is_list && f.children.size() != 1)
    fb.bad(t.pos, "list column '" + path + "' has " + std::to_string(f.children.size()) + " child fields, not 1");
  if (!is_list && f.type != Type::Struct && !f.children.empty())
    fb.bad(t.pos, "column '" + path + "' of type " + type_name(f.type) + " has child fields");
  return f;
}

Schema parse_schema(const FbTable& s) {
  Schema schema;
  if (s.scalar<int16_t>(0, 0) != 0) s.fb->bad(s.pos, "big-endian data is not supported");
  auto [count, first] = s.vec(1, 4);
  int budget = 100000;
  for (size_t i = 0; i < count; ++i) schema.fields.push_back(parse_field(s.table_at_vector(first + 4 * i), "", 0, budget));
  auto [mcount, mfirst] = s.vec(2, 4);
  for (size_t i = 0; i < mcount; ++i) {
    FbTable kv = s.table_at_vector(mfirst + 4 * i);
    schema.metadata.emplace_back(kv.str(0), kv.str(1));
  }
  return schema;
}

// ----------------------------------------------------------------------------------------------
// Reading one record batch body. Fields consume FieldNodes and buffers in depth-first order:
// null: none; bool/int/float: validity, values; utf8/binary: validity, offsets, data;
// list: validity, offsets, then the child; struct: validity, then each child.

struct Buf {
  const uint8_t* p = nullptr;
  size_t len = 0;
  size_t file_off = 0;  // where the buffer starts in the file
};

class BatchReader {
 public:
  BatchReader(const std::string& name, const uint8_t* body, size_t body_len, size_t body_off,
              std::vector<std::pair<int64_t, int64_t>> nodes, std::vector<std::pair<int64_t, int64_t>> buffers)
      : name_(name), body_(body), body_len_(body_len), body_off_(body_off), nodes_(std::move(nodes)),
        buffers_(std::move(buffers)) {
    // A corrupt length could ask for billions of values; values of other types are only allocated
    // once their buffers proved big enough, but null columns (and structs of them) have no buffers,
    // so the values one batch may produce are also capped relative to its body size.
    budget_ = 64 * static_cast<int64_t>(body_len) + (int64_t{1} << 22);
  }

  // Decodes the first `needed` values of the column `f` (its node may declare more).
  std::vector<json> column(const Field& f, const std::string& path, int64_t needed) {
    if (next_node_ >= nodes_.size()) fail(path, body_off_, "record batch has fewer field nodes than the schema needs");
    auto [length, null_count] = nodes_[next_node_++];
    if (length < 0 || null_count < 0 || null_count > length)
      fail(path, body_off_, "field node has length " + std::to_string(length) + " and null count " + std::to_string(null_count));
    if (needed > length)
      fail(path, body_off_, "field node has " + std::to_string(length) + " values but " + std::to_string(needed) + " are needed");
    budget_ -= needed;
    if (budget_ < 0) fail(path, body_off_, "record batch declares more values than its body can hold");
    size_t n = static_cast<size_t>(needed);
    std::vector<json> out;  // sized below, once the buffers are known to hold n values
    if (f.type == Type::Null) return std::vector<json>(n);  // no buffers

    Buf validity = next_buffer(path);
    if (null_count > 0 && validity.len < (n + 7) / 8)
      fail(path, validity.file_off, "validity bitmap of " + std::to_string(validity.len) + " bytes is too short for " + std::to_string(n) + " values");
    auto valid = [&](size_t i) { return null_count == 0 || ((validity.p[i >> 3] >> (i & 7)) & 1); };

    switch (f.type) {
      case Type::Bool: {
        Buf data = need_bytes(next_buffer(path), (n + 7) / 8, path, "values");
        out.resize(n);
        for (size_t i = 0; i < n; ++i)
          if (valid(i)) out[i] = ((data.p[i >> 3] >> (i & 7)) & 1) != 0;
        break;
      }
      case Type::Int8: fixed<int8_t>(out, n, valid, path); break;
      case Type::Int16: fixed<int16_t>(out, n, valid, path); break;
      case Type::Int32: fixed<int32_t>(out, n, valid, path); break;
      case Type::Int64: fixed<int64_t>(out, n, valid, path); break;
      case Type::UInt8: fixed<uint8_t>(out, n, valid, path); break;
      case Type::UInt16: fixed<uint16_t>(out, n, valid, path); break;
      case Type::UInt32: fixed<uint32_t>(out, n, valid, path); break;
      case Type::UInt64: fixed<uint64_t>(out, n, valid, path); break;
      case Type::Float32: fixed<float>(out, n, valid, path); break;
      case Type::Float64: fixed<double>(out, n, valid, path); break;
      case Type::Utf8: case Type::Binary: case Type::LargeUtf8: case Type::LargeBinary: {
        bool large = f.type == Type::LargeUtf8 || f.type == Type::LargeBinary;
        Buf offsets = next_buffer(path);
        Buf data = next_buffer(path);
        std::vector<int64_t> off = read_offsets(offsets, n, large, static_cast<int64_t>(data.len), path, "data buffer");
        bool text = f.type == Type::Utf8 || f.type == Type::LargeUtf8;
        out.resize(n);
        for (size_t i = 0; i < n; ++i) {
          if (!valid(i)) continue;
          const uint8_t* s = data.p + off[i];
          size_t len = static_cast<size_t>(off[i + 1] - off[i]);
          if (text) out[i] = std::string(reinterpret_cast<const char*>(s), len);
          else out[i] = json::binary(std::vector<uint8_t>(s, s + len));
        }
        break;
      }
      case Type::List: case Type::LargeList: {
        Buf offsets = next_buffer(path);
        // The child's length is only known after reading its node, so bound offsets later.
        std::vector<int64_t> off = read_offsets(offsets, n, f.type == Type::LargeList, INT64_MAX, path, "child");
        std::vector<json> child = column(f.children[0], path + "." + f.children[0].name, n ? off[n] : 0);
        out.resize(n);
        for (size_t i = 0; i < n; ++i) {
          if (!valid(i)) continue;
          json arr = json::array();
          for (int64_t j = off[i]; j < off[i + 1]; ++j) arr.push_back(std::move(child[j]));
          out[i] = std::move(arr);
        }
        break;
      }
      case Type::Struct: {
        out.resize(n);
        for (size_t i = 0; i < n; ++i)
          if (valid(i)) out[i] = json::object();
        for (const Field& c : f.children) {
          std::vector<json> vals = column(c, path + "." + c.name, needed);
          for (size_t i = 0; i < n; ++i)
            if (valid(i)) out[i][c.name] = std::move(vals[i]);
        }
        break;
      }
      case Type::Null: break;
    }
    return out;
  }

  void finish() {
    if (next_node_ != nodes_.size() || next_buffer_ != buffers_.size())
      fail("", body_off_, "record batch has " + std::to_string(nodes_.size()) + " field nodes and " +
                              std::to_string(buffers_.size()) + " buffers but the schema uses " +
                              std::to_string(next_node_) + " and " + std::to_string(next_buffer_));
  }

 private:
  [[noreturn]] void fail(const std::string& path, size_t at, const std::string& what) const {
    throw std::runtime_error(name_ + ": " + (path.empty() ? "" : "column '" + path + "': ") + what +
                             " (byte " + std::to_string(at) + ")");
  }

  Buf next_buffer(const std::string& path) {
    if (next_buffer_ >= buffers_.size()) fail(path, body_off_, "record batch has fewer buffers than the schema needs");
    auto [offset, length] = buffers_[next_buffer_++];
    if (offset < 0 || length < 0 || static_cast<uint64_t>(offset) > body_len_ ||
        static_cast<uint64_t>(length) > body_len_ - static_cast<uint64_t>(offset))
      fail(path, body_off_, "buffer at body offset " + std::to_string(offset) + " of length " +
                                std::to_string(length) + " lies outside the " + std::to_string(body_len_) + "-byte body");
    return Buf{body_ + offset, static_cast<size_t>(length), body_off_ + static_cast<size_t>(offset)};
  }

  Buf need_bytes(Buf b, size_t bytes, const std::string& path, const char* what) {
    if (b.len < bytes)
      fail(path, b.file_off, std::string(what) + " buffer holds " + std::to_string(b.len) + " bytes, " +
                                 std::to_string(bytes) + " needed");
    return b;
  }

  template <class T, class Valid>
  void fixed(std::vector<json>& out, size_t n, const Valid& valid, const std::string& path) {
    Buf data = need_bytes(next_buffer(path), n * sizeof(T), path, "values");
    out.resize(n);
    for (size_t i = 0; i < n; ++i)
      if (valid(i)) out[i] = load<T>(data.p + i * sizeof(T));
  }

  // n+1 offsets, each >= 0, non-decreasing and at most `limit`.
  std::vector<int64_t> read_offsets(Buf b, size_t n, bool large, int64_t limit, const std::string& path, const char* what) {
    std::vector<int64_t> off(n + 1, 0);
    if (n == 0) return off;  // an empty column may have an empty offsets buffer
    size_t w = large ? 8 : 4;
    need_bytes(b, (n + 1) * w, path, "offsets");
    for (size_t i = 0; i <= n; ++i) {
      off[i] = large ? load<int64_t>(b.p + i * w) : load<int32_t>(b.p + i * w);
      if (off[i] < 0 || (i > 0 && off[i] < off[i - 1]) || off[i] > limit)
        fail(path, b.file_off + i * w,
             "offset " + std::to_string(off[i]) + " at index " + std::to_string(i) +
                 (off[i] < 0 ? " is negative" : i > 0 && off[i] < off[i - 1] ? " is less than the one before it (offsets must not decrease)"
                                                                             : std::string(" lies past the end of the ") + what +
                                                                                   " (" + std::to_string(limit) + ")"));
    }
    return off;
  }

  const std::string& name_;
  const uint8_t* body_;
  size_t body_len_, body_off_;
  std::vector<std::pair<int64_t, int64_t>> nodes_, buffers_;
  size_t next_node_ = 0, next_buffer_ = 0;
  int64_t budget_;
};

}  // namespace

Table read_stream(const std::string& bytes, const std::string& name) {
  const uint8_t* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t size = bytes.size();
  Table table;
  bool have_schema = false;
  size_t pos = 0;
  if (size >= 8 && std::memcmp(data, "ARROW1", 6) == 0) pos = 8;  // IPC file format: a stream follows
  for (;;) {
    if (size - pos < 8)
      throw std::runtime_error(name + ": truncated: the stream ends at byte " + std::to_string(size) +
                               " without the end-of-stream marker");
    uint32_t marker = load<uint32_t>(data + pos);
    if (marker != 0xFFFFFFFFu) {
      std::ostringstream hex;
      hex << std::hex << marker;
      throw std::runtime_error(name + ": not an Arrow IPC stream: expected the continuation marker 0xFFFFFFFF at byte " +
                               std::to_string(pos) + ", found 0x" + hex.str());
    }
    int32_t meta_len = load<int32_t>(data + pos + 4);
    if (meta_len == 0) break;  // end of stream
    if (meta_len < 0 || static_cast<size_t>(meta_len) > size - pos - 8)
      throw std::runtime_error(name + ": truncated or corrupt: message at byte " + std::to_string(pos) + " declares " +
                               std::to_string(meta_len) + " bytes of metadata but " + std::to_string(size - pos - 8) + " remain");
    Fb fb{data + pos + 8, static_cast<size_t>(meta_len), pos + 8, name};
    FbTable msg(fb, fb.deref(0, "root table"));
    int16_t version = msg.scalar<int16_t>(0, 0);
    if (version < 3) fb.bad(msg.pos, "metadata version " + std::to_string(version) + " is older than V4 and not supported");
    uint8_t kind = msg.scalar<uint8_t>(1, 0);
    size_t header_pos = msg.ref(2);
    int64_t body_len = msg.scalar<int64_t>(3, 0);
    size_t body_off = pos + 8 + static_cast<size_t>(meta_len);
    if (body_len < 0 || static_cast<uint64_t>(body_len) > size - body_off)
      throw std::runtime_error(name + ": truncated or corrupt: message body at byte " + std::to_string(body_off) + " of " +
                               std::to_string(body_len) + " bytes runs past the end of the file (" + std::to_string(size) + " bytes)");
    if (!header_pos) fb.bad(msg.pos, "message without a header");
    FbTable header(fb, header_pos);
    if (kind == kSchema) {
      if (have_schema) fb.bad(msg.pos, "a second schema message");
      table.schema = parse_schema(header);
      have_schema = true;
    } else if (kind == kRecordBatch) {
      if (!have_schema) fb.bad(msg.pos, "record batch before the schema");
      int64_t length = header.scalar<int64_t>(0, 0);
      if (header.field(3)) fb.bad(header.pos, "compressed record batches are not supported");
      auto read_pairs = [&](int id) {
        auto [count, first] = header.vec(id, 16);
        std::vector<std::pair<int64_t, int64_t>> v(count);
        for (size_t i = 0; i < count; ++i)
          v[i] = {load<int64_t>(fb.p + first + 16 * i), load<int64_t>(fb.p + first + 16 * i + 8)};
        return v;
      };
      BatchReader batch(name, data + body_off, static_cast<size_t>(body_len), body_off, read_pairs(1), read_pairs(2));
      // Any column but null needs at least a bit per row, so a file of N bytes holds at most 8N rows
      // (plus some slack for all-null tables, whose rows take no space).
      if (length < 0 || static_cast<uint64_t>(length) + table.rows.size() > 8 * size + (size_t{1} << 20))
        fb.bad(header.pos, "record batch declares " + std::to_string(length) + " rows, more than the file can hold");
      std::vector<std::vector<json>> cols;
      for (const Field& f : table.schema.fields) {
        cols.push_back(batch.column(f, f.name, length));
      }
      batch.finish();
      size_t first_row = table.rows.size();
      table.rows.resize(first_row + static_cast<size_t>(length), json::object());
      for (size_t c = 0; c < cols.size(); ++c)
        for (size_t i = 0; i < static_cast<size_t>(length); ++i)
          table.rows[first_row + i][table.schema.fields[c].name] = std::move(cols[c][i]);
    } else if (kind == kDictionaryBatch) {
      fb.bad(msg.pos, "dictionary batches (dictionary-encoded columns) are not supported");
    } else {
      fb.bad(msg.pos, "unexpected message type " + std::to_string(kind));
    }
    pos = body_off + static_cast<size_t>(body_len);
  }
  if (!have_schema) throw std::runtime_error(name + ": the stream holds no schema message");
  return table;
}

Table read_stream_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::string bytes(static_cast<size_t>(f.tellg()), '\0');
  f.seekg(0);
  f.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error(path + ": read error");
  return read_stream(bytes, path);
}

// ------------------------------------------------------------------------------------------------
// Writing. Flatbuffers are written front to back: a table first, then what it refers to, so every
// uint32 reference points forward as the format requires; references are patched once the target
// is placed. Each table is preceded by its vtable (soffset > 0).

namespace {

struct FbOut {
  std::string b;
  void pad(size_t a) { while (b.size() % a) b.push_back('\0'); }
  template <class T>
  size_t put(T v) {
    size_t at = b.size();
    b.append(reinterpret_cast<const char*>(&v), sizeof v);
    return at;
  }
  void patch(size_t slot, size_t target) {
    uint32_t off = static_cast<uint32_t>(target - slot);
    std::memcpy(&b[slot], &off, 4);
  }
  size_t string(const std::string& s) {
    pad(4);
    size_t at = put<uint32_t>(static_cast<uint32_t>(s.size()));
    b += s;
    b.push_back('\0');
    return at;
  }
  // A vector of `n` references to patch; returns its position and the slot positions.
  std::pair<size_t, std::vector<size_t>> ref_vector(size_t n) {
    pad(4);
    size_t at = put<uint32_t>(static_cast<uint32_t>(n));
    std::vector<size_t> slots;
    for (size_t i = 0; i < n; ++i) slots.push_back(put<uint32_t>(0));
    return {at, slots};
  }
  // A vector of 16-byte structs (two int64), elements 8-aligned.
  size_t pair_vector(const std::vector<std::pair<int64_t, int64_t>>& v) {
    pad(4);
    if (b.size() % 8 == 0) put<uint32_t>(0);
    size_t at = put<uint32_t>(static_cast<uint32_t>(v.size()));
    for (auto& [x, y] : v) put(x), put(y);
    return at;
  }

  struct TableField {
    int id;
    int size;  // 1, 2, 4, 8; references are 4 and patched later
    int64_t value;
  };
  // Writes a vtable and its table; returns the table position and, per field id, its position.
  std::pair<size_t, std::map<int, size_t>> table(std::vector<TableField> fields) {
    std::stable_sort(fields.begin(), fields.end(), [](auto& a, auto& c) { return a.size > c.size; });
    int max_id = -1;
    size_t end = 4;  // after the soffset
    std::map<int, size_t> at;
    for (auto& f : fields) {
      end = (end + f.size - 1) / f.size * f.size;
      at[f.id] = end;
      end += f.size;
      max_id = std::max(max_id, f.id);
    }
    pad(2);
    size_t vt = put<uint16_t>(static_cast<uint16_t>(4 + 2 * (max_id + 1)));
    put<uint16_t>(static_cast<uint16_t>(end));
    for (int id = 0; id <= max_id; ++id) put<uint16_t>(static_cast<uint16_t>(at.count(id) ? at[id] : 0));
    pad(8);
    size_t pos = put<int32_t>(static_cast<int32_t>(b.size() - vt));
    b.resize(pos + end, '\0');
    for (auto& f : fields) {
      std::memcpy(&b[pos + at[f.id]], &f.value, f.size);  // little-endian: low bytes first
      at[f.id] += pos;
    }
    return {pos, at};
  }
};

uint8_t union_tag(Type t) {
  switch (t) {
    case Type::Null: return kNull;
    case Type::Bool: return kBool;
    case Type::Utf8: return kUtf8;
    case Type::LargeUtf8: return kLargeUtf8;
    case Type::Binary: return kBinary;
    case Type::LargeBinary: return kLargeBinary;
    case Type::List: return kList;
    case Type::LargeList: return kLargeList;
    case Type::Struct: return kStruct;
    case Type::Float32: case Type::Float64: return kFloatingPoint;
    default: return kInt;
  }
}

int int_bits(Type t) {
  switch (t) {
    case Type::Int8: case Type::UInt8: return 8;
    case Type::Int16: case Type::UInt16: return 16;
    case Type::Int32: case Type::UInt32: return 32;
    default: return 64;
  }
}

size_t write_field(FbOut& o, const Field& f) {
  auto [pos, at] = o.table({{0, 4, 0}, {1, 1, f.nullable}, {2, 1, union_tag(f.type)}, {3, 4, 0}, {5, 4, 0}});
  o.patch(at[0], o.string(f.name));
  size_t type_pos;
  if (union_tag(f.type) == kInt) {
    bool is_signed = f.type == Type::Int8 || f.type == Type::Int16 || f.type == Type::Int32 || f.type == Type::Int64;
    type_pos = o.table({{0, 4, int_bits(f.type)}, {1, 1, is_signed}}).first;
  } else if (union_tag(f.type) == kFloatingPoint) {
    type_pos = o.table({{0, 2, f.type == Type::Float32 ? 1 : 2}}).first;
  } else {
    type_pos = o.table({}).first;
  }
  o.patch(at[3], type_pos);
  auto [vec, slots] = o.ref_vector(f.children.size());
  o.patch(at[5], vec);
  for (size_t i = 0; i < f.children.size(); ++i) o.patch(slots[i], write_field(o, f.children[i]));
  return pos;
}

// Frames a flatbuffer Message (header built by `header`) and its body as one stream message.
template <class Header>
std::string message(uint8_t kind, int64_t body_len, const Header& header) {
  FbOut o;
  size_t root = o.put<uint32_t>(0);
  auto [pos, at] = o.table({{0, 2, 4 /* V5 */}, {1, 1, kind}, {2, 4, 0}, {3, 8, body_len}});
  o.patch(root, pos);
  o.patch(at[2], header(o));
  o.pad(8);
  std::string out;
  uint32_t marker = 0xFFFFFFFFu, len = static_cast<uint32_t>(o.b.size());
  out.append(reinterpret_cast<const char*>(&marker), 4);
  out.append(reinterpret_cast<const char*>(&len), 4);
  return out + o.b;
}

class BatchWriter {
 public:
  std::string body;
  std::vector<std::pair<int64_t, int64_t>> nodes, buffers;

  void column(const Field& f, const std::vector<const json*>& vals, const std::string& path) {
    size_t n = vals.size();
    int64_t nulls = 0;
    std::string validity((n + 7) / 8, '\0');
    for (size_t i = 0; i < n; ++i) {
      if (!vals[i] || vals[i]->is_null()) ++nulls;
      else validity[i >> 3] |= static_cast<char>(1 << (i & 7));
    }
    nodes.emplace_back(static_cast<int64_t>(n), f.type == Type::Null ? static_cast<int64_t>(n) : nulls);
    auto is_set = [&](size_t i) { return vals[i] && !vals[i]->is_null(); };
    if (f.type == Type::Null) {
      for (size_t i = 0; i < n; ++i)
        if (is_set(i)) wrong(path, i, "null", *vals[i]);
      return;
    }
    buffer(nulls ? validity : std::string());
    switch (f.type) {
      case Type::Bool: {
        std::string bits((n + 7) / 8, '\0');
        for (size_t i = 0; i < n; ++i) {
          if (!is_set(i)) continue;
          if (!vals[i]->is_boolean()) wrong(path, i, "bool", *vals[i]);
          if (vals[i]->get<bool>()) bits[i >> 3] |= static_cast<char>(1 << (i & 7));
        }
        buffer(bits);
        break;
      }
      case Type::Int8: ints<int8_t>(vals, path); break;
      case Type::Int16: ints<int16_t>(vals, path); break;
      case Type::Int32: ints<int32_t>(vals, path); break;
      case Type::Int64: ints<int64_t>(vals, path); break;
      case Type::UInt8: ints<uint8_t>(vals, path); break;
      case Type::UInt16: ints<uint16_t>(vals, path); break;
      case Type::UInt32: ints<uint32_t>(vals, path); break;
      case Type::UInt64: ints<uint64_t>(vals, path); break;
      case Type::Float32: case Type::Float64: {
        std::string data;
        for (size_t i = 0; i < n; ++i) {
          double v = 0;
          if (is_set(i)) {
            if (!vals[i]->is_number()) wrong(path, i, "number", *vals[i]);
            v = vals[i]->get<double>();
          }
          if (f.type == Type::Float32) append(data, static_cast<float>(v));
          else append(data, v);
        }
        buffer(data);
        break;
      }
      case Type::Utf8: case Type::LargeUtf8: case Type::Binary: case Type::LargeBinary: {
        bool large = f.type == Type::LargeUtf8 || f.type == Type::LargeBinary;
        bool text = f.type == Type::Utf8 || f.type == Type::LargeUtf8;
        std::string offsets, data;
        offset(offsets, 0, large);
        for (size_t i = 0; i < n; ++i) {
          if (is_set(i)) {
            if (vals[i]->is_string()) data += vals[i]->get_ref<const std::string&>();
            else if (!text && vals[i]->is_binary()) data.append(vals[i]->get_binary().begin(), vals[i]->get_binary().end());
            else wrong(path, i, text ? "string" : "binary", *vals[i]);
          }
          offset(offsets, data.size(), large, path);
        }
        buffer(offsets);
        buffer(data);
        break;
      }
      case Type::List: case Type::LargeList: {
        bool large = f.type == Type::LargeList;
        std::string offsets;
        std::vector<const json*> items;
        offset(offsets, 0, large);
        for (size_t i = 0; i < n; ++i) {
          if (is_set(i)) {
            if (!vals[i]->is_array()) wrong(path, i, "list", *vals[i]);
            for (const json& v : *vals[i]) items.push_back(&v);
          }
          offset(offsets, items.size(), large, path);
        }
        buffer(offsets);
        column(f.children[0], items, path + "." + f.children[0].name);
        break;
      }
      case Type::Struct: {
        for (size_t i = 0; i < n; ++i)
          if (is_set(i) && !vals[i]->is_object()) wrong(path, i, "struct (object)", *vals[i]);
        for (const Field& c : f.children) {
          std::vector<const json*> sub(n, nullptr);
          for (size_t i = 0; i < n; ++i)
            if (is_set(i) && vals[i]->contains(c.name)) sub[i] = &(*vals[i])[c.name];
          column(c, sub, path + "." + c.name);
        }
        break;
      }
      case Type::Null: break;
    }
  }

 private:
  template <class T>
  static void append(std::string& s, T v) { s.append(reinterpret_cast<const char*>(&v), sizeof v); }

  static void offset(std::string& s, size_t v, bool large, const std::string& path = "") {
    if (large) return append(s, static_cast<int64_t>(v));
    if (v > INT32_MAX) throw std::runtime_error("column '" + path + "' holds more than 2 GiB; use a large type");
    append(s, static_cast<int32_t>(v));
  }

  void buffer(const std::string& data) {
    buffers.emplace_back(static_cast<int64_t>(body.size()), static_cast<int64_t>(data.size()));
    body += data;
    body.resize((body.size() + 7) / 8 * 8, '\0');
  }

  [[noreturn]] static void wrong(const std::string& path, size_t i, const char* want, const json& got) {
    throw std::runtime_error("column '" + path + "' value " + std::to_string(i) + ": expected " + want +
                             ", got " + got.type_name());
  }

  template <class T>
  void ints(const std::vector<const json*>& vals, const std::string& path) {
    std::string data;
    for (size_t i = 0; i < vals.size(); ++i) {
      T v = 0;
      if (vals[i] && !vals[i]->is_null()) {
        const json& j = *vals[i];
        bool ok = j.is_number_unsigned()  ? j.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
                  : j.is_number_integer() ? j.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                                                (j.get<int64_t>() < 0 || static_cast<uint64_t>(j.get<int64_t>()) <=
                                                                             static_cast<uint64_t>(std::numeric_limits<T>::max()))
                                          : false;
        if (!ok) wrong(path, i, "integer in range", j);
        v = j.is_number_unsigned() ? static_cast<T>(j.get<uint64_t>()) : static_cast<T>(j.get<int64_t>());
      }
      append(data, v);
    }
    buffer(data);
  }
};

}  // namespace

std::string write_stream(const Schema& schema, const std::vector<json>& rows) {
  std::string out = message(kSchema, 0, [&](FbOut& o) {
    auto [pos, at] = o.table({{0, 2, 0}, {1, 4, 0}, {2, 4, 0}});
    auto [fields_vec, slots] = o.ref_vector(schema.fields.size());
    o.patch(at[1], fields_vec);
    for (size_t i = 0; i < schema.fields.size(); ++i) o.patch(slots[i], write_field(o, schema.fields[i]));
    auto [meta_vec, mslots] = o.ref_vector(schema.metadata.size());
    o.patch(at[2], meta_vec);
    for (size_t i = 0; i < schema.metadata.size(); ++i) {
      auto [kv, kat] = o.table({{0, 4, 0}, {1, 4, 0}});
      o.patch(mslots[i], kv);
      o.patch(kat[0], o.string(schema.metadata[i].first));
      o.patch(kat[1], o.string(schema.metadata[i].second));
    }
    return pos;
  });

  BatchWriter w;
  for (const Field& f : schema.fields) {
    std::vector<const json*> vals(rows.size(), nullptr);
    for (size_t i = 0; i < rows.size(); ++i) {
      if (!rows[i].is_object()) throw std::runtime_error("row " + std::to_string(i) + " is not an object");
      auto it = rows[i].find(f.name);
      if (it != rows[i].end()) vals[i] = &*it;
    }
    w.column(f, vals, f.name);
  }
  out += message(kRecordBatch, static_cast<int64_t>(w.body.size()), [&](FbOut& o) {
    auto [pos, at] = o.table({{0, 8, static_cast<int64_t>(rows.size())}, {1, 4, 0}, {2, 4, 0}});
    o.patch(at[1], o.pair_vector(w.nodes));
    o.patch(at[2], o.pair_vector(w.buffers));
    return pos;
  });
  out += w.body;
  uint32_t eos[2] = {0xFFFFFFFFu, 0};
  out.append(reinterpret_cast<const char*>(eos), 8);
  return out;
}

}  // namespace mor::arrow
