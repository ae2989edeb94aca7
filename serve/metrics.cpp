#include "serve/metrics.h"

#include <cstdio>

namespace cocom::serve {

namespace {
std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
const std::vector<double>& latency_bounds() {
  static const std::vector<double> b = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60,   120};
  return b;
}
}  // namespace

void Histogram::observe(double v) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (v <= bounds_[i]) {
      ++counts_[i];
      break;
    }
  }
  ++count_;
  sum_ += v;
}

void Histogram::render(const std::string& name, const std::string& labels, std::string* out) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    *out += name + "_bucket{" + labels + sep + "le=\"" + num(bounds_[i]) + "\"} " +
            std::to_string(cum) + "\n";
  }
  *out += name + "_bucket{" + labels + sep + "le=\"+Inf\"} " + std::to_string(count_) + "\n";
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  *out += name + "_sum" + braces + " " + num(sum_) + "\n";
  *out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
}

void Metrics::request(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{route, status}];
  auto it = latency_.find(route);
  if (it == latency_.end()) it = latency_.emplace(route, Histogram(latency_bounds())).first;
  it->second.observe(seconds);
}

void Metrics::answer(int64_t tokens, double tps) {
  std::lock_guard<std::mutex> lock(mu_);
  tokens_ += static_cast<uint64_t>(tokens);
  ++answers_;
  if (tps > 0) last_tokens_per_second_ = tps;
}

std::string Metrics::render(const Snapshot& s) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string o;
  o += "# HELP cocom_requests_total HTTP requests by route and status.\n";
  o += "# TYPE cocom_requests_total counter\n";
  for (const auto& [k, v] : requests_) {
    o += "cocom_requests_total{route=\"" + k.first + "\",status=\"" + std::to_string(k.second) +
         "\"} " + std::to_string(v) + "\n";
  }
  o += "# HELP cocom_request_duration_seconds HTTP request latency by route.\n";
  o += "# TYPE cocom_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_) {
    h.render("cocom_request_duration_seconds", "route=\"" + route + "\"", &o);
  }
  o += "# HELP cocom_queue_waiting Answers admitted and waiting for the decoder.\n";
  o += "# TYPE cocom_queue_waiting gauge\ncocom_queue_waiting " + std::to_string(s.queue_waiting) +
       "\n";
  o += "# HELP cocom_queue_active Answers admitted (waiting or being decoded).\n";
  o += "# TYPE cocom_queue_active gauge\ncocom_queue_active " + std::to_string(s.queue_active) +
       "\n";
  o += "# HELP cocom_queue_max The admission limit (--max-queue).\n";
  o += "# TYPE cocom_queue_max gauge\ncocom_queue_max " + std::to_string(s.queue_max) + "\n";
  o += "# HELP cocom_answers_total Answers completed.\n";
  o += "# TYPE cocom_answers_total counter\ncocom_answers_total " + std::to_string(answers_) + "\n";
  o += "# HELP cocom_generated_tokens_total Tokens generated.\n";
  o += "# TYPE cocom_generated_tokens_total counter\ncocom_generated_tokens_total " +
       std::to_string(tokens_) + "\n";
  o += "# HELP cocom_decode_tokens_per_second Decode speed of the last answer.\n";
  o += "# TYPE cocom_decode_tokens_per_second gauge\ncocom_decode_tokens_per_second " +
       num(last_tokens_per_second_) + "\n";
  o += "# HELP cocom_decode_batch_size Sequences advanced per decoder step.\n";
  o += "# TYPE cocom_decode_batch_size histogram\n";
  uint64_t cum = 0, sum = 0;
  for (size_t b = 1; b < s.steps_by_batch.size(); ++b) {
    cum += static_cast<uint64_t>(s.steps_by_batch[b]);
    sum += static_cast<uint64_t>(s.steps_by_batch[b]) * b;
    o += "cocom_decode_batch_size_bucket{le=\"" + std::to_string(b) + "\"} " + std::to_string(cum) +
         "\n";
  }
  o += "cocom_decode_batch_size_bucket{le=\"+Inf\"} " + std::to_string(cum) + "\n";
  o += "cocom_decode_batch_size_sum " + std::to_string(sum) + "\n";
  o += "cocom_decode_batch_size_count " + std::to_string(cum) + "\n";
  o += "# HELP cocom_jobs Ingestion jobs by status.\n";
  o += "# TYPE cocom_jobs gauge\n";
  for (const char* st : {"queued", "running", "succeeded", "failed", "cancelled"}) {
    auto it = s.jobs_by_status.find(st);
    o += std::string("cocom_jobs{status=\"") + st + "\"} " +
         std::to_string(it == s.jobs_by_status.end() ? 0 : it->second) + "\n";
  }
  return o;
}

}  // namespace cocom::serve
