#pragma once
/// \file Error type of ditcache: every failure is a ditcache::Error with a code and a message that
/// names the object, says what was expected and what was found.

#include <stdexcept>
#include <string>

namespace ditcache {

/// What kind of failure an Error reports.
enum class ErrorCode {
  kInvalidArgument,  ///< a bad option, config value or argument
  kNotFound,         ///< a file, tensor or name that does not exist
  kShapeMismatch,    ///< a tensor whose shape differs from the expected one
  kUnsupported,      ///< a valid request this build or model cannot serve
  kFormat,           ///< a malformed or foreign file (bad magic, truncated, bad offsets, ...)
  kIo,               ///< the operating system refused a read or write
};

/// Printable name of an ErrorCode ("invalid argument", "not found", ...).
const char* to_string(ErrorCode code) noexcept;

/// The one exception type ditcache throws.
class Error : public std::runtime_error {
 public:
  /// `message` names the object and says expected vs found; what() is "<code>: <message>".
  Error(ErrorCode code, const std::string& message);
  ErrorCode code() const noexcept { return code_; }
  /// The message without the code prefix.
  const std::string& message() const noexcept { return message_; }

 private:
  ErrorCode code_;
  std::string message_;
};

}  // namespace ditcache
