// Shards: reading them back and checking every row (see shard.h; the writer is
// Store::export_shard, the importer Store::import_shards).
#include "storage/shard.h"

#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>
#include <rocksdb/table_properties.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"
#include "storage/bytes.h"
#include "storage/records.h"

namespace cocom::storage {

namespace fs = std::filesystem;
using namespace detail;  // NOLINT: shards hold the store's records

uint64_t shard_first_passage_id(uint64_t run_hash, int64_t index) {
  if (index < 0 || index >= kMaxShards)
    fail("shard index ", index, ": must be in [0, ", kMaxShards, ")");
  return kShardIdBase + (run_hash % kShardRuns) * kShardRunSpan +
         static_cast<uint64_t>(index) * kShardIdSpan;
}

int64_t shard_of_document(const std::string& doc_id, int64_t count) {
  if (count < 1) fail("shard count ", count, ": must be at least 1");
  return static_cast<int64_t>(fnv1a64(doc_id) % static_cast<uint64_t>(count));
}

namespace {

// The rows of one column family of the shard, visited in key order, after the file's
// properties were checked (only plain values).
class ShardSst {
 public:
  ShardSst(const std::string& path, uint64_t expected_entries)
      : path_(path), entries_(expected_entries) {
    rocksdb::Status st = reader_.Open(path);
    if (st.ok()) st = reader_.VerifyChecksum();
    if (!st.ok()) fail_corrupt(path, ": not a readable SST file: ", st.ToString());
    auto props = reader_.GetTableProperties();
    if (!props) fail_corrupt(path, ": the SST file has no properties");
    if (props->num_deletions != 0 || props->num_merge_operands != 0 ||
        props->num_range_deletions != 0) {
      fail_corrupt(path, ": holds deletions or merges (", props->num_deletions, " deletions, ",
                   props->num_range_deletions, " range deletions, ", props->num_merge_operands,
                   " merge operands); a shard holds values only");
    }
    if (props->comparator_name != "leveldb.BytewiseComparator") {
      fail_corrupt(path, ": its keys are ordered by '", props->comparator_name,
                   "', a store's by leveldb.BytewiseComparator");
    }
    if (props->num_entries != expected_entries) {
      fail_corrupt(path, ": holds ", props->num_entries, " entries, shard.json says ",
                   expected_entries);
    }
  }
  template <class F>
  void each(F&& fn) {
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(reader_.NewIterator(ro));
    uint64_t n = 0;
    std::string previous;
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++n) {
      std::string key = it->key().ToString();
      if (n > 0 && !(previous < key)) fail_corrupt(path_, ": its keys are not in increasing order");
      fn(key, it->value().ToString(), n);
      previous = std::move(key);
    }
    if (it->status().ok() && n != entries_) {
      fail_corrupt(path_, ": ", n, " keys read, its properties say ", entries_);
    }
    if (!it->status().ok()) fail_corrupt(path_, ": reading failed: ", it->status().ToString());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  uint64_t entries_ = 0;
  rocksdb::SstFileReader reader_{rocksdb::Options()};
};

}  // namespace

ShardContents read_shard(const std::string& dir) {
  ShardContents out;
  std::error_code ec;
  out.dir = fs::absolute(dir, ec).lexically_normal().string();
  const std::string json_path = (fs::path(out.dir) / "shard.json").string();
  if (!fs::is_directory(out.dir, ec)) fail_not_found("shard ", dir, ": no such directory");
  if (!fs::is_regular_file(json_path, ec)) {
    fail_not_found("shard ", dir, ": no shard.json (not a shard, or its export did not finish)");
  }
  if (fs::file_size(json_path, ec) > (uint64_t{16} << 20)) {
    fail_corrupt(json_path, ": larger than 16 MiB (a shard.json is a few KB)");
  }
  const Json j = read_json_file(json_path);
  if (!j.is_object() || j.value("format", std::string()) != "cocom-shard") {
    fail_corrupt(json_path, ": not a cocom shard description (\"format\": \"cocom-shard\")");
  }
  if (json_int(j, "version", json_path) != 1) {
    fail(json_path, ": shard format version ", json_int(j, "version", json_path),
         "; this build reads version 1");
  }
  if (!j.contains("shard") || !j["shard"].is_object()) fail_corrupt(json_path, ": no \"shard\"");
  out.index = json_int(j["shard"], "index", json_path);
  out.count = json_int(j["shard"], "count", json_path);
  if (out.count < 1 || out.count > kMaxShards || out.index < 0 || out.index >= out.count) {
    fail_corrupt(json_path, ": shard ", out.index, "/", out.count, " is out of range");
  }
  if (!j.contains("manifest")) fail_corrupt(json_path, ": no \"manifest\"");
  out.manifest = manifest_from_json(j["manifest"], json_path + " (manifest)");
  const Manifest& m = out.manifest;
  if (m.embeddings_per_passage <= 0 || m.embedding_dim <= 0 || m.retriever_dim < 0) {
    fail_corrupt(json_path, ": the manifest has no embedding shape");
  }
  bool has_range = false;
  if (j.contains("passage_ids")) {
    const Json& r = j["passage_ids"];
    if (!r.is_array() || r.size() != 2 || !r[0].is_number_unsigned() ||
        !r[1].is_number_unsigned()) {
      fail_corrupt(json_path, ": \"passage_ids\" is not [first, last]");
    }
    out.first_id = r[0].get<uint64_t>();
    out.last_id = r[1].get<uint64_t>();
    if (out.first_id > out.last_id || out.last_id >= (uint64_t{1} << 63)) {
      fail_corrupt(json_path, ": passage ids ", out.first_id, "..", out.last_id,
                   " are not a range");
    }
    has_range = true;
  }

  // The files: plain names in the directory, one per column family at most, as described.
  std::map<std::string, std::pair<std::string, uint64_t>> by_cf;  // cf -> path, entries
  if (!j.contains("files") || !j["files"].is_array()) fail_corrupt(json_path, ": no \"files\"");
  std::string id_text = dump_json(j["manifest"]);
  for (const Json& f : j["files"]) {
    if (!f.is_object()) fail_corrupt(json_path, ": a \"files\" entry is not an object");
    const std::string cf = json_string_or(f, "cf", "", json_path);
    const std::string name = json_string_or(f, "file", "", json_path);
    bool known = false;
    for (int c = 0; c < kManifest; ++c) known = known || cf == kCfNames[c];
    if (!known) {
      fail_corrupt(json_path, ": file for column family '", cf,
                   "': a shard holds documents, passages, embeddings, retriever, postings, "
                   "passage_len and sources only");
    }
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      fail_corrupt(json_path, ": file name '", name,
                   "' is not a plain name in the shard directory");
    }
    const std::string path = (fs::path(out.dir) / name).string();
    if (!fs::is_regular_file(fs::symlink_status(path, ec))) {
      fail_corrupt("shard ", dir, ": ", name, " is missing or not a regular file");
    }
    const uint64_t bytes = static_cast<uint64_t>(json_int(f, "bytes", json_path));
    if (fs::file_size(path, ec) != bytes) {
      fail_corrupt(path, ": ", fs::file_size(path, ec), " bytes, shard.json says ", bytes);
    }
    const std::string sum = json_string_or(f, "xxh3", "", json_path);
    if (hex64(xxh3_file(path)) != sum) {
      fail_corrupt(path, ": checksum ", hex64(xxh3_file(path)), ", shard.json says ", sum,
                   " (damaged or changed since the export)");
    }
    const int64_t entries = json_int(f, "entries", json_path);
    if (entries < 1) fail_corrupt(json_path, ": ", name, " has no entries");
    if (!by_cf.emplace(cf, std::make_pair(path, static_cast<uint64_t>(entries))).second) {
      fail_corrupt(json_path, ": two files for column family '", cf, "'");
    }
    id_text += "|" + cf + ":" + sum;
  }
  out.id = hex64(fnv1a64(id_text)) + hex64(fnv1a64(id_text, 0x9e3779b97f4a7c15ULL));

  auto open_cf = [&](Cf c) -> std::unique_ptr<ShardSst> {
    auto it = by_cf.find(kCfNames[c]);
    if (it == by_cf.end()) return nullptr;
    auto sst = std::make_unique<ShardSst>(it->second.first, it->second.second);
    out.files.push_back({kCfNames[c], it->second.first, it->second.second});
    return sst;
  };
  auto id_of = [&](const ShardSst& f, const std::string& key, const char* what) {
    if (key.size() != 8) fail_corrupt(f.path(), ": a ", what, " key is not an 8-byte passage id");
    const uint64_t id = key_id(key.data());
    if (!has_range || id < out.first_id || id > out.last_id) {
      fail_corrupt(f.path(), ": ", what, " of passage ", id, " outside the shard's passage ids");
    }
    return id;
  };

  // Documents, then passages: each passage is its document's, each document's passages exist.
  std::unordered_map<std::string, DocumentRecord> docs;
  if (auto f = open_cf(kDocuments)) {
    f->each([&](const std::string& key, const std::string& value, uint64_t) {
      DocumentRecord d = decode_document(value, f->path() + ": document '" + key + "'");
      if (d.id != key || key.empty() || key.find('\0') != std::string::npos ||
          d.source.find('\0') != std::string::npos) {
        fail_corrupt(f->path(), ": document '", key, "' has the id '", d.id, "' or a NUL byte");
      }
      out.document_ids.push_back(key);
      docs.emplace(key, std::move(d));
    });
  }
  struct Seen {
    StoredPassage p;
    bool listed = false;
  };
  std::map<uint64_t, Seen> passages;
  if (auto f = open_cf(kPassages)) {
    f->each([&](const std::string& key, const std::string& value, uint64_t) {
      const uint64_t id = id_of(*f, key, "passage");
      StoredPassage p = decode_passage(id, value, f->path() + ": passage " + std::to_string(id));
      if (!docs.count(p.rec.doc_id)) {
        fail_corrupt(f->path(), ": passage ", id, " belongs to document '", p.rec.doc_id,
                     "', which the shard does not hold");
      }
      std::set<std::string> distinct(p.terms.begin(), p.terms.end());
      if (distinct.size() != p.terms.size() || (p.terms.empty() != (p.length == 0))) {
        fail_corrupt(f->path(), ": passage ", id, " has repeated terms or a wrong length");
      }
      passages[id].p = std::move(p);
    });
  }
  for (auto& [doc_id, d] : docs) {
    for (uint64_t pid : d.passage_ids) {
      auto it = passages.find(pid);
      if (it == passages.end() || it->second.p.rec.doc_id != doc_id || it->second.listed) {
        fail_corrupt("shard ", dir, ": document '", doc_id, "' lists passage ", pid,
                     ", which is missing, another document's or listed twice");
      }
      it->second.listed = true;
    }
  }
  for (const auto& [pid, s] : passages) {
    if (!s.listed) fail_corrupt("shard ", dir, ": passage ", pid, " belongs to no document");
  }

  // The rows each passage owns: exactly those its record announces.
  StoreStats& n = out.counts;
  n.documents = static_cast<int64_t>(docs.size());
  n.passages = static_cast<int64_t>(passages.size());
  int64_t want_embeddings = 0, want_vectors = 0, want_postings = 0;
  for (const auto& [pid, s] : passages) {
    want_embeddings += s.p.has_embeddings ? 1 : 0;
    want_vectors += s.p.has_retriever ? 1 : 0;
    want_postings += static_cast<int64_t>(s.p.terms.size());
    if (s.p.length > 0) {
      n.bm25_documents += 1;
      n.total_terms += static_cast<int64_t>(s.p.length);
    }
  }
  auto owner = [&](const ShardSst& f, uint64_t id, const char* what) -> const StoredPassage& {
    auto it = passages.find(id);
    if (it == passages.end())
      fail_corrupt(f.path(), ": ", what, " of passage ", id, ", which the shard does not hold");
    return it->second.p;
  };
  auto expect_rows = [&](Cf c, int64_t got, int64_t want) {
    if (got != want) {
      fail_corrupt("shard ", dir, ": ", got, " rows of ", kCfNames[c], " for ", want,
                   " announced by the passages");
    }
  };
  int64_t rows = 0;
  if (auto f = open_cf(kEmbeddings)) {
    f->each([&](const std::string& key, const std::string& value, uint64_t) {
      const uint64_t id = id_of(*f, key, "embeddings");
      if (!owner(*f, id, "embeddings").has_embeddings) {
        fail_corrupt(f->path(), ": embeddings of passage ", id, ", which has none");
      }
      std::vector<int64_t> shape;
      decode_embedding(value, &shape, f->path() + ": embeddings of passage " + std::to_string(id));
      if (shape != std::vector<int64_t>{m.embeddings_per_passage, m.embedding_dim}) {
        fail_corrupt(f->path(), ": embeddings of passage ", id, " are not [",
                     m.embeddings_per_passage, ", ", m.embedding_dim, "]");
      }
      ++rows;
    });
  }
  expect_rows(kEmbeddings, rows, want_embeddings);
  n.embeddings = rows;
  rows = 0;
  if (auto f = open_cf(kRetriever)) {
    f->each([&](const std::string& key, const std::string& value, uint64_t) {
      const uint64_t id = id_of(*f, key, "retriever vector");
      if (!owner(*f, id, "retriever vector").has_retriever) {
        fail_corrupt(f->path(), ": retriever vector of passage ", id, ", which has none");
      }
      std::vector<int64_t> shape;
      decode_embedding(value, &shape, f->path() + ": vector of passage " + std::to_string(id));
      if (shape != std::vector<int64_t>{m.retriever_dim}) {
        fail_corrupt(f->path(), ": retriever vector of passage ", id, " is not of dim ",
                     m.retriever_dim);
      }
      ++rows;
    });
  }
  expect_rows(kRetriever, rows, want_vectors);
  rows = 0;
  if (auto f = open_cf(kPassageLen)) {
    f->each([&](const std::string& key, const std::string& value, uint64_t) {
      const uint64_t id = id_of(*f, key, "length");
      const StoredPassage& p = owner(*f, id, "length");
      if (value.size() != 4 ||
          get_le(value.data(), 4) != std::min<uint64_t>(p.length, 0xffffffffu) || p.length == 0) {
        fail_corrupt(f->path(), ": the length of passage ", id, " is not its record's");
      }
      ++rows;
    });
  }
  expect_rows(kPassageLen, rows, n.bm25_documents);
  rows = 0;
  if (auto f = open_cf(kPostings)) {
    f->each([&](const std::string& key, const std::string& value, uint64_t) {
      const size_t nul = key.find('\0');
      if (nul == std::string::npos || nul == 0 || key.size() != nul + 9 || value.size() != 4) {
        fail_corrupt(f->path(), ": a posting is not term NUL id -> u32");
      }
      const uint64_t id = id_of(*f, key.substr(nul + 1), "posting");
      const StoredPassage& p = owner(*f, id, "posting");
      const std::string term = key.substr(0, nul);
      if (!std::binary_search(p.terms.begin(), p.terms.end(), term) ||
          get_le(value.data(), 4) == 0) {
        fail_corrupt(f->path(), ": a posting of '", term, "' for passage ", id,
                     ", whose record does not list it");
      }
      ++rows;
    });
  }
  expect_rows(kPostings, rows, want_postings);
  rows = 0;
  if (auto f = open_cf(kSources)) {
    f->each([&](const std::string& key, const std::string& value, uint64_t) {
      const size_t nul = key.rfind('\0');
      auto it = nul == std::string::npos ? docs.end() : docs.find(key.substr(nul + 1));
      if (it == docs.end() || it->second.source != key.substr(0, nul) || !value.empty()) {
        fail_corrupt(f->path(), ": a source row names no document of the shard");
      }
      ++rows;
    });
  }
  expect_rows(kSources, rows, n.documents);
  if (!passages.empty() &&
      (passages.begin()->first != out.first_id || passages.rbegin()->first != out.last_id)) {
    fail_corrupt(json_path, ": \"passage_ids\" is not the range of the shard's passages");
  }
  if (passages.empty() && has_range) fail_corrupt(json_path, ": passage ids but no passages");
  return out;
}

}  // namespace cocom::storage
