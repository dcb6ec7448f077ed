// JSON text exactly as Python's json.dump/json.dumps writes it, so files we write are byte-identical
// to the Python tools' files: ensure_ascii escapes (\uXXXX, lowercase hex, surrogate pairs), floats as
// Python's repr (shortest round trip: 57.5, 50.0, 1e-05, 1e+16), NaN/Infinity, key order kept.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace mor {

// indent < 0: json.dumps(obj) (separators ", " and ": ", one line);
// indent >= 0: json.dumps(obj, indent=indent) (separators "," and ": ", as Python's default with indent,
// which equals separators=(',', ': ')). Throws on invalid UTF-8 or binary values.
std::string py_json_dumps(const nlohmann::ordered_json& value, int indent = -1);

// Python's repr(float): shortest string that round-trips, in Python's fixed/exponent choice.
std::string py_float_repr(double v);

// Python's str.strip(): removes leading/trailing Unicode whitespace from UTF-8 text.
std::string py_strip(const std::string& s);

}  // namespace mor
