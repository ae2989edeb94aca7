// `cocom console` driven the way a person uses it: through a pseudo-terminal (forkpty), typing
// questions and commands, pressing Ctrl-C and Ctrl-D; and with questions piped into stdin.
// The fixture model has random weights, so the answers are gibberish: the tests check the
// session's structure and the sources, which BM25 retrieval makes deterministic.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace cocom;

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kWait = 120;  // seconds; generous for a loaded CI machine

const char* kPrompt = "cocom> ";
const char* kApacheQuestion = "Which license requires preservation of the copyright notice?";

std::string store_dir;  // built once for the suite
std::string work_dir;

int count_of(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

// Terminal output as a person reads it: escape sequences, bells and carriage returns removed.
std::string plain_text(const std::string& raw) {
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '\x1b') {
      if (i + 1 < raw.size() && raw[i + 1] == '[') {
        i += 2;
        while (i < raw.size() && !(raw[i] >= '@' && raw[i] <= '~')) ++i;
      } else {
        ++i;
      }
      continue;
    }
    if (c == '\r' || c == '\a') continue;
    out += c;
  }
  return out;
}

// One `cocom console` on a pseudo-terminal.
class PtySession {
 public:
  // env: variables to set (value) or remove (nullopt) in the child's environment.
  PtySession(const std::vector<std::string>& args,
             const std::map<std::string, std::optional<std::string>>& env) {
    struct winsize ws {};
    ws.ws_row = 50;
    ws.ws_col = 200;
    pid_ = forkpty(&fd_, nullptr, nullptr, &ws);
    if (pid_ == 0) {
      ::setenv("TERM", "xterm", 1);
      ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);  // no re-exec at start-up
      for (const auto& [k, v] : env) {
        if (v) {
          ::setenv(k.c_str(), v->c_str(), 1);
        } else {
          ::unsetenv(k.c_str());
        }
      }
      std::string bin = test::cocom_binary();
      std::vector<std::string> all = {bin, "console"};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    if (pid_ > 0) ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  }
  ~PtySession() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }
  bool started() const { return pid_ > 0; }

  // Types like a person: the text, then Enter.
  void type_line(const std::string& line) { send(line + "\r"); }
  // Waits until the console's line editor has the terminal (canonical mode off), as a person
  // at the prompt would: keys typed while the terminal is still cooked are echoed and edited
  // by the kernel instead. False on timeout.
  bool wait_line_editing(double seconds = kWait) {
    auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      termios t{};
      if (::tcgetattr(fd_, &t) == 0 && (t.c_lflag & ICANON) == 0) return true;
      if (Clock::now() > deadline) return false;
      pump(5);
    }
  }
  void send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n > 0) {
        done += static_cast<size_t>(n);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        return;
      } else {
        pump(10);
      }
    }
  }

  // Position of `needle` in the plain output at or after `from`, waiting up to `seconds`;
  // npos when it did not appear.
  size_t wait_for(const std::string& needle, size_t from, double seconds = kWait) {
    auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      size_t p = text_.find(needle, from);
      if (p != std::string::npos) return p;
      if (eof_ || Clock::now() > deadline) return std::string::npos;
      pump(50);
    }
  }

  // Waits for the child to exit (draining its output); its exit status, or -1 on timeout.
  int wait_exit(double seconds = kWait) {
    auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < deadline) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        while (pump(0)) {
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      pump(50);
    }
    return -1;
  }

  // Reads output for `seconds`.
  void pump_for(double seconds) {
    auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < deadline && !eof_) pump(10);
  }

  const std::string& text() const { return text_; }

 private:
  // Reads what is available (waiting up to timeout_ms); false when nothing came.
  bool pump(int timeout_ms) {
    if (eof_) return false;
    struct pollfd p {};
    p.fd = fd_;
    p.events = POLLIN;
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n > 0) {
      raw_.append(buf, static_cast<size_t>(n));
      text_ = plain_text(raw_);
      return true;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) eof_ = true;  // EIO: the slave closed
    return false;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  bool eof_ = false, exited_ = false;
  std::string raw_, text_;
};

std::map<std::string, std::optional<std::string>> history_env(const std::string& file) {
  return {{"COCOM_HISTORY", file}};
}

std::string fresh_history(const std::string& tag) {
  static int n = 0;
  return work_dir + "/history-" + tag + "-" + std::to_string(++n);
}

class Console : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_dir = test::make_temp_dir("console");
    std::string c = work_dir + "/corpus";
    fs::create_directories(c);
    test::write_bytes(c + "/apache.md",
                      "# Apache License\n\nThe Apache License requires preservation of the "
                      "copyright notice and disclaimer. It is a permissive license.\n");
    test::write_bytes(c + "/gpl.txt",
                      "The GNU General Public License is a free software license. It "
                      "guarantees end users the freedom to run, study, share and modify the "
                      "software.");
    test::write_bytes(c + "/rivers.md",
                      "# Rivers\n\nThe Danube flows through ten countries before it reaches "
                      "the Black Sea. The Rhine carries barges from Basel to Rotterdam.\n");
    test::write_bytes(c + "/bread.md",
                      "# Sourdough\n\nSourdough bread rises with wild yeast and lactic acid "
                      "bacteria kept alive in a starter fed with flour and water.\n");
    store_dir = work_dir + "/db";
    std::string out;
    int rc = test::run_command(test::cocom_binary() + " ingest --db " + store_dir + " --model " +
                                   test::fixtures_dir() + "/cocom " + c,
                               &out);
    ASSERT_EQ(rc, 0) << out;
  }
  static void TearDownTestSuite() {
    if (!::testing::Test::HasFailure()) fs::remove_all(work_dir);
  }

  // The text between `from` and the next prompt (the prompt must come).
  static std::string until_prompt(PtySession& s, size_t from) {
    size_t p = s.wait_for(kPrompt, from);
    EXPECT_NE(p, std::string::npos) << "no prompt after offset " << from << ":\n" << s.text();
    EXPECT_TRUE(p == std::string::npos || s.wait_line_editing(0))
        << "prompt shown on a cooked terminal:\n"
        << s.text();
    return p == std::string::npos ? s.text().substr(from) : s.text().substr(from, p - from);
  }
};

// Starts a session and waits for its first prompt; returns the offset just after it.
size_t start(PtySession& s) {
  EXPECT_TRUE(s.started());
  size_t p = s.wait_for(kPrompt, 0);
  EXPECT_NE(p, std::string::npos) << s.text();
  EXPECT_TRUE(p == std::string::npos || s.wait_line_editing(0))
      << "prompt shown on a cooked terminal:\n"
      << s.text();
  return p == std::string::npos ? 0 : p + std::strlen(kPrompt);
}

}  // namespace

TEST_F(Console, AnswersWithStreamedTextAndNumberedSources) {
  PtySession s({"--db", store_dir}, history_env(fresh_history("answer")));
  size_t at = start(s);
  EXPECT_NE(s.text().find("4 documents"), std::string::npos) << s.text();
  s.type_line(kApacheQuestion);
  std::string reply = until_prompt(s, at + std::strlen(kApacheQuestion));
  // The question echoed, then the answer, then the sources, then the timing line.
  size_t src = reply.find("Sources:");
  ASSERT_NE(src, std::string::npos) << reply;
  EXPECT_NE(reply.find("[1] Apache License -- " + work_dir + "/corpus/apache.md"),
            std::string::npos)
      << reply;
  EXPECT_NE(reply.find("from context embeddings"), std::string::npos) << reply;
  EXPECT_NE(reply.find("tokens/s"), std::string::npos) << reply;
  std::string answer = reply.substr(0, src);
  EXPECT_NE(answer.find_first_not_of(" \n"), std::string::npos)
      << "no answer text before the sources:\n"
      << reply;

  // :sources prints the whole passages of the last answer.
  size_t mark = s.text().size();
  s.type_line(":sources");
  std::string full = until_prompt(s, mark + 9);
  EXPECT_NE(full.find("The Apache License requires preservation of the copyright notice and "
                      "disclaimer. It is a permissive license."),
            std::string::npos)
      << full;

  s.send("\x04");  // Ctrl-D
  EXPECT_EQ(s.wait_exit(), 0) << s.text();
}

TEST_F(Console, CommandsChangeTheSessionAndBadOnesGiveOneLineErrors) {
  PtySession s({"--db", store_dir, "--max-new-tokens", "8"},
               history_env(fresh_history("commands")));
  start(s);

  size_t mark = s.text().size();
  s.type_line(":k 2");
  EXPECT_NE(until_prompt(s, mark + 5).find("k = 2"), std::string::npos) << s.text();
  mark = s.text().size();
  s.type_line(kApacheQuestion);
  std::string reply = until_prompt(s, mark + std::strlen(kApacheQuestion));
  EXPECT_NE(reply.find("[1] Apache License"), std::string::npos) << reply;
  EXPECT_NE(reply.find("[2] "), std::string::npos) << reply;
  EXPECT_EQ(reply.find("[3] "), std::string::npos) << reply;

  // Each bad command or argument: one error line, then the prompt again.
  // Non-ASCII input reaches the console intact (libedit under a UTF-8 locale).
  mark = s.text().size();
  s.type_line(":\xc3\xa9t\xc3\xa9");
  EXPECT_NE(until_prompt(s, mark + 6).find("error: unknown command :\xc3\xa9t\xc3\xa9 "),
            std::string::npos)
      << s.text();

  for (const std::string& bad : {std::string(":frobnicate"), std::string(":k zero"),
                                 std::string(":k 0"), std::string(":mode sideways"),
                                 std::string(":compress maybe"), std::string(":mode dense")}) {
    mark = s.text().size();
    s.type_line(bad);
    std::string out = until_prompt(s, mark + bad.size());
    EXPECT_EQ(count_of(out, "error: "), 1) << bad << " ->\n" << out;
    EXPECT_EQ(out.find("Sources:"), std::string::npos) << bad << " ->\n" << out;
  }
  mark = s.text().size();
  s.type_line(":mode bm25");
  EXPECT_NE(until_prompt(s, mark + 11).find("mode = bm25"), std::string::npos) << s.text();
  mark = s.text().size();
  s.type_line(":compress off");
  EXPECT_NE(until_prompt(s, mark + 14).find("compress = off"), std::string::npos) << s.text();
  mark = s.text().size();
  s.type_line(kApacheQuestion);
  reply = until_prompt(s, mark + std::strlen(kApacheQuestion));
  EXPECT_NE(reply.find("from passage text"), std::string::npos) << reply;
  EXPECT_NE(reply.find("[1] Apache License"), std::string::npos) << reply;

  mark = s.text().size();
  s.type_line(":stats");
  std::string stats = until_prompt(s, mark + 7);
  EXPECT_NE(stats.find("documents      4"), std::string::npos) << stats;
  EXPECT_NE(stats.find("k = 2, mode = bm25, compress = off"), std::string::npos) << stats;
  EXPECT_NE(stats.find("2 answered"), std::string::npos) << stats;

  mark = s.text().size();
  s.type_line(":help");
  EXPECT_NE(until_prompt(s, mark + 6).find(":compress on|off"), std::string::npos);

  s.type_line(":quit");
  EXPECT_EQ(s.wait_exit(), 0) << s.text();
}

TEST_F(Console, CtrlCStopsAGenerationAndClearsALine) {
  // A generation long enough to interrupt: the random model rarely ends by itself.
  PtySession s({"--db", store_dir, "--max-new-tokens", "20000"},
               history_env(fresh_history("ctrl-c")));
  start(s);
  size_t mark = s.text().size();
  s.type_line(kApacheQuestion);
  // Wait until the answer is streaming (some text after the echoed question), then Ctrl-C.
  size_t echo_end = s.wait_for("\n", mark);
  ASSERT_NE(echo_end, std::string::npos) << s.text();
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (s.text().size() < echo_end + 8 && Clock::now() < deadline) s.pump_for(0.02);
  ASSERT_GE(s.text().size(), echo_end + 8) << "no streamed text:\n" << s.text();
  ASSERT_EQ(s.text().find("Sources:", mark), std::string::npos)
      << "the generation ended before Ctrl-C:\n"
      << s.text();
  s.send("\x03");
  std::string reply = until_prompt(s, echo_end);
  EXPECT_NE(reply.find("[stopped]"), std::string::npos) << reply;
  EXPECT_NE(reply.find("[1] Apache License"), std::string::npos) << reply;
  size_t tok = reply.find(" tokens, ");
  ASSERT_NE(tok, std::string::npos) << reply;
  size_t num = reply.rfind(' ', tok - 1);
  EXPECT_LT(std::stoll(reply.substr(num + 1, tok - num - 1)), 20000) << reply;

  // Ctrl-C at the prompt drops the half-typed line; the next line stands alone.
  mark = s.text().size();
  s.send("half a question");
  ASSERT_NE(s.wait_for("half a question", mark), std::string::npos) << s.text();
  s.send("\x03");
  ASSERT_NE(s.wait_for(kPrompt, s.text().find("half a question", mark)), std::string::npos)
      << s.text();
  ASSERT_TRUE(s.wait_line_editing()) << s.text();
  mark = s.text().size();
  s.type_line(":k");
  std::string out = until_prompt(s, mark + 3);
  EXPECT_NE(out.find("k = 5"), std::string::npos) << s.text();
  EXPECT_EQ(out.find("Sources:"), std::string::npos) << s.text();

  s.send("\x04");
  EXPECT_EQ(s.wait_exit(), 0) << s.text();
}

TEST_F(Console, HistoryPersistsAcrossSessionsAndNeverCrashes) {
  std::string hist = fresh_history("persist");
  {
    PtySession s({"--db", store_dir}, history_env(hist));
    start(s);
    size_t mark = s.text().size();
    s.type_line(":k 3");
    EXPECT_NE(until_prompt(s, mark + 5).find("k = 3"), std::string::npos) << s.text();
    s.send("\x04");
    ASSERT_EQ(s.wait_exit(), 0) << s.text();
  }
  ASSERT_TRUE(fs::exists(hist));
  {
    PtySession s({"--db", store_dir}, history_env(hist));
    size_t at = start(s);
    EXPECT_EQ(s.text().find("k = 3", at), std::string::npos);
    s.send("\x1b[A");  // Up: the last line of the previous session
    ASSERT_NE(s.wait_for(":k 3", at), std::string::npos) << s.text();
    size_t mark = s.text().size();
    s.send("\r");
    EXPECT_NE(until_prompt(s, mark).find("k = 3"), std::string::npos) << s.text();
    s.send("\x04");
    EXPECT_EQ(s.wait_exit(), 0) << s.text();
  }

  // Without a home directory, or with a history file that cannot be written: no crash, the
  // session works, and the second case says once that history is not saved.
  {
    PtySession s({"--db", store_dir}, {{"HOME", std::nullopt}, {"COCOM_HISTORY", std::nullopt}});
    start(s);
    size_t mark = s.text().size();
    s.type_line(":k 4");
    EXPECT_NE(until_prompt(s, mark + 5).find("k = 4"), std::string::npos) << s.text();
    s.send("\x04");
    EXPECT_EQ(s.wait_exit(), 0) << s.text();
  }
  {
    PtySession s({"--db", store_dir}, history_env(work_dir + "/no-such-dir/history"));
    start(s);
    size_t mark = s.text().size();
    s.type_line(":k 4");
    std::string out = until_prompt(s, mark + 5);
    EXPECT_NE(out.find("k = 4"), std::string::npos) << s.text();
    EXPECT_NE(out.find("cannot write the history file"), std::string::npos) << s.text();
    s.send("\x04");
    EXPECT_EQ(s.wait_exit(), 0) << s.text();
  }
}

TEST_F(Console, ReadsQuestionsFromAPipeAndNeedsAStore) {
  std::string in = work_dir + "/questions.txt";
  test::write_bytes(in, std::string(kApacheQuestion) + "\n\n:k 2\nWhere does the Danube flow?\n");
  std::string out;
  int rc = test::run_command(test::cocom_binary() + " console --max-new-tokens 8 --db " +
                                 store_dir + " < " + in + " 2>/dev/null",
                             &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out.find(kPrompt), std::string::npos) << out;
  EXPECT_EQ(count_of(out, "Sources:"), 2) << out;
  size_t second = out.find("k = 2");
  ASSERT_NE(second, std::string::npos) << out;
  EXPECT_NE(out.find("[1] Apache License"), std::string::npos) << out;
  EXPECT_NE(out.find("[1] Rivers", second), std::string::npos) << out;
  EXPECT_EQ(out.find("[3] ", second), std::string::npos) << out;

  // A bad command in a script: an error on stderr and a failing exit status, the rest runs.
  test::write_bytes(in, ":nonsense\n" + std::string(kApacheQuestion) + "\n");
  rc = test::run_command(
      test::cocom_binary() + " console --max-new-tokens 4 --db " + store_dir + " < " + in, &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("error: unknown command :nonsense"), std::string::npos) << out;
  EXPECT_NE(out.find("[1] Apache License"), std::string::npos) << out;

  // A store that does not exist is an error, not a new store.
  rc = test::run_command(
      test::cocom_binary() + " console --db " + work_dir + "/nothing-here < /dev/null", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_FALSE(fs::exists(work_dir + "/nothing-here"));
}
