// Continuous batching of answers: concurrent answer() calls on one model share the decoder.
// One scheduler thread owns every forward pass. Requests that arrive together are prefilled
// together (left-padded, as a batch of generate() is), each then gets its own KV cache and
// joins the running set; every decoder step advances all running
// sequences at once (MistralModel::decode_step), so the weights are read once per step for
// all of them, and a new request joins between two steps instead of waiting for the others
// to finish. Decode is bound by memory bandwidth on CPU, so answers per second grow with the
// number of requests in flight.
//
// Each answer is decoded exactly as generate::answer decodes it (same prompt, stop rules,
// streaming and sampling with its own seed); only the floating-point order of the batched
// matrix products differs.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "generate/cocom_generate.h"

namespace cocom::generate {

struct BatcherStats {
  int64_t steps = 0;              // decoder steps run
  int64_t sequences_stepped = 0;  // sum over the steps of the sequences each advanced
  // steps_by_batch[b]: steps that advanced b sequences (index 0 unused; size max_batch + 1).
  std::vector<int64_t> steps_by_batch;
  int64_t prefills = 0;     // requests prefilled
  int64_t tokens = 0;       // tokens generated (first tokens included)
  int64_t completed = 0;    // requests answered (cancelled ones included)
  int64_t waiting = 0;      // requests not yet prefilled
  int64_t running = 0;      // sequences being decoded
  double busy_seconds = 0;  // time the scheduler spent in forward passes
};

class Batcher {
 public:
  // Starts the scheduler thread. max_batch: the most sequences one decoder step advances.
  Batcher(std::shared_ptr<const model::CocomModel> model, int max_batch);
  // Cancels what is still waiting or running (their answer() calls return with cancelled
  // set) and joins the scheduler.
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Thread-safe; blocks until the answer is complete. The prompt is assembled in the calling
  // thread; request.on_text is called from the scheduler thread (keep it short: every
  // sequence of the batch waits for it) and may return false to stop this answer only.
  // Errors of this request (a bad prompt, a failed forward pass) are thrown here.
  AnswerResult answer(const AnswerRequest& request);

  BatcherStats stats() const;
  int max_batch() const { return max_batch_; }

 private:
  struct Sequence;
  void run();
  // Prefills new requests together (left-padded to the longest), then gives each its own
  // cache holding its row, and takes each one's first token.
  void prefill(const std::vector<Sequence*>& group);
  void step(std::vector<Sequence*>& running);
  // Takes the sequence's new token: streams it, decides whether the sequence is finished.
  void accept(Sequence& s, int64_t token);
  void finish(Sequence& s, std::exception_ptr error = nullptr);

  std::shared_ptr<const model::CocomModel> model_;
  const int max_batch_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Sequence*> waiting_;
  bool stopping_ = false;
  BatcherStats stats_;
  std::thread thread_;
};

}  // namespace cocom::generate
