// The binary records of documents and passages (version byte 1 first; see store.cpp's
// header comment for the layout). Internal to storage/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "storage/store.h"

namespace cocom::storage::detail {

// What the store remembers about a passage besides the public record.
struct StoredPassage {
  PassageRecord rec;
  bool has_embeddings = false;
  bool has_retriever = false;
  uint64_t length = 0;
  std::vector<std::string> terms;  // distinct
};

std::string encode_document(const DocumentRecord& d);
DocumentRecord decode_document(const std::string& s, const std::string& what);
std::string encode_passage(const StoredPassage& p);
StoredPassage decode_passage(uint64_t id, const std::string& s, const std::string& what);

// The manifest as JSON (store.cpp): the store's "manifest" row and shard.json's "manifest".
Json manifest_json(const Manifest& m);
Manifest manifest_from_json(const Json& j, const std::string& origin);
std::string dump_json(const Json& j);  // compact; invalid UTF-8 replaced

// Column families, in this order (store.cpp opens them; shards carry the first seven).
enum Cf {
  kDocuments,
  kPassages,
  kEmbeddings,
  kRetriever,
  kPostings,
  kPassageLen,
  kSources,
  kManifest,
  kNumCf
};
extern const char* const kCfNames[kNumCf];

}  // namespace cocom::storage::detail
