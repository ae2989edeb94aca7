// libFuzzer target: the readers of issue #14 through read_paths, as users feed them: files typed
// by content (libmagic), .gz/.bz2/.xz (libarchive), .rst/.org/.tex, and .docx/.odt/.epub
// (libarchive zip + libxml2). The first byte picks the mode; the rest is either the file itself
// (written with the mode's name) or, for the XML modes, one part placed inside an otherwise
// valid container built here, so that the XML parser sees the mutations and not only the zip
// reader. Small limits (1 MiB unpacked, 32 entries) keep bombs cheap. read_paths must not throw;
// documents must come out normalised (valid UTF-8, no C0 controls but TAB/LF) and every skip
// must name the file and carry a reason.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/utf8.h"
#include "ingest/documents.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// The file names of the modes; the XML modes (docx-xml, odt-xml, epub-opf, epub-xhtml) build a
// container around the input, "README.gz" compresses the input and lets libmagic type it.
const char* const kNames[] = {"input.gz",    "input.bz2",     "input.xz",        "input.docx",
                              "input.odt",   "input.epub",    "README",          "input.rst",
                              "input.org",   "input.tex",     "input.csv",       "docx-xml.docx",
                              "odt-xml.odt", "epub-opf.epub", "epub-xhtml.epub", "README.gz"};
constexpr size_t kModes = sizeof(kNames) / sizeof(kNames[0]);

std::string g_dir;

void remove_dir() {
  for (const char* n : kNames) ::unlink((g_dir + "/" + n).c_str());
  ::rmdir(g_dir.c_str());
}

const std::string& temp_dir() {
  if (g_dir.empty()) {
    char tmpl[] = "/tmp/cocom-fuzz-formats.XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    g_dir = tmpl;
    std::atexit(remove_dir);
  }
  return g_dir;
}

void write_file(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (w <= 0) std::abort();
    off += static_cast<size_t>(w);
  }
  ::close(fd);
}

// A container (zip, stored) or a gzip stream written by libarchive.
std::string write_archive(const std::vector<std::pair<std::string, std::string>>& entries,
                          bool gzip_raw) {
  size_t cap = 1 << 16;
  for (const auto& e : entries) cap += e.second.size() + 512;
  std::string buf(cap, '\0');
  size_t used = 0;
  archive* a = archive_write_new();
  if (gzip_raw) {
    archive_write_add_filter_gzip(a);
    archive_write_set_format_raw(a);
  } else {
    archive_write_set_format_zip(a);
    archive_write_set_format_option(a, "zip", "compression", "store");
  }
  if (archive_write_open_memory(a, &buf[0], buf.size(), &used) != ARCHIVE_OK) std::abort();
  for (const auto& [name, data] : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    if (archive_write_header(a, e) != ARCHIVE_OK) std::abort();
    if (!data.empty()) archive_write_data(a, data.data(), data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  buf.resize(used);
  return buf;
}

const char kRels[] =
    "<?xml version=\"1.0\"?><Relationships "
    "xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\"><Relationship "
    "Id=\"r\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
    "officeDocument\" Target=\"word/document.xml\"/></Relationships>";
const char kContainer[] =
    "<?xml version=\"1.0\"?><container version=\"1.0\" "
    "xmlns=\"urn:oasis:names:tc:opendocument:xmlns:container\"><rootfiles><rootfile "
    "full-path=\"OPS/p.opf\"/></rootfiles></container>";
const char kOpf[] =
    "<?xml version=\"1.0\"?><package xmlns=\"http://www.idpf.org/2007/opf\"><metadata "
    "xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><dc:title>T</dc:title></metadata><manifest>"
    "<item id=\"c\" href=\"c.xhtml\"/></manifest><spine><itemref idref=\"c\"/></spine></package>";
const char kChapter[] = "<html><body><p>chapter</p></body></html>";

std::string file_for_mode(size_t mode, const std::string& in) {
  const std::string name = kNames[mode];
  if (name == "docx-xml.docx") {
    return write_archive({{"_rels/.rels", kRels}, {"word/document.xml", in}}, false);
  }
  if (name == "odt-xml.odt") {
    return write_archive(
        {{"mimetype", "application/vnd.oasis.opendocument.text"}, {"content.xml", in}}, false);
  }
  if (name == "epub-opf.epub") {
    return write_archive({{"mimetype", "application/epub+zip"},
                          {"META-INF/container.xml", kContainer},
                          {"OPS/p.opf", in},
                          {"OPS/c.xhtml", kChapter}},
                         false);
  }
  if (name == "epub-xhtml.epub") {
    return write_archive({{"mimetype", "application/epub+zip"},
                          {"META-INF/container.xml", kContainer},
                          {"OPS/p.opf", kOpf},
                          {"OPS/c.xhtml", in}},
                         false);
  }
  if (name == "README.gz") return write_archive({{"data", in}}, true);
  return in;
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
  if (size == 0 || size > (1 << 20)) return 0;
  const size_t mode = data[0] % kModes;
  const std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string path = temp_dir() + "/" + kNames[mode];
  write_file(path, file_for_mode(mode, in));

  cocom::ingest::ReadOptions opt;
  opt.max_unpacked_bytes = int64_t{1} << 20;
  opt.max_archive_entries = 32;
  opt.max_nesting_depth = 64;
  opt.repair_utf8 = (data[0] & 0x80) == 0;
  cocom::ingest::ReadResult r;
  try {
    r = cocom::ingest::read_paths({path}, opt);
  } catch (const cocom::Error&) {
    check(false);
  }
  for (const auto& s : r.skipped) {
    check(!s.reason.empty());
    check(s.path == path || s.path.compare(0, path.size() + 1, path + ":") == 0);
  }
  for (const auto& d : r.documents) {
    check(normalised(d.text));
    check(normalised(d.title));
    check(!d.id.empty());
  }
  // The markup strippers directly (they never fail, and keep within the input's size).
  std::string title;
  check(cocom::ingest::tex_to_text(in, &title).size() <= 2 * in.size() + 2);
  cocom::ingest::rst_to_text(in, &title);
  cocom::ingest::org_to_text(in, &title);
  return 0;
}
