// .gz/.bz2/.xz and zip containers through libarchive, with bounded output: a decompression bomb
// is stopped at the limit, never held whole in memory.
#include "ingest/archive.h"

#include <archive.h>
#include <archive_entry.h>

#include <memory>
#include <string>

#include "common/error.h"

namespace cocom::ingest {
namespace {

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveDeleter>;

std::string archive_message(archive* a) {
  const char* m = archive_error_string(a);
  return m && *m ? m : "unknown libarchive error";
}

std::string limit_text(const char* what, int64_t limit) {
  return std::string(what) + " (" + std::to_string(limit) + ")";
}

// Appends the data of the current entry to `out`, counting against `*budget` (< 0 = none).
// Returns false when the budget is exhausted before the entry ends.
bool read_entry_data(archive* a, const std::string& name, std::string* out, int64_t* budget) {
  char buf[65536];
  while (true) {
    la_ssize_t n = archive_read_data(a, buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0) {
      fail_corrupt("cannot read ", name, ": damaged or truncated data (", archive_message(a), ")");
    }
    if (*budget >= 0) {
      if (n > *budget) return false;
      *budget -= n;
    }
    out->append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

namespace detail {

std::string compression_of(const std::string& data) {
  auto starts = [&](const char* magic, size_t n) {
    return data.size() >= n && data.compare(0, n, magic, n) == 0;
  };
  if (starts("\x1f\x8b", 2)) return "gzip";
  if (starts("BZh", 3)) return "bzip2";
  if (starts("\xfd"
             "7zXZ\x00",
             6))
    return "xz";
  return "";
}

std::map<std::string, std::string> read_zip(const std::string& data, const std::string& name,
                                            const UnpackLimits& lim,
                                            const std::function<bool(const std::string&)>& want) {
  if (data.size() < 4 || data.compare(0, 2, "PK") != 0) {
    fail_corrupt("cannot read ", name, ": not a zip archive");
  }
  ArchivePtr a(archive_read_new());
  if (!a) fail("cannot read ", name, ": out of memory");
  archive_read_support_format_zip(a.get());
  if (archive_read_open_memory(a.get(), data.data(), data.size()) != ARCHIVE_OK) {
    fail_corrupt("cannot read ", name, ": not a zip archive (", archive_message(a.get()), ")");
  }
  std::map<std::string, std::string> out;
  int64_t budget = lim.max_bytes > 0 ? lim.max_bytes : -1;
  int64_t entries = 0;
  while (true) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      fail_corrupt("cannot read ", name, ": damaged zip archive (", archive_message(a.get()), ")");
    }
    if (lim.max_entries > 0 && ++entries > lim.max_entries) {
      fail("cannot read ", name, ": more than ", limit_text("max_archive_entries", lim.max_entries),
           " entries in the archive");
    }
    const char* p = archive_entry_pathname(e);
    std::string path = p ? p : "";
    if (archive_entry_filetype(e) != AE_IFREG || path.empty() || !want(path) ||
        out.count(path) != 0) {
      continue;  // the next header skips this entry's data
    }
    if (archive_entry_is_encrypted(e)) fail("cannot read ", name, ": ", path, " is encrypted");
    std::string content;
    if (!read_entry_data(a.get(), name + ": " + path, &content, &budget)) {
      fail("cannot read ", name, ": its content unpacks to more than ",
           limit_text("max_unpacked_bytes", lim.max_bytes), " bytes");
    }
    out.emplace(std::move(path), std::move(content));
  }
  return out;
}

}  // namespace detail

std::string decompress(const std::string& data, const std::string& name, int64_t max_bytes) {
  const std::string kind = detail::compression_of(data);
  if (kind.empty()) fail_corrupt("cannot read ", name, ": not gzip, bzip2 or xz data");
  ArchivePtr a(archive_read_new());
  if (!a) fail("cannot read ", name, ": out of memory");
  archive_read_support_filter_gzip(a.get());
  archive_read_support_filter_bzip2(a.get());
  archive_read_support_filter_xz(a.get());
  archive_read_support_format_raw(a.get());
  archive_read_support_format_empty(a.get());
  if (archive_read_open_memory(a.get(), data.data(), data.size()) != ARCHIVE_OK) {
    fail_corrupt("cannot read ", name, ": damaged ", kind, " data (", archive_message(a.get()),
                 ")");
  }
  if (archive_filter_code(a.get(), 0) == ARCHIVE_FILTER_NONE) {
    fail_corrupt("cannot read ", name, ": not ", kind, " data");
  }
  std::string out;
  archive_entry* e = nullptr;
  int r = archive_read_next_header(a.get(), &e);
  if (r == ARCHIVE_EOF) return out;  // compressed empty content
  if (r < ARCHIVE_WARN) {
    fail_corrupt("cannot read ", name, ": damaged ", kind, " data (", archive_message(a.get()),
                 ")");
  }
  int64_t budget = max_bytes > 0 ? max_bytes : -1;
  if (!read_entry_data(a.get(), name, &out, &budget)) {
    fail("cannot read ", name, ": it decompresses to more than ",
         limit_text("max_unpacked_bytes", max_bytes), " bytes");
  }
  return out;
}

}  // namespace cocom::ingest
