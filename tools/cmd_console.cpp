// `cocom console`: an interactive question-answering session over a knowledge store.
//
// Written against the public API only (cocom/cocom.h): it is also a worked example of
// Engine::AskStreaming. On a terminal it edits lines with libedit (emacs keys, history kept in
// ~/.cocom_history or $COCOM_HISTORY), streams each answer as it is generated and lists the
// passages it came from. Ctrl-C stops a generation (the token callback returns false) or clears
// the line being typed; Ctrl-D quits. When stdin is not a terminal it reads one question (or
// command) per line and prints the answers, for scripts.
#include <errno.h>
#include <histedit.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cwchar>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cocom/cocom.h"
#include "tools/commands.h"

namespace cocom::cli {

namespace {

// ---------------------------------------------------------------------------------------------
// SIGINT: a flag the token callback and the line reader look at.

volatile sig_atomic_t g_interrupted = 0;
pthread_t g_main_thread;

void on_sigint(int) {
  g_interrupted = 1;
  // The kernel may hand the signal to one of libtorch's worker threads; the main thread must
  // see it too, or a read() it is blocked in would not return EINTR.
  if (!pthread_equal(pthread_self(), g_main_thread)) pthread_kill(g_main_thread, SIGINT);
}

// While a line is being read, SIGINT must interrupt read() (no SA_RESTART) so that libedit
// returns and the line is dropped; while the engine computes, interrupted system calls are
// restarted so that nothing inside libtorch or RocksDB sees a spurious EINTR.
void install_sigint(bool restart) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigaction(SIGINT, &sa, nullptr);
}

// Reads one character for libedit. It waits with poll() in short slices and looks at the
// Ctrl-C flag between them: a SIGINT that lands just before a blocking read() would otherwise
// be lost until the next key press.
int read_char_interruptible(EditLine*, wchar_t* out) {
  std::mbstate_t state{};
  *out = L'\0';
  for (;;) {
    if (g_interrupted) {
      errno = EINTR;
      return -1;
    }
    pollfd p{STDIN_FILENO, POLLIN, 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) return -1;
    if (ready <= 0) continue;
    char c = 0;
    const ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n == 0) return 0;  // end of input
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -1;
    }
    wchar_t wc = 0;
    const size_t used = std::mbrtowc(&wc, &c, 1, &state);
    if (used == static_cast<size_t>(-2)) continue;  // more bytes of this character to come
    if (used == static_cast<size_t>(-1)) {          // not UTF-8: the byte is dropped
      state = std::mbstate_t{};
      continue;
    }
    *out = wc;
    return 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Formatting

// Columns of the terminal on stdout; else $COLUMNS; else 100. At least 40.
size_t terminal_columns() {
  struct winsize ws {};
  size_t cols = 0;
  if (::isatty(1) && ::ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    cols = ws.ws_col;
  } else if (const char* c = std::getenv("COLUMNS")) {
    cols = static_cast<size_t>(std::strtoul(c, nullptr, 10));
  }
  if (cols == 0) cols = 100;
  return std::max<size_t>(cols, 40);
}

// Cuts s to at most `max` characters (UTF-8 code points, about one column each), adding
// "..." within the limit when it cuts.
std::string fit_columns(const std::string& s, size_t max) {
  size_t chars = 0, cut = std::string::npos;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (chars == max - 3) cut = i;
    if (++chars > max) return s.substr(0, cut) + "...";
  }
  return s;
}

std::string one_line(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

const char* mode_name(const std::optional<SearchMode>& m) {
  if (!m) return "auto";
  switch (*m) {
    case SearchMode::kAuto:
      return "auto";
    case SearchMode::kHybrid:
      return "hybrid";
    case SearchMode::kDense:
      return "dense";
    case SearchMode::kBm25:
      return "bm25";
  }
  return "auto";
}

bool parse_mode(const std::string& s, std::optional<SearchMode>* out) {
  if (s == "auto") {
    out->reset();
  } else if (s == "hybrid") {
    *out = SearchMode::kHybrid;
  } else if (s == "dense") {
    *out = SearchMode::kDense;
  } else if (s == "bm25") {
    *out = SearchMode::kBm25;
  } else {
    return false;
  }
  return true;
}

std::vector<std::string> split_words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  std::string w;
  while (in >> w) words.push_back(w);
  return words;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

const char* kHelp =
    "Type a question and press Enter: the answer is generated from the stored context\n"
    "embeddings of the retrieved passages, which are listed after it.\n"
    "  :help               this text\n"
    "  :sources            the full text of the last answer's sources\n"
    "  :k N                retrieve N passages per question\n"
    "  :mode MODE          retrieval: dense, bm25, hybrid or auto\n"
    "  :compress on|off    off: the decoder reads the passages' text (uncompressed baseline)\n"
    "  :stats              the store and this session\n"
    "  :quit               leave (or Ctrl-D)\n"
    "Ctrl-C stops an answer being generated, or clears the line being typed.\n";

// ---------------------------------------------------------------------------------------------
// The session

class Console {
 public:
  Console(Engine* engine, const ConsoleArgs& a, bool interactive)
      : engine_(engine), interactive_(interactive) {
    k_ = a.k;
    no_compress_ = a.no_compress;
    parse_mode(a.mode.empty() ? "auto" : a.mode, &mode_);
    generation_.max_new_tokens = static_cast<int>(a.max_new_tokens);
  }

  // Handles one input line. Returns false when the session should end. `failed` is set when
  // the line was a bad command or its question could not be answered.
  bool handle(const std::string& raw, bool* failed) {
    *failed = false;
    std::string line = trim(raw);
    if (line.empty()) return true;
    if (line[0] == ':') return command(line, failed);
    ask(line, failed);
    return true;
  }

 private:
  void error(const std::string& msg) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", msg.c_str());
    std::fflush(stderr);
  }

  bool command(const std::string& line, bool* failed) {
    std::vector<std::string> w = split_words(line);
    const std::string& c = w[0];
    auto bad = [&](const std::string& msg) {
      error(msg);
      *failed = true;
      return true;
    };
    if (c == ":quit" || c == ":q" || c == ":exit") return false;
    if (c == ":help" || c == ":h" || c == ":?") {
      std::fputs(kHelp, stdout);
      return true;
    }
    if (c == ":sources") {
      if (w.size() != 1) return bad(":sources takes no argument");
      print_full_sources();
      return true;
    }
    if (c == ":k") {
      if (w.size() == 1) {
        std::printf("k = %zu\n", k_);
        return true;
      }
      char* end = nullptr;
      errno = 0;
      long v = w.size() == 2 ? std::strtol(w[1].c_str(), &end, 10) : 0;
      if (w.size() != 2 || end == w[1].c_str() || *end != '\0' || errno != 0 || v < 1 || v > 100) {
        return bad(":k wants one whole number from 1 to 100, e.g. :k 3");
      }
      k_ = static_cast<size_t>(v);
      std::printf("k = %zu\n", k_);
      return true;
    }
    if (c == ":mode") {
      if (w.size() == 1) {
        std::printf("mode = %s\n", mode_name(mode_));
        return true;
      }
      std::optional<SearchMode> m;
      if (w.size() != 2 || !parse_mode(w[1], &m)) {
        return bad(":mode wants one of dense, bm25, hybrid, auto");
      }
      if (m && (*m == SearchMode::kDense || *m == SearchMode::kHybrid)) {
        Result<EngineStats> st = engine_->Stats();
        if (st.ok() && !st->has_dense_retriever) {
          return bad(
              "this store has no dense retriever (ingest with --retriever to add one); "
              "bm25 works without");
        }
      }
      mode_ = m;
      std::printf("mode = %s\n", mode_name(mode_));
      return true;
    }
    if (c == ":compress") {
      if (w.size() == 1) {
        std::printf("compress = %s\n", no_compress_ ? "off" : "on");
        return true;
      }
      if (w.size() != 2 || (w[1] != "on" && w[1] != "off")) {
        return bad(":compress wants on or off");
      }
      no_compress_ = w[1] == "off";
      std::printf("compress = %s%s\n", w[1].c_str(),
                  no_compress_ ? " (the decoder reads the passages' text)" : "");
      return true;
    }
    if (c == ":stats") {
      if (w.size() != 1) return bad(":stats takes no argument");
      print_stats();
      return true;
    }
    return bad("unknown command " + c + " (:help lists the commands)");
  }

  void ask(const std::string& question, bool* failed) {
    AskOptions o;
    o.k = k_;
    o.mode = mode_;
    o.no_compress = no_compress_;
    o.generation = generation_;
    g_interrupted = 0;
    if (interactive_) install_sigint(/*restart=*/true);
    bool wrote = false;
    bool ends_with_newline = true;
    std::string shown;
    auto on_token = [&](const std::string& piece) {
      if (g_interrupted) return false;
      // Control characters (other than newline and tab) from the model never reach the
      // terminal: an escape sequence could rewrite the screen.
      shown.clear();
      for (char ch : piece) {
        const auto u = static_cast<unsigned char>(ch);
        if ((u >= 0x20 && u != 0x7f) || ch == '\n' || ch == '\t') shown += ch;
      }
      if (!shown.empty()) {
        std::fwrite(shown.data(), 1, shown.size(), stdout);
        std::fflush(stdout);
        wrote = true;
        ends_with_newline = shown.back() == '\n';
      }
      return g_interrupted == 0;
    };
    Result<Answer> r = engine_->AskStreaming(question, on_token, o);
    std::clearerr(stdout);
    if (wrote && !ends_with_newline) std::fputc('\n', stdout);
    if (!r.ok()) {
      error(cli_terms(r.status().ToString()));
      *failed = true;
      return;
    }
    const Answer& a = *r;
    if (a.cancelled) {
      std::printf("[stopped]\n");
    } else if (!wrote) {
      std::printf("(empty answer)\n");
    }
    last_sources_ = a.sources;
    print_sources(a);
    ++answered_;
  }

  void print_sources(const Answer& a) {
    if (a.sources.empty()) {
      std::printf("Sources: none (the store returned no passage)\n");
    } else {
      std::printf("Sources:\n");
    }
    for (size_t i = 0; i < a.sources.size(); ++i) {
      const Passage& p = a.sources[i];
      std::string title = p.title.empty() ? p.document_id : p.title;
      // Each source takes two lines fitted to the terminal, so a long title or passage
      // never wraps into the next answer.
      const size_t cols = terminal_columns();
      char tail[96];
      std::snprintf(tail, sizeof tail, " (passage %lld, score %.4g)",
                    static_cast<long long>(p.index), p.score);
      const std::string head = "  [" + std::to_string(i + 1) + "] " + one_line(title) + " -- " +
                               (p.source.empty() ? p.document_id : p.source);
      std::printf("%s%s\n", fit_columns(head, cols - std::strlen(tail)).c_str(), tail);
      std::printf("      %s\n", fit_columns(one_line(p.text), cols - 6).c_str());
    }
    const Timings& t = a.timings;
    std::printf(
        "(%s; %lld tokens, %.1f tokens/s; retrieve %.1f ms, embeddings %.1f ms, "
        "prefill %.1f ms, total %.0f ms)\n",
        a.compressed ? "from context embeddings" : "from passage text",
        static_cast<long long>(t.generated_tokens), t.decode_tokens_per_second, t.retrieve_ms,
        t.load_embeddings_ms, t.prefill_ms, t.total_ms);
    std::fflush(stdout);
  }

  void print_full_sources() {
    if (last_sources_.empty()) {
      std::printf("no sources yet: ask a question first\n");
      return;
    }
    for (size_t i = 0; i < last_sources_.size(); ++i) {
      const Passage& p = last_sources_[i];
      // Documents read from files have their path as id: say it once.
      const std::string where = p.source.empty() ? "document " + p.document_id
                                : p.document_id == p.source
                                    ? p.source
                                    : "document " + p.document_id + ", " + p.source;
      std::printf("[%zu] %s\n    %s, passage %lld, score %.4g\n%s\n\n", i + 1,
                  p.title.empty() ? p.document_id.c_str() : p.title.c_str(), where.c_str(),
                  static_cast<long long>(p.index), p.score, p.text.c_str());
    }
  }

  void print_stats() {
    Result<EngineStats> r = engine_->Stats();
    if (!r.ok()) {
      error(cli_terms(r.status().ToString()));
      return;
    }
    const EngineStats& s = *r;
    std::printf("store          %s\n", s.db_path.c_str());
    std::printf("model          %s%s\n", s.model_dir.empty() ? "(none)" : s.model_dir.c_str(),
                s.model_loaded ? " (loaded)" : "");
    std::printf("retriever      %s\n",
                s.has_dense_retriever ? s.retriever_dir.c_str() : "(none: BM25 only)");
    std::printf("documents      %lld\n", static_cast<long long>(s.documents));
    std::printf("passages       %lld\n", static_cast<long long>(s.passages));
    std::printf("compression    x%lld: %lld embeddings of width %lld per passage (%s, %.1f MB)\n",
                static_cast<long long>(s.compression_rate),
                static_cast<long long>(s.embeddings_per_passage),
                static_cast<long long>(s.embedding_dim), EmbeddingDTypeName(s.embedding_dtype),
                static_cast<double>(s.embedding_bytes) / 1e6);
    std::printf("index          %s, BM25 %s\n", s.index_factory.c_str(), s.bm25_analyzer.c_str());
    std::printf(
        "session        k = %zu, mode = %s, compress = %s, max new tokens = %d, "
        "%lld answered\n",
        k_, mode_name(mode_), no_compress_ ? "off" : "on", generation_.max_new_tokens,
        static_cast<long long>(answered_));
  }

  Engine* engine_;
  bool interactive_;
  size_t k_ = 5;
  std::optional<SearchMode> mode_;
  bool no_compress_ = false;
  GenerationOptions generation_;
  std::vector<Passage> last_sources_;
  int64_t answered_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Line input

// The history file: $COCOM_HISTORY, else ~/.cocom_history; empty when there is no home.
std::string history_path() {
  if (const char* p = std::getenv("COCOM_HISTORY"); p != nullptr && *p != '\0') return p;
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    return std::string(h) + "/.cocom_history";
  }
  return "";
}

const char* prompt(EditLine*) { return "cocom> "; }

int run_interactive(Console& console) {
  // libedit decodes typed characters with the locale's multibyte rules: in the "C" locale it
  // would drop every non-ASCII byte. Questions are UTF-8 whatever the environment says.
  if (::setlocale(LC_CTYPE, "") == nullptr || std::strcmp(::nl_langinfo(CODESET), "UTF-8") != 0) {
    ::setlocale(LC_CTYPE, "C.UTF-8");
  }
  EditLine* el = el_init("cocom", stdin, stdout, stderr);
  History* hist = history_init();
  if (el == nullptr || hist == nullptr) {
    std::fprintf(stderr, "cocom console: cannot initialise libedit\n");
    if (el) el_end(el);
    if (hist) history_end(hist);
    return 1;
  }
  HistEvent ev;
  history(hist, &ev, H_SETSIZE, 1000);
  history(hist, &ev, H_SETUNIQUE, 1);
  const std::string hpath = history_path();
  if (!hpath.empty()) history(hist, &ev, H_LOAD, hpath.c_str());  // missing file: fine
  bool history_warned = false;

  el_set(el, EL_EDITOR, "emacs");
  el_set(el, EL_HIST, history, hist);
  el_set(el, EL_PROMPT, prompt);
  el_set(el, EL_GETCFN, read_char_interruptible);
  el_source(el, nullptr);  // the user's ~/.editrc, when there is one

  for (;;) {
    install_sigint(/*restart=*/false);
    g_interrupted = 0;
    int count = 0;
    errno = 0;
    // The line editor takes the terminal before the prompt appears: otherwise keys typed just
    // after the prompt can reach a still-cooked terminal, which echoes them itself and turns
    // Ctrl-D into a NUL the editor does not treat as end of input.
    el_set(el, EL_PREP_TERM, 1);
    const char* raw = el_gets(el, &count);
    if (raw == nullptr || count <= 0) {
      if (g_interrupted || (count < 0 && errno == EINTR)) {
        // Ctrl-C at the prompt: drop the line, prompt again (el_gets starts an empty line).
        std::fputs("^C\n", stdout);
        std::fflush(stdout);
        continue;
      }
      std::fputc('\n', stdout);  // Ctrl-D (or the terminal went away)
      break;
    }
    std::string line(raw, static_cast<size_t>(count));
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (!trim(line).empty()) {
      history(hist, &ev, H_ENTER, line.c_str());
      if (!hpath.empty() && history(hist, &ev, H_SAVE, hpath.c_str()) < 0 && !history_warned) {
        std::fprintf(stderr,
                     "warning: cannot write the history file %s; history is kept "
                     "for this session only\n",
                     hpath.c_str());
        history_warned = true;
      }
    }
    bool failed = false;
    if (!console.handle(line, &failed)) break;
  }
  el_end(el);
  history_end(hist);
  signal(SIGINT, SIG_DFL);
  return 0;
}

int run_piped(Console& console) {
  int rc = 0;
  std::string line;
  while (std::getline(std::cin, line)) {
    bool failed = false;
    if (!console.handle(line, &failed)) break;
    if (failed) rc = 1;
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  return rc;
}

}  // namespace

int cmd_console(const GlobalOptions& g, const ConsoleArgs& a) {
  auto usage_error = [](const char* msg) {
    std::fprintf(stderr, "cocom console: %s\n", msg);
    return 2;
  };
  if (a.k < 1 || a.k > 100) return usage_error("--k must be from 1 to 100");
  if (a.max_new_tokens < 1) return usage_error("--max-new-tokens must be at least 1");
  std::optional<SearchMode> mode;
  if (!a.mode.empty() && !parse_mode(a.mode, &mode)) {
    return usage_error("--mode must be dense, bm25, hybrid or auto");
  }
  const bool interactive = ::isatty(STDIN_FILENO) != 0;

  Options o;
  o.db_path = a.db;
  o.model_dir = a.model;
  o.retriever_dir = a.retriever;
  o.decoder_tokenizer = a.decoder_tokenizer;
  o.weights = weights_flag(a.weights);
  o.compressor_tokenizer = a.compressor_tokenizer;
  o.create_if_missing = false;  // a console over a store that does not exist is a typo
  o.load_model_eagerly = true;  // the first answer should not wait for the model
  o.device = g.device;
  o.threads = g.threads;
  o.prompt_memory_mb = a.prompt_memory_mb;
  o.verbose = g.verbose;
  o.top_k = static_cast<size_t>(a.k);
  o.no_compress = a.no_compress;
  o.read_only = a.read_only;  // a replica: catches up before each question
  o.generation.max_new_tokens = static_cast<int>(a.max_new_tokens);
  if (interactive) std::fprintf(stderr, "opening %s ...\n", a.db.c_str());
  std::unique_ptr<Engine> engine;
  Status s = open_for_reading(o, &engine);
  if (!s.ok()) {
    std::fprintf(stderr, "cocom console: %s\n", cli_terms(s.ToString()).c_str());
    return 1;
  }
  Console console(engine.get(), a, interactive);
  if (!interactive) return run_piped(console);

  g_main_thread = pthread_self();
  Result<EngineStats> st = engine->Stats();
  if (st.ok()) {
    std::printf("cocom console: %s -- %lld documents, %lld passages; COCOM x%lld%s\n",
                st->db_path.c_str(), static_cast<long long>(st->documents),
                static_cast<long long>(st->passages), static_cast<long long>(st->compression_rate),
                st->has_dense_retriever ? ", dense retriever" : ", BM25 retrieval");
  }
  std::printf("Ask a question. :help lists the commands; Ctrl-D quits.\n");
  std::fflush(stdout);
  return run_interactive(console);
}

}  // namespace cocom::cli
