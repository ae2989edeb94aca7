#include "serve/bench_serve.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "serve/api.h"
#include "serve/server.h"

namespace cocom::serve {

namespace {

using Clock = std::chrono::steady_clock;

struct Run {
  std::string mode;
  int clients = 0;
  int answers = 0, errors = 0;
  double seconds = 0;
  std::vector<double> latencies_ms;
  double mean_batch = 0;  // sequences per decoder step during the run
  int64_t tokens = 0;
  double answers_per_second() const { return seconds > 0 ? answers / seconds : 0; }
  double percentile(double p) const {
    if (latencies_ms.empty()) return 0;
    std::vector<double> v = latencies_ms;
    std::sort(v.begin(), v.end());
    const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * double(v.size() - 1) + 0.5));
    return v[i];
  }
};

// Sum and count of the decode batch-size histogram from /metrics.
std::pair<double, double> batch_counters(httplib::Client& cli) {
  auto res = cli.Get("/metrics");
  if (!res || res->status != 200) return {0, 0};
  double sum = 0, count = 0;
  std::istringstream in(res->body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("cocom_decode_batch_size_sum ", 0) == 0) sum = std::stod(line.substr(28));
    if (line.rfind("cocom_decode_batch_size_count ", 0) == 0) count = std::stod(line.substr(30));
  }
  return {sum, count};
}

std::string chat_body(const std::string& question, int max_tokens, bool compress) {
  Json j = {{"model", "bench"},
            {"messages", Json::array({Json{{"role", "user"}, {"content", question}}})},
            {"max_tokens", max_tokens},
            {"compress", compress}};
  return j.dump();
}

std::vector<std::string> questions_from_store(httplib::Client& cli, const std::string& topic) {
  Json q = {{"model", "bench"}, {"query", topic}, {"k", 100}, {"mode", "bm25"}};
  auto res = cli.Post("/v1/search", q.dump(), "application/json");
  if (!res || res->status != 200) {
    throw std::runtime_error("bench serve: searching the store for '" + topic + "' failed" +
                             (res ? ": " + res->body : std::string()));
  }
  std::vector<std::string> out;
  const Json found = Json::parse(res->body);
  for (const Json& hit : found.at("data")) {
    const std::string title = hit.value("title", "");
    if (!title.empty()) out.push_back("What is the homepage of " + title + "?");
  }
  if (out.empty()) {
    throw std::runtime_error("bench serve: no passage of the store matches '" + topic +
                             "'; pass --topic WORD or --question-file FILE");
  }
  return out;
}

Run run_clients(const std::string& host, int port, const std::vector<std::string>& questions,
                const ServeBenchOptions& o, bool compress, int clients) {
  Run r;
  r.mode = compress ? "compressed" : "uncompressed";
  r.clients = clients;
  httplib::Client probe(host, port);
  const auto before = batch_counters(probe);
  std::atomic<int> next{0};
  std::mutex mu;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      httplib::Client cli(host, port);
      cli.set_read_timeout(3600, 0);
      for (;;) {
        const int i = next.fetch_add(1);
        if (i >= o.questions) break;
        const std::string body =
            chat_body(questions[size_t(i) % questions.size()], o.max_new_tokens, compress);
        const auto t = Clock::now();
        auto res = cli.Post("/v1/chat/completions", body, "application/json");
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
        std::lock_guard<std::mutex> lock(mu);
        if (res && res->status == 200) {
          ++r.answers;
          r.latencies_ms.push_back(ms);
          r.tokens += Json::parse(res->body)["usage"].value("completion_tokens", int64_t(0));
        } else {
          ++r.errors;
          std::cerr << "bench serve: request failed: "
                    << (res ? std::to_string(res->status) + " " + res->body : "no response")
                    << "\n";
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto after = batch_counters(probe);
  if (after.second > before.second) {
    r.mean_batch = (after.first - before.first) / (after.second - before.second);
  }
  return r;
}

}  // namespace

int run_serve_bench(const ServeBenchOptions& o) {
  if (o.clients.empty()) throw std::runtime_error("--clients: give at least one count");
  for (int c : o.clients) {
    if (c < 1 || c > 256)
      throw std::runtime_error("--clients " + std::to_string(c) + ": must be 1..256");
  }
  if (o.questions < 1) throw std::runtime_error("--questions must be at least 1");
  if (!o.compressed && !o.uncompressed) throw std::runtime_error("nothing to measure");
  ServeOptions so;
  so.collections = {{"bench", o.db}};
  so.port = 0;
  so.max_batch = o.max_batch;
  so.max_queue = *std::max_element(o.clients.begin(), o.clients.end()) * 2 + 2;
  so.weights = o.weights;
  so.threads = o.threads;
  so.top_k = o.k;
  so.max_tokens = std::max(o.max_new_tokens, 1);
  so.web = false;
  std::unique_ptr<Server> server;
  Status st = Server::Create(so, &server);
  if (!st.ok()) throw std::runtime_error("bench serve: " + st.message());
  Result<int> port = server->Bind();
  if (!port.ok()) throw std::runtime_error("bench serve: " + port.status().message());
  std::thread serving([&] { server->Serve(); });
  const std::string host = "127.0.0.1";
  std::vector<Run> runs;
  try {
    httplib::Client cli(host, port.value());
    cli.set_read_timeout(3600, 0);
    std::vector<std::string> questions;
    if (!o.question_file.empty()) {
      std::ifstream in(o.question_file);
      if (!in) throw std::runtime_error("--question-file " + o.question_file + ": cannot open");
      std::string line;
      while (std::getline(in, line)) {
        if (line.find_first_not_of(" \t\r") != std::string::npos) questions.push_back(line);
      }
      if (questions.empty())
        throw std::runtime_error("--question-file " + o.question_file + ": no questions");
    } else {
      questions = questions_from_store(cli, o.topic);
    }
    std::vector<bool> modes;
    if (o.compressed) modes.push_back(true);
    if (o.uncompressed) modes.push_back(false);
    for (bool compress : modes) {
      // One answer first: the first forward passes of a process are slower.
      auto warm = cli.Post("/v1/chat/completions",
                           chat_body(questions[0], o.max_new_tokens, compress), "application/json");
      if (!warm || warm->status != 200) {
        throw std::runtime_error("bench serve: the warm-up answer failed: " +
                                 (warm ? warm->body : std::string("no response")));
      }
      for (int c : o.clients) {
        Run r = run_clients(host, port.value(), questions, o, compress, c);
        {
          std::fprintf(stderr,
                       "  %-12s clients %-3d %3d answers in %7.2f s: %6.3f answers/s, p50 %8.1f "
                       "ms, p95 %8.1f ms, %.2f sequences/step\n",
                       r.mode.c_str(), r.clients, r.answers, r.seconds, r.answers_per_second(),
                       r.percentile(0.5), r.percentile(0.95), r.mean_batch);
        }
        runs.push_back(std::move(r));
      }
    }
  } catch (...) {
    server->Stop();
    serving.join();
    throw;
  }
  server->Stop();
  serving.join();

  auto find = [&](const std::string& mode, int clients) -> const Run* {
    for (const Run& r : runs) {
      if (r.mode == mode && r.clients == clients) return &r;
    }
    return nullptr;
  };
  Json out = {{"db", o.db},
              {"questions", o.questions},
              {"max_new_tokens", o.max_new_tokens},
              {"max_batch", o.max_batch},
              {"weights", WeightFormatName(o.weights)},
              {"hardware_threads", std::thread::hardware_concurrency()}};
  Json rows = Json::array();
  int errors = 0;
  for (const Run& r : runs) {
    errors += r.errors;
    Json row = {{"mode", r.mode},
                {"clients", r.clients},
                {"answers", r.answers},
                {"errors", r.errors},
                {"seconds", r.seconds},
                {"answers_per_second", r.answers_per_second()},
                {"p50_ms", r.percentile(0.5)},
                {"p95_ms", r.percentile(0.95)},
                {"mean_sequences_per_step", r.mean_batch},
                {"completion_tokens", r.tokens}};
    const Run* one = find(r.mode, o.clients.front());
    if (one && one->answers_per_second() > 0) {
      row["answers_per_second_vs_first"] = r.answers_per_second() / one->answers_per_second();
      row["p95_vs_first_p50"] = r.percentile(0.95) / one->percentile(0.5);
    }
    if (r.mode == "compressed") {
      const Run* u = find("uncompressed", r.clients);
      if (u && u->answers_per_second() > 0) {
        row["speedup_vs_uncompressed"] = r.answers_per_second() / u->answers_per_second();
      }
    }
    rows.push_back(row);
  }
  out["runs"] = rows;
  if (o.json) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::printf("%-12s %7s %8s %10s %10s %10s %9s %9s %9s\n", "mode", "clients", "answers",
                "answers/s", "p50 ms", "p95 ms", "vs first", "p95/p50_1", "vs uncomp");
    for (const Json& r : rows) {
      std::printf(
          "%-12s %7d %8d %10.3f %10.1f %10.1f %9.2f %9.2f %9s\n",
          r["mode"].get<std::string>().c_str(), r["clients"].get<int>(), r["answers"].get<int>(),
          r["answers_per_second"].get<double>(), r["p50_ms"].get<double>(),
          r["p95_ms"].get<double>(), r.value("answers_per_second_vs_first", 0.0),
          r.value("p95_vs_first_p50", 0.0),
          r.contains("speedup_vs_uncompressed")
              ? (std::to_string(r["speedup_vs_uncompressed"].get<double>()).substr(0, 5) + "x")
                    .c_str()
              : "-");
    }
  }
  return errors ? 1 : 0;
}

}  // namespace cocom::serve
