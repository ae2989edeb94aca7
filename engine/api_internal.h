// Internal helpers of the public API (engine.cpp, model_api.cpp): exceptions to Status,
// option checks shared by Engine and Model, and InternalAccess for tests.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "cocom/cocom.h"
#include "common/error.h"
#include "common/log.h"
#include "generate/batcher.h"
#include "generate/cocom_generate.h"
#include "model/cocom.h"
#include "model/quant.h"
#include "storage/store.h"

namespace cocom {

namespace engine {
class KnowledgeStore;
}  // namespace engine

namespace api {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// An error raised by the API layer with its Status code already decided.
class StatusError : public std::runtime_error {
 public:
  explicit StatusError(Status s) : std::runtime_error(s.message()), status_(std::move(s)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

[[noreturn]] inline void throw_status(Status s) { throw StatusError(std::move(s)); }

// The Status of an Error: its kind was decided where it was raised.
inline Status status_of(const Error& e) {
  switch (e.kind()) {
    case ErrorKind::kNotFound:
      return Status::NotFound(e.what());
    case ErrorKind::kCorruption:
      return Status::Corruption(e.what());
    case ErrorKind::kIOError:
      return Status::IOError(e.what());
    case ErrorKind::kFailedPrecondition:
      return Status::FailedPrecondition(e.what());
    case ErrorKind::kInvalidArgument:
      break;
  }
  return Status::InvalidArgument(e.what());
}

inline Status with_prefix(const Status& s, const std::string& prefix) {
  const std::string m = prefix + s.message();
  switch (s.code()) {
    case Status::Code::kOk:
      return s;
    case Status::Code::kInvalidArgument:
      return Status::InvalidArgument(m);
    case Status::Code::kNotFound:
      return Status::NotFound(m);
    case Status::Code::kCorruption:
      return Status::Corruption(m);
    case Status::Code::kIOError:
      return Status::IOError(m);
    case Status::Code::kCancelled:
      return Status::Cancelled(m);
    case Status::Code::kFailedPrecondition:
      return Status::FailedPrecondition(m);
    case Status::Code::kInternal:
      break;
  }
  return Status::Internal(m);
}

// Runs `fn` and turns whatever it throws into a Status whose message starts with the call
// that failed ("Ask: ...").
template <class F>
Status guard(const char* what, F&& fn) {
  const std::string prefix = std::string(what) + ": ";
  try {
    fn();
    return Status::OK();
  } catch (const StatusError& e) {
    return with_prefix(e.status(), prefix);
  } catch (const Error& e) {
    return with_prefix(status_of(e), prefix);
  } catch (const c10::Error& e) {
    return Status::Internal(prefix + "libtorch: " + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return Status::Internal(prefix +
                            "out of memory (try a smaller model, fewer threads or fewer passages)");
  } catch (const std::exception& e) {
    return Status::Internal(prefix + e.what());
  } catch (...) {
    return Status::Internal(prefix + "unknown exception");
  }
}

inline void check_generation(const GenerationOptions& g, const std::string& where) {
  auto bad = [&](const std::string& field, const std::string& why) {
    throw_status(Status::InvalidArgument(where + "." + field + " " + why));
  };
  if (g.max_new_tokens < 1) {
    bad("max_new_tokens",
        std::to_string(g.max_new_tokens) + ": must be at least 1 (--max-new-tokens)");
  }
  if (!std::isfinite(g.temperature) || g.temperature < 0) {
    bad("temperature", "must be a finite number >= 0 (0 = greedy; --temperature)");
  }
  if (g.top_k < 0) bad("top_k", std::to_string(g.top_k) + ": must be >= 0 (0 = off; --top-k)");
  if (!(g.top_p > 0 && g.top_p <= 1)) bad("top_p", "must be in (0, 1] (1 = off; --top-p)");
}

// The public format enums and the internal ones (one parser each: model/quant.h and
// storage/store.h; the public Parse* functions wrap them).
model::WeightFormat to_internal(WeightFormat f);
WeightFormat to_public(model::WeightFormat f);
storage::EmbeddingDType to_internal(EmbeddingDType d);
EmbeddingDType to_public(storage::EmbeddingDType d);

// The library's logger as Options / ModelOptions ask (left alone when they say nothing).
void configure_logging(const std::optional<LogLevel>& level, const LogCallback& callback,
                       bool verbose);

model::SamplingOptions to_sampling(const GenerationOptions& g);

// Runs the one answer loop (generate::answer) for a public call: streaming through on_token,
// timings filled (retrieval and loading left to the caller).
struct AnswerRun {
  std::string text;
  bool cancelled = false;
  Timings timings;
};
// With a batcher, the answer is decoded together with the other answers in flight on the model.
AnswerRun run_answer(const model::CocomModel& m, generate::AnswerRequest request,
                     const GenerationOptions& g, const TokenCallback* on_token,
                     generate::Batcher* batcher = nullptr);

// [k, n, H] fp32 on the model's device from public ContextEmbeddings (checked: shape, width,
// finite values); `what` names the argument in errors.
at::Tensor contexts_tensor(const model::CocomModel& m, const ContextEmbeddings& c,
                           const std::string& what);

}  // namespace api

// Tests reach the objects behind the public API through this (tests/test_api.cpp).
struct InternalAccess {
  // The store under an Engine (IngestShard runs its worker store through it).
  static engine::KnowledgeStore& knowledge_store(Engine& e);
  static std::shared_ptr<const model::CocomModel> cocom_model(const Model& m);
  // The Model's continuous-batching scheduler, or null (ModelOptions::max_batch = 0).
  static generate::Batcher* batcher(const Model& m);
  // The CocomModel an Engine answers with, or null while it has not loaded one.
  static std::shared_ptr<const model::CocomModel> cocom_model(const Engine& e);
  // The public Model around a loaded CocomModel (also for an Engine that loaded its own).
  static std::shared_ptr<Model> wrap_model(std::shared_ptr<const model::CocomModel> m,
                                           const std::string& device);
};

}  // namespace cocom
