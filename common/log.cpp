#include "common/log.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <memory>
#include <mutex>
#include <string>

namespace cocom::log {

namespace {

spdlog::level::level_enum to_spdlog(Level l) {
  switch (l) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
    case Level::kOff:
      break;
  }
  return spdlog::level::off;
}

Level from_spdlog(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return Level::kDebug;
    case spdlog::level::info:
      return Level::kInfo;
    case spdlog::level::warn:
      return Level::kWarn;
    case spdlog::level::err:
    case spdlog::level::critical:
      return Level::kError;
    default:
      return Level::kOff;
  }
}

// The logger's one sink: the application's callback when it set one, else stderr. The target
// can be swapped at any time (configure()), so the logger itself never changes.
class DispatchSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Lines read like the cocom tool's own messages ("cocom: warning: ..."), not like a
  // service log: people see them in a terminal, between a command's output lines.
  DispatchSink() { stderr_.set_pattern("cocom: %^%l%$: %v"); }
  void set_target(Sink fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = std::move(fn);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (fn_) {
      fn_(from_spdlog(msg.level), std::string(msg.payload.data(), msg.payload.size()));
    } else {
      stderr_.log(msg);
    }
  }
  void flush_() override { stderr_.flush(); }

 private:
  Sink fn_;
  spdlog::sinks::stderr_color_sink_st stderr_;
};

struct State {
  std::shared_ptr<DispatchSink> sink = std::make_shared<DispatchSink>();
  // Not registered with spdlog, so the host's spdlog::set_level() or drop_all() leave it alone.
  spdlog::logger logger{"cocom", sink};
  State() { logger.set_level(spdlog::level::warn); }
};

State& state() {
  static State* s = new State();  // never destroyed: static destructors may still log
  return *s;
}

}  // namespace

void configure(Level level, Sink sink) {
  State& s = state();
  s.sink->set_target(std::move(sink));
  s.logger.set_level(to_spdlog(level));
}

Level level() { return from_spdlog(state().logger.level()); }

spdlog::logger& logger() { return state().logger; }

}  // namespace cocom::log
