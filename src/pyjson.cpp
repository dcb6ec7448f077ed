// Python-compatible JSON serialisation (see pyjson.h). Mirrors CPython's json.encoder:
// ESCAPE_ASCII escapes everything outside ' '..'~' plus '"' and '\\', using the short forms
// \" \\ \n \r \t \b \f and \u00XX otherwise; code points above U+FFFF become surrogate pairs.
#include "pyjson.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace mor {

namespace {

// Decodes one UTF-8 code point at s[i], advancing i; throws on malformed input.
uint32_t next_code_point(const std::string& s, size_t& i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
  if (extra < 0 || i + extra >= s.size() + (extra ? 0 : 1))
    throw std::runtime_error("invalid UTF-8 at byte " + std::to_string(i) + " of a string");
  uint32_t cp = extra == 0 ? c : extra == 1 ? (c & 0x1F) : extra == 2 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k <= extra; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) throw std::runtime_error("invalid UTF-8 at byte " + std::to_string(i) + " of a string");
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[extra] || cp > 0x10FFFF) throw std::runtime_error("invalid UTF-8 at byte " + std::to_string(i) + " of a string");
  i += extra + 1;
  return cp;
}

void escape_unit(std::string& out, uint32_t u) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(u & 0xFFFF));
  out += buf;
}

void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = next_code_point(s, i);
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
    }
    if (cp >= 0x20 && cp <= 0x7E) out += static_cast<char>(cp);
    else if (cp < 0x10000) escape_unit(out, cp);
    else {
      uint32_t v = cp - 0x10000;
      escape_unit(out, 0xD800 | (v >> 10));
      escape_unit(out, 0xDC00 | (v & 0x3FF));
    }
  }
  out += '"';
}

void dump(std::string& out, const nlohmann::ordered_json& j, int indent, int level) {
  using T = nlohmann::ordered_json::value_t;
  auto newline = [&](int lvl) {
    out += '\n';
    out.append(static_cast<size_t>(indent * lvl), ' ');
  };
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (j.type()) {
    case T::null: out += "null"; return;
    case T::boolean: out += j.get<bool>() ? "true" : "false"; return;
    case T::number_integer: out += std::to_string(j.get<int64_t>()); return;
    case T::number_unsigned: out += std::to_string(j.get<uint64_t>()); return;
    case T::number_float: {
      double v = j.get<double>();
      out += std::isnan(v) ? "NaN" : std::isinf(v) ? (v > 0 ? "Infinity" : "-Infinity") : py_float_repr(v);
      return;
    }
    case T::string: dump_string(out, j.get_ref<const std::string&>()); return;
    case T::array: {
      if (j.empty()) { out += "[]"; return; }
      out += '[';
      bool first = true;
      for (const auto& v : j) {
        if (!first) out += item_sep;
        first = false;
        if (indent >= 0) newline(level + 1);
        dump(out, v, indent, level + 1);
      }
      if (indent >= 0) newline(level);
      out += ']';
      return;
    }
    case T::object: {
      if (j.empty()) { out += "{}"; return; }
      out += '{';
      bool first = true;
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!first) out += item_sep;
        first = false;
        if (indent >= 0) newline(level + 1);
        dump_string(out, it.key());
        out += ": ";
        dump(out, it.value(), indent, level + 1);
      }
      if (indent >= 0) newline(level);
      out += '}';
      return;
    }
    case T::binary: throw std::runtime_error("binary data cannot be written as JSON");
    case T::discarded: throw std::runtime_error("discarded JSON value cannot be written");
  }
}

}  // namespace

std::string py_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // Shortest round-trip digits via scientific to_chars: "d.ddde[+-]xx".
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  size_t e = s.find('e');
  std::string digits = s.substr(0, e);
  int exp10 = std::stoi(s.substr(e + 1));
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  int decpt = exp10 + 1;  // digits d1 d2 ... represent 0.d1d2... * 10^decpt
  std::string out = neg ? "-" : "";
  // CPython float_repr_style 'short' (repr): exponent form when decpt <= -4 or decpt > 16.
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
    else if (static_cast<size_t>(decpt) >= digits.size())
      out += digits + std::string(decpt - digits.size(), '0') + ".0";
    else out += digits.substr(0, decpt) + "." + digits.substr(decpt);
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    int x = decpt - 1;
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
    out += eb;
  }
  return out;
}

std::string py_json_dumps(const nlohmann::ordered_json& value, int indent) {
  std::string out;
  dump(out, value, indent, 0);
  return out;
}

std::string py_strip(const std::string& s) {
  auto is_space = [](uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
  };
  size_t begin = 0, end = 0, i = 0;
  bool seen = false;
  while (i < s.size()) {
    size_t at = i;
    uint32_t cp = next_code_point(s, i);
    if (!is_space(cp)) {
      if (!seen) begin = at, seen = true;
      end = i;
    }
  }
  return seen ? s.substr(begin, end - begin) : "";
}

}  // namespace mor
