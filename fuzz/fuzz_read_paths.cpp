// libFuzzer target: every file reader through read_paths, as users feed them. The first byte
// picks the format (.txt .md .html .jsonl .pdf) and the limits; the rest is the file, written
// to a private temporary directory. read_paths must not throw (the path exists, the options
// are valid); every document must come out normalised (valid UTF-8, no CR or C0 controls but
// TAB/LF), every skip must carry a reason and name the file or one of its lines ("FILE:N"),
// and every document must chunk into passages that fit the token budget.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "common/utf8.h"
#include "ingest/documents.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

const char* const kExtensions[] = {".txt", ".md", ".html", ".jsonl", ".pdf"};

std::string g_dir;

void remove_dir() {
  for (const char* ext : kExtensions) ::unlink((g_dir + "/input" + ext).c_str());
  ::rmdir(g_dir.c_str());
}

const std::string& temp_dir() {
  if (g_dir.empty()) {
    char tmpl[] = "/tmp/cocom-fuzz-read-paths.XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    g_dir = tmpl;
    std::atexit(remove_dir);
  }
  return g_dir;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  while (size > 0) {
    const ssize_t w = ::write(fd, data, size);
    if (w <= 0) std::abort();
    data += w;
    size -= static_cast<size_t>(w);
  }
  ::close(fd);
}

// Whitespace-separated words: a simple, monotonic token count for the chunker.
int64_t words(const std::string& s) {
  int64_t n = 0;
  bool in = false;
  for (char c : s) {
    const bool space = c == ' ' || c == '\n' || c == '\t';
    if (!space && !in) ++n;
    in = !space;
  }
  return n;
}

bool normalised(const std::string& s) {
  if (!cocom::utf8::is_valid(s)) return false;
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7F) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t head = data[0];
  const std::string path = temp_dir() + "/input" + kExtensions[head % 5];
  write_file(path, data + 1, size - 1);

  cocom::ingest::ReadOptions opt;
  opt.max_nesting_depth = 1 + (head / 5) % 12;
  opt.repair_utf8 = (head & 0x40) == 0;
  opt.max_file_bytes = (head & 0x80) ? static_cast<int64_t>(size / 2) : 0;
  cocom::ingest::ReadResult r;
  try {
    r = cocom::ingest::read_paths({path}, opt);
  } catch (const cocom::Error&) {
    check(false);
  }
  for (const auto& s : r.skipped) {
    check(!s.reason.empty());
    check(s.path == path ||
          (s.path.size() > path.size() + 1 && s.path.compare(0, path.size(), path) == 0 &&
           s.path[path.size()] == ':'));
  }
  cocom::ingest::ChunkOptions co;
  co.max_tokens = 12;
  co.overlap_tokens = 2;
  for (const auto& d : r.documents) {
    check(normalised(d.text));
    check(normalised(d.title));
    check(!d.id.empty());
    for (const auto& p : cocom::ingest::chunk_document(d, co, words)) {
      check(words(p.text) <= co.max_tokens);
      check(0 <= p.char_begin && p.char_begin <= p.char_end &&
            p.char_end <= static_cast<int64_t>(d.text.size()));
    }
  }
  return 0;
}
