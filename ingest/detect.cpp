// libmagic with the checks that would make it decompress or unpack its input switched off: it
// only names the type; the readers do the unpacking, with their own limits.
#include "ingest/detect.h"

#include <magic.h>

#include <algorithm>
#include <cstring>

namespace cocom::ingest::detail {
namespace {

constexpr size_t kMagicBytes = size_t{256} << 10;

ContentType fallback_type(const std::string& head) {
  if (std::memchr(head.data(), '\0', std::min<size_t>(head.size(), 8192)) != nullptr) {
    return {"application/octet-stream", "binary"};
  }
  return {"text/plain", "unknown"};
}

}  // namespace

ContentDetector::ContentDetector() = default;

ContentDetector::~ContentDetector() {
  if (magic_) magic_close(static_cast<magic_t>(magic_));
}

ContentType ContentDetector::detect(const std::string& head) {
  if (!loaded_ && fallback_.empty()) {
    magic_t m = magic_open(MAGIC_MIME_TYPE | MAGIC_MIME_ENCODING | MAGIC_NO_CHECK_COMPRESS |
                           MAGIC_NO_CHECK_CDF | MAGIC_ERROR);
    if (!m) {
      fallback_ = "libmagic could not start";
    } else if (magic_load(m, nullptr) != 0) {
      const char* e = magic_error(m);
      fallback_ = std::string("libmagic has no database: ") + (e ? e : "unknown error");
      magic_close(m);
    } else {
      size_t bytes_max = kMagicBytes;
      magic_setparam(m, MAGIC_PARAM_BYTES_MAX, &bytes_max);
      magic_ = m;
      loaded_ = true;
    }
  }
  if (!loaded_) return fallback_type(head);
  const size_t n = std::min(head.size(), kMagicBytes);
  const char* r = magic_buffer(static_cast<magic_t>(magic_), head.data(), n);
  if (!r) return fallback_type(head);
  // "type/subtype; charset=name"
  std::string s = r;
  ContentType t;
  const size_t semi = s.find(';');
  t.mime = s.substr(0, semi);
  if (semi != std::string::npos) {
    const size_t eq = s.find("charset=", semi);
    if (eq != std::string::npos) t.charset = s.substr(eq + 8);
  }
  return t;
}

}  // namespace cocom::ingest::detail
