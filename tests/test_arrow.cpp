// The Arrow IPC stream reader/writer: the real `datasets` files, every supported type through a
// round trip, several record batches and files, corrupt inputs rejected with file/column/offset
// messages, a seeded mutation fuzz loop, and Apache Arrow's own JavaScript reader on our files.
#include <cstdlib>
#include <filesystem>

#include "arrow.h"
#include "arrow_fuzz.h"
#include "dataset.h"
#include "helpers.h"

using mor::test::error_of;

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using namespace mor;
using arrow::Field;
using arrow::Type;
using mor::test::read_file;
using mor::test::scratch_dir;
using mor::test::testdata_dir;
using mor::test::write_file;

static std::string sample_arrow(const std::string& split) {
  return testdata_dir() + "/sampled_scienceqa_train_all.hf/" + split + "/data-00000-of-00001.arrow";
}

static Field field(const std::string& name, Type t, std::vector<Field> children = {}) {
  Field f;
  f.name = name;
  f.type = t;
  f.children = std::move(children);
  return f;
}

// One column of every supported type, 11 rows (bitmaps span two bytes) with nulls in each column.
static arrow::Schema all_types_schema() {
  arrow::Schema s;
  s.fields = {field("n", Type::Null),       field("b", Type::Bool),      field("i8", Type::Int8),
              field("i16", Type::Int16),    field("i32", Type::Int32),   field("i64", Type::Int64),
              field("u8", Type::UInt8),     field("u16", Type::UInt16),  field("u32", Type::UInt32),
              field("u64", Type::UInt64),   field("f32", Type::Float32), field("f64", Type::Float64),
              field("s", Type::Utf8),       field("ls", Type::LargeUtf8), field("bin", Type::Binary),
              field("lbin", Type::LargeBinary),
              field("l", Type::List, {field("item", Type::Int32)}),
              field("ll", Type::LargeList, {field("item", Type::Utf8)}),
              field("st", Type::Struct, {field("a", Type::Int64), field("b", Type::List, {field("item", Type::Utf8)})})};
  s.metadata = {{"huggingface", R"({"info": {"features": {}}})"}, {"other", "x"}};
  return s;
}

static std::vector<json> all_types_rows(int n = 11) {
  std::vector<json> rows;
  for (int i = 0; i < n; ++i) {
    json r = json::object();
    bool null = i % 4 == 3;
    auto v = [&](json x) { return null ? json(nullptr) : x; };
    r["n"] = nullptr;
    r["b"] = v(i % 2 == 0);
    r["i8"] = v(i % 2 ? -128 + i : 127 - i);
    r["i16"] = v(-32768 + i);
    r["i32"] = v(i == 0 ? INT32_MIN : i * 1000003);
    r["i64"] = v(i == 0 ? INT64_MIN : int64_t{1} << (i * 5));
    r["u8"] = v(255 - i);
    r["u16"] = v(65535 - i);
    r["u32"] = v(4294967295u - i);
    r["u64"] = v(i == 0 ? UINT64_MAX : uint64_t(i));
    r["f32"] = v(0.5 * i - 1.25);
    r["f64"] = v(i == 1 ? 1e-300 : 0.1 * i);
    r["s"] = v(std::string(i, 'a' + i) + (i == 2 ? "\xc3\xa9\xf0\x9f\x98\x80" : ""));
    r["ls"] = v("large " + std::to_string(i));
    r["bin"] = v(json::binary(std::vector<uint8_t>(i, static_cast<uint8_t>(250 + i % 6))));
    r["lbin"] = v(json::binary({0, static_cast<uint8_t>(i)}));
    json l = json::array();
    for (int k = 0; k < i % 4; ++k) l.push_back(k * i);
    r["l"] = v(l);
    r["ll"] = v(json::array({"x" + std::to_string(i), ""}));
    r["st"] = v(json{{"a", i == 5 ? json(nullptr) : json(i)}, {"b", json::array({std::to_string(i)})}});
    rows.push_back(r);
  }
  return rows;
}

TEST(Arrow, ReadsTheDatasetsSample) {
  MOR_REQUIRE_TESTDATA();
  arrow::Table t = arrow::read_stream_file(sample_arrow("train"));
  ASSERT_EQ(t.rows.size(), 200u);
  ASSERT_EQ(t.schema.fields.size(), 16u);
  EXPECT_EQ(t.schema.fields[0].name, "image");
  EXPECT_EQ(t.schema.fields[0].type, Type::Null);
  EXPECT_EQ(t.schema.fields[2].type, Type::List);
  EXPECT_EQ(t.schema.fields[2].children[0].name, "item");
  EXPECT_EQ(t.schema.fields[2].children[0].type, Type::Utf8);
  EXPECT_EQ(t.schema.fields[15].name, "output");
  json meta = json::parse(t.schema.metadata_value("huggingface"));
  json info = json::parse(read_file(testdata_dir() + "/sampled_scienceqa_train_all.hf/train/dataset_info.json"));
  EXPECT_EQ(meta["info"]["features"], info["features"]);
  EXPECT_EQ(t.rows[0]["output"], "Answer: The answer is A.");
  EXPECT_EQ(t.rows[199]["image"], nullptr);
}

TEST(Arrow, EveryTypeRoundTrips) {
  arrow::Schema s = all_types_schema();
  std::vector<json> rows = all_types_rows();
  arrow::Table t = arrow::read_stream(arrow::write_stream(s, rows), "mem");
  ASSERT_EQ(t.rows.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(t.rows[i], rows[i]) << "row " << i << ": " << t.rows[i].dump();
  EXPECT_EQ(t.rows[0]["u64"].get<uint64_t>(), UINT64_MAX);
  EXPECT_EQ(t.rows[0]["i64"].get<int64_t>(), INT64_MIN);
  EXPECT_EQ(t.rows[3]["s"], nullptr);
  ASSERT_EQ(t.schema.fields.size(), s.fields.size());
  for (size_t i = 0; i < s.fields.size(); ++i) EXPECT_EQ(t.schema.fields[i].type, s.fields[i].type) << s.fields[i].name;
  EXPECT_EQ(t.schema.metadata, s.metadata);
  // Empty tables too.
  EXPECT_EQ(arrow::read_stream(arrow::write_stream(s, {}), "mem").rows.size(), 0u);
  // Values that do not fit are refused by name.
  rows[4]["i8"] = 300;
  EXPECT_EQ(error_of([&] { arrow::write_stream(s, rows); }), "column 'i8' value 4: expected integer in range, got number");
  rows[4]["i8"] = 1;
  rows[6]["l"] = json::array({"x"});
  EXPECT_EQ(error_of([&] { arrow::write_stream(s, rows); }), "column 'l.item' value 4: expected integer in range, got string");
}

// Our stream is: schema message, one record batch message, EOS. The schema message of a stream is
// 8 bytes + its metadata (no body), so streams with the same schema can be spliced.
static size_t schema_message_size(const std::string& stream) {
  int32_t meta;
  std::memcpy(&meta, stream.data() + 4, 4);
  return 8 + static_cast<size_t>(meta);
}

TEST(Arrow, SeveralRecordBatchesAndTheFileFormat) {
  arrow::Schema s = all_types_schema();
  std::vector<json> rows = all_types_rows(13);
  std::vector<json> a(rows.begin(), rows.begin() + 5), b(rows.begin() + 5, rows.end());
  std::string sa = arrow::write_stream(s, a), sb = arrow::write_stream(s, b);
  std::string both = sa.substr(0, sa.size() - 8) + sb.substr(schema_message_size(sb));
  arrow::Table t = arrow::read_stream(both, "two-batches");
  ASSERT_EQ(t.rows.size(), 13u);
  for (size_t i = 0; i < 13; ++i) EXPECT_EQ(t.rows[i], rows[i]) << i;
  // The IPC file format wraps a stream in "ARROW1" magic and a footer.
  std::string file = std::string("ARROW1\0\0", 8) + both + "footer....ARROW1";
  EXPECT_EQ(arrow::read_stream(file, "file").rows, rows);
}

TEST(Arrow, SeveralFilesInOneDatasetFolder) {
  std::string dir = scratch_dir("arrow-files") + "/ds";
  DatasetDict dd;
  dd.split_names = {"train"};
  dd.splits["train"].rows = {json{{"q", "one"}, {"k", 1}}};
  save_to_disk(dd, dir);
  std::string train = dir + "/train";
  fs::rename(train + "/data-00000-of-00001.arrow", train + "/data-00000-of-00002.arrow");
  dd.splits["train"].rows = {json{{"q", "two"}, {"k", 2}}, json{{"q", "three"}, {"k", 3}}};
  save_to_disk(dd, dir + "2");
  fs::rename(dir + "2/train/data-00000-of-00001.arrow", train + "/data-00001-of-00002.arrow");
  json state = json::parse(read_file(train + "/state.json"));
  state["_data_files"] = json::array({{{"filename", "data-00000-of-00002.arrow"}}, {{"filename", "data-00001-of-00002.arrow"}}});
  write_file(train + "/state.json", state.dump());
  auto rows = load_dataset(dir).split("train").rows;
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["q"], "one");
  EXPECT_EQ(rows[2]["q"], "three");
  EXPECT_EQ(rows[2]["k"], 3);
}

TEST(Arrow, CorruptFilesAreClearErrors) {
  MOR_REQUIRE_TESTDATA();
  std::string good = read_file(sample_arrow("test"));
  std::string dir = scratch_dir("arrow-bad");
  // Truncation anywhere: an error naming the file.
  for (size_t cut : {good.size() - 1, good.size() - 8, good.size() / 2, size_t{100}, size_t{4}, size_t{0}}) {
    write_file(dir + "/cut.arrow", good.substr(0, cut));
    std::string err = error_of([&] { arrow::read_stream_file(dir + "/cut.arrow"); });
    EXPECT_EQ(err.rfind(dir + "/cut.arrow: truncated", 0), 0u) << cut << ": " << err;
  }
  // Wrong magic: a Parquet file, say.
  EXPECT_EQ(error_of([&] { arrow::read_stream("PAR1" + good.substr(4), "x.arrow"); }),
            "x.arrow: not an Arrow IPC stream: expected the continuation marker 0xFFFFFFFF at byte 0, found 0x31524150");
  // An unsupported type: turn the Int type tag (2) of column 'i32' into Timestamp (10).
  arrow::Schema s;
  s.fields = {field("i32", Type::Int32)};
  std::string st = arrow::write_stream(s, {json{{"i32", 5}}});
  EXPECT_EQ(arrow::read_stream(st, "ok").rows[0]["i32"], 5);
  size_t name_at = st.find("i32");
  ASSERT_NE(name_at, std::string::npos);
  bool patched = false;  // the type tag is the only byte 2 in the Field table, which precedes its name
  for (size_t p = name_at; p-- > 8 && !patched;)
    if (st[p] == 2 && st[p + 1] == 0 && st[p - 1] == 1) st[p] = 10, patched = true;  // nullable=1, tag=2
  ASSERT_TRUE(patched);
  EXPECT_NE(error_of([&] { arrow::read_stream(st, "ts.arrow"); }).find("ts.arrow: column 'i32' has Arrow type Timestamp, which mor cannot read"),
            std::string::npos);
}

// Finds `needle` in the record batch body (after the metadata) of a stream we wrote.
static size_t find_in_body(const std::string& stream, const std::string& needle) {
  size_t at = stream.rfind(needle);
  EXPECT_NE(at, std::string::npos);
  return at;
}

static std::string le32(std::initializer_list<int32_t> v) {
  std::string s;
  for (int32_t x : v) s.append(reinterpret_cast<const char*>(&x), 4);
  return s;
}

TEST(Arrow, BadOffsetsAreCaughtWithColumnAndByte) {
  arrow::Schema s;
  s.fields = {field("text", Type::Utf8), field("tags", Type::List, {field("item", Type::Int64)})};
  std::vector<json> rows = {json{{"text", "ab"}, {"tags", {1, 2}}}, json{{"text", "c"}, {"tags", {3}}}};
  std::string good = arrow::write_stream(s, rows);
  ASSERT_EQ(arrow::read_stream(good, "ok").rows, rows);

  // A string offset past the data buffer.
  std::string bad = good;
  size_t text_off = find_in_body(bad, le32({0, 2, 3}) + std::string(4, '\0') + "abc");
  std::memcpy(&bad[text_off + 8], le32({100}).data(), 4);
  EXPECT_EQ(error_of([&] { arrow::read_stream(bad, "s.arrow"); }),
            "s.arrow: column 'text': offset 100 at index 2 lies past the end of the data buffer (3) (byte " +
                std::to_string(text_off + 8) + ")");

  // List offsets that decrease.
  bad = good;
  size_t list_off = bad.rfind(le32({0, 2, 3}));  // the list's offsets come after the text's
  ASSERT_GT(list_off, text_off);
  std::memcpy(&bad[list_off + 4], le32({3, 2}).data(), 8);
  EXPECT_EQ(error_of([&] { arrow::read_stream(bad, "l.arrow"); }),
            "l.arrow: column 'tags': offset 2 at index 2 is less than the one before it (offsets must not decrease) (byte " +
                std::to_string(list_off + 8) + ")");

  // A list whose last offset needs more child values than the child holds.
  bad = good;
  std::memcpy(&bad[list_off + 8], le32({9}).data(), 4);
  EXPECT_NE(error_of([&] { arrow::read_stream(bad, "c.arrow"); }).find("c.arrow: column 'tags.item': field node has 3 values but 9 are needed"),
            std::string::npos);

  // A buffer (offset, length) lying outside the body: the text data buffer (16, 3) grows to 1000.
  bad = good;
  std::string pair(16, '\0');
  int64_t off = 16, len = 3, big = 1000;
  std::memcpy(&pair[0], &off, 8);
  std::memcpy(&pair[8], &len, 8);
  size_t buf_desc = bad.find(pair);
  ASSERT_NE(buf_desc, std::string::npos);
  std::memcpy(&bad[buf_desc + 8], &big, 8);
  EXPECT_NE(error_of([&] { arrow::read_stream(bad, "b.arrow"); }).find("b.arrow: column 'text': buffer at body offset 16 of length 1000 lies outside the"),
            std::string::npos);
}

TEST(Arrow, FuzzedInputsNeverCrash) {
  std::vector<std::string> seeds = {arrow::write_stream(all_types_schema(), all_types_rows())};
  if (!testdata_dir().empty())
    for (const char* split : {"train", "validation", "test"}) seeds.push_back(read_file(sample_arrow(split)));
  mor::test::FuzzStats st;
  ASSERT_NO_THROW(st = mor::test::fuzz_arrow(seeds, 10.0));
  std::cout << "fuzz: " << st.rounds << " rounds, " << st.parsed << " parsed, " << st.rejected << " rejected\n";
  EXPECT_GT(st.rounds, 100u);
  EXPECT_GT(st.rejected, 0u);
  EXPECT_GT(st.parsed, 0u);
}

// apache-arrow (npm) reads our files with identical values. Binary compares as byte arrays.
static json as_js(const json& v) {
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

TEST(Arrow, ApacheArrowJsReadsOurFiles) {
  std::string js_dir = mor::test::source_dir() + "/tests/arrow_js";
  if (!fs::exists(js_dir + "/node_modules/apache-arrow"))
    GTEST_SKIP() << "apache-arrow not installed: run `npm install` in tests/arrow_js (needs Node.js)";
  if (std::system("node --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "node not found on PATH";
  std::string dir = scratch_dir("arrow-js");
  std::vector<std::pair<std::string, std::vector<json>>> files;
  arrow::Schema s = all_types_schema();
  s.fields.erase(s.fields.begin() + 14, s.fields.begin() + 16);  // binary below, separately
  std::vector<json> rows = all_types_rows();
  write_file(dir + "/types.arrow", arrow::write_stream(s, rows));
  for (json& r : rows) r.erase("bin"), r.erase("lbin");
  files.emplace_back(dir + "/types.arrow", rows);
  arrow::Schema sb;
  sb.fields = {field("bin", Type::Binary), field("lbin", Type::LargeBinary)};
  std::vector<json> brows;
  for (const json& r : all_types_rows()) brows.push_back(json{{"bin", r["bin"]}, {"lbin", r["lbin"]}});
  write_file(dir + "/bin.arrow", arrow::write_stream(sb, brows));
  files.emplace_back(dir + "/bin.arrow", brows);
  if (!testdata_dir().empty()) {  // the sample rewritten by save_to_disk
    DatasetDict dd = load_dataset(testdata_dir() + "/sampled_scienceqa_train_all.hf");
    save_to_disk(dd, dir + "/sample.hf");
    files.emplace_back(dir + "/sample.hf/validation/data-00000-of-00001.arrow", dd.split("validation").rows);
  }
  std::string cmd = "node " + js_dir + "/read_arrow.mjs";
  for (auto& f : files) cmd += " " + f.first;
  cmd += " > " + dir + "/out.json 2> " + dir + "/err.txt";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(dir + "/err.txt");
  json out = json::parse(read_file(dir + "/out.json"));
  ASSERT_EQ(out.size(), files.size());
  for (size_t k = 0; k < files.size(); ++k) {
    const auto& expect = files[k].second;
    ASSERT_EQ(out[k]["rows"].size(), expect.size()) << files[k].first;
    for (size_t i = 0; i < expect.size(); ++i) EXPECT_EQ(out[k]["rows"][i], as_js(expect[i])) << files[k].first << " row " << i;
  }
  EXPECT_EQ(out[0]["huggingface"], R"({"info": {"features": {}}})");
  EXPECT_EQ(out[0]["fields"][14]["type"], "List<Int32>");
}
