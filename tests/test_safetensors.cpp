// safetensors: byte layout, round trip for every dtype with metadata, zero-copy views, a file written
// by the Python twin, and each malformed file rejected with a message naming the file and tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "helpers.h"
#include "safetensors.h"

using namespace mor;

TEST(SafeTensors, RoundTripAllDtypesWithMetadata) {
  const std::string p = test::scratch_dir("st") + "/a.safetensors";
  std::vector<std::pair<std::string, torch::Tensor>> t = {
      {"f32", torch::randn({3, 4})},
      {"bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"f16", torch::randn({2, 2}).to(torch::kFloat16)},
      {"i64", torch::arange(7, torch::kLong)},
      {"i32", torch::arange(3, torch::kInt)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 6}).t()},  // non-contiguous input is written contiguous
  };
  save_safetensors(p, t, {{"format", "pt"}, {"k", "v"}});
  auto f = SafeTensorsFile::open(p);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("k"), "v");
  EXPECT_EQ(f->keys().size(), t.size());
  for (auto& [name, x] : t) {
    auto y = f->get(name);
    EXPECT_EQ(y.scalar_type(), x.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(y, x)) << name;
  }
  EXPECT_EQ(f->info("bf16").dtype, "BF16");
  EXPECT_FALSE(std::ifstream(p + ".tmp").good());  // temp file renamed away
}

TEST(SafeTensors, HeaderLayoutIsCanonical) {
  const std::string p = test::scratch_dir("st_layout") + "/b.safetensors";
  save_safetensors(p, {{"b", torch::ones({2}, torch::kFloat32)}, {"a", torch::zeros({1}, torch::kFloat16)}}, {{"format", "pt"}});
  const std::string bytes = test::read_file(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  auto h = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(h["a"]["data_offsets"], nlohmann::json({0, 2}));  // name order
  EXPECT_EQ(h["b"]["data_offsets"], nlohmann::json({2, 10}));
  EXPECT_EQ(bytes.size(), 8 + n + 10);
  float one;
  std::memcpy(&one, bytes.data() + 8 + n + 2, 4);
  EXPECT_EQ(one, 1.0f);
}

TEST(SafeTensors, ZeroCopyViewIsCopyOnWrite) {
  const std::string p = test::scratch_dir("st_cow") + "/c.safetensors";
  save_safetensors(p, {{"x", torch::arange(16, torch::kFloat32)}});
  const std::string before = test::read_file(p);
  {
    auto f = SafeTensorsFile::open(p);
    auto x = f->get("x");
    f.reset();          // the view keeps the mapping alive
    x.mul_(2);          // writes into private pages, never the file
    EXPECT_EQ(x[3].item<float>(), 6.0f);
  }
  EXPECT_EQ(test::read_file(p), before);
}

TEST(SafeTensors, ReadsTheTwinsPythonWrittenFile) {
  auto f = SafeTensorsFile::open(test::source_dir() + "/tests/golden/twin_llama/golden.safetensors");
  EXPECT_EQ(f->metadata().at("source"), "scripts/twin_llama.py");
  auto ids = f->get("input_ids");
  EXPECT_EQ(ids.scalar_type(), torch::kLong);
  EXPECT_EQ(ids.sizes(), torch::IntArrayRef({4, 9}));
  EXPECT_EQ(ids[0][0].item<int64_t>(), 1);  // BOS of the longest prompt
}

static std::string expect_open_error(const std::string& bytes) {
  const std::string p = test::scratch_dir("st_bad") + "/bad.safetensors";
  test::write_file(p, bytes);
  try {
    SafeTensorsFile::open(p);
  } catch (const std::runtime_error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(p, 0), 0u) << "message must start with the file: " << m;
    return m;
  }
  ADD_FAILURE() << "no error";
  return "";
}

static std::string make(const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  uint64_t n = claimed_len >= 0 ? claimed_len : header.size();
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s + header + std::string(data_bytes, '\0');
}

TEST(SafeTensors, MalformedFilesAreRejectedClearly) {
  auto has = [](const std::string& m, const std::string& needle) {
    EXPECT_NE(m.find(needle), std::string::npos) << m;
  };
  has(expect_open_error("abc"), "truncated safetensors file: 3 bytes");
  has(expect_open_error(make("{}", 0, 1000)), "header length 1000 is past the end of the file");
  has(expect_open_error(make("{\"a\": [1,", 0)), "bad JSON header");
  has(expect_open_error(make(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2)),
      "tensor 'w': unsupported dtype 'F8_E4M3'");
  has(expect_open_error(make(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)),
      "tensor 'w': data [0, 16) is past the end of the data (8 bytes); truncated file");
  has(expect_open_error(make(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16)),
      "tensor 'w': data_offsets span 16 bytes but shape and dtype need 12");
  has(expect_open_error(make(R"({"w":{"dtype":"F32","shape":[2]}})", 8)), "tensor 'w': header entry needs");
  has(expect_open_error(make(R"([1,2])", 0)), "not a JSON object");
}

TEST(SafeTensors, MissingFileAndMissingTensor) {
  try {
    SafeTensorsFile::open("/nonexistent/x.safetensors");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.safetensors: cannot open"), std::string::npos) << e.what();
  }
  const std::string p = test::scratch_dir("st_miss") + "/m.safetensors";
  save_safetensors(p, {{"x", torch::ones({1})}});
  auto f = SafeTensorsFile::open(p);
  try {
    f->get("y");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor 'y'"), std::string::npos) << e.what();
  }
}
