// Error type used inside the engine. Every message names the file, tensor or argument at
// fault; the public API (engine/) turns these into Status values.
#pragma once

#include <stdexcept>
#include <string>

namespace cocom {

// What kind of failure an Error is, decided where it is raised; the public API maps it to a
// Status code (InvalidArgument, NotFound, Corruption, IOError, FailedPrecondition).
enum class ErrorKind { kInvalidArgument, kNotFound, kCorruption, kIOError, kFailedPrecondition };

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, ErrorKind kind = ErrorKind::kInvalidArgument)
      : std::runtime_error(what), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// Builds an Error message from pieces: fail("file ", path, ": bad header"). fail() is a bad
// argument or input; the others say what else went wrong.
template <typename... Args>
[[noreturn]] void fail(const Args&... args);
template <typename... Args>
[[noreturn]] void fail_not_found(const Args&... args);    // a missing file, directory, store
template <typename... Args>
[[noreturn]] void fail_corrupt(const Args&... args);      // stored data that cannot be read
template <typename... Args>
[[noreturn]] void fail_io(const Args&... args);           // the OS or RocksDB refused
template <typename... Args>
[[noreturn]] void fail_precondition(const Args&... args);  // e.g. a store built otherwise

namespace detail {
std::string concat_pieces(std::initializer_list<std::string> pieces);
template <typename T>
std::string to_piece(const T& v) {
  if constexpr (std::is_convertible_v<T, std::string>) {
    return std::string(v);
  } else {
    return std::to_string(v);
  }
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::concat_pieces({detail::to_piece(args)...}));
}
template <typename... Args>
[[noreturn]] void fail_not_found(const Args&... args) {
  throw Error(detail::concat_pieces({detail::to_piece(args)...}), ErrorKind::kNotFound);
}
template <typename... Args>
[[noreturn]] void fail_corrupt(const Args&... args) {
  throw Error(detail::concat_pieces({detail::to_piece(args)...}), ErrorKind::kCorruption);
}
template <typename... Args>
[[noreturn]] void fail_io(const Args&... args) {
  throw Error(detail::concat_pieces({detail::to_piece(args)...}), ErrorKind::kIOError);
}
template <typename... Args>
[[noreturn]] void fail_precondition(const Args&... args) {
  throw Error(detail::concat_pieces({detail::to_piece(args)...}), ErrorKind::kFailedPrecondition);
}

}  // namespace cocom
