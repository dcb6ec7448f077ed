// The Parquet reader (see parquet.h): footer -> schema tree -> per row group, every leaf column's
// pages decoded into definition/repetition levels and values -> rows assembled from the levels
// (Dremel record assembly: a null or empty list at a node takes one level from each leaf under it).
#include "parquet.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "parquet_pages.h"
#include "parquet_thrift.h"

namespace mor::parquet {

using json = nlohmann::ordered_json;

namespace {

constexpr int kMaxDepth = 32;
constexpr int64_t kMaxPageValues = int64_t{1} << 24;  // writers cut pages at ~20k rows or 1 MiB

struct Node {
  std::string name, path;  // path: dotted names from the root's child down
  int repetition = kRequired;
  int def_level = 0, rep_level = 0;  // counting this node
  std::vector<Node> children;
  bool leaf = false;
  LeafType type;
  size_t leaf_begin = 0, leaf_end = 0;  // leaves under this node, in file order
  bool is_list = false;           // LIST-annotated group: children[0] is the repeated field
  bool list_three_level = false;  // the element is children[0]'s only child (else children[0] itself)
  arrow::Field field;                   // the Arrow type this node reads as
};

struct Leaf {
  const Node* node;
  int max_def = 0, max_rep = 0;
  std::vector<int16_t> def, rep;
  std::vector<json> values;
  size_t li = 0, vi = 0;
};

[[noreturn]] void schema_fail(const std::string& file, const std::string& msg) {
  throw std::runtime_error(file + ": schema: " + msg);
}

bool is_annotated(const SchemaElement& e, int converted, int logical) { return e.converted == converted || e.logical == logical; }

// The value kind and Arrow type of a primitive leaf, or an error naming the column.
void leaf_type(const SchemaElement& e, const std::string& path, const std::string& file, Node& n) {
  using arrow::Type;
  auto unsupported = [&](const std::string& what) {
    throw std::runtime_error(file + ": column '" + path + "' has parquet type " + physical_type_name(e.type) +
                             (what.empty() ? "" : " (" + what + ")") + ", which mor cannot read");
  };
  n.leaf = true;
  n.type.physical = e.type;
  n.type.type_length = e.type_length;
  if (e.converted == kDecimal || e.logical == kLDecimal) unsupported("DECIMAL");
  if (e.converted == kDate || e.logical == kLDate) unsupported("DATE");
  if ((e.converted >= 7 && e.converted <= 10) || e.logical == kLTime || e.logical == kLTimestamp) unsupported("TIME/TIMESTAMP");
  if (e.converted == 21) unsupported("INTERVAL");
  if (e.logical == kLUuid) unsupported("UUID");
  if (e.logical == kLFloat16) unsupported("FLOAT16");
  switch (e.type) {
    case kBoolean: n.type.kind = ValueKind::Bool, n.field.type = Type::Bool; break;
    case kInt32: case kInt64: {
      int bits = e.type == kInt32 ? 32 : 64;
      bool sign = true;
      if (e.logical == kLInteger) {
        bits = e.int_bits, sign = e.int_signed;
      } else if (e.converted >= kUint8 && e.converted <= kInt64C) {
        static const int conv_bits[] = {8, 16, 32, 64, 8, 16, 32, 64};
        bits = conv_bits[e.converted - kUint8];
        sign = e.converted >= kInt8;
      }
      if (bits != 8 && bits != 16 && bits != 32 && bits != 64) unsupported("INTEGER of " + std::to_string(bits) + " bits");
      if (bits == 64 && e.type == kInt32) unsupported("INTEGER(64) stored as INT32");
      static const Type s[] = {Type::Int8, Type::Int16, Type::Int32, Type::Int64};
      static const Type u[] = {Type::UInt8, Type::UInt16, Type::UInt32, Type::UInt64};
      int k = bits == 8 ? 0 : bits == 16 ? 1 : bits == 32 ? 2 : 3;
      n.field.type = sign ? s[k] : u[k];
      n.type.kind = e.type == kInt32 ? (sign ? ValueKind::Int32 : ValueKind::UInt32) : (sign ? ValueKind::Int64 : ValueKind::UInt64);
      break;
    }
    case kFloat: n.type.kind = ValueKind::Float, n.field.type = Type::Float32; break;
    case kDouble: n.type.kind = ValueKind::Double, n.field.type = Type::Float64; break;
    case kByteArray: case kFixedLenByteArray: {
      if (e.type == kFixedLenByteArray && (e.type_length < 0 || e.type_length > (1 << 24)))
        unsupported("FIXED_LEN_BYTE_ARRAY of length " + std::to_string(e.type_length));
      bool text = is_annotated(e, kUtf8, kLString) || is_annotated(e, kEnum, kLEnum) || is_annotated(e, kJson, kLJson);
      n.type.kind = text ? ValueKind::String : ValueKind::Binary;
      n.field.type = text ? Type::Utf8 : Type::Binary;
      break;
    }
    default: unsupported(e.type == kInt96 ? "the legacy INT96 timestamp" : "");
  }
}

arrow::Field list_field(const std::string& name, arrow::Field item, bool nullable) {
  arrow::Field f;
  f.name = name;
  f.type = arrow::Type::List;
  f.nullable = nullable;
  item.name = "item";
  f.children = {std::move(item)};
  return f;
}

// Builds the node for schema[*i] and its subtree, advancing *i.
Node build_node(const std::vector<SchemaElement>& schema, size_t* i, const std::string& parent_path, int def, int rep,
                int depth, size_t* leaves, const std::string& file) {
  if (depth > kMaxDepth) schema_fail(file, "nested more than " + std::to_string(kMaxDepth) + " levels deep");
  if (*i >= schema.size()) schema_fail(file, "the schema ends before all children of '" + parent_path + "' are listed");
  const SchemaElement& e = schema[(*i)++];
  Node n;
  n.name = e.name;
  n.path = parent_path.empty() ? e.name : parent_path + "." + e.name;
  n.repetition = e.repetition < 0 ? kRequired : e.repetition;
  if (n.repetition > kRepeated) schema_fail(file, "column '" + n.path + "' has repetition type " + std::to_string(e.repetition));
  n.def_level = def + (n.repetition != kRequired);
  n.rep_level = rep + (n.repetition == kRepeated);
  n.field.name = n.name;
  n.field.nullable = n.repetition == kOptional;
  n.leaf_begin = *leaves;
  if (e.num_children <= 0) {
    if (e.type < 0) schema_fail(file, "column '" + n.path + "' is neither a group nor a primitive");
    leaf_type(e, n.path, file, n);
    ++*leaves;
    n.leaf_end = *leaves;
    return n;
  }
  if (static_cast<size_t>(e.num_children) > schema.size() - *i)
    schema_fail(file, "'" + n.path + "' claims " + std::to_string(e.num_children) + " children but the schema has " +
                          std::to_string(schema.size() - *i) + " elements left");
  if (is_annotated(e, kMap, kLMap) || e.converted == kMapKeyValue)
    throw std::runtime_error(file + ": column '" + n.path + "' is a MAP, which mor cannot read");
  for (int c = 0; c < e.num_children; ++c)
    n.children.push_back(build_node(schema, i, n.path, n.def_level, n.rep_level, depth + 1, leaves, file));
  n.leaf_end = *leaves;
  if (is_annotated(e, kList, kLList)) {
    if (n.children.size() != 1 || n.children[0].repetition != kRepeated)
      throw std::runtime_error(file + ": column '" + n.path + "' is annotated LIST but does not hold exactly one repeated field");
    const Node& r = n.children[0];
    n.is_list = true;
    // parquet-format's backward-compatibility rules: a repeated primitive, a repeated group of
    // several fields, or one named "array" / "<list>_tuple" is itself the element (2-level lists).
    n.list_three_level = !r.leaf && r.children.size() == 1 && r.name != "array" && r.name != n.name + "_tuple";
    arrow::Field item = n.list_three_level ? r.children[0].field : r.field;
    if (!n.list_three_level) item.nullable = false;
    n.field = list_field(n.name, item, n.field.nullable);
    return n;
  }
  n.field.type = arrow::Type::Struct;
  for (const auto& c : n.children) {
    if (c.repetition != kRepeated) {
      n.field.children.push_back(c.field);
    } else {  // an unannotated repeated field: a list of required elements
      arrow::Field item = c.field;
      item.nullable = false;
      n.field.children.push_back(list_field(c.name, item, false));
    }
  }
  return n;
}

// --- column chunks -----------------------------------------------------------------------------

int bit_width(int max_level) {
  int w = 0;
  while ((1 << w) <= max_level) ++w;
  return w;
}

void read_levels(const uint8_t* d, size_t n, int max_level, size_t count, std::vector<int16_t>& out, const PageContext& ctx,
                 const char* what) {
  std::vector<uint32_t> v;
  decode_rle_hybrid(d, n, bit_width(max_level), count, v, ctx);
  for (uint32_t x : v) {
    if (x > static_cast<uint32_t>(max_level))
      ctx.fail(std::string(what) + " level " + std::to_string(x) + " exceeds the maximum " + std::to_string(max_level));
    out.push_back(static_cast<int16_t>(x));
  }
}

// v1 levels: a 4-byte length, then the RLE/bit-packed hybrid. Returns the bytes used.
size_t read_levels_v1(const uint8_t* d, size_t n, int max_level, int encoding, size_t count, std::vector<int16_t>& out,
                      const PageContext& ctx, const char* what) {
  if (encoding != kRle) ctx.fail(std::string(what) + " levels use encoding " + encoding_name(encoding) + "; only RLE is supported");
  if (n < 4) ctx.fail(std::string(what) + " levels lack their 4-byte length");
  uint32_t len;
  std::memcpy(&len, d, 4);
  if (len > n - 4) ctx.fail(std::string(what) + " levels of " + std::to_string(len) + " bytes run past the page (" + std::to_string(n - 4) + ")");
  read_levels(d + 4, len, max_level, count, out, ctx, what);
  return 4 + len;
}

struct ChunkReader {
  const std::string& bytes;
  const std::string& file;
  size_t data_end;  // where column data may end (the footer starts there)
};

void decode_data(Leaf& leaf, const PageHeader& h, const uint8_t* d, size_t n, const std::vector<json>* dict, const PageContext& ctx,
                 size_t level_start) {
  size_t present = 0;
  for (size_t i = level_start; i < leaf.def.size(); ++i) present += leaf.def[i] == leaf.max_def;
  if (h.encoding == kPlainDictionary || h.encoding == kRleDictionary) {
    if (!dict) ctx.fail("dictionary-encoded page without a dictionary page");
    if (present == 0) return;
    if (n < 1) ctx.fail("dictionary indices lack their bit width");
    std::vector<uint32_t> idx;
    decode_rle_hybrid(d + 1, n - 1, d[0], present, idx, ctx);
    for (uint32_t k : idx) {
      if (k >= dict->size()) ctx.fail("dictionary index " + std::to_string(k) + " is past the dictionary's " + std::to_string(dict->size()) + " values");
      leaf.values.push_back((*dict)[k]);
    }
    return;
  }
  decode_values(h.encoding, leaf.node->type, d, n, present, leaf.values, ctx);
}

// One DATA_PAGE or DATA_PAGE_V2: its levels appended to the leaf, then its values.
void read_data_page(Leaf& leaf, int codec, const PageHeader& h, const uint8_t* payload, size_t plen,
                    const std::vector<json>* dict, const PageContext& ctx) {
  size_t count = static_cast<size_t>(h.num_values), level_start = leaf.def.size();
  if (h.type == kDataPage) {
    std::string raw = decompress(codec, payload, plen, static_cast<size_t>(h.uncompressed_size), ctx);
    const uint8_t* d = reinterpret_cast<const uint8_t*>(raw.data());
    size_t n = raw.size(), at = 0;
    if (leaf.max_rep > 0) at += read_levels_v1(d, n, leaf.max_rep, h.rep_encoding, count, leaf.rep, ctx, "repetition");
    else leaf.rep.insert(leaf.rep.end(), count, 0);
    if (leaf.max_def > 0) at += read_levels_v1(d + at, n - at, leaf.max_def, h.def_encoding, count, leaf.def, ctx, "definition");
    else leaf.def.insert(leaf.def.end(), count, 0);
    decode_data(leaf, h, d + at, n - at, dict, ctx, level_start);
  } else if (h.type == kDataPageV2) {
    if (h.rep_length < 0 || h.def_length < 0 || static_cast<size_t>(h.rep_length) + static_cast<size_t>(h.def_length) > plen)
      ctx.fail("level lengths " + std::to_string(h.rep_length) + " + " + std::to_string(h.def_length) + " exceed the page's " + std::to_string(plen) + " bytes");
    size_t levels = static_cast<size_t>(h.rep_length) + static_cast<size_t>(h.def_length);
    if (static_cast<size_t>(h.uncompressed_size) < levels) ctx.fail("uncompressed page size is smaller than its levels");
    if (leaf.max_rep > 0) read_levels(payload, static_cast<size_t>(h.rep_length), leaf.max_rep, count, leaf.rep, ctx, "repetition");
    else leaf.rep.insert(leaf.rep.end(), count, 0);
    if (leaf.max_def > 0) read_levels(payload + h.rep_length, static_cast<size_t>(h.def_length), leaf.max_def, count, leaf.def, ctx, "definition");
    else leaf.def.insert(leaf.def.end(), count, 0);
    size_t expected = static_cast<size_t>(h.uncompressed_size) - levels;
    std::string raw = h.is_compressed ? decompress(codec, payload + levels, plen - levels, expected, ctx)
                                      : decompress(kUncompressed, payload + levels, plen - levels, plen - levels, ctx);
    decode_data(leaf, h, reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), dict, ctx, level_start);
  } else {
    ctx.fail("unknown page type " + std::to_string(h.type));
  }
}

void read_chunk(const ChunkReader& cr, const ColumnChunk& cc, Leaf& leaf) {
  const Node& node = *leaf.node;
  PageContext ctx{cr.file, node.path, 0};
  if (!cc.has_meta) ctx.fail("column chunk has no metadata");
  if (!cc.file_path.empty()) ctx.fail("column data in another file ('" + cc.file_path + "') is not supported");
  const ColumnMeta& m = cc.meta;
  if (m.type != node.type.physical)
    ctx.fail(std::string("column chunk has type ") + physical_type_name(m.type) + " but the schema says " + physical_type_name(node.type.physical));
  int64_t start = m.data_page_offset;
  if (m.dictionary_page_offset > 0 && m.dictionary_page_offset < start) start = m.dictionary_page_offset;
  if (start < 4 || static_cast<uint64_t>(start) >= cr.data_end || m.total_compressed_size < 0 ||
      static_cast<uint64_t>(m.total_compressed_size) > cr.data_end - static_cast<uint64_t>(start))
    ctx.fail("column chunk at byte " + std::to_string(start) + " of " + std::to_string(m.total_compressed_size) +
             " bytes lies outside the data (" + std::to_string(cr.data_end) + " bytes before the footer)");
  if (m.num_values < 0) ctx.fail("column chunk has " + std::to_string(m.num_values) + " values");
  size_t pos = static_cast<size_t>(start), end = pos + static_cast<size_t>(m.total_compressed_size);
  uint64_t seen = 0;
  std::vector<json> dict;
  bool have_dict = false;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(cr.bytes.data());
  while (seen < static_cast<uint64_t>(m.num_values)) {
    ctx.page_offset = pos;
    if (pos >= end) ctx.fail("column chunk ends after " + std::to_string(seen) + " of its " + std::to_string(m.num_values) + " values");
    PageHeader h;
    size_t hlen = parse_page_header(base + pos, end - pos, pos, cr.file, node.path, &h);
    if (h.compressed_size < 0 || static_cast<size_t>(h.compressed_size) > end - pos - hlen)
      ctx.fail("page of " + std::to_string(h.compressed_size) + " bytes runs past the column chunk (" + std::to_string(end - pos - hlen) + " bytes left)");
    if (h.uncompressed_size < 0 || h.uncompressed_size > (1 << 30))
      ctx.fail("page claims " + std::to_string(h.uncompressed_size) + " uncompressed bytes");
    const uint8_t* payload = base + pos + hlen;
    size_t plen = static_cast<size_t>(h.compressed_size);
    pos += hlen + plen;
    if (h.type == kIndexPage) continue;
    if (!h.has_body) ctx.fail("page of type " + std::to_string(h.type) + " lacks its header");
    if (h.num_values < 0 || h.num_values > kMaxPageValues) ctx.fail("page has " + std::to_string(h.num_values) + " values");
    if (h.type == kDictionaryPage) {
      if (have_dict) ctx.fail("second dictionary page in one column chunk");
      if (h.encoding != kPlain && h.encoding != kPlainDictionary) ctx.fail(std::string("dictionary page encoding ") + encoding_name(h.encoding));
      std::string raw = decompress(m.codec, payload, plen, static_cast<size_t>(h.uncompressed_size), ctx);
      decode_values(kPlain, node.type, reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), static_cast<size_t>(h.num_values), dict, ctx);
      have_dict = true;
      continue;
    }
    uint64_t remaining = static_cast<uint64_t>(m.num_values) - seen;
    if (static_cast<uint64_t>(h.num_values) > remaining)
      ctx.fail("page has " + std::to_string(h.num_values) + " values but the column chunk has only " + std::to_string(remaining) + " left");
    size_t count = static_cast<size_t>(h.num_values);
    read_data_page(leaf, m.codec, h, payload, plen, have_dict ? &dict : nullptr, ctx);
    seen += count;
  }
}

// --- record assembly ---------------------------------------------------------------------------

class Assembler {
 public:
  Assembler(std::vector<Leaf>& leaves, const std::string& file) : leaves_(leaves), file_(file) {}

  [[noreturn]] void fail(const Leaf& l, const std::string& msg) const {
    throw std::runtime_error(file_ + ": column '" + l.node->path + "': " + msg);
  }
  Leaf& first(const Node& n) { return leaves_[n.leaf_begin]; }
  int peek_def(const Node& n) {
    Leaf& l = first(n);
    if (l.li >= l.def.size()) fail(l, "ran out of levels after " + std::to_string(l.def.size()));
    return l.def[l.li];
  }
  // A null or empty list at `n`: one level in each leaf below.
  void skip(const Node& n) {
    for (size_t k = n.leaf_begin; k < n.leaf_end; ++k) {
      Leaf& l = leaves_[k];
      if (l.li >= l.def.size()) fail(l, "ran out of levels after " + std::to_string(l.def.size()));
      if (l.def[l.li] == l.max_def) ++l.vi;
      ++l.li;
    }
  }
  json take(const Node& n) {
    Leaf& l = first(n);
    if (l.li >= l.def.size()) fail(l, "ran out of levels after " + std::to_string(l.def.size()));
    if (l.def[l.li] != l.max_def)
      fail(l, "definition level " + std::to_string(l.def[l.li]) + " at level index " + std::to_string(l.li) +
                  " where a value is required (maximum " + std::to_string(l.max_def) + ")");
    ++l.li;
    if (l.vi >= l.values.size()) fail(l, "ran out of values after " + std::to_string(l.values.size()));
    return std::move(l.values[l.vi++]);
  }
  json value(const Node& n) {  // n not repeated
    if (n.repetition == kOptional && peek_def(n) < n.def_level) {
      skip(n);
      return nullptr;
    }
    return present(n);
  }
  json present(const Node& n) {  // n is defined at its own level
    if (n.leaf) return take(n);
    if (n.is_list) return list(n.children[0], n.list_three_level);
    json obj = json::object();
    for (const Node& c : n.children) obj[c.name] = c.repetition == kRepeated ? list(c, false) : value(c);
    return obj;
  }
  json list(const Node& r, bool three_level) {  // r repeated
    json arr = json::array();
    if (peek_def(r) < r.def_level) {
      skip(r);
      return arr;
    }
    for (;;) {
      arr.push_back(three_level ? value(r.children[0]) : present(r));
      Leaf& l = first(r);
      if (l.li >= l.rep.size() || l.rep[l.li] != r.rep_level) break;
    }
    return arr;
  }
  void start_row(size_t row) {
    for (Leaf& l : leaves_) {
      if (l.li >= l.def.size()) fail(l, "holds values for " + std::to_string(row) + " rows, fewer than the row group's");
      if (l.rep[l.li] != 0) fail(l, "row " + std::to_string(row) + " does not start at repetition level 0");
    }
  }
  void finish() {
    for (Leaf& l : leaves_)
      if (l.li != l.def.size() || l.vi != l.values.size())
        fail(l, "has " + std::to_string(l.def.size() - l.li) + " levels and " + std::to_string(l.values.size() - l.vi) +
                    " values left over after the row group's last row");
  }

 private:
  std::vector<Leaf>& leaves_;
  const std::string& file_;
};

void collect_leaves(const Node& n, std::vector<Leaf>& out) {
  if (n.leaf) {
    Leaf l;
    l.node = &n;
    l.max_def = n.def_level;
    l.max_rep = n.rep_level;
    out.push_back(std::move(l));
    return;
  }
  for (const Node& c : n.children) collect_leaves(c, out);
}

}  // namespace

Table read_parquet(const std::string& bytes, const std::string& name) {
  const size_t size = bytes.size();
  if (size < 12) throw std::runtime_error(name + ": truncated: " + std::to_string(size) + " bytes is too small for a Parquet file");
  if (bytes.compare(0, 4, "PAR1") != 0)
    throw std::runtime_error(name + ": not a Parquet file: no PAR1 magic at byte 0");
  if (bytes.compare(size - 4, 4, "PAR1") != 0)
    throw std::runtime_error(name + ": truncated or not a Parquet file: no PAR1 magic at the end (byte " + std::to_string(size - 4) + ")");
  uint32_t meta_len;
  std::memcpy(&meta_len, bytes.data() + size - 8, 4);
  if (meta_len > size - 12)
    throw std::runtime_error(name + ": footer length " + std::to_string(meta_len) + " at byte " + std::to_string(size - 8) +
                             " exceeds the file (" + std::to_string(size) + " bytes)");
  size_t meta_at = size - 8 - meta_len;
  FileMetaData md = parse_file_metadata(reinterpret_cast<const uint8_t*>(bytes.data()) + meta_at, meta_len, meta_at, name);
  if (md.schema.empty()) throw std::runtime_error(name + ": schema: empty");
  // The root, then its children.
  size_t i = 1, nleaves = 0;
  Node root;
  root.name = md.schema[0].name;
  int nchildren = md.schema[0].num_children;
  if (nchildren < 0 || static_cast<size_t>(nchildren) > md.schema.size() - 1)
    schema_fail(name, "the root claims " + std::to_string(nchildren) + " children but " + std::to_string(md.schema.size() - 1) + " elements follow");
  for (int c = 0; c < nchildren; ++c) root.children.push_back(build_node(md.schema, &i, "", 0, 0, 1, &nleaves, name));
  if (i != md.schema.size()) schema_fail(name, std::to_string(md.schema.size() - i) + " elements after the last column");
  root.leaf_end = nleaves;

  Table t;
  for (const Node& c : root.children) {
    if (c.repetition != kRepeated) {
      t.schema.fields.push_back(c.field);
    } else {
      arrow::Field item = c.field;
      item.nullable = false;
      t.schema.fields.push_back(list_field(c.name, item, false));
    }
  }
  t.schema.metadata = md.key_value_metadata;
  t.row_groups = md.row_groups.size();
  ChunkReader cr{bytes, name, meta_at};
  for (size_t g = 0; g < md.row_groups.size(); ++g) {
    const RowGroup& rg = md.row_groups[g];
    if (rg.columns.size() != nleaves)
      throw std::runtime_error(name + ": row group " + std::to_string(g) + " has " + std::to_string(rg.columns.size()) +
                               " column chunks, the schema has " + std::to_string(nleaves) + " leaf columns");
    if (rg.num_rows < 0) throw std::runtime_error(name + ": row group " + std::to_string(g) + " has " + std::to_string(rg.num_rows) + " rows");
    if (nleaves == 0 && rg.num_rows > 0)  // rows without any column: nothing bounds their number
      throw std::runtime_error(name + ": row group " + std::to_string(g) + " has " + std::to_string(rg.num_rows) + " rows but the schema has no columns");
    std::vector<Leaf> leaves;
    for (const Node& c : root.children) collect_leaves(c, leaves);
    for (size_t k = 0; k < nleaves; ++k) read_chunk(cr, rg.columns[k], leaves[k]);
    Assembler as(leaves, name);
    for (int64_t r = 0; r < rg.num_rows; ++r) {
      as.start_row(static_cast<size_t>(r));
      json row = json::object();
      for (const Node& c : root.children) row[c.name] = c.repetition == kRepeated ? as.list(c, false) : as.value(c);
      t.rows.push_back(std::move(row));
    }
    as.finish();
  }
  return t;
}

Table read_parquet_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot read");
  std::stringstream ss;
  ss << f.rdbuf();
  return read_parquet(ss.str(), path);
}

}  // namespace mor::parquet
