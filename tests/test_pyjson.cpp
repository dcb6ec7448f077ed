// Python-compatible JSON: every expected string below was produced by Debian's /usr/bin/python3
// (json.loads of INPUT, then json.dumps(obj) and json.dumps(obj, indent=2)) and pasted here.
#include <cmath>
#include <set>

#include "helpers.h"
#include "pyjson.h"

using json = nlohmann::ordered_json;

static const char* INPUT = R"PY({"text": "quote \" backslash \\ nl \n cr \r tab \t bs \b ff \f nul \u0000 us \u001f del \u007f", "uni": "caf\u00e9 \u4e2d\u6587 \u00a0 \u2028 \ud83d\ude00 \ud834\udd1e", "floats": [57.5, 50.0, 1e-05, 1e+16, 1e15, 0.0001, 0.1, 0.3333333333333333, -0.0, 123456789.123, 5e-324, 1.7976931348623157e308, 1e22, 0.30000000000000004, 1.5e-7, 2.5e100, -12.0], "ints": [0, -1, 9007199254740993, 12345678901234567890, -9223372036854775808], "nested": {"empty_list": [], "empty_obj": {}, "list": [true, false, null, [1, [2, {}]]]}, "": "empty key"})PY";

TEST(PyJson, DefaultDumpMatchesPython) {
  EXPECT_EQ(mor::py_json_dumps(json::parse(INPUT)), R"PY({"text": "quote \" backslash \\ nl \n cr \r tab \t bs \b ff \f nul \u0000 us \u001f del \u007f", "uni": "caf\u00e9 \u4e2d\u6587 \u00a0 \u2028 \ud83d\ude00 \ud834\udd1e", "floats": [57.5, 50.0, 1e-05, 1e+16, 1000000000000000.0, 0.0001, 0.1, 0.3333333333333333, -0.0, 123456789.123, 5e-324, 1.7976931348623157e+308, 1e+22, 0.30000000000000004, 1.5e-07, 2.5e+100, -12.0], "ints": [0, -1, 9007199254740993, 12345678901234567890, -9223372036854775808], "nested": {"empty_list": [], "empty_obj": {}, "list": [true, false, null, [1, [2, {}]]]}, "": "empty key"})PY");
}

TEST(PyJson, Indent2MatchesPython) {
  EXPECT_EQ(mor::py_json_dumps(json::parse(INPUT), 2), R"PY({
  "text": "quote \" backslash \\ nl \n cr \r tab \t bs \b ff \f nul \u0000 us \u001f del \u007f",
  "uni": "caf\u00e9 \u4e2d\u6587 \u00a0 \u2028 \ud83d\ude00 \ud834\udd1e",
  "floats": [
    57.5,
    50.0,
    1e-05,
    1e+16,
    1000000000000000.0,
    0.0001,
    0.1,
    0.3333333333333333,
    -0.0,
    123456789.123,
    5e-324,
    1.7976931348623157e+308,
    1e+22,
    0.30000000000000004,
    1.5e-07,
    2.5e+100,
    -12.0
  ],
  "ints": [
    0,
    -1,
    9007199254740993,
    12345678901234567890,
    -9223372036854775808
  ],
  "nested": {
    "empty_list": [],
    "empty_obj": {},
    "list": [
      true,
      false,
      null,
      [
        1,
        [
          2,
          {}
        ]
      ]
    ]
  },
  "": "empty key"
})PY");
}

TEST(PyJson, NonFiniteAndEdgeCases) {
  json v = json::array({NAN, INFINITY, -INFINITY});
  EXPECT_EQ(mor::py_json_dumps(v), R"PY([NaN, Infinity, -Infinity])PY");
  EXPECT_EQ(mor::py_json_dumps(json::array()), "[]");
  EXPECT_EQ(mor::py_json_dumps(json::object(), 2), "{}");
  EXPECT_EQ(mor::py_float_repr(1e16), "1e+16");
  EXPECT_EQ(mor::py_float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(mor::py_float_repr(0.0001), "0.0001");
  EXPECT_EQ(mor::py_float_repr(0.00001), "1e-05");
  EXPECT_EQ(mor::py_float_repr(0.0), "0.0");
  // Invalid UTF-8 cannot be written as Python text.
  EXPECT_THROW(mor::py_json_dumps(json(std::string("\xff"))), std::runtime_error);
  EXPECT_THROW(mor::py_json_dumps(json(std::string("\xc3"))), std::runtime_error);
  EXPECT_THROW(mor::py_json_dumps(json::binary({1, 2})), std::runtime_error);
}

TEST(PyJson, StripLikePython) {
  EXPECT_EQ(mor::py_strip("  \t\n"), "");
  EXPECT_EQ(mor::py_strip("\u00a0 a b\u3000\n"), "a b");
  EXPECT_EQ(mor::py_strip("x"), "x");
}

namespace {
std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) s += char(cp);
  else if (cp < 0x800) s += char(0xC0 | cp >> 6), s += char(0x80 | (cp & 0x3F));
  else if (cp < 0x10000) s += char(0xE0 | cp >> 12), s += char(0x80 | (cp >> 6 & 0x3F)), s += char(0x80 | (cp & 0x3F));
  else
    s += char(0xF0 | cp >> 18), s += char(0x80 | (cp >> 12 & 0x3F)), s += char(0x80 | (cp >> 6 & 0x3F)),
        s += char(0x80 | (cp & 0x3F));
  return s;
}
}  // namespace

// Every code point against the list Python 3.11 gives: [c for c in range(0x110000) if chr(c).isspace()]
// (what str.strip() with no argument removes), on either side and alone; inner ones stay.
TEST(PyJson, StripEveryCodePointLikePython) {
  const std::set<uint32_t> python_space = {0x9,    0xa,    0xb,    0xc,    0xd,    0x1c,   0x1d,   0x1e,
                                           0x1f,   0x20,   0x85,   0xa0,   0x1680, 0x2000, 0x2001, 0x2002,
                                           0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
                                           0x2028, 0x2029, 0x202f, 0x205f, 0x3000};
  size_t stripped = 0;
  for (uint32_t cp = 1; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;  // surrogates are not UTF-8 text
    const std::string c = utf8_of(cp);
    const bool space = python_space.count(cp) > 0;
    const std::string got = mor::py_strip(c + "a" + c + "b" + c);
    ASSERT_EQ(got, space ? "a" + c + "b" : c + "a" + c + "b" + c) << "U+" << std::hex << cp;
    ASSERT_EQ(mor::py_strip(c), space ? "" : c) << "U+" << std::hex << cp;
    stripped += space;
  }
  EXPECT_EQ(stripped, 29u);
  // The hint rule of the seed: " ".join([hint, ""]).strip() on the fixture's hints.
  EXPECT_EQ(mor::py_strip("\x1funit separator hint\x1f "), "unit separator hint");
  EXPECT_EQ(mor::py_strip("\u200bzero-width\u200b "), "\u200bzero-width\u200b");
}
