// The Parquet reader: every fixture written by hyparquet-writer and parquet-wasm (arrow-rs) gives the
// rows hyparquet reads (committed expected/*.json, and hyparquet run live when node_modules is there),
// the schema maps to `datasets` features, corrupt files are errors naming file, column and byte, and a
// seeded mutation fuzz loop never crashes.
#include <cstdlib>
#include <filesystem>

#include "dataset.h"
#include "dataset_sources.h"
#include "helpers.h"
#include "parquet.h"
#include "parquet_fuzz.h"
#include "parquet_thrift.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using mor::test::error_of;
using mor::test::read_file;
using mor::test::scratch_dir;
using mor::test::write_file;

std::string fixture_dir() { return mor::test::source_dir() + "/tests/fixtures/parquet"; }

// Every fixture, relative to fixture_dir(), sorted.
std::vector<std::string> fixtures() {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(fixture_dir()))
    if (e.path().extension() == ".parquet") out.push_back(e.path().lexically_relative(fixture_dir()).generic_string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string expected_name(std::string rel) {
  std::replace(rel.begin(), rel.end(), '/', '_');
  return fixture_dir() + "/expected/" + rel + ".json";
}

// mor's values as read_parquet.mjs prints hyparquet's: binary as byte arrays, large int64 as strings.
json as_js(const json& v) {
  if (v.is_binary()) return json(std::vector<int>(v.get_binary().begin(), v.get_binary().end()));
  if (v.is_number_unsigned() && v.get<uint64_t>() > (uint64_t{1} << 53)) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer() && !v.is_number_unsigned() &&
      (v.get<int64_t>() > (int64_t{1} << 53) || v.get<int64_t>() < -(int64_t{1} << 53)))
    return std::to_string(v.get<int64_t>());
  if (v.is_array() || v.is_object()) {
    json out = v.is_array() ? json::array() : json::object();
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (v.is_array()) out.push_back(as_js(*it));
      else out[it.key()] = as_js(it.value());
    }
    return out;
  }
  return v;
}

json mor_rows_js(const std::string& file) {
  json rows = json::array();
  for (const json& r : mor::parquet::read_parquet_file(file).rows) rows.push_back(as_js(r));
  return rows;
}

TEST(Parquet, EveryFixtureGivesHyparquetsRows) {
  auto files = fixtures();
  ASSERT_GE(files.size(), 11u);
  size_t rows = 0;
  for (const auto& f : files) {
    json expect = json::parse(read_file(expected_name(f)));
    json got = mor_rows_js(fixture_dir() + "/" + f);
    ASSERT_EQ(got.size(), expect.size()) << f;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], expect[i]) << f << " row " << i;
    rows += got.size();
  }
  EXPECT_EQ(rows, 23u * 3 + 9 + 30 * 4 + 4 + 2 + 3);
}

TEST(Parquet, SchemaTypesRowGroupsAndValues) {
  using mor::arrow::Type;
  auto t = mor::parquet::read_parquet_file(fixture_dir() + "/pw_v1_snappy.parquet");
  EXPECT_EQ(t.row_groups, 4u);
  ASSERT_EQ(t.schema.fields.size(), 11u);
  std::vector<Type> types = {Type::Int8, Type::UInt16, Type::Int64, Type::Float32, Type::Float64, Type::Bool,
                             Type::Utf8, Type::Binary, Type::List, Type::Utf8,    Type::Struct};
  for (size_t i = 0; i < types.size(); ++i) EXPECT_EQ(t.schema.fields[i].type, types[i]) << t.schema.fields[i].name;
  EXPECT_EQ(t.schema.fields[8].children.at(0).type, Type::Utf8);
  EXPECT_EQ(t.schema.fields[10].children.at(0).name, "bytes");
  EXPECT_EQ(t.schema.fields[10].children.at(0).type, Type::Binary);
  // Values as the Arrow reader gives them: binary as JSON binary, nulls as null, floats as doubles.
  EXPECT_EQ(t.rows[3]["i8"], nullptr);
  EXPECT_EQ(t.rows[4]["i8"], -11);
  EXPECT_EQ(t.rows[29]["u16"], 65535 - 29);
  EXPECT_EQ(t.rows[29]["i64"], int64_t{29} * 123456789012LL - 5);
  EXPECT_EQ(t.rows[1]["f32"], 0.25);
  EXPECT_EQ(t.rows[1]["raw"], json::binary({1, 254, 0}));
  EXPECT_EQ(t.rows[3]["choices"], json({"choice 0 of 3", "choice 1 of 3", nullptr}));
  EXPECT_EQ(t.rows[7]["choices"], nullptr);
  EXPECT_EQ(t.rows[5]["choices"], json::array());
  EXPECT_EQ(t.rows[0]["image"], nullptr);
  EXPECT_EQ(t.rows[0]["none"], nullptr);  // an all-null column
  EXPECT_EQ(t.rows[2]["image"], json({{"bytes", json::binary({1, 2, 2})}, {"path", "p2"}}));
  // hyparquet-writer's INT logical types: int8 and uint32 in INT32.
  auto h = mor::parquet::read_parquet_file(fixture_dir() + "/hw_flat_delta.parquet");
  EXPECT_EQ(h.schema.fields[1].type, Type::Int8);
  EXPECT_EQ(h.schema.fields[4].type, Type::UInt32);
  EXPECT_EQ(h.rows[0]["u32"].get<uint64_t>(), 4294967295u);
  EXPECT_EQ(h.rows[0]["i64"].get<int64_t>(), INT64_MIN);
}

TEST(Parquet, FeaturesAsDatasetsGivesThem) {
  // Without huggingface metadata: derived from the schema as datasets derives them from Arrow.
  auto dd = mor::load_dataset(fixture_dir() + "/pw_v2_zstd.parquet");
  ASSERT_EQ(dd.split_names, std::vector<std::string>{"train"});
  const json& f = dd.split("train").features;
  EXPECT_EQ(f["i8"], json({{"dtype", "int8"}, {"_type", "Value"}}));
  EXPECT_EQ(f["u16"], json({{"dtype", "uint16"}, {"_type", "Value"}}));
  EXPECT_EQ(f["f32"], json({{"dtype", "float32"}, {"_type", "Value"}}));
  EXPECT_EQ(f["flag"], json({{"dtype", "bool"}, {"_type", "Value"}}));
  EXPECT_EQ(f["text"], json({{"dtype", "string"}, {"_type", "Value"}}));
  EXPECT_EQ(f["raw"], json({{"dtype", "binary"}, {"_type", "Value"}}));
  EXPECT_EQ(f["choices"], json({{"feature", {{"dtype", "string"}, {"_type", "Value"}}}, {"_type", "Sequence"}}));
  EXPECT_EQ(f["image"], json({{"bytes", {{"dtype", "binary"}, {"_type", "Value"}}}, {"path", {{"dtype", "string"}, {"_type", "Value"}}}}));
  // With it (as derek-thomas/ScienceQA's files): the Image feature.
  auto sq = mor::load_dataset(fixture_dir() + "/scienceqa/train-00000-of-00001-1028f23e353fbe3e.parquet");
  EXPECT_EQ(sq.split("train").features["image"], json({{"_type", "Image"}}));
  EXPECT_EQ(sq.split("train").features["answer"], json({{"dtype", "int8"}, {"_type", "Value"}}));
}

TEST(Parquet, RowsSurviveSaveToDisk) {
  // Binary, lists, structs and nulls read from Parquet are what the Arrow writer/reader carry.
  auto dd = mor::load_dataset(fixture_dir() + "/pw_v1_gzip_plain.parquet");
  std::string dir = scratch_dir("parquet-save") + "/copy.hf";
  mor::save_to_disk(dd, dir);
  auto back = mor::load_dataset(dir);
  EXPECT_EQ(json(back.split("train").rows), json(dd.split("train").rows));
  EXPECT_EQ(back.split("train").features, dd.split("train").features);
}

TEST(Parquet, HyparquetReadsTheFixturesLive) {
  std::string js_dir = mor::test::source_dir() + "/tests/parquet_js";
  if (!fs::exists(js_dir + "/node_modules/hyparquet"))
    GTEST_SKIP() << "hyparquet not installed: run `npm ci` in tests/parquet_js (needs Node.js)";
  if (std::system("node --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "node not found on PATH";
  std::string dir = scratch_dir("parquet-js");
  auto files = fixtures();
  std::string cmd = "node " + js_dir + "/read_parquet.mjs";
  for (const auto& f : files) cmd += " " + fixture_dir() + "/" + f;
  cmd += " > " + dir + "/out.json 2> " + dir + "/err.txt";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(dir + "/err.txt");
  json out = json::parse(read_file(dir + "/out.json"));
  ASSERT_EQ(out.size(), files.size());
  for (size_t k = 0; k < files.size(); ++k) {
    json got = mor_rows_js(fixture_dir() + "/" + files[k]);
    ASSERT_EQ(got.size(), out[k].size()) << files[k];
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], out[k][i]) << files[k] << " row " << i;
  }
}

// The first column chunk's first page: its byte offset and header length.
std::pair<size_t, size_t> first_page(const std::string& bytes) {
  uint32_t len;
  std::memcpy(&len, bytes.data() + bytes.size() - 8, 4);
  size_t at = bytes.size() - 8 - len;
  auto md = mor::parquet::parse_file_metadata(reinterpret_cast<const uint8_t*>(bytes.data()) + at, len, at, "x");
  const auto& m = md.row_groups.at(0).columns.at(0).meta;
  size_t page = static_cast<size_t>(m.dictionary_page_offset > 0 ? m.dictionary_page_offset : m.data_page_offset);
  mor::parquet::PageHeader h;
  size_t hlen = mor::parquet::parse_page_header(reinterpret_cast<const uint8_t*>(bytes.data()) + page, bytes.size() - page, page, "x", "c", &h);
  return {page, hlen};
}

TEST(Parquet, CorruptFilesAreClearErrors) {
  std::string good = read_file(fixture_dir() + "/pw_v1_snappy.parquet");
  const std::string name = "f.parquet";
  auto err = [&](const std::string& bytes) { return error_of([&] { mor::parquet::read_parquet(bytes, name); }); };
  size_t n = good.size();
  EXPECT_EQ(err(good.substr(0, n - 1)), name + ": truncated or not a Parquet file: no PAR1 magic at the end (byte " + std::to_string(n - 5) + ")");
  EXPECT_EQ(err(good.substr(0, 8)), name + ": truncated: 8 bytes is too small for a Parquet file");
  EXPECT_EQ(err("ARROW1" + good.substr(6)), name + ": not a Parquet file: no PAR1 magic at byte 0");
  std::string bad = good;
  bad[n - 5] = 0x7f;  // footer length's high byte
  uint32_t len;
  std::memcpy(&len, bad.data() + n - 8, 4);
  EXPECT_EQ(err(bad), name + ": footer length " + std::to_string(len) + " at byte " + std::to_string(n - 8) +
                          " exceeds the file (" + std::to_string(n) + " bytes)");
  // A field of an unknown Thrift type at the start of the footer.
  uint32_t good_len;
  std::memcpy(&good_len, good.data() + n - 8, 4);
  size_t meta_at = n - 8 - good_len;
  bad = good;
  bad[meta_at] = 0x1d;  // field delta 1, type 13
  EXPECT_EQ(err(bad), name + ": file metadata: unknown thrift type 13 (byte " + std::to_string(meta_at + 1) + ")");
  // The footer cut short: Thrift runs out of bytes.
  bad = good.substr(0, meta_at + good_len / 2) + good.substr(n - 8);
  uint32_t short_len = good_len / 2;
  std::memcpy(&bad[bad.size() - 8], &short_len, 4);
  std::string e = err(bad);
  EXPECT_EQ(e.rfind(name + ": file metadata: ", 0), 0u) << e;
  EXPECT_NE(e.find("(byte "), std::string::npos) << e;

  // The first page (column 'i8', a dictionary page): its compressed size made negative.
  auto [page, hlen] = first_page(good);
  bad = good;
  ASSERT_EQ(static_cast<uint8_t>(bad[page + 4]), 0x15);  // field 3 (compressed_page_size), i32
  bad[page + 5] = static_cast<char>(bad[page + 5] | 1);  // zigzag: odd = negative
  e = err(bad);
  EXPECT_EQ(e.rfind(name + ": column 'i8': page of -", 0), 0u) << e;
  EXPECT_NE(e.find("bytes runs past the column chunk"), std::string::npos) << e;
  EXPECT_NE(e.find("(page at byte " + std::to_string(page) + ")"), std::string::npos) << e;
  // Its SNAPPY payload's length prefix changed.
  bad = good;
  bad[page + hlen] = static_cast<char>(bad[page + hlen] + 1);
  EXPECT_EQ(err(bad).rfind(name + ": column 'i8': SNAPPY data ", 0), 0u) << err(bad);
  EXPECT_NE(err(bad).find("(page at byte " + std::to_string(page) + ")"), std::string::npos) << err(bad);
  // A page header field of the wrong Thrift type.
  bad = good;
  bad[page] = 0x16;  // field 1 as i64 instead of i32
  EXPECT_EQ(err(bad), name + ": column 'i8': page header: field 'PageHeader.type' has thrift type 6, expected 5 (byte " +
                          std::to_string(page + 1) + ")");

  // Through load_dataset: the path names the file.
  std::string dir = scratch_dir("parquet-bad");
  write_file(dir + "/cut.parquet", good.substr(0, n / 2));
  e = error_of([&] { mor::load_dataset(dir + "/cut.parquet"); });
  EXPECT_EQ(e.rfind(dir + "/cut.parquet: truncated or not a Parquet file", 0), 0u) << e;
}

// A tiny Thrift compact-protocol writer, to build files the npm writers cannot (legacy 2-level lists).
class ThriftOut {
 public:
  std::string out;
  void i32(int id, int64_t v) { head(id, 5), varint(zigzag(v)); }
  void i64(int id, int64_t v) { head(id, 6), varint(zigzag(v)); }
  void str(int id, const std::string& v) { head(id, 8), varint(v.size()), out += v; }
  void begin(int id) { head(id, 12), last_.push_back(0); }          // a struct field
  void begin_item() { last_.push_back(0); }                         // a struct inside a list
  void end() { out += '\0', last_.pop_back(); }
  void list(int id, int elem_type, size_t n) { head(id, 9), out += static_cast<char>((n << 4) | elem_type); }
  void raw_i32(int64_t v) { varint(zigzag(v)); }
  void raw_str(const std::string& v) { varint(v.size()), out += v; }

 private:
  static uint64_t zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
  void varint(uint64_t v) {
    for (; v >= 0x80; v >>= 7) out += static_cast<char>(v | 0x80);
    out += static_cast<char>(v);
  }
  void head(int id, int type) {
    out += static_cast<char>(((id - last_.back()) << 4) | type);
    last_.back() = id;
  }
  std::vector<int> last_{0};
};

std::string le32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }

// Two columns whose rows are [x, y], [], [z]: "tags", a LIST-annotated group around a repeated
// string named "array" (the legacy 2-level form), and "nums", a bare repeated INT32.
std::string legacy_lists_file() {
  std::string levels = le32(2) + "\x03\x02" + le32(2) + "\x03\x0b";  // rep 0,1,0,0; def 1,1,0,1 (bit-packed)
  std::vector<std::string> values = {le32(1) + "a" + le32(1) + "b" + le32(1) + "c", le32(1) + le32(2) + le32(3)};
  std::string file = "PAR1";
  std::vector<size_t> offsets, sizes;
  for (const auto& v : values) {
    std::string body = levels + v;
    ThriftOut h;
    h.i32(1, 0), h.i32(2, static_cast<int64_t>(body.size())), h.i32(3, static_cast<int64_t>(body.size()));
    h.begin(5), h.i32(1, 4), h.i32(2, 0), h.i32(3, 3), h.i32(4, 3), h.end();
    h.out += '\0';
    offsets.push_back(file.size());
    file += h.out + body;
    sizes.push_back(h.out.size() + body.size());
  }
  ThriftOut m;
  m.i32(1, 1);
  m.list(2, 12, 4);
  m.begin_item(), m.str(4, "schema"), m.i32(5, 2), m.end();
  m.begin_item(), m.i32(3, 0), m.str(4, "tags"), m.i32(5, 1), m.i32(6, 3), m.end();
  m.begin_item(), m.i32(1, 6), m.i32(3, 2), m.str(4, "array"), m.i32(6, 0), m.end();
  m.begin_item(), m.i32(1, 1), m.i32(3, 2), m.str(4, "nums"), m.end();
  m.i64(3, 3);
  m.list(4, 12, 1);
  m.begin_item();
  m.list(1, 12, 2);
  for (int c = 0; c < 2; ++c) {
    m.begin_item();
    m.i64(2, static_cast<int64_t>(offsets[c]));
    m.begin(3);
    m.i32(1, c == 0 ? 6 : 1);
    m.list(2, 5, 2), m.raw_i32(0), m.raw_i32(3);
    m.list(3, 8, c == 0 ? 2 : 1), m.raw_str(c == 0 ? "tags" : "nums");
    if (c == 0) m.raw_str("array");
    m.i32(4, 0), m.i64(5, 4), m.i64(6, static_cast<int64_t>(sizes[c])), m.i64(7, static_cast<int64_t>(sizes[c]));
    m.i64(9, static_cast<int64_t>(offsets[c]));
    m.end();
    m.end();
  }
  m.i64(2, 0), m.i64(3, 3);
  m.end();
  m.out += '\0';
  return file + m.out + le32(static_cast<uint32_t>(m.out.size())) + "PAR1";
}

TEST(Parquet, LegacyTwoLevelAndBareRepeatedLists) {
  auto t = mor::parquet::read_parquet(legacy_lists_file(), "legacy.parquet");
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(json(t.rows), json::parse(R"([{"tags":["a","b"],"nums":[1,2]},{"tags":[],"nums":[]},{"tags":["c"],"nums":[3]}])"));
  ASSERT_EQ(t.schema.fields.size(), 2u);
  EXPECT_EQ(t.schema.fields[0].type, mor::arrow::Type::List);
  EXPECT_EQ(t.schema.fields[0].children.at(0).type, mor::arrow::Type::Utf8);
  EXPECT_EQ(t.schema.fields[1].type, mor::arrow::Type::List);
  EXPECT_EQ(t.schema.fields[1].children.at(0).type, mor::arrow::Type::Int32);
  // hyparquet agrees, when it is installed.
  std::string js_dir = mor::test::source_dir() + "/tests/parquet_js";
  if (fs::exists(js_dir + "/node_modules/hyparquet") && std::system("node --version >/dev/null 2>&1") == 0) {
    std::string dir = scratch_dir("parquet-legacy");
    write_file(dir + "/legacy.parquet", legacy_lists_file());
    ASSERT_EQ(std::system(("node " + js_dir + "/read_parquet.mjs " + dir + "/legacy.parquet > " + dir + "/out.json").c_str()), 0);
    EXPECT_EQ(json::parse(read_file(dir + "/out.json"))[0], json(t.rows));
  }
}

TEST(Parquet, FuzzedInputsNeverCrash) {
  std::vector<std::string> seeds;
  for (const auto& f : fixtures()) seeds.push_back(read_file(fixture_dir() + "/" + f));
  seeds.push_back(legacy_lists_file());
  mor::test::FuzzStats st;
  ASSERT_NO_THROW(st = mor::test::fuzz_parquet(seeds, 4.0));
  std::cout << "parquet fuzz: " << st.rounds << " rounds, " << st.parsed << " parsed, " << st.rejected << " rejected\n";
  EXPECT_GT(st.rounds, 200u);
  EXPECT_GT(st.rejected, 0u);
  EXPECT_GT(st.parsed, 0u);
}

}  // namespace
