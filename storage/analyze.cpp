// Text analysis for BM25 (both the passages and the queries).
#include <utf8proc.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/utf8.h"
#include "storage/store.h"

namespace cocom::storage {

// ---------------------------------------------------------------------------------------
// analyze: NFKC + case folding, then runs of letters/digits. Combining marks (M*) continue a
// run that a letter or digit started, so that words of scripts written with marks (Devanagari
// vowel signs, viramas) are not cut apart. Invalid UTF-8 bytes act as separators.

std::vector<std::string> analyze(const std::string& text) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  // Ill-formed UTF-8 becomes U+FFFD first (a separator): utf8proc_map rejects it otherwise.
  std::string clean = text;
  utf8::repair(&clean);
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t mlen =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(clean.data()),
                   static_cast<utf8proc_ssize_t>(clean.size()), &mapped,
                   static_cast<utf8proc_option_t>(UTF8PROC_CASEFOLD | UTF8PROC_COMPOSE |
                                                  UTF8PROC_COMPAT | UTF8PROC_STABLE));
  if (mlen < 0) {
    std::free(mapped);
    fail("analyze: ", utf8proc_errmsg(mlen));
  }
  std::string word;
  for (utf8proc_ssize_t i = 0; i < mlen;) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t len = utf8proc_iterate(mapped + i, mlen - i, &cp);
    if (len <= 0) {  // cannot happen on utf8proc's own output; be safe
      len = 1;
      cp = 0xFFFD;
    }
    const utf8proc_category_t cat = utf8proc_category(cp);
    bool in_word = false;
    switch (cat) {
      case UTF8PROC_CATEGORY_LU:
      case UTF8PROC_CATEGORY_LL:
      case UTF8PROC_CATEGORY_LT:
      case UTF8PROC_CATEGORY_LM:
      case UTF8PROC_CATEGORY_LO:
      case UTF8PROC_CATEGORY_ND:
      case UTF8PROC_CATEGORY_NL:
      case UTF8PROC_CATEGORY_NO:
        in_word = true;
        break;
      case UTF8PROC_CATEGORY_MN:
      case UTF8PROC_CATEGORY_MC:
      case UTF8PROC_CATEGORY_ME:
        in_word = !word.empty();
        break;
      default:
        break;
    }
    if (in_word) {
      word.append(reinterpret_cast<const char*>(mapped + i), static_cast<size_t>(len));
    } else if (!word.empty()) {
      out.push_back(std::move(word));
      word.clear();
    }
    i += len;
  }
  if (!word.empty()) out.push_back(std::move(word));
  std::free(mapped);
  return out;
}

}  // namespace cocom::storage
