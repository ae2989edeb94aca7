// Error type used inside the engine. Every message names the file, tensor or argument at
// fault; the public API (engine/) turns these into Status values.
#pragma once

#include <stdexcept>
#include <string>

namespace cocom {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Builds an Error message from pieces: COCOM_FAIL("file ", path, ": bad header").
template <typename... Args>
[[noreturn]] void fail(const Args&... args);

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

}  // namespace cocom
