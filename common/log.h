// The library's own logger. Library code logs through cocom::log, never through spdlog's
// default logger, so a program embedding cocom keeps its own spdlog configuration: the level
// and the destination here are set by Options::log_level / Options::log_callback (the public
// API) or by the cocom binary, and by nothing else.
#pragma once

#include <spdlog/spdlog.h>

#include <functional>
#include <string>
#include <utility>

namespace cocom::log {

enum class Level { kDebug, kInfo, kWarn, kError, kOff };

// Receives every message at or above the level, one line without a trailing newline.
using Sink = std::function<void(Level, const std::string&)>;

// Sets the level and the destination (an empty sink: stderr). Process-wide: the library has
// one logger; the last call wins. Default: warnings and errors to stderr.
void configure(Level level, Sink sink = nullptr);
Level level();

spdlog::logger& logger();

template <class... A>
void debug(spdlog::format_string_t<A...> fmt, A&&... a) {
  logger().debug(fmt, std::forward<A>(a)...);
}
template <class... A>
void info(spdlog::format_string_t<A...> fmt, A&&... a) {
  logger().info(fmt, std::forward<A>(a)...);
}
template <class... A>
void warn(spdlog::format_string_t<A...> fmt, A&&... a) {
  logger().warn(fmt, std::forward<A>(a)...);
}
template <class... A>
void error(spdlog::format_string_t<A...> fmt, A&&... a) {
  logger().error(fmt, std::forward<A>(a)...);
}

}  // namespace cocom::log
