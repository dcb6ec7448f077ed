// Library exceptions as one line: c10::Error without its backtrace, nlohmann::json errors, std::bad_alloc,
// anything else. The CLI's one catch (run_command) prints it; readers wrap a library call with
// `with_file_context` so the message also names the file the library was reading.
#pragma once
#include <functional>
#include <string>

namespace mor {

// The message of the exception in flight as one line (c10 context/backtrace dropped, newlines folded).
// Call only inside a catch block.
std::string current_error_line();

// Runs `f`; a std::runtime_error passes through as it is, any other exception (c10::Error from
// torch::load, a nlohmann type_error, std::bad_alloc, ...) becomes std::runtime_error("<path>: <what>").
void with_file_context(const std::string& path, const std::function<void()>& f);

}  // namespace mor
