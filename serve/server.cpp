#include "serve/server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "serve/api.h"
#include "serve/metrics.h"
#include "serve/stop_text.h"
#include "serve/web_page.h"

namespace cocom::serve {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string random_hex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += kHex[rng() % 16];
  return s;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The route template of a path, for metrics (never the raw path: ids would explode the
// label set).
std::string route_of(const std::string& method, const std::string& path) {
  static const std::set<std::string> kExact = {
      "/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/search"};
  std::string r;
  if (kExact.count(path)) {
    r = path;
  } else if (path.rfind("/v1/collections/", 0) == 0) {
    r = path.find("/documents/") != std::string::npos ? "/v1/collections/{name}/documents/{id}"
                                                      : "/v1/collections/{name}/documents";
  } else if (path.rfind("/v1/jobs/", 0) == 0) {
    r = "/v1/jobs/{id}";
  } else {
    r = "other";
  }
  return method + " " + r;
}

const std::set<std::string>& upload_extensions() {
  static const std::set<std::string> e = {
      ".txt", ".text", ".md",  ".markdown", ".html", ".htm",  ".xhtml", ".pdf", ".jsonl", ".rst",
      ".org", ".tex",  ".csv", ".docx",     ".odt",  ".epub", ".gz",    ".bz2", ".xz"};
  return e;
}

thread_local Clock::time_point t_request_start;

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Job {
  std::string id, collection;
  std::string status = "queued";
  std::vector<Document> documents;  // JSON documents, or
  fs::path upload_dir;              // uploaded files
  IngestProgress progress;
  std::optional<IngestStats> stats;
  std::optional<ApiError> error;
  std::time_t created = 0;
  double seconds = 0;
};

struct Collection {
  std::string name, dir;
  std::unique_ptr<Engine> engine;
  std::shared_ptr<Model> model;
  std::deque<std::shared_ptr<Job>> queue;  // guarded by Server::Impl::jobs_mu
  std::thread worker;
};

struct Server::Impl {
  ServeOptions opt;
  Limits limits;
  std::optional<ApiKeys> keys;
  std::map<std::string, std::shared_ptr<Model>> models;  // by model directory
  std::map<std::string, std::unique_ptr<Collection>> collections;
  httplib::Server http;
  Metrics metrics;

  std::atomic<int> active{0};  // answers admitted
  int listen_fd = -1;
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> stop_deadline_ns{0};

  std::mutex jobs_mu;
  std::condition_variable jobs_cv;
  std::map<std::string, std::shared_ptr<Job>> jobs;
  std::deque<std::string> job_order;  // oldest first, for retention
  int64_t next_job = 1;

  // -- helpers ----------------------------------------------------------------------------

  bool cancel_now() const {
    if (!stopping.load()) return false;
    return Clock::now().time_since_epoch().count() > stop_deadline_ns.load();
  }

  static void send_json(httplib::Response& res, int status, const Json& j) {
    res.status = status;
    res.set_content(j.dump(), "application/json");
  }

  static void send_error(httplib::Response& res, const ApiError& e) {
    if (e.status == 429) res.set_header("Retry-After", "1");
    send_json(res, e.status, error_json(e));
  }

  // The caller's key ("" for an open server); 401 when a key is needed and wrong.
  std::string authenticate(const httplib::Request& req) const {
    if (!keys) return {};
    const std::string auth = req.get_header_value("Authorization");
    if (auth.empty()) {
      throw ApiError(401, "authentication_error",
                     "no API key given (send the header Authorization: Bearer KEY)", "",
                     "missing_api_key");
    }
    const std::string key = bearer_key(auth);
    if (key.empty() || !keys->known(key)) {
      throw ApiError(401, "authentication_error", "the API key is not valid", "",
                     "invalid_api_key");
    }
    return key;
  }

  Collection& collection_for(const std::string& key, const std::string& name,
                             const std::string& param) {
    auto it = collections.find(name);
    if (it == collections.end()) {
      throw ApiError(404, "not_found_error", "the collection '" + name + "' does not exist", param,
                     "collection_not_found");
    }
    if (keys && !keys->allows(key, name)) {
      throw ApiError(403, "permission_error",
                     "this API key may not use the collection '" + name + "'", param,
                     "forbidden_collection");
    }
    return *it->second;
  }

  bool visible(const std::string& key, const std::string& name) const {
    return !keys || keys->allows(key, name);
  }

  void refuse_when_stopping() const {
    if (stopping.load()) {
      throw ApiError(503, "server_error", "the server is shutting down", "", "shutting_down");
    }
  }

  // One admitted answer; releases its place when destroyed.
  struct Ticket {
    explicit Ticket(std::atomic<int>* a) : active(a) {}
    ~Ticket() { active->fetch_sub(1); }
    std::atomic<int>* active;
  };
  std::shared_ptr<Ticket> admit() {
    const int now = active.fetch_add(1) + 1;
    if (now > opt.max_queue) {
      active.fetch_sub(1);
      throw ApiError(429, "rate_limit_error",
                     "too many answers in flight (" + std::to_string(opt.max_queue) +
                         ", --max-queue); retry later",
                     "", "queue_full");
    }
    return std::make_shared<Ticket>(&active);
  }

  // -- handlers ---------------------------------------------------------------------------

  void models_list(const httplib::Request& req, httplib::Response& res) {
    const std::string key = authenticate(req);
    Json data = Json::array();
    for (const auto& [name, c] : collections) {
      if (!visible(key, name)) continue;
      Json m = {{"id", name}, {"object", "model"}, {"created", 0}, {"owned_by", "cocom"}};
      Result<EngineStats> st = c->engine->Stats();
      if (st.ok()) {
        m["documents"] = st->documents;
        m["passages"] = st->passages;
        m["compression_rate"] = st->compression_rate;
        m["model_dir"] = st->model_dir;
        m["dense_retriever"] = st->has_dense_retriever;
      }
      data.push_back(m);
    }
    send_json(res, 200, Json{{"object", "list"}, {"data", data}});
  }

  void health(const httplib::Request&, httplib::Response& res) {
    const bool stop = stopping.load();
    int64_t waiting = 0;
    for (const auto& [dir, m] : models) waiting += m->Stats().waiting;
    Json j = {{"status", stop ? "stopping" : "ok"},
              {"collections", collections.size()},
              {"queue", {{"waiting", waiting}, {"active", active.load()}, {"max", opt.max_queue}}}};
    send_json(res, stop ? 503 : 200, j);
  }

  void metrics_page(const httplib::Request&, httplib::Response& res) {
    Metrics::Snapshot s;
    s.queue_active = active.load();
    s.queue_max = opt.max_queue;
    s.steps_by_batch.assign(size_t(opt.max_batch) + 1, 0);
    for (const auto& [dir, m] : models) {
      const ModelStats ms = m->Stats();
      s.queue_waiting += ms.waiting;
      for (size_t b = 0; b < ms.steps_by_batch.size() && b < s.steps_by_batch.size(); ++b) {
        s.steps_by_batch[b] += ms.steps_by_batch[b];
      }
    }
    {
      std::lock_guard<std::mutex> lock(jobs_mu);
      for (const auto& [id, j] : jobs) ++s.jobs_by_status[j->status];
    }
    res.set_content(metrics.render(s), "text/plain; version=0.0.4; charset=utf-8");
  }

  AskOptions ask_options(const ChatRequest& cr) const {
    AskOptions ao;
    ao.k = cr.k;
    ao.mode = cr.mode;
    ao.no_compress = !cr.compress;
    ao.generation = cr.generation;
    return ao;
  }

  static Json usage_json(const Timings& t) {
    return Json{{"prompt_tokens", t.prompt_tokens},
                {"completion_tokens", t.generated_tokens},
                {"total_tokens", t.prompt_tokens + t.generated_tokens}};
  }

  static Json sources_json(const std::vector<Passage>& ps) {
    Json s = Json::array();
    for (size_t i = 0; i < ps.size(); ++i) s.push_back(passage_json(ps[i], int(i) + 1, true));
    return s;
  }

  static std::string finish_reason(const Answer& a, const ChatRequest& cr, bool hit_stop) {
    if (hit_stop) return "stop";
    return a.timings.generated_tokens >= cr.generation.max_new_tokens ? "length" : "stop";
  }

  void chat(const httplib::Request& req, httplib::Response& res) {
    const std::string key = authenticate(req);
    const ChatRequest cr = parse_chat_request(req.body, limits);
    Collection& c = collection_for(key, cr.collection, "model");
    refuse_when_stopping();
    std::shared_ptr<Ticket> ticket = admit();
    const std::string id = "chatcmpl-" + random_hex(24);
    const std::time_t created = std::time(nullptr);
    if (!cr.stream) {
      StopText stop(cr.stop);
      auto on_piece = [&](const std::string& piece) {
        stop.push(piece);
        return !stop.hit() && !cancel_now();
      };
      Result<Answer> a = c.engine->AskStreaming(cr.question, on_piece, ask_options(cr));
      if (!a.ok()) throw from_status(a.status());
      stop.finish();
      record_answer(a.value());
      Json msg = {{"role", "assistant"}, {"content", stop.hit() ? stop.text() : a->text}};
      Json j = {{"id", id},
                {"object", "chat.completion"},
                {"created", created},
                {"model", cr.collection},
                {"choices",
                 Json::array({Json{{"index", 0},
                                   {"message", msg},
                                   {"finish_reason", finish_reason(a.value(), cr, stop.hit())}}})},
                {"usage", usage_json(a->timings)},
                {"sources", sources_json(a->sources)},
                {"compressed", a->compressed},
                {"timings", timings_json(a->timings)}};
      if (a->cancelled && !stop.hit()) j["cancelled"] = true;
      send_json(res, 200, j);
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    auto shared = std::make_shared<ChatRequest>(cr);
    res.set_chunked_content_provider("text/event-stream", [this, &c, shared, ticket, id, created](
                                                              size_t, httplib::DataSink& sink) {
      stream_answer(c, *shared, id, created, sink);
      sink.done();
      return true;
    });
  }

  void record_answer(const Answer& a) {
    metrics.answer(a.timings.generated_tokens, a.timings.decode_tokens_per_second);
  }

  // Runs the answer in a worker thread (its token callback only queues pieces, so a slow
  // client never holds up the decoder's other sequences) and writes the events here.
  void stream_answer(Collection& c, const ChatRequest& cr, const std::string& id,
                     std::time_t created, httplib::DataSink& sink) {
    struct Event {
      bool is_sources = false;
      std::vector<Passage> sources;
      std::string text;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Event> events;
    bool closed = false;
    std::atomic<bool> cancelled{false};
    std::optional<Result<Answer>> result;
    std::thread worker([&] {
      AskOptions ao = ask_options(cr);
      ao.on_sources = [&](const std::vector<Passage>& s) {
        std::lock_guard<std::mutex> lock(mu);
        events.push_back(Event{true, s, {}});
        cv.notify_one();
      };
      auto on_piece = [&](const std::string& piece) {
        {
          std::lock_guard<std::mutex> lock(mu);
          events.push_back(Event{false, {}, piece});
        }
        cv.notify_one();
        return !cancelled.load() && !cancel_now();
      };
      Result<Answer> r = c.engine->AskStreaming(cr.question, on_piece, ao);
      std::lock_guard<std::mutex> lock(mu);
      result.emplace(std::move(r));
      closed = true;
      cv.notify_one();
    });

    bool client_ok = true;
    auto write = [&](const std::string& data) {
      if (client_ok && !sink.write(data.data(), data.size())) {
        client_ok = false;
        cancelled = true;  // the client went away: stop its generation
      }
    };
    auto chunk = [&](const Json& delta, const Json& finish) {
      return Json{{"id", id},
                  {"object", "chat.completion.chunk"},
                  {"created", created},
                  {"model", cr.collection},
                  {"choices",
                   Json::array({Json{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}})}};
    };
    auto send = [&](const Json& j) { write("data: " + j.dump() + "\n\n"); };
    StopText stop(cr.stop);
    auto send_text = [&](const std::string& t) {
      if (!t.empty()) send(chunk(Json{{"content", t}}, nullptr));
    };
    for (;;) {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return closed || !events.empty(); });
      if (events.empty() && closed) break;
      Event e = std::move(events.front());
      events.pop_front();
      lock.unlock();
      if (e.is_sources) {
        Json first = chunk(Json{{"role", "assistant"}, {"content", ""}}, nullptr);
        first["sources"] = sources_json(e.sources);
        send(first);
      } else if (!stop.hit()) {
        send_text(stop.push(e.text));
        if (stop.hit()) cancelled = true;
      }
    }
    worker.join();
    const Result<Answer>& r = *result;
    if (!r.ok()) {
      send(error_json(from_status(r.status())));
    } else {
      send_text(stop.finish());
      record_answer(r.value());
      Json last = chunk(Json::object(), finish_reason(r.value(), cr, stop.hit()));
      last["usage"] = usage_json(r->timings);
      last["compressed"] = r->compressed;
      last["timings"] = timings_json(r->timings);
      if (r->cancelled && !stop.hit()) last["cancelled"] = true;
      send(last);
    }
    write("data: [DONE]\n\n");
  }

  void search(const httplib::Request& req, httplib::Response& res) {
    const std::string key = authenticate(req);
    const SearchRequest sr = parse_search_request(req.body, limits);
    Collection& c = collection_for(key, sr.collection, "model");
    SearchOptions so;
    // A filter is applied to a deeper candidate list, then cut to k.
    so.k = sr.filter.empty() ? sr.k : std::min<size_t>(sr.k * 20, 1000);
    so.mode = sr.mode;
    Result<std::vector<Passage>> hits = c.engine->Search(sr.query, so);
    if (!hits.ok()) throw from_status(hits.status());
    Json data = Json::array();
    for (const Passage& p : hits.value()) {
      if (!sr.filter.matches(p)) continue;
      Json j = passage_json(p, 0, false);
      j["rank"] = data.size() + 1;
      data.push_back(j);
      if (data.size() == sr.k) break;
    }
    send_json(res, 200, Json{{"object", "list"}, {"model", sr.collection}, {"data", data}});
  }

  Json job_json(const Job& j) const {
    Json o = {{"id", j.id},
              {"object", "ingestion.job"},
              {"collection", j.collection},
              {"status", j.status},
              {"created", j.created},
              {"documents_total", j.progress.documents_total},
              {"documents_done", j.progress.documents_done},
              {"passages", j.progress.passages_done},
              {"seconds", j.seconds}};
    if (j.stats) {
      o["added"] = j.stats->added;
      o["unchanged"] = j.stats->unchanged;
      o["replaced"] = j.stats->replaced;
      o["passages"] = j.stats->passages;
      Json skipped = Json::array();
      for (const auto& s : j.stats->skipped)
        skipped.push_back({{"path", s.path}, {"reason", s.reason}});
      o["skipped"] = skipped;
      o["warnings"] = j.stats->warnings;
    } else {
      o["added"] = 0;
      o["unchanged"] = 0;
      o["replaced"] = 0;
      o["skipped"] = Json::array();
      o["warnings"] = Json::array();
    }
    o["error"] = j.error ? error_json(*j.error)["error"] : Json(nullptr);
    return o;
  }

  // A replica (--read-only) never writes its stores.
  void refuse_when_read_only(const std::string& name) const {
    if (!opt.read_only) return;
    throw ApiError(403, "permission_error",
                   "the collection '" + name +
                       "' is served read-only (cocom serve --read-only): write to it where it is "
                       "ingested",
                   "", "read_only");
  }

  void add_documents(const httplib::Request& req, httplib::Response& res) {
    const std::string key = authenticate(req);
    const std::string name = req.matches[1];
    Collection& c = collection_for(key, name, "");
    refuse_when_stopping();
    refuse_when_read_only(name);
    auto job = std::make_shared<Job>();
    job->collection = name;
    job->created = std::time(nullptr);
    if (req.is_multipart_form_data()) {
      if (req.files.empty()) bad_field("file", "the multipart body holds no file");
      std::set<std::string> names;
      std::vector<std::pair<std::string, const std::string*>> files;
      size_t i = 0;
      for (const auto& [field, f] : req.files) {
        const std::string p = "files[" + std::to_string(i++) + "]";
        const std::string base = fs::path(f.filename).filename().string();
        if (base.empty() || base == "." || base == "..") bad_field(p, "has no file name");
        const std::string ext = fs::path(base).extension().string();
        std::string lower = ext;
        for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (!upload_extensions().count(lower)) {
          bad_field(p, base + ": unsupported file type '" + ext +
                           "' (.txt .text .md .markdown .html .htm .xhtml .pdf .jsonl .rst .org "
                           ".tex .csv .docx .odt .epub, or one of them as .gz .bz2 .xz)");
        }
        if (!names.insert(base).second) bad_field(p, base + ": the same file name twice");
        files.emplace_back(base, &f.content);
      }
      const fs::path tmp_root = fs::temp_directory_path();
      std::string pattern = (tmp_root / "cocom-upload-XXXXXX").string();
      std::vector<char> buf(pattern.begin(), pattern.end());
      buf.push_back('\0');
      if (!mkdtemp(buf.data())) {
        throw ApiError(500, "server_error", "cannot make a temporary directory for the upload", "",
                       "io_error");
      }
      job->upload_dir = buf.data();
      for (const auto& [base, content] : files) {
        std::ofstream out(job->upload_dir / base, std::ios::binary);
        out.write(content->data(), static_cast<std::streamsize>(content->size()));
        if (!out) {
          std::error_code ec;
          fs::remove_all(job->upload_dir, ec);
          throw ApiError(500, "server_error",
                         "cannot write the upload to " + job->upload_dir.string(), "", "io_error");
        }
      }
    } else {
      job->documents = parse_documents(req.body, limits);
    }
    {
      std::lock_guard<std::mutex> lock(jobs_mu);
      if (c.queue.size() >= size_t(opt.max_jobs)) {
        if (!job->upload_dir.empty()) {
          std::error_code ec;
          fs::remove_all(job->upload_dir, ec);
        }
        throw ApiError(429, "rate_limit_error",
                       "the collection '" + name + "' has " + std::to_string(c.queue.size()) +
                           " ingestion jobs queued; retry later",
                       "", "queue_full");
      }
      job->id = "job-" + std::to_string(next_job++);
      jobs[job->id] = job;
      job_order.push_back(job->id);
      // Keep the last 1000 jobs that are over.
      while (job_order.size() > 1000) {
        auto it = jobs.find(job_order.front());
        if (it != jobs.end() && (it->second->status == "queued" || it->second->status == "running"))
          break;
        if (it != jobs.end()) jobs.erase(it);
        job_order.pop_front();
      }
      c.queue.push_back(job);
      send_json(res, 202, job_json(*job));
    }
    jobs_cv.notify_all();
  }

  void get_job(const httplib::Request& req, httplib::Response& res) {
    const std::string key = authenticate(req);
    const std::string id = req.matches[1];
    std::lock_guard<std::mutex> lock(jobs_mu);
    auto it = jobs.find(id);
    if (it == jobs.end() || !visible(key, it->second->collection)) {
      throw ApiError(404, "not_found_error", "no ingestion job '" + id + "'", "", "job_not_found");
    }
    send_json(res, 200, job_json(*it->second));
  }

  void delete_document(const httplib::Request& req, httplib::Response& res) {
    const std::string key = authenticate(req);
    const std::string name = req.matches[1];
    const std::string doc = req.matches[2];
    Collection& c = collection_for(key, name, "");
    refuse_when_stopping();
    refuse_when_read_only(name);
    Result<int64_t> n = c.engine->Remove(doc);
    if (!n.ok()) throw from_status(n.status());
    if (n.value() == 0) {
      throw ApiError(404, "not_found_error",
                     "the collection '" + name + "' has no document '" + doc + "'", "",
                     "document_not_found");
    }
    send_json(res, 200,
              Json{{"id", doc}, {"object", "document"}, {"deleted", true}, {"removed", n.value()}});
  }

  // -- ingestion jobs -------------------------------------------------------------------------

  void run_jobs(Collection& c) {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(jobs_mu);
        jobs_cv.wait(lock, [&] { return stopping.load() || !c.queue.empty(); });
        if (stopping.load()) {
          for (auto& j : c.queue) {
            j->status = "cancelled";
            cleanup(*j);
          }
          c.queue.clear();
          return;
        }
        job = c.queue.front();
        c.queue.pop_front();
        job->status = "running";
      }
      const auto t0 = Clock::now();
      IngestOptions io;
      io.progress = [&](const IngestProgress& p) {
        std::lock_guard<std::mutex> lock(jobs_mu);
        job->progress = p;
        job->seconds = seconds_since(t0);
        return !stopping.load();
      };
      Result<IngestStats> r = Status::Internal("not run");
      if (!job->upload_dir.empty()) {
        const fs::path dir = job->upload_dir;
        io.source_name = [dir](const std::string& abs) {
          return fs::path(abs).lexically_relative(dir).string();
        };
        // The uploaded files by name (a walk of the directory would leave hidden names out).
        std::vector<std::string> paths;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(dir, ec)) paths.push_back(e.path().string());
        std::sort(paths.begin(), paths.end());
        r = c.engine->Ingest(paths, io);
      } else {
        r = c.engine->IngestDocuments(job->documents, io);
      }
      std::lock_guard<std::mutex> lock(jobs_mu);
      job->seconds = seconds_since(t0);
      if (r.ok()) {
        job->stats = r.value();
        job->status = r->stopped_early ? "cancelled" : "succeeded";
      } else {
        job->error = from_status(r.status());
        job->status = "failed";
      }
      job->documents.clear();
      job->documents.shrink_to_fit();
      cleanup(*job);
    }
  }

  static void cleanup(Job& j) {
    if (j.upload_dir.empty()) return;
    std::error_code ec;
    fs::remove_all(j.upload_dir, ec);
    j.upload_dir.clear();
  }

  // -- wiring -----------------------------------------------------------------------------

  template <class F>
  httplib::Server::Handler wrap(F fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        (this->*fn)(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_error(res, ApiError(500, "server_error", std::string("internal error: ") + e.what(),
                                 "", "internal_error"));
      }
    };
  }

  void routes() {
    using H = void (Impl::*)(const httplib::Request&, httplib::Response&);
    auto method_not_allowed = [](const httplib::Request& req, httplib::Response& res) {
      send_error(
          res, ApiError(405, "invalid_request_error", req.method + " is not allowed on " + req.path,
                        "", "method_not_allowed"));
    };
    struct Route {
      const char* pattern;
      const char* method;
      H handler;
    };
    const Route table[] = {
        {"/health", "GET", &Impl::health},
        {"/metrics", "GET", &Impl::metrics_page},
        {"/v1/models", "GET", &Impl::models_list},
        {"/v1/chat/completions", "POST", &Impl::chat},
        {"/v1/search", "POST", &Impl::search},
        {R"(/v1/collections/([^/]+)/documents)", "POST", &Impl::add_documents},
        {R"(/v1/collections/([^/]+)/documents/(.+))", "DELETE", &Impl::delete_document},
        {R"(/v1/jobs/([^/]+))", "GET", &Impl::get_job},
    };
    for (const Route& r : table) {
      const std::string m = r.method;
      if (m == "GET") http.Get(r.pattern, wrap(r.handler));
      if (m == "POST") http.Post(r.pattern, wrap(r.handler));
      if (m == "DELETE") http.Delete(r.pattern, wrap(r.handler));
      if (m != "GET") http.Get(r.pattern, method_not_allowed);
      if (m != "POST") http.Post(r.pattern, method_not_allowed);
      if (m != "DELETE") http.Delete(r.pattern, method_not_allowed);
      http.Put(r.pattern, method_not_allowed);
      http.Patch(r.pattern, method_not_allowed);
    }
    if (opt.web) {
      http.Get("/", [](const httplib::Request&, httplib::Response& res) {
        res.set_content(web_page(), "text/html; charset=utf-8");
      });
    }
    http.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      t_request_start = Clock::now();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // Statuses httplib sets itself (no route, body too large, bad request line) get the
    // OpenAI error object too.
    http.set_error_handler(httplib::Server::HandlerWithResponse(
        [](const httplib::Request& req,
           httplib::Response& res) -> httplib::Server::HandlerResponse {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          if (res.status == 413) {
            send_error(res, ApiError(413, "invalid_request_error",
                                     "the request body is larger than the limit (--max-body-mb)",
                                     "", "body_too_large"));
          } else if (res.status == 404) {
            send_error(
                res, ApiError(404, "not_found_error", "no route " + req.method + " " + req.path, "",
                              "unknown_route"));
          } else {
            send_error(res, ApiError(res.status, "invalid_request_error",
                                     "the request could not be read (HTTP " +
                                         std::to_string(res.status) + ")",
                                     "", "bad_request"));
          }
          return httplib::Server::HandlerResponse::Handled;
        }));
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics.request(route_of(req.method, req.path), res.status, seconds_since(t_request_start));
    });
    // The listening socket, to deepen its backlog after bind (this httplib listens with 5,
    // and a burst of connections beyond it is reset instead of answered, even with a 429).
    http.set_socket_options([this](socket_t sock) {
      httplib::default_socket_options(sock);
      listen_fd = sock;
    });
    http.set_payload_max_length(opt.max_body_bytes);
    http.set_keep_alive_timeout(5);
    http.set_read_timeout(30);
    http.set_write_timeout(30);
    const size_t threads = size_t(opt.max_queue) + 16;
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  }

  ~Impl() {
    stopping = true;
    jobs_cv.notify_all();
    for (auto& [name, c] : collections) {
      if (c->worker.joinable()) c->worker.join();
    }
  }
};

// ---------------------------------------------------------------------------------------------

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Status Server::Create(const ServeOptions& o, std::unique_ptr<Server>* server) {
  if (!server) return Status::InvalidArgument("Server::Create: the server pointer is null");
  auto impl = std::make_unique<Impl>();
  impl->opt = o;
  Impl& s = *impl;
  auto bad = [](const std::string& m) { return Status::InvalidArgument(m); };
  if (o.collections.empty()) return bad("no collection given (--db NAME=DIR)");
  if (o.max_queue < 1)
    return bad("--max-queue " + std::to_string(o.max_queue) + ": must be at least 1");
  if (o.max_batch < 1 || o.max_batch > 256) {
    return bad("--max-batch " + std::to_string(o.max_batch) + ": must be between 1 and 256");
  }
  if (o.max_jobs < 1)
    return bad("--max-jobs " + std::to_string(o.max_jobs) + ": must be at least 1");
  if (o.port < 0 || o.port > 65535) return bad("--port " + std::to_string(o.port) + ": not a port");
  if (o.max_body_bytes < 1024) return bad("--max-body-mb: too small");
  s.limits.max_tokens = o.max_tokens;
  if (!o.api_keys_file.empty()) {
    try {
      s.keys = load_api_keys(o.api_keys_file);
    } catch (const std::exception& e) {
      return bad(std::string("--api-keys ") + e.what());
    }
  } else if (!is_loopback(o.host)) {
    return bad("--host " + o.host +
               ": an open server (no --api-keys) only binds a loopback address (127.0.0.1, ::1)");
  }
  for (const auto& [name, dir] : o.collections) {
    if (name.empty() || name.find_first_of("/ \t\r\n?#%") != std::string::npos) {
      return bad("--db " + name + "=" + dir +
                 ": a collection name must be non-empty, without spaces, '/', '?', '#' or '%'");
    }
    if (s.collections.count(name)) return bad("--db " + name + ": the collection is named twice");
    auto c = std::make_unique<Collection>();
    c->name = name;
    c->dir = dir;
    Options eo;
    eo.db_path = dir;
    eo.create_if_missing = false;
    eo.read_only = o.read_only;  // a replica: catches up before each request, never writes
    eo.top_k = o.top_k;
    eo.threads = o.threads;
    // The store names its model: open it once to read which, then share one Model per
    // checkpoint between the stores that use it.
    std::string model_dir;
    {
      std::unique_ptr<Engine> probe;
      Status st = Engine::Open(eo, &probe);
      if (!st.ok()) {
        return Status::InvalidArgument("collection " + name + " (" + dir + "): " + st.ToString());
      }
      Result<EngineStats> es = probe->Stats();
      if (!es.ok())
        return Status::InvalidArgument("collection " + name + ": " + es.status().ToString());
      model_dir = es->model_dir;
    }
    std::error_code ec;
    const std::string model_key = fs::weakly_canonical(model_dir, ec).string();
    auto mit = s.models.find(model_key);
    if (mit == s.models.end()) {
      ModelOptions mo;
      mo.model_dir = model_dir;
      mo.decoder_tokenizer = o.decoder_tokenizer;
      mo.compressor_tokenizer = o.compressor_tokenizer;
      mo.weights = o.weights;
      mo.threads = o.threads;
      mo.prompt_memory_mb = o.prompt_memory_mb;
      mo.max_batch = o.max_batch;
      std::shared_ptr<Model> m;
      Status st = Model::Open(mo, &m);
      if (!st.ok()) return Status::InvalidArgument("collection " + name + ": " + st.ToString());
      mit = s.models.emplace(model_key, std::move(m)).first;
    }
    c->model = mit->second;
    Status st = Engine::Open(eo, c->model, &c->engine);
    if (!st.ok())
      return Status::InvalidArgument("collection " + name + " (" + dir + "): " + st.ToString());
    s.collections.emplace(name, std::move(c));
  }
  s.routes();
  for (auto& [name, c] : s.collections) {
    Collection* cp = c.get();
    c->worker = std::thread([&s, cp] { s.run_jobs(*cp); });
  }
  server->reset(new Server(std::move(impl)));
  return Status::OK();
}

Result<int> Server::Bind() {
  Impl& s = *impl_;
  int port = s.opt.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.opt.host);
    if (port <= 0) return Status::IOError("cannot bind " + s.opt.host + " (any port)");
  } else if (!s.http.bind_to_port(s.opt.host, port)) {
    return Status::IOError("cannot bind " + s.opt.host + ":" + std::to_string(port) +
                           " (in use, or not an address of this machine)");
  }
  if (s.listen_fd >= 0) ::listen(s.listen_fd, 1024);
  if (s.opt.print) {
    const std::string host =
        s.opt.host.find(':') != std::string::npos ? "[" + s.opt.host + "]" : s.opt.host;
    s.opt.print("cocom serve: listening on http://" + host + ":" + std::to_string(port));
    for (const auto& [name, c] : s.collections) {
      Result<EngineStats> st = c->engine->Stats();
      std::string line = "  collection " + name + ": " + c->dir;
      if (st.ok()) {
        line += " (" + std::to_string(st->documents) + " documents, " +
                std::to_string(st->passages) + " passages, model " + st->model_dir + ")";
      }
      s.opt.print(line);
    }
    s.opt.print(s.keys
                    ? "  API keys: " + std::to_string(s.keys->keys.size()) + " from " +
                          s.opt.api_keys_file
                    : "  no --api-keys: the server is open to anyone who can reach this address");
    s.opt.print("  answers: at most " + std::to_string(s.opt.max_queue) + " in flight, " +
                std::to_string(s.opt.max_batch) + " per decoder step");
  }
  return port;
}

Status Server::Serve() {
  Impl& s = *impl_;
  const bool ok = s.http.listen_after_bind();
  // listen_after_bind returns once stop() closed the socket and the handlers finished.
  const bool asked = s.stopping.exchange(true);
  s.jobs_cv.notify_all();
  for (auto& [name, c] : s.collections) {
    if (c->worker.joinable()) c->worker.join();
  }
  if (!ok && !asked) return Status::IOError("the HTTP server stopped unexpectedly");
  return Status::OK();
}

void Server::Stop() {
  Impl& s = *impl_;
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(s.opt.shutdown_grace_seconds));
  s.stop_deadline_ns = deadline.time_since_epoch().count();
  s.stopping = true;
  s.jobs_cv.notify_all();
  s.http.stop();
}

}  // namespace cocom::serve
