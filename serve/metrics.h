// Counters and histograms of `cocom serve`, rendered in the Prometheus text format.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace cocom::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}
  void observe(double v);
  // Appends "NAME_bucket{LABELS,le=..}", "_sum" and "_count" lines.
  void render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bound, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

class Metrics {
 public:
  // One finished HTTP request: its route template ("/v1/chat/completions"), status, seconds.
  void request(const std::string& route, int status, double seconds);
  // One finished answer: tokens generated and decode speed.
  void answer(int64_t tokens, double decode_tokens_per_second);

  // Gauges and counters owned elsewhere, read at render time.
  struct Snapshot {
    int64_t queue_waiting = 0, queue_active = 0, queue_max = 0;
    // Model scheduler: steps by batch size (index = sequences per step), summed over models.
    std::vector<int64_t> steps_by_batch;
    std::map<std::string, int64_t> jobs_by_status;
  };
  std::string render(const Snapshot& s) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> latency_;
  uint64_t tokens_ = 0, answers_ = 0;
  double last_tokens_per_second_ = 0;
};

}  // namespace cocom::serve
