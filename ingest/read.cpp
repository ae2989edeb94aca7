// Document readers (txt, Markdown, HTML via gumbo, PDF via poppler-cpp, jsonl) and the
// sentence-packing chunker. Torch-free.
//
// Decisions worth knowing:
//  - Directories are walked depth-first; the files found under one given root are ordered by
//    their path relative to that root (byte order). Directories are identified by (device,
//    inode) so symlink loops (and a directory reached twice through links) are visited once.
//  - include/exclude globs (fnmatch, no flags: '*' also matches '/') are tried against the
//    path relative to the given root and against the base name. Excluded directories are
//    pruned. Globs only filter directory contents: a file named explicitly is always read.
//  - Duplicate document ids within one read_paths call: the FIRST one wins, later ones are
//    dropped with a warning (keeps the sorted order stable and never rewrites a document).
//  - A jsonl record without "title" gets an empty title (not the file stem: the stem would
//    prefix every record of the corpus). "id" may be a string or a number; missing/null ->
//    "<path>#<line>" (1-based line).
//  - Texts are normalised after extraction: CR LF / CR / FF / VT -> "\n", NUL and other C0
//    controls (except TAB and LF) -> ' '. Titles additionally have whitespace collapsed.
//  - Invalid UTF-8: repaired (one U+FFFD per maximal invalid subpart, as WHATWG / Python's
//    errors="replace") with a warning naming the document, or the document is skipped with
//    reason "invalid UTF-8" (for jsonl the record is skipped; the skip path is "path:line").
//  - Empty / whitespace-only files are kept as documents (chunk_document gives no passages).
//  - Limits (ReadOptions): a file over max_file_bytes is skipped from its size before any of it
//    is read (the size is checked again on the open file, and reading stops past the limit,
//    should it grow); HTML deeper than max_nesting_depth is flattened (see html.cpp) with a
//    warning (Markdown needs no depth limit: md4c nests without recursion, see markdown.cpp);
//    a jsonl line whose arrays/objects nest deeper is skipped before it is parsed
//    (nlohmann's parser is iterative, but copying and dumping a value recurse).
//  - Every jsonl line that yields no document is one `skipped` entry "path:N" with the reason,
//    so that ingest summaries count them; duplicate ids stay warnings, as for files.
//  - Formats: the extension picks the reader when it is one of ours; otherwise (no extension,
//    "README.Debian", "foo.conf") libmagic types the first 64 KiB of content (detect.cpp), and
//    only text, HTML, PDF, compressed data and the container formats are read further; a
//    binary is skipped before the rest of it is read. A compressed file is decompressed once
//    (a compressed file inside is not unpacked again); its inner name, or else its
//    decompressed content, picks the inner reader. Latin-1 text (as libmagic calls it) is
//    converted to UTF-8; UTF-16/32 text is skipped with the reason.
//  - The walk never enters a directory holding a RocksDB database (CURRENT + IDENTITY): a
//    cocom store (cocom-db.json beside them) or another database; it is one `skipped` entry.
//    Hidden entries (".name") are left out silently unless an include glob names them.
#include "ingest/documents.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"
#include "common/utf8.h"
#include "ingest/archive.h"
#include "ingest/detect.h"
#include "ingest/html.h"
#include "ingest/text.h"

namespace cocom::ingest {
namespace {

using namespace detail;  // NOLINT

// ---------------------------------------------------------------------------------------------
// File reading

struct Source {
  std::string abs;  // absolute path
  std::string rel;  // path relative to the given root (base name for a given file)
};

std::string errno_text(int err) { return std::strerror(err); }

std::string extension_of(const std::string& path) {
  std::filesystem::path p(path);
  return to_lower(p.extension().string());
}

std::string stem_of(const std::string& path) { return std::filesystem::path(path).stem().string(); }

std::string base_name(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool glob_any(const std::vector<std::string>& globs, const std::string& rel) {
  std::string base = base_name(rel);
  for (const auto& g : globs) {
    if (fnmatch(g.c_str(), rel.c_str(), 0) == 0 || fnmatch(g.c_str(), base.c_str(), 0) == 0) {
      return true;
    }
  }
  return false;
}

enum class Format {
  kUnknown,  // typed by content
  kText,
  kMarkdown,
  kHtml,
  kPdf,
  kJsonl,
  kRst,
  kOrg,
  kTex,
  kCsv,
  kDocx,
  kOdt,
  kEpub,
  kCompressed,
  kZip,  // a zip archive typed by content: .docx, .odt, .epub or none, by its entries
};

Format format_of_extension(const std::string& ext) {
  static const std::map<std::string, Format> kByExtension = {
      {".txt", Format::kText},          {".text", Format::kText},     {".md", Format::kMarkdown},
      {".markdown", Format::kMarkdown}, {".html", Format::kHtml},     {".htm", Format::kHtml},
      {".xhtml", Format::kHtml},        {".pdf", Format::kPdf},       {".jsonl", Format::kJsonl},
      {".rst", Format::kRst},           {".org", Format::kOrg},       {".tex", Format::kTex},
      {".csv", Format::kCsv},           {".docx", Format::kDocx},     {".odt", Format::kOdt},
      {".epub", Format::kEpub},         {".gz", Format::kCompressed}, {".bz2", Format::kCompressed},
      {".xz", Format::kCompressed},
  };
  auto it = kByExtension.find(ext);
  return it == kByExtension.end() ? Format::kUnknown : it->second;
}

const char* format_name(Format f) {
  switch (f) {
    case Format::kText:
      return "text";
    case Format::kMarkdown:
      return "markdown";
    case Format::kHtml:
      return "html";
    case Format::kPdf:
      return "pdf";
    case Format::kJsonl:
      return "jsonl";
    case Format::kRst:
      return "rst";
    case Format::kOrg:
      return "org";
    case Format::kTex:
      return "tex";
    case Format::kCsv:
      return "csv";
    case Format::kDocx:
      return "docx";
    case Format::kOdt:
      return "odt";
    case Format::kEpub:
      return "epub";
    case Format::kCompressed:
      return "compressed";
    case Format::kZip:
      return "zip";
    case Format::kUnknown:
      break;
  }
  return "unknown";
}

// Latin-1 bytes as UTF-8 (every byte is a code point).
std::string latin1_to_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (unsigned char c : s) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

// A directory holding a RocksDB database: its CURRENT and IDENTITY files. "" when it is not one,
// else the reason it is not walked.
std::string database_directory(const std::string& dir) {
  struct stat st {};
  if (::stat((dir + "/CURRENT").c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return "";
  if (::stat((dir + "/cocom-db.json").c_str(), &st) == 0) return "a cocom store (not read)";
  if (::stat((dir + "/IDENTITY").c_str(), &st) == 0) return "a RocksDB database (not read)";
  return "";
}

// Does an include glob name the hidden entry `name` (see ReadOptions::include)?
bool hidden_named(const std::vector<std::string>& include, const std::string& name) {
  for (const auto& g : include) {
    size_t pos = 0;
    while (pos <= g.size()) {
      size_t slash = g.find('/', pos);
      if (slash == std::string::npos) slash = g.size();
      const std::string part = g.substr(pos, slash - pos);
      if (!part.empty() && fnmatch(part.c_str(), name.c_str(), FNM_PERIOD) == 0) return true;
      pos = slash + 1;
    }
  }
  return false;
}

std::string too_large(int64_t size, int64_t limit) {
  return "file too large: " + std::to_string(size) + " bytes exceeds max_file_bytes (" +
         std::to_string(limit) + " bytes)";
}

// Reads a whole regular file of at most `max_bytes` (0 = any size); returns false with errno
// text on failure, or with the too_large() reason when the file is (or grows) larger.
bool read_file_bytes(const std::string& path, int64_t max_bytes, std::string* out,
                     std::string* err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    *err = errno_text(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    *err = errno_text(errno);
    ::close(fd);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    *err = "not a regular file";
    ::close(fd);
    return false;
  }
  if (max_bytes > 0 && st.st_size > max_bytes) {
    *err = too_large(static_cast<int64_t>(st.st_size), max_bytes);
    ::close(fd);
    return false;
  }
  out->clear();
  if (st.st_size > 0) out->reserve(static_cast<size_t>(st.st_size));
  char buf[65536];
  while (true) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      *err = errno_text(errno);
      ::close(fd);
      return false;
    }
    if (r == 0) break;
    out->append(buf, static_cast<size_t>(r));
    if (max_bytes > 0 && static_cast<int64_t>(out->size()) > max_bytes) {  // it grew
      *err = too_large(static_cast<int64_t>(out->size()), max_bytes) + " (still growing)";
      ::close(fd);
      return false;
    }
  }
  ::close(fd);
  return true;
}

// The first `n` bytes of a regular file (fewer when it is shorter); false with errno text.
bool read_file_head(const std::string& path, size_t n, std::string* out, std::string* err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    *err = errno_text(errno);
    return false;
  }
  out->assign(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, &(*out)[got], n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      *err = errno_text(errno);
      ::close(fd);
      return false;
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  out->resize(got);
  return true;
}

// True when arrays/objects in the JSON text `s` nest deeper than `limit` (strings skipped;
// linear, no parsing).
bool json_nesting_exceeds(const std::string& s, int64_t limit) {
  int64_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

// nlohmann's message without its "[json.exception.parse_error.101] " prefix, valid UTF-8.
std::string parse_error_text(const Json::exception& e) {
  std::string m = e.what();
  const size_t close = m.find("] ");
  if (!m.empty() && m[0] == '[' && close != std::string::npos) m.erase(0, close + 2);
  utf8::repair(&m);
  return m;
}

std::string absolute_path(const std::string& p) {
  std::string s = std::filesystem::absolute(std::filesystem::path(p)).lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

class Reader {
 public:
  explicit Reader(const ReadOptions& opt) : opt_(opt) {}

  void add_root(const std::string& given) {
    std::string abs = absolute_path(given);
    struct stat st {};
    if (::stat(abs.c_str(), &st) != 0) {
      res_.skipped.push_back({abs, "unreadable: " + errno_text(errno)});
      return;
    }
    if (S_ISDIR(st.st_mode)) {
      const std::string db = database_directory(abs);
      if (!db.empty()) {
        res_.skipped.push_back({abs, db});
        return;
      }
      std::vector<Source> files;
      walk(abs, &files);
      std::sort(files.begin(), files.end(),
                [](const Source& a, const Source& b) { return a.rel < b.rel; });
      for (const auto& f : files) read_file(f.abs, /*explicit_file=*/false);
    } else {
      read_file(abs, /*explicit_file=*/true);
    }
  }

  ReadResult take() { return std::move(res_); }

 private:
  void walk(const std::string& root, std::vector<Source>* files) {
    std::set<std::pair<dev_t, ino_t>> visited;
    struct stat st {};
    if (::stat(root.c_str(), &st) == 0) visited.insert({st.st_dev, st.st_ino});
    std::vector<std::pair<std::string, std::string>> stack{{root, ""}};  // (abs, rel)
    while (!stack.empty()) {
      auto [dir_abs, dir_rel] = stack.back();
      stack.pop_back();
      DIR* d = ::opendir(dir_abs.c_str());
      if (!d) {
        res_.skipped.push_back({dir_abs, "unreadable: " + errno_text(errno)});
        continue;
      }
      std::vector<std::string> names;
      while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        names.push_back(std::move(name));
      }
      ::closedir(d);
      std::sort(names.begin(), names.end());
      std::vector<std::pair<std::string, std::string>> subdirs;
      for (const auto& name : names) {
        std::string abs = dir_abs + "/" + name;
        std::string rel = dir_rel.empty() ? name : dir_rel + "/" + name;
        if (name[0] == '.' && !hidden_named(opt_.include, name)) continue;
        struct stat est {};
        if (::stat(abs.c_str(), &est) != 0) {  // e.g. a dangling symlink or a link loop
          int err = errno;
          if (!glob_any(opt_.exclude, rel)) {
            res_.skipped.push_back({abs, "unreadable: " + errno_text(err)});
          }
          continue;
        }
        if (glob_any(opt_.exclude, rel)) continue;
        if (S_ISDIR(est.st_mode)) {
          if (!visited.insert({est.st_dev, est.st_ino}).second) continue;  // loop / seen
          const std::string db = database_directory(abs);
          if (!db.empty()) {
            res_.skipped.push_back({abs, db});
            continue;
          }
          subdirs.emplace_back(abs, rel);
          continue;
        }
        if (!opt_.include.empty() && !glob_any(opt_.include, rel)) continue;
        files->push_back({abs, rel});
      }
      for (auto it = subdirs.rbegin(); it != subdirs.rend(); ++it) stack.push_back(*it);
    }
  }

  // Repairs or rejects invalid UTF-8 in `s`; false = skip the document.
  bool check_utf8(std::string* s, const std::string& what) {
    if (utf8::is_valid(*s)) return true;
    if (!opt_.repair_utf8) {
      res_.skipped.push_back({what, "invalid UTF-8"});
      return false;
    }
    size_t n = utf8::repair(s);
    res_.warnings.push_back(what + ": replaced " + std::to_string(n) +
                            " invalid UTF-8 sequence(s) with U+FFFD");
    return true;
  }

  bool add_document(Document doc, const std::string& where) {
    auto [it, inserted] = ids_.emplace(doc.id, where);
    if (!inserted) {
      res_.warnings.push_back(where + ": duplicate document id '" + doc.id + "' (first seen at " +
                              it->second + "); keeping the first");
      return false;
    }
    res_.documents.push_back(std::move(doc));
    return true;
  }

  void read_file(const std::string& abs, bool explicit_file) {
    (void)explicit_file;
    struct stat st {};
    if (::stat(abs.c_str(), &st) != 0) {
      res_.skipped.push_back({abs, "unreadable: " + errno_text(errno)});
      return;
    }
    if (!S_ISREG(st.st_mode)) {
      res_.skipped.push_back({abs, "not a regular file"});
      return;
    }
    if (opt_.max_file_bytes > 0 && st.st_size > opt_.max_file_bytes) {
      res_.skipped.push_back(
          {abs, too_large(static_cast<int64_t>(st.st_size), opt_.max_file_bytes)});
      return;
    }
    Json meta = {{"size", static_cast<int64_t>(st.st_size)},
                 {"mtime", static_cast<int64_t>(st.st_mtime)}};
    Format fmt = format_of_extension(extension_of(abs));
    if (fmt == Format::kPdf) {
      Document doc;
      try {
        doc.text = pdf_to_text(abs, &doc.title);
      } catch (const std::exception& e) {
        res_.skipped.push_back({abs, e.what()});
        return;
      }
      if (!check_utf8(&doc.text, abs)) return;
      utf8::repair(&doc.title);
      finish_file_doc(std::move(doc), abs, stem_of(abs), meta, "pdf");
      return;
    }
    std::string bytes, err, charset;  // charset: libmagic's, for a file it typed as text
    if (fmt == Format::kUnknown) {    // a binary is skipped before the rest of it is read
      if (!read_file_head(abs, kHeadBytes, &bytes, &err)) {
        res_.skipped.push_back({abs, "unreadable: " + err});
        return;
      }
      std::string why;
      fmt = format_of_content(bytes, &why);
      if (fmt == Format::kUnknown) {
        res_.skipped.push_back({abs, why});
        return;
      }
      charset = why;
    }
    if (!read_file_bytes(abs, opt_.max_file_bytes, &bytes, &err)) {
      res_.skipped.push_back(
          {abs, err.rfind("file too large", 0) == 0 ? err : "unreadable: " + err});
      return;
    }
    std::string compression, inner_name = base_name(abs);
    if (fmt == Format::kCompressed) {
      compression = compression_of(bytes);
      try {
        bytes = decompress(bytes, abs, opt_.max_unpacked_bytes);
      } catch (const Error& e) {
        res_.skipped.push_back({abs, e.what()});
        return;
      }
      // "changelog.Debian.gz" holds "changelog.Debian"; "foo.tgz" is typed by content.
      const std::string ext = extension_of(abs);
      if (ext == ".gz" || ext == ".bz2" || ext == ".xz") {
        inner_name = inner_name.substr(0, inner_name.size() - ext.size());
      }
      fmt = format_of_extension(extension_of(inner_name));
      charset.clear();
      if (fmt == Format::kUnknown) {
        std::string why;
        fmt = format_of_content(bytes, &why);
        if (fmt == Format::kUnknown) {
          res_.skipped.push_back({abs, why + " inside " + compression + " data"});
          return;
        }
        charset = why;
      }
      if (fmt == Format::kCompressed) {
        res_.skipped.push_back(
            {abs, "compressed data inside " + compression + " data (only one layer is unpacked)"});
        return;
      }
    }
    if (fmt == Format::kZip) {
      std::string kind;
      try {
        kind = office_kind(bytes, abs, {opt_.max_unpacked_bytes, opt_.max_archive_entries});
      } catch (const Error& e) {
        res_.skipped.push_back({abs, e.what()});
        return;
      }
      if (kind.empty()) {
        res_.skipped.push_back(
            {abs, "binary file (application/zip: not a .docx, .odt or .epub)" +
                      (compression.empty() ? std::string() : " inside " + compression + " data")});
        return;
      }
      fmt = format_of_extension("." + kind);
    }
    read_content(abs, inner_name, fmt, compression, charset, std::move(bytes), meta);
  }

  // Types `head` (the start of a file's content) by libmagic: the reader to use, or kUnknown
  // with the reason to skip it in `*why`. For text, `*why` is the charset libmagic names.
  Format format_of_content(const std::string& head, std::string* why) {
    if (!compression_of(head).empty()) return Format::kCompressed;
    if (head.compare(0, 4, "PK\x03\x04") == 0) return Format::kZip;  // typed by its entries
    const ContentType t = detector_.detect(head);
    if (!detector_.fallback_reason().empty() && !warned_fallback_) {
      warned_fallback_ = true;
      res_.warnings.push_back(detector_.fallback_reason() +
                              "; files without a known extension are typed by NUL bytes only");
    }
    const std::string& m = t.mime;
    if (m == "application/pdf") return Format::kPdf;
    if (m == "application/zip") return Format::kZip;
    if (m == "text/html") return Format::kHtml;
    if (m == "application/epub+zip") return Format::kEpub;
    if (m == "application/vnd.oasis.opendocument.text") return Format::kOdt;
    if (m == "application/vnd.openxmlformats-officedocument.wordprocessingml.document") {
      return Format::kDocx;
    }
    if (m == "application/x-empty" || m == "inode/x-empty") {
      *why = "us-ascii";
      return Format::kText;
    }
    const std::string cs = to_lower(t.charset);
    if (cs.rfind("utf-16", 0) == 0 || cs.rfind("utf-32", 0) == 0 || cs == "ebcdic") {
      *why = "text in " + t.charset + " (only UTF-8, ASCII and Latin-1 text is read)";
      return Format::kUnknown;
    }
    if (cs == "binary" || cs.empty()) {
      *why = "binary file (" + (m.empty() ? std::string("unknown type") : m) + ")";
      return Format::kUnknown;
    }
    // Any text is read (libmagic's finer types are often wrong for prose: a README.Debian was
    // "HP-GL"), except text that is a page description or a picture, not prose.
    if (m == "application/postscript" || m == "image/svg+xml" || m == "text/rtf") {
      *why = "not a document format read as text (" + m + ")";
      return Format::kUnknown;
    }
    *why = cs;
    return Format::kText;
  }

  // Reads a file's (decompressed) content with the reader of `fmt`; `name` is the file's base
  // name, or the inner name of a compressed file (its stem is the default title); `charset` is
  // libmagic's for content it typed as text ("iso-8859-1" is converted), else "".
  void read_content(const std::string& abs, const std::string& name, Format fmt,
                    const std::string& compression, const std::string& charset, std::string bytes,
                    const Json& meta) {
    const std::string format =
        std::string(format_name(fmt)) + (compression.empty() ? "" : " (" + compression + ")");
    const std::string stem = stem_of(name);
    Document doc;
    const UnpackLimits lim{opt_.max_unpacked_bytes, opt_.max_archive_entries};
    try {
      switch (fmt) {
        case Format::kPdf:
          doc.text = pdf_bytes_to_text(bytes, abs, &doc.title);
          if (!check_utf8(&doc.text, abs)) return;
          utf8::repair(&doc.title);
          finish_file_doc(std::move(doc), abs, stem, meta, format);
          return;
        case Format::kDocx:
          doc.text = docx_to_text(bytes, abs, lim, &doc.title);
          break;
        case Format::kOdt:
          doc.text = odt_to_text(bytes, abs, lim, &doc.title);
          break;
        case Format::kEpub:
          doc.text = epub_to_text(bytes, abs, lim, opt_.max_nesting_depth, &doc.title);
          break;
        default:
          break;
      }
    } catch (const Error& e) {
      res_.skipped.push_back({abs, e.what()});
      return;
    }
    if (fmt == Format::kDocx || fmt == Format::kOdt || fmt == Format::kEpub) {
      if (!check_utf8(&doc.text, abs)) return;
      utf8::repair(&doc.title);
      finish_file_doc(std::move(doc), abs, stem, meta, format);
      return;
    }
    if (std::memchr(bytes.data(), '\0', std::min<size_t>(bytes.size(), 8192)) != nullptr) {
      res_.skipped.push_back({abs, "binary file"});
      return;
    }
    if (fmt == Format::kJsonl) {
      const size_t before = res_.documents.size();
      read_jsonl(abs, bytes);
      if (res_.documents.size() > before) ++res_.formats[format];
      return;
    }
    if (charset == "iso-8859-1" && !utf8::is_valid(bytes)) bytes = latin1_to_utf8(bytes);
    if (!check_utf8(&bytes, abs)) return;
    if (fmt == Format::kMarkdown) {
      try {  // md4c reads at most 4 GiB - 1 bytes (max_file_bytes 0 lets larger files in)
        doc.text = markdown_to_text(bytes, &doc.title);
      } catch (const Error& e) {
        res_.skipped.push_back({abs, e.what()});
        return;
      }
    } else if (fmt == Format::kHtml) {
      int64_t flattened = 0;
      doc.text = html_to_text_counted(bytes, &doc.title, opt_.max_nesting_depth, &flattened);
      if (flattened > 0) {
        res_.warnings.push_back(abs + ": HTML nested deeper than max_nesting_depth (" +
                                std::to_string(opt_.max_nesting_depth) +
                                "): " + std::to_string(flattened) +
                                " element(s) below that depth read as plain text");
      }
    } else if (fmt == Format::kRst) {
      doc.text = rst_to_text(bytes, &doc.title);
    } else if (fmt == Format::kOrg) {
      doc.text = org_to_text(bytes, &doc.title);
    } else if (fmt == Format::kTex) {
      doc.text = tex_to_text(bytes, &doc.title);
    } else {  // text, csv
      doc.text = std::move(bytes);
    }
    finish_file_doc(std::move(doc), abs, stem, meta, format);
  }

  void finish_file_doc(Document doc, const std::string& abs, const std::string& stem,
                       const Json& meta, const std::string& format) {
    doc.text = normalize_text(doc.text);
    doc.title = normalize_title(doc.title);
    if (doc.title.empty()) doc.title = stem;
    doc.id = name_of(abs);
    doc.source = doc.id;
    doc.meta_json = meta.dump();
    if (add_document(std::move(doc), abs)) ++res_.formats[format];
  }

  void read_jsonl(const std::string& abs, const std::string& bytes) {
    size_t pos = 0;
    int64_t line_no = 0;
    while (pos < bytes.size()) {
      size_t nl = bytes.find('\n', pos);
      if (nl == std::string::npos) nl = bytes.size();
      std::string line = bytes.substr(pos, nl - pos);
      pos = nl + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (trim(line).empty()) continue;
      std::string where = abs + ":" + std::to_string(line_no);
      if (!check_utf8(&line, where)) continue;
      if (json_nesting_exceeds(line, opt_.max_nesting_depth)) {
        res_.skipped.push_back({where, "JSON nested deeper than max_nesting_depth (" +
                                           std::to_string(opt_.max_nesting_depth) + ")"});
        continue;
      }
      Json j;
      try {
        j = Json::parse(line);
      } catch (const Json::exception& e) {  // parse_error, or out_of_range for 1e99999
        res_.skipped.push_back({where, "invalid JSON: " + parse_error_text(e)});
        continue;
      }
      if (!j.is_object()) {
        res_.skipped.push_back({where, "not a JSON object"});
        continue;
      }
      auto text_it = j.find("text");
      if (text_it == j.end() || !text_it->is_string()) {
        res_.skipped.push_back({where, "missing string field \"text\""});
        continue;
      }
      Document doc;
      doc.text = normalize_text(text_it->get<std::string>());
      auto id_it = j.find("id");
      if (id_it != j.end() && id_it->is_string()) {
        doc.id = id_it->get<std::string>();
      } else if (id_it != j.end() && id_it->is_number()) {
        doc.id = id_it->dump();
      } else {
        if (id_it != j.end() && !id_it->is_null()) {
          res_.warnings.push_back(where +
                                  ": field \"id\" is neither a string nor a number; "
                                  "using the line position");
        }
        doc.id = name_of(abs) + "#" + std::to_string(line_no);
      }
      auto title_it = j.find("title");
      if (title_it != j.end() && title_it->is_string()) {
        doc.title = normalize_title(title_it->get<std::string>());
      } else if (title_it != j.end() && title_it->is_number()) {
        doc.title = title_it->dump();
      }
      Json meta = Json::object();
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() != "id" && it.key() != "title" && it.key() != "text")
          meta[it.key()] = it.value();
      }
      doc.meta_json = meta.dump();
      doc.source = name_of(abs);
      add_document(std::move(doc), where);
    }
  }

  std::string name_of(const std::string& abs) const {
    return opt_.source_name ? opt_.source_name(abs) : abs;
  }

  static constexpr size_t kHeadBytes = size_t{64} << 10;  // what libmagic sees of a file

  const ReadOptions& opt_;
  ReadResult res_;
  ContentDetector detector_;
  bool warned_fallback_ = false;
  std::unordered_map<std::string, std::string> ids_;  // id -> where first seen
};

}  // namespace

ReadResult read_paths(const std::vector<std::string>& paths, const ReadOptions& opt) {
  if (opt.max_nesting_depth < 1) {
    fail("read_paths: max_nesting_depth must be >= 1 (got ", opt.max_nesting_depth, ")");
  }
  if (opt.max_file_bytes < 0) {
    fail("read_paths: max_file_bytes must be >= 0 (0 = no limit; got ", opt.max_file_bytes, ")");
  }
  if (opt.max_unpacked_bytes < 0) {
    fail("read_paths: max_unpacked_bytes must be >= 0 (0 = no limit; got ", opt.max_unpacked_bytes,
         ")");
  }
  if (opt.max_archive_entries < 0) {
    fail("read_paths: max_archive_entries must be >= 0 (0 = no limit; got ",
         opt.max_archive_entries, ")");
  }
  // Every given path must exist before anything is read.
  for (const auto& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
      fail_not_found("path does not exist: ", p);
    }
  }
  Reader reader(opt);
  for (const auto& p : paths) reader.add_root(p);
  return reader.take();
}

std::string content_hash(const Document& doc) {
  const char sep = '\0';
  uint64_t h = fnv1a64(doc.title);
  h = fnv1a64(&sep, 1, h);
  return hex64(fnv1a64(doc.text, h));
}

}  // namespace cocom::ingest
