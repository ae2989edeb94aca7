// Lexical retrieval: the analyzer and Okapi BM25 over the store's postings.
//
// Analyzers: "words" (NFKC, case folding, words; the only one of stores made before the
// manifest named its analyzer, which read as "") and "snowball:<language>" (besides: accents of
// Latin, Greek and Cyrillic letters folded, English stop words removed for English, each word
// reduced by libstemmer's Snowball algorithm for the language).
//
// BM25: Okapi BM25 with the Lucene/Anserini idf, idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
// and score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl)), where N is the
// number of passages with at least one term and avgdl = total_terms / N. Each DISTINCT query
// term counts once (a repeated query term does not weigh more); the terms are summed in byte
// order, so a score does not depend on the query's word order. Unlike Lucene, passage lengths
// are exact (Lucene stores them lossily in one byte). Ties are broken by the smaller id.
#include "index/bm25.h"

#include <libstemmer.h>
#include <utf8proc.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "common/ranking.h"
#include "common/utf8.h"

namespace cocom::index {

// ---------------------------------------------------------------------------------------
// analyze: NFKC (NFKD with accent folding) + case folding, then runs of letters/digits.
// Combining marks (M*) continue a run that a letter or digit started, so that words of scripts
// written with marks (Devanagari vowel signs, viramas) are not cut apart. Invalid UTF-8 bytes
// act as separators.

namespace {

constexpr const char* kWords = "words";
constexpr const char* kSnowball = "snowball:";

// Lucene's English stop set (StandardAnalyzer / EnglishAnalyzer): the words removed before
// stemming in "snowball:english".
const std::set<std::string>& english_stop_words() {
  static const std::set<std::string> words = {
      "a",   "an",    "and",  "are",   "as",    "at",   "be",   "but", "by",  "for",  "if",
      "in",  "into",  "is",   "it",    "no",    "not",  "of",   "on",  "or",  "such", "that",
      "the", "their", "then", "there", "these", "they", "this", "to",  "was", "will", "with"};
  return words;
}

struct StemmerDeleter {
  void operator()(sb_stemmer* s) const { sb_stemmer_delete(s); }
};

// A stemmer per thread and language (libstemmer's objects are not shareable across threads).
sb_stemmer* stemmer_for(const std::string& language) {
  thread_local std::map<std::string, std::unique_ptr<sb_stemmer, StemmerDeleter>> cache;
  auto& s = cache[language];
  if (!s) s.reset(sb_stemmer_new(language.c_str(), "UTF_8"));
  if (!s) {
    fail("BM25 analyzer: no Snowball stemmer for '", language, "' (", analyzer_languages(), ")");
  }
  return s.get();
}

// The latin, Greek and Cyrillic letters whose accents "snowball:*" folds away (é -> e); the
// marks of other scripts are part of their words and stay.
bool folds_marks(utf8proc_int32_t base) { return base < 0x0530; }

}  // namespace

std::string analyzer_languages() {
  std::string out;
  for (const char** l = sb_stemmer_list(); *l; ++l)
    out += (out.empty() ? "" : ", ") + std::string(*l);
  return out;
}

std::string default_analyzer() { return std::string(kSnowball) + "english"; }

std::string check_analyzer(const std::string& name) {
  if (name.empty() || name == kWords) return kWords;
  std::string language = name;
  if (name.rfind(kSnowball, 0) == 0) language = name.substr(std::strlen(kSnowball));
  for (const char** l = sb_stemmer_list(); *l; ++l) {
    if (language == *l) return kSnowball + language;
  }
  fail("BM25 language '", name, "': expected words (no stemming) or one of ", analyzer_languages());
}

std::vector<std::string> analyze(const std::string& text, const std::string& analyzer) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  const bool snowball = analyzer.rfind(kSnowball, 0) == 0;
  if (!snowball && !analyzer.empty() && analyzer != kWords) {
    fail("BM25 analyzer '", analyzer, "': unknown (expected words or snowball:<language>)");
  }
  const std::string language = snowball ? analyzer.substr(std::strlen(kSnowball)) : "";
  sb_stemmer* stemmer = snowball ? stemmer_for(language) : nullptr;
  const bool stop = language == "english";
  // Ill-formed UTF-8 becomes U+FFFD first (a separator): utf8proc_map rejects it otherwise.
  std::string clean = text;
  utf8::repair(&clean);
  utf8proc_uint8_t* mapped = nullptr;
  // Decomposed when accents are folded (the marks are dropped below), composed otherwise.
  const utf8proc_ssize_t mlen = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(clean.data()),
      static_cast<utf8proc_ssize_t>(clean.size()), &mapped,
      static_cast<utf8proc_option_t>(UTF8PROC_CASEFOLD | UTF8PROC_COMPAT | UTF8PROC_STABLE |
                                     (snowball ? UTF8PROC_DECOMPOSE : UTF8PROC_COMPOSE)));
  if (mlen < 0) {
    std::free(mapped);
    fail("analyze: ", utf8proc_errmsg(mlen));
  }
  std::string word;
  utf8proc_int32_t base = 0;  // the letter or digit a run of marks follows
  auto emit = [&]() {
    if (word.empty()) return;
    if (snowball) {
      if (stop && english_stop_words().count(word)) {
        word.clear();
        return;
      }
      const sb_symbol* stem = sb_stemmer_stem(
          stemmer, reinterpret_cast<const sb_symbol*>(word.data()), static_cast<int>(word.size()));
      if (stem == nullptr) fail("BM25 analyzer: the stemmer ran out of memory");
      word.assign(reinterpret_cast<const char*>(stem), size_t(sb_stemmer_length(stemmer)));
    }
    if (!word.empty()) out.push_back(std::move(word));
    word.clear();
  };
  for (utf8proc_ssize_t i = 0; i < mlen;) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t len = utf8proc_iterate(mapped + i, mlen - i, &cp);
    if (len <= 0) {  // cannot happen on utf8proc's own output; be safe
      len = 1;
      cp = 0xFFFD;
    }
    const utf8proc_category_t cat = utf8proc_category(cp);
    bool in_word = false, keep = true;
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
        base = cp;
        break;
      case UTF8PROC_CATEGORY_MN:
      case UTF8PROC_CATEGORY_MC:
      case UTF8PROC_CATEGORY_ME:
        in_word = !word.empty();
        keep = !(snowball && folds_marks(base));
        break;
      default:
        break;
    }
    if (in_word) {
      if (keep) word.append(reinterpret_cast<const char*>(mapped + i), static_cast<size_t>(len));
    } else {
      emit();
    }
    i += len;
  }
  emit();
  std::free(mapped);
  return out;
}

std::vector<std::pair<uint64_t, double>> bm25_rank(const storage::PostingsSnapshot& snapshot,
                                                   size_t k, Bm25Params params) {
  std::vector<std::pair<uint64_t, double>> out;
  if (k == 0 || snapshot.stats.bm25_documents <= 0) return out;
  const double k1 = params.k1, b = params.b;
  const double n_docs = static_cast<double>(snapshot.stats.bm25_documents);
  const double avgdl = static_cast<double>(snapshot.stats.total_terms) / n_docs;
  std::unordered_map<uint64_t, double> scores;
  for (const auto& term : snapshot.terms) {
    if (term.postings.empty()) continue;
    const double df = static_cast<double>(term.df);
    const double idf = std::log(1.0 + (n_docs - df + 0.5) / (df + 0.5));
    for (const auto& p : term.postings) {
      const double tf = static_cast<double>(p.tf);
      const double len = static_cast<double>(p.length);
      scores[p.passage_id] += idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len / avgdl));
    }
  }
  out.assign(scores.begin(), scores.end());
  keep_top_k(&out, k);
  return out;
}

std::vector<std::pair<uint64_t, double>> bm25_search(const storage::Store& store,
                                                     const std::vector<std::string>& terms,
                                                     size_t k, double k1, double b) {
  if (k == 0 || terms.empty()) return {};
  std::set<std::string> distinct;  // byte order: the order the scores are summed in
  for (const auto& t : terms) {
    if (!t.empty() && t.find('\0') == std::string::npos) distinct.insert(t);
  }
  if (distinct.empty()) return {};
  return bm25_rank(store.read_postings({distinct.begin(), distinct.end()}), k, {k1, b});
}

}  // namespace cocom::index
