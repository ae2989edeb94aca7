// PDF to plain text through poppler-cpp, page by page; the document's Title becomes the title.
#include "ingest/documents.h"

#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
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
#include "ingest/text.h"

namespace cocom::ingest {

using namespace detail;  // NOLINT

namespace {

void silence_poppler(const std::string&, void*) {}

void silence_poppler_once() {
  static const bool silenced = [] {
    poppler::set_debug_error_function(&silence_poppler, nullptr);
    return true;
  }();
  (void)silenced;
}

std::string document_text(std::unique_ptr<poppler::document> doc, const std::string& path,
                          std::string* title) {
  if (!doc) fail_corrupt("cannot read PDF ", path, ": corrupt, encrypted or unreadable");
  if (doc->is_locked()) fail("cannot read PDF ", path, ": encrypted (password required)");
  std::string out;
  const int pages = doc->pages();
  for (int i = 0; i < pages; ++i) {
    std::unique_ptr<poppler::page> page(doc->create_page(i));
    if (!page) continue;
    poppler::byte_array bytes = page->text().to_utf8();
    std::string t = trim(std::string(bytes.begin(), bytes.end()));
    if (t.empty()) continue;
    if (!out.empty()) out += "\n\n";
    out += t;
  }
  if (title) {
    poppler::byte_array tb = doc->info_key("Title").to_utf8();
    std::string t(tb.begin(), tb.end());
    while (!t.empty() && t.back() == '\0') t.pop_back();
    utf8::repair(&t);
    *title = collapse_ws(normalize_text(t));
  }
  return out;
}

}  // namespace

std::string pdf_to_text(const std::string& path, std::string* title) {
  silence_poppler_once();
  return document_text(std::unique_ptr<poppler::document>(poppler::document::load_from_file(path)),
                       path, title);
}

std::string pdf_bytes_to_text(const std::string& bytes, const std::string& name,
                              std::string* title) {
  silence_poppler_once();
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) fail("cannot read PDF ", name, ": over 2 GiB");
  return document_text(std::unique_ptr<poppler::document>(poppler::document::load_from_raw_data(
                           bytes.data(), static_cast<int>(bytes.size()))),
                       name, title);
}

}  // namespace cocom::ingest
