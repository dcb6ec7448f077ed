// Library exceptions as one line (see errors.h).
#include "errors.h"

#include <c10/util/Exception.h>

#include <exception>
#include <new>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace mor {

std::string current_error_line() {
  std::string msg;
  try {
    throw;
  } catch (const c10::Error& e) {
    msg = e.what_without_backtrace();
  } catch (const nlohmann::json::exception& e) {
    msg = std::string("bad JSON: ") + e.what();
  } catch (const std::bad_alloc&) {
    msg = "out of memory (a size in the input may be too large for this machine)";
  } catch (const std::exception& e) {
    msg = e.what();
  } catch (...) {
    msg = "unknown error";
  }
  // c10 messages carry "Exception raised from ..." context and newlines.
  if (auto p = msg.find("Exception raised from"); p != std::string::npos) msg.erase(p);
  std::string out;
  bool space = false;
  for (char c : msg) {
    if (c == '\n' || c == '\r' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) {
      out += ' ';
      space = false;
    }
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out.empty() ? "unknown error" : out;
}

void with_file_context(const std::string& path, const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error&) {
    throw;
  } catch (...) {
    throw std::runtime_error(path + ": " + current_error_line());
  }
}

}  // namespace mor
