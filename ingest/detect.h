// File types by content through libmagic (internal to ingest/).
#pragma once

#include <memory>
#include <string>

namespace cocom::ingest::detail {

struct ContentType {
  std::string mime;     // e.g. "text/plain", "application/gzip"; "" when libmagic is unavailable
  std::string charset;  // e.g. "us-ascii", "utf-8", "iso-8859-1", "binary"
};

// One libmagic handle (not thread-safe: one per read_paths call). The database is loaded on
// the first use; when it cannot be loaded, detect() falls back to "binary" for data with a NUL
// byte in its first 8 KiB and "text/plain" otherwise, and `fallback_reason()` says why.
class ContentDetector {
 public:
  ContentDetector();
  ~ContentDetector();
  ContentDetector(const ContentDetector&) = delete;
  ContentDetector& operator=(const ContentDetector&) = delete;

  // Looks at the first bytes of `head` only (libmagic is given at most 256 KiB).
  ContentType detect(const std::string& head);
  const std::string& fallback_reason() const { return fallback_; }

 private:
  void* magic_ = nullptr;  // magic_t
  bool loaded_ = false;
  std::string fallback_;
};

}  // namespace cocom::ingest::detail
