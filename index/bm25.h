// Lexical retrieval: the analyzer that turns passages and queries into terms, and Okapi BM25
// over the postings the store keeps (storage::Store::read_postings). Torch-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "storage/store.h"

namespace cocom::index {

// The terms of a text under a store's analyzer (its manifest's `analyzer`), the same on both
// sides: passages when they are stored, queries when they are searched.
//   "words" (or "", stores made before analyzers were named): NFKC + case folding (utf8proc),
//     then runs of letters and digits; combining marks continue a run that a letter or digit
//     started. Ill-formed UTF-8 bytes separate words.
//   "snowball:<language>": the same words with the accents of Latin, Greek and Cyrillic letters
//     folded (é -> e), English stop words dropped (for english), each word stemmed by the
//     language's Snowball algorithm (libstemmer): "disclaims", "disclaimed" -> "disclaim".
std::vector<std::string> analyze(const std::string& text, const std::string& analyzer = "");

// The analyzer of new stores: "snowball:english".
std::string default_analyzer();
// The canonical analyzer for a --language value ("english", "snowball:german", "words");
// throws naming the languages libstemmer has.
std::string check_analyzer(const std::string& name);
// libstemmer's languages, comma-separated (for --help and errors).
std::string analyzer_languages();

struct Bm25Params {
  double k1 = 0.9;
  double b = 0.4;
};

// Okapi BM25 with the Lucene/Anserini idf over one snapshot of postings: the top-k passage
// ids with scores, best first, ties to the smaller id (common/ranking.h). See bm25.cpp.
std::vector<std::pair<uint64_t, double>> bm25_rank(const storage::PostingsSnapshot& snapshot,
                                                   size_t k, Bm25Params params = {});

// bm25_rank over the store's postings of the distinct non-empty `terms` (analysed query
// terms), read under one snapshot.
std::vector<std::pair<uint64_t, double>> bm25_search(const storage::Store& store,
                                                     const std::vector<std::string>& terms,
                                                     size_t k, double k1 = 0.9, double b = 0.4);

}  // namespace cocom::index
