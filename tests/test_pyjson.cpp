// Python-compatible JSON: every expected string below was produced by Debian's /usr/bin/python3
// (json.loads of INPUT, then json.dumps(obj) and json.dumps(obj, indent=2)) and pasted here.
#include <cmath>

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
