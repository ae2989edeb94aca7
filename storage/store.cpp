// The RocksDB knowledge store.
//
// Layout (one RocksDB database, one column family per kind of record):
//
//   documents    doc_id                            -> document record (binary, below)
//   passages     big-endian u64 passage id         -> passage record (binary, below)
//   embeddings   big-endian u64 passage id         -> embedding blob (encode_embedding, in the
//                                                     manifest's dtype, shape [n, H] or [size])
//   retriever    big-endian u64 passage id         -> embedding blob, fp32, shape [dim]
//   postings     term '\0' big-endian u64 id       -> term frequency, u32 little-endian
//   passage_len  big-endian u64 passage id         -> passage length in terms, u32 little-endian
//                                                     (only for passages with >= 1 term)
//   sources      source '\0' doc_id                -> "" (documents_by_source)
//   manifest     "manifest"                        -> manifest JSON
//                "stats"                           -> counters JSON: next_passage_id,
//                                                     documents, passages, embeddings,
//                                                     bm25_documents, total_terms, sequence
//                "import/" shard id               -> what an imported shard brought (JSON;
//                                                     its presence makes a re-import a no-op)
//
// Big-endian ids make the key order the numeric order. Terms, doc ids and sources must not
// contain '\0' (it separates the parts of the composite keys); put_document rejects them.
//
// Binary records (version byte 1 first; integers are LEB128 varints, signed ones zigzag
// encoded; strings are a varint length followed by the bytes, so any bytes are allowed):
//   document: u8 1, str id, str source, str title, str content_hash, str meta_json,
//             varint count, varint passage_id * count
//   passage:  u8 1, str doc_id, zz index, str text, zz char_begin, zz char_end,
//             u8 flags (1 = has embeddings, 2 = has retriever vector), varint length (number
//             of terms), varint count, str distinct_term * count
// The passage record keeps its distinct terms so that replacing or removing a document can
// delete its postings without a reverse index, and the flags/length so that the counters can
// be decremented without reading the other column families.
//
// Atomicity and durability: put_document and remove_document build ONE rocksdb::WriteBatch
// holding the deletion of the old version (passages, embeddings, retriever vectors, postings,
// lengths, source key), the new records and the updated counters + sequence, and write it
// with sync=false and the WAL enabled. The WAL record is handed to the OS (write(2)) before
// Write() returns, so a killed process (SIGKILL, crash) loses nothing that returned; an OS
// crash or power loss may lose the last few batches, but never part of one (point-in-time
// WAL recovery drops a torn tail). The manifest of a new store is written with sync=true.
// Writers are serialised by a mutex (the counters are read-modify-write); readers are not.
//
// BM25 (scored in index/bm25.cpp): the postings hold each passage's term frequencies, the
// passage_len family its length, the counters N (bm25_documents) and the sum of lengths
// (total_terms). read_postings() reads all of them for some terms under one RocksDB snapshot
// taken together with the counters, so that a concurrent write is wholly in or wholly out.
#include "storage/store.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <unordered_map>

#include "common/error.h"
#include "common/float16.h"
#include "common/hash.h"
#include "common/json_util.h"
#include "storage/bytes.h"
#include "storage/records.h"
#include "storage/shard.h"

namespace cocom::storage {

namespace fs = std::filesystem;
using namespace detail;  // NOLINT: the store is built on its record codecs and byte helpers

namespace detail {

const char* const kCfNames[kNumCf] = {"documents", "passages",    "embeddings", "retriever",
                                      "postings",  "passage_len", "sources",    "manifest"};

// The manifest as JSON (also shard.json's "manifest").
Json manifest_json(const Manifest& m) {
  Json j;
  j["schema_version"] = m.schema_version;
  j["compressor_fingerprint"] = m.compressor_fingerprint;
  j["compr_rate"] = m.compr_rate;
  j["embeddings_per_passage"] = m.embeddings_per_passage;
  j["embedding_dim"] = m.embedding_dim;
  j["embedding_dtype"] = embedding_dtype_name(m.embedding_dtype);
  j["retriever_fingerprint"] = m.retriever_fingerprint;
  j["retriever_dim"] = m.retriever_dim;
  j["index_factory"] = m.index_factory;
  if (!m.analyzer.empty()) j["analyzer"] = m.analyzer;
  if (m.context_max_length > 0) j["context_max_length"] = m.context_max_length;
  if (m.chunk_overlap_tokens >= 0) j["chunk_overlap_tokens"] = m.chunk_overlap_tokens;
  if (m.has_prefixes) {
    j["query_prefix"] = m.query_prefix;
    j["passage_prefix"] = m.passage_prefix;
  }
  if (!m.ingest_weights.empty()) j["ingest_weights"] = m.ingest_weights;
  if (!m.model_dir.empty()) j["model_dir"] = m.model_dir;
  if (!m.retriever_dir.empty()) j["retriever_dir"] = m.retriever_dir;
  return j;
}

Manifest manifest_from_json(const Json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, ": the manifest is not a JSON object");
  Manifest m;
  m.schema_version = static_cast<int>(json_int(j, "schema_version", origin));
  m.compressor_fingerprint = json_string_or(j, "compressor_fingerprint", "", origin);
  m.compr_rate = json_int_or(j, "compr_rate", 0, origin);
  m.embeddings_per_passage = json_int_or(j, "embeddings_per_passage", 0, origin);
  m.embedding_dim = json_int_or(j, "embedding_dim", 0, origin);
  const std::string dt = json_string_or(j, "embedding_dtype", "fp16", origin);
  auto d = parse_embedding_dtype(dt);
  if (!d) fail(origin, ": unknown embedding_dtype '", dt, "'");
  m.embedding_dtype = *d;
  m.retriever_fingerprint = json_string_or(j, "retriever_fingerprint", "", origin);
  m.retriever_dim = json_int_or(j, "retriever_dim", 0, origin);
  m.index_factory = json_string_or(j, "index_factory", "Flat", origin);
  m.analyzer = json_string_or(j, "analyzer", "", origin);
  m.context_max_length = json_int_or(j, "context_max_length", 0, origin);
  m.chunk_overlap_tokens = json_int_or(j, "chunk_overlap_tokens", -1, origin);
  m.has_prefixes = j.contains("query_prefix");
  m.query_prefix = json_string_or(j, "query_prefix", "", origin);
  m.passage_prefix = json_string_or(j, "passage_prefix", "", origin);
  m.ingest_weights = json_string_or(j, "ingest_weights", "", origin);
  m.model_dir = json_string_or(j, "model_dir", "", origin);
  m.retriever_dir = json_string_or(j, "retriever_dir", "", origin);
  return m;
}

std::string dump_json(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace detail

namespace {

// ---------------------------------------------------------------------------------------
// Counters as JSON

struct Counters {
  uint64_t next_passage_id = 0;
  int64_t documents = 0, passages = 0, embeddings = 0, bm25_documents = 0, total_terms = 0;
  uint64_t sequence = 0;
};

std::string counters_json(const Counters& c) {
  Json j;
  j["next_passage_id"] = c.next_passage_id;
  j["documents"] = c.documents;
  j["passages"] = c.passages;
  j["embeddings"] = c.embeddings;
  j["bm25_documents"] = c.bm25_documents;
  j["total_terms"] = c.total_terms;
  j["sequence"] = c.sequence;
  return dump_json(j);
}

Counters counters_from_json(const Json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, ": the counters are not a JSON object");
  auto u64 = [&](const char* key) -> uint64_t {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) {
      fail(origin, ": counter '", key, "' is missing or not an integer");
    }
    if (it->is_number_unsigned()) return it->get<uint64_t>();
    const int64_t v = it->get<int64_t>();
    if (v < 0) fail(origin, ": counter '", key, "' is negative");
    return static_cast<uint64_t>(v);
  };
  Counters c;
  c.next_passage_id = u64("next_passage_id");
  c.documents = static_cast<int64_t>(u64("documents"));
  c.passages = static_cast<int64_t>(u64("passages"));
  c.embeddings = static_cast<int64_t>(u64("embeddings"));
  c.bm25_documents = static_cast<int64_t>(u64("bm25_documents"));
  c.total_terms = static_cast<int64_t>(u64("total_terms"));
  c.sequence = u64("sequence");
  return c;
}

const char kManifestKey[] = "manifest";
const char kStatsKey[] = "stats";
// A document being written in parts: {"doc_id": ..., "first_id": N}. Its passages are the ids
// from first_id up to the counters' next_passage_id (staging allocates every id meanwhile).
const char kStagingKey[] = "staging";
// Retired passages still to delete: their 8-byte big-endian ids, concatenated.
const char kGarbageKey[] = "garbage";
// A replaced or removed document with more passages than this is retired (made invisible in
// one small batch) and its rows deleted in bounded batches afterwards.
constexpr size_t kInlineDeletePassages = 256;

bool has_nul(const std::string& s) { return s.find('\0') != std::string::npos; }

StoreStats stats_of(const Counters& c) {
  StoreStats s;
  s.documents = c.documents;
  s.passages = c.passages;
  s.embeddings = c.embeddings;
  s.bm25_documents = c.bm25_documents;
  s.total_terms = c.total_terms;
  s.next_passage_id = c.next_passage_id;
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Store

struct Store::Impl {
  std::string path;
  Manifest manifest;
  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // all opened, ours first (kNumCf)
  mutable std::mutex mu;                              // serialises writers; guards counters
  Counters counters;
  // The document being written in parts (begin_staging .. commit_staging / abort_staging).
  struct Staging {
    std::string doc_id;
    uint64_t first_id = 0;
  };
  std::optional<Staging> staging;
  // Set for a reader (secondary instance): its private directory; every write fails.
  std::string reader_dir;
  // A reader: the writer's write-ahead logs when it last caught up (see Store::catch_up).
  std::set<std::string> reader_wals;

  ~Impl() {
    if (!db) return;
    if (reader_dir.empty()) {
      // Memtables to SST files, so the write-ahead logs are obsolete and deleted now rather
      // than left behind (as large as the data written) until the next open.
      rocksdb::FlushOptions fo;
      fo.wait = true;
      std::vector<rocksdb::ColumnFamilyHandle*> ours(handles.begin(), handles.begin() + kNumCf);
      if (!ours.empty()) db->Flush(fo, ours).PermitUncheckedError();
    }
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    db->Close().PermitUncheckedError();
    delete db;
    if (!reader_dir.empty()) {
      std::error_code ec;
      fs::remove_all(reader_dir, ec);
    }
  }

  // Adds the rows of new passages of `doc_id` to `batch` (ids from c->next_passage_id).
  std::vector<uint64_t> add_passages(const std::string& doc_id, std::vector<NewPassage>* passages,
                                     rocksdb::WriteBatch* batch, Counters* c) const;
  // Writes the manifest durably (sync; mu held).
  void put_manifest(const Manifest& m) const {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    rocksdb::Status s = db->Put(wo, cf(kManifest), kManifestKey, dump_json(manifest_json(m)));
    if (!s.ok()) fail_status("writing the manifest", s);
  }
  // Adds passage ids (8-byte keys, concatenated) to the garbage list in `batch` (mu held).
  void add_garbage(const std::string& keys, rocksdb::WriteBatch* batch) const {
    std::string garbage;
    get(kManifest, kGarbageKey, &garbage);
    batch->Put(cf(kManifest), kGarbageKey, garbage + keys);
  }
  // Moves the staged passages to the garbage list and drops the marker (mu held).
  void abort_staging_locked();

  rocksdb::ColumnFamilyHandle* cf(Cf c) const { return handles[c]; }

  [[noreturn]] void fail_status(const std::string& doing, const rocksdb::Status& st) const {
    if (st.IsCorruption()) fail_corrupt(path, ": ", doing, " failed: ", st.ToString());
    if (st.IsInvalidArgument()) fail(path, ": ", doing, " failed: ", st.ToString());
    fail_io(path, ": ", doing, " failed: ", st.ToString());
  }

  // Gets a value; false when absent.
  bool get(Cf c, const std::string& key, std::string* value,
           const rocksdb::Snapshot* snap = nullptr) const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snap;
    rocksdb::Status st = db->Get(ro, cf(c), key, value);
    if (st.IsNotFound()) return false;
    if (!st.ok()) fail_status(std::string("reading ") + kCfNames[c], st);
    return true;
  }

  std::string passage_what(uint64_t id) const { return path + ": passage " + std::to_string(id); }

  std::optional<DocumentRecord> read_document(const std::string& id) const {
    std::string v;
    if (!get(kDocuments, id, &v)) return std::nullopt;
    return decode_document(v, path + ": document '" + id + "'");
  }

  // Adds to `batch` the deletion of a passage's rows (record, embeddings, vector, length,
  // postings); updates `c`.
  void delete_passage(uint64_t id, const std::string& value, rocksdb::WriteBatch* batch,
                      Counters* c) const {
    const std::string key = id_key(id);
    StoredPassage p = decode_passage(id, value, passage_what(id));
    batch->Delete(cf(kPassages), key);
    c->passages -= 1;
    if (p.has_embeddings) {
      batch->Delete(cf(kEmbeddings), key);
      c->embeddings -= 1;
    }
    if (p.has_retriever) batch->Delete(cf(kRetriever), key);
    if (p.length > 0) {
      batch->Delete(cf(kPassageLen), key);
      c->bm25_documents -= 1;
      c->total_terms -= static_cast<int64_t>(p.length);
    }
    for (const auto& t : p.terms) batch->Delete(cf(kPostings), t + std::string(1, '\0') + key);
  }

  // Adds to `batch` the deletion of everything `doc` owns; updates `c`. A document with many
  // passages is retired instead: its record goes now (readers no longer see it) and its
  // passages join the garbage list, deleted in bounded batches by collect_garbage(). Returns
  // true when it was retired.
  bool delete_document(const DocumentRecord& doc, rocksdb::WriteBatch* batch, Counters* c) const {
    const bool retire = doc.passage_ids.size() > kInlineDeletePassages;
    if (retire) {
      std::string keys;
      for (uint64_t id : doc.passage_ids) keys += id_key(id);
      add_garbage(keys, batch);
    } else {
      for (uint64_t id : doc.passage_ids) {
        std::string v;
        if (!get(kPassages, id_key(id), &v)) {
          fail(path, ": passage ", id, " of document '", doc.id,
               "' is missing (the store is damaged)");
        }
        delete_passage(id, v, batch, c);
      }
    }
    batch->Delete(cf(kSources), doc.source + std::string(1, '\0') + doc.id);
    batch->Delete(cf(kDocuments), doc.id);
    c->documents -= 1;
    return retire;
  }

  void write(rocksdb::WriteBatch* batch, const Counters& c, const std::string& doing) {
    if (!reader_dir.empty()) {
      fail_precondition(path, ": ", doing, ": the store was opened for reading only");
    }
    batch->Put(cf(kManifest), kStatsKey, counters_json(c));
    rocksdb::WriteOptions wo;
    wo.sync = false;        // the WAL reaches the OS before Write returns: process-crash safe
    wo.disableWAL = false;  // (see the top of this file)
    rocksdb::Status st = db->Write(wo, batch);
    if (!st.ok()) fail_status(doing, st);
    counters = c;
  }
};

namespace {

std::string cf_list(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

[[noreturn]] void fail_open(const std::string& path, const rocksdb::Status& st) {
  const std::string msg = st.ToString();
  if (st.IsIOError() && msg.find("lock") != std::string::npos) {
    fail_io(path, ": the store is locked (is another cocom process using it?): ", msg);
  }
  if (st.IsCorruption() || msg.find("MANIFEST") != std::string::npos) {
    fail_corrupt(path, ": the store is damaged (RocksDB: ", msg, ")");
  }
  fail_io(path, ": cannot open the store: ", msg);
}

template <typename T>
std::string show(const T& v) {
  if constexpr (std::is_convertible_v<T, std::string>) {
    return std::string(v).empty() ? std::string("<none>") : std::string(v);
  } else {
    return std::to_string(v);
  }
}

template <typename T>
void check_field(const std::string& path, const char* field, const T& stored, const T& wanted) {
  if (stored == wanted) return;
  fail_precondition(
      path, ": the store was built with ", field, " ", show(stored), ", not ", show(wanted),
      " (its embeddings would be mixed with incompatible ones); use another --db or the "
      "original model");
}

// Every field `w` sets must equal the stored one (`m`).
void check_manifest(const std::string& path, const Manifest& m, const Manifest& w) {
  if (w.schema_version != 0)
    check_field(path, "schema version", m.schema_version, w.schema_version);
  if (!w.compressor_fingerprint.empty()) {
    check_field(path, "compressor", m.compressor_fingerprint, w.compressor_fingerprint);
  }
  if (w.compr_rate != 0) check_field(path, "compression rate", m.compr_rate, w.compr_rate);
  if (w.embeddings_per_passage != 0) {
    check_field(path, "embeddings per passage", m.embeddings_per_passage, w.embeddings_per_passage);
  }
  if (w.embedding_dim != 0) {
    check_field(path, "embedding dim", m.embedding_dim, w.embedding_dim);
    // The dtype has no "unset" value: it is checked when the caller describes the
    // embeddings it will write (a non-zero embedding_dim).
    check_field(path, "embedding dtype", std::string(embedding_dtype_name(m.embedding_dtype)),
                std::string(embedding_dtype_name(w.embedding_dtype)));
  }
  if (!w.retriever_fingerprint.empty()) {
    check_field(path, "retriever", m.retriever_fingerprint, w.retriever_fingerprint);
  }
  if (w.retriever_dim != 0) check_field(path, "retriever dim", m.retriever_dim, w.retriever_dim);
}

// The write-ahead logs in a store directory (NNNNNN.log; RocksDB's info log is "LOG").
std::set<std::string> wal_files(const std::string& path) {
  std::set<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".log") out.insert(it->path().filename().string());
  }
  return out;
}

// `reader`: a RocksDB secondary instance (read-only, no lock: works while another process
// writes the store), which sees the state as of its open.
std::unique_ptr<Store::Impl> open_impl(const std::string& path, const Manifest* wanted,
                                       bool reader = false) {
  if (path.empty()) fail("store path is empty");
  std::error_code ec;
  const fs::file_status fst = fs::status(path, ec);
  const bool exists = fs::exists(fst);
  if (exists && !fs::is_directory(fst)) {
    fail(path, ": is not a directory (a cocom store is a directory; use another --db)");
  }
  const bool has_db = exists && fs::exists(fs::path(path) / "CURRENT", ec);
  if (!has_db) {
    if (!wanted || reader) fail_not_found(path, ": no cocom store here (no RocksDB database)");
    if (exists && !fs::is_empty(path, ec)) {
      fail(path, ": exists, is not empty and holds no cocom store; use another --db");
    }
    fs::create_directories(path, ec);
    if (ec) fail_io(path, ": cannot create the store directory: ", ec.message());
  }

  rocksdb::Options opt;
  opt.create_if_missing = !has_db;
  opt.create_missing_column_families = !has_db;
  opt.keep_log_file_num = 4;
  // Bounds the write-ahead logs during a long ingestion: past this, the column families
  // whose memtables pin the oldest log are flushed and the log deleted.
  opt.max_total_wal_size = 64 << 20;
  // Column families: ours, then "default", then any extra ones an existing database holds.
  std::vector<std::string> names(kCfNames, kCfNames + kNumCf);
  names.push_back(rocksdb::kDefaultColumnFamilyName);
  if (has_db) {
    std::vector<std::string> existing;
    rocksdb::Status st = rocksdb::DB::ListColumnFamilies(opt, path, &existing);
    if (!st.ok()) fail_open(path, st);
    for (int i = 0; i < kNumCf; ++i) {
      if (std::find(existing.begin(), existing.end(), kCfNames[i]) == existing.end()) {
        fail_corrupt(path, ": not a cocom store (RocksDB database without the column family '",
                     kCfNames[i], "'; it has ", cf_list(existing), ")");
      }
    }
    for (const auto& e : existing) {
      if (std::find(names.begin(), names.end(), e) == names.end()) names.push_back(e);
    }
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions(opt));

  auto impl = std::make_unique<Store::Impl>();
  impl->path = path;
  rocksdb::Status st;
  if (reader) {
    // The secondary keeps its own info log in a private directory (removed at close).
    std::string tmpl = (fs::temp_directory_path() / "cocom-reader-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) fail_io(path, ": cannot create a reader's directory in /tmp");
    impl->reader_dir = tmpl;
    rocksdb::DBOptions dbo(opt);
    dbo.max_open_files = -1;  // required by secondary instances
    st =
        rocksdb::DB::OpenAsSecondary(dbo, path, impl->reader_dir, descs, &impl->handles, &impl->db);
  } else {
    st = rocksdb::DB::Open(rocksdb::DBOptions(opt), path, descs, &impl->handles, &impl->db);
  }
  if (!st.ok()) {
    impl->db = nullptr;
    impl->handles.clear();
    fail_open(path, st);
  }

  std::string mtext;
  if (reader && !impl->get(kManifest, kManifestKey, &mtext)) {
    fail_not_found(path, ": no cocom store here yet (its creation is not finished)");
  }
  if (!impl->get(kManifest, kManifestKey, &mtext)) {
    // A new store (or one whose creation was cut off before its first write: still empty).
    std::unique_ptr<rocksdb::Iterator> it(
        impl->db->NewIterator(rocksdb::ReadOptions(), impl->cf(kDocuments)));
    it->SeekToFirst();
    if (!wanted || it->Valid()) fail_corrupt(path, ": not a cocom store (no manifest)");
    if (wanted->schema_version == 0) {
      // Opened to read its manifest, but its creation was cut off before the first write:
      // nothing is written; the caller sees schema_version 0 and creates it properly.
      impl->manifest = Manifest{};
      impl->manifest.schema_version = 0;
      return impl;
    }
    impl->manifest = *wanted;
    impl->manifest.schema_version = kSchemaVersion;
    impl->counters = Counters{};
    rocksdb::WriteBatch batch;
    batch.Put(impl->cf(kManifest), kManifestKey, dump_json(manifest_json(impl->manifest)));
    batch.Put(impl->cf(kManifest), kStatsKey, counters_json(impl->counters));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    st = impl->db->Write(wo, &batch);
    if (!st.ok()) impl->fail_status("writing the manifest", st);
    return impl;
  }

  const std::string origin = path + " (manifest)";
  impl->manifest = manifest_from_json(parse_json_text(mtext, origin), origin);
  std::string ctext;
  if (!impl->get(kManifest, kStatsKey, &ctext)) fail(path, ": the store has no counters");
  impl->counters =
      counters_from_json(parse_json_text(ctext, path + " (counters)"), path + " (counters)");

  const Manifest& m = impl->manifest;
  if (m.schema_version > kSchemaVersion) {
    fail(path, ": the store has schema version ", m.schema_version, ", this build reads up to ",
         kSchemaVersion, "; use a newer cocom");
  }
  if (wanted) check_manifest(path, m, *wanted);
  return impl;
}

}  // namespace

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

std::unique_ptr<Store> Store::open(const std::string& path, const Manifest& manifest) {
  std::unique_ptr<Store> s(new Store(open_impl(path, &manifest)));
  if (s->impl_->manifest.schema_version != 0) s->recover();
  return s;
}

std::unique_ptr<Store> Store::open_reader(const std::string& path, const Manifest& manifest) {
  const std::set<std::string> wals = wal_files(path);  // before: a log gone since is noticed
  std::unique_ptr<Store> s(new Store(open_impl(path, &manifest, /*reader=*/true)));
  s->impl_->reader_wals = wals;
  return s;
}

bool Store::read_only() const { return !impl_->reader_dir.empty(); }

std::unique_ptr<Store> Store::open_existing(const std::string& path) {
  return std::unique_ptr<Store>(new Store(open_impl(path, nullptr)));
}

void Store::check(const Manifest& wanted) const {
  check_manifest(impl_->path, impl_->manifest, wanted);
}

namespace {

// The settings part of a manifest (never the fingerprints, shape or dtype), field by field:
// readers use the other fields without the lock (they never change).
void assign_settings(Manifest* to, const Manifest& from) {
  to->context_max_length = from.context_max_length;
  to->chunk_overlap_tokens = from.chunk_overlap_tokens;
  to->has_prefixes = from.has_prefixes;
  to->query_prefix = from.query_prefix;
  to->passage_prefix = from.passage_prefix;
  to->ingest_weights = from.ingest_weights;
  to->model_dir = from.model_dir;
  to->retriever_dir = from.retriever_dir;
}

}  // namespace

void Store::set_settings(const Manifest& st) {
  Manifest m = manifest();
  assign_settings(&m, st);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->put_manifest(m);
  assign_settings(&impl_->manifest, m);
}

void Store::replace_compressor_fingerprint(const std::string& fingerprint) {
  Manifest m = manifest();
  m.compressor_fingerprint = fingerprint;
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->put_manifest(m);
  impl_->manifest.compressor_fingerprint = fingerprint;
}

void Store::reset_empty(const Manifest& wanted) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const Counters& c = impl_->counters;
  if (c.documents != 0 || c.passages != 0) {
    fail_precondition(impl_->path, ": the store holds ", c.documents, " document(s); its model, ",
                      "embedding shape and dtype are fixed");
  }
  Manifest m = wanted;
  m.schema_version = kSchemaVersion;
  impl_->put_manifest(m);
  impl_->manifest = m;
}

Manifest Store::manifest() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->manifest;
}
const std::string& Store::path() const { return impl_->path; }

namespace {

// Refuses passages that do not fit the store (embedding shape, retriever dim, terms).
void check_new_passages(const std::string& path, const Manifest& m, const std::string& doc_id,
                        const std::vector<NewPassage>& passages) {
  const int64_t per = m.embeddings_per_passage * m.embedding_dim;
  for (size_t i = 0; i < passages.size(); ++i) {
    const NewPassage& p = passages[i];
    if (!p.embeddings.empty() && per > 0 && static_cast<int64_t>(p.embeddings.size()) != per) {
      fail(path, ": document '", doc_id, "' passage ", i, " has ", p.embeddings.size(),
           " embedding values; the store holds ", m.embeddings_per_passage, " x ", m.embedding_dim,
           " = ", per);
    }
    if (!p.retriever_vector.empty() && m.retriever_dim > 0 &&
        static_cast<int64_t>(p.retriever_vector.size()) != m.retriever_dim) {
      fail(path, ": document '", doc_id, "' passage ", i, " has a retriever vector of ",
           p.retriever_vector.size(), " values; the store's retriever dim is ", m.retriever_dim);
    }
    for (const auto& t : p.terms) {
      if (t.empty() || has_nul(t)) {
        fail(path, ": document '", doc_id, "' passage ", i,
             " has an empty term or one with a NUL byte");
      }
    }
  }
}

void check_document_id(const std::string& path, const DocumentRecord& doc) {
  if (doc.id.empty()) fail(path, ": a document needs a non-empty id");
  if (has_nul(doc.id)) fail(path, ": document id contains a NUL byte");
  if (has_nul(doc.source)) fail(path, ": document '", doc.id, "': source contains a NUL byte");
}

}  // namespace

std::vector<uint64_t> Store::Impl::add_passages(const std::string& doc_id,
                                                std::vector<NewPassage>* passages,
                                                rocksdb::WriteBatch* batch, Counters* c) const {
  const Manifest& m = manifest;
  const int64_t per = m.embeddings_per_passage * m.embedding_dim;
  std::vector<uint64_t> ids;
  ids.reserve(passages->size());
  for (NewPassage& np : *passages) {
    const uint64_t id = c->next_passage_id++;
    ids.push_back(id);
    const std::string key = id_key(id);
    StoredPassage sp;
    sp.rec = std::move(np.record);
    sp.rec.id = id;
    sp.rec.doc_id = doc_id;
    std::map<std::string, uint64_t> tf;
    for (const auto& t : np.terms) ++tf[t];
    sp.length = np.terms.size();
    for (const auto& [t, n] : tf) {
      sp.terms.push_back(t);
      batch->Put(cf(kPostings), t + std::string(1, '\0') + key, u32_value(n));
    }
    if (sp.length > 0) {
      batch->Put(cf(kPassageLen), key, u32_value(sp.length));
      c->bm25_documents += 1;
      c->total_terms += static_cast<int64_t>(sp.length);
    }
    if (!np.embeddings.empty()) {
      std::vector<int64_t> shape;
      if (per > 0) {
        shape = {m.embeddings_per_passage, m.embedding_dim};
      } else {
        shape = {static_cast<int64_t>(np.embeddings.size())};
      }
      batch->Put(cf(kEmbeddings), key, encode_embedding(np.embeddings, shape, m.embedding_dtype));
      sp.has_embeddings = true;
      c->embeddings += 1;
    }
    if (!np.retriever_vector.empty()) {
      batch->Put(
          cf(kRetriever), key,
          encode_embedding(np.retriever_vector, {static_cast<int64_t>(np.retriever_vector.size())},
                           EmbeddingDType::F32));
      sp.has_retriever = true;
    }
    batch->Put(cf(kPassages), key, encode_passage(sp));
    c->passages += 1;
  }
  return ids;
}

std::vector<uint64_t> Store::put_document(DocumentRecord doc, std::vector<NewPassage> passages) {
  Impl& im = *impl_;
  check_document_id(im.path, doc);
  check_new_passages(im.path, im.manifest, doc.id, passages);
  bool retired = false;
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (im.staging) {
      fail(im.path, ": document '", doc.id, "' cannot be written while '", im.staging->doc_id,
           "' is being written in parts");
    }
    Counters c = im.counters;
    rocksdb::WriteBatch batch;
    if (auto old = im.read_document(doc.id)) retired = im.delete_document(*old, &batch, &c);
    ids = im.add_passages(doc.id, &passages, &batch, &c);
    doc.passage_ids = ids;
    batch.Put(im.cf(kDocuments), doc.id, encode_document(doc));
    batch.Put(im.cf(kSources), doc.source + std::string(1, '\0') + doc.id, "");
    c.documents += 1;
    c.sequence += 1;
    im.write(&batch, c, "writing document '" + doc.id + "'");
  }
  if (retired) collect_garbage();
  return ids;
}

std::optional<std::vector<uint64_t>> Store::remove_document(const std::string& doc_id) {
  Impl& im = *impl_;
  std::optional<DocumentRecord> old;
  bool retired = false;
  {
    std::lock_guard<std::mutex> lock(im.mu);
    old = im.read_document(doc_id);
    if (!old) return std::nullopt;
    Counters c = im.counters;
    rocksdb::WriteBatch batch;
    retired = im.delete_document(*old, &batch, &c);
    c.sequence += 1;
    im.write(&batch, c, "removing document '" + doc_id + "'");
  }
  if (retired) collect_garbage();
  return old->passage_ids;
}

// ---------------------------------------------------------------------------------------
// Documents written in parts

void Store::begin_staging(const std::string& doc_id) {
  Impl& im = *impl_;
  if (doc_id.empty() || has_nul(doc_id))
    fail(im.path, ": a document needs an id without NUL bytes");
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (im.staging) {
      fail(im.path, ": document '", im.staging->doc_id, "' is already being written in parts");
    }
    Counters c = im.counters;
    rocksdb::WriteBatch batch;
    Json j = {{"doc_id", doc_id}, {"first_id", c.next_passage_id}};
    batch.Put(im.cf(kManifest), kStagingKey, dump_json(j));
    im.write(&batch, c, "starting document '" + doc_id + "'");
    im.staging = Impl::Staging{doc_id, c.next_passage_id};
  }
}

std::vector<uint64_t> Store::stage_passages(std::vector<NewPassage> part) {
  Impl& im = *impl_;
  std::lock_guard<std::mutex> lock(im.mu);
  if (!im.staging) fail(im.path, ": stage_passages without begin_staging");
  const std::string doc_id = im.staging->doc_id;
  check_new_passages(im.path, im.manifest, doc_id, part);
  Counters c = im.counters;
  rocksdb::WriteBatch batch;
  std::vector<uint64_t> ids = im.add_passages(doc_id, &part, &batch, &c);
  c.sequence += 1;
  im.write(&batch, c, "writing part of document '" + doc_id + "'");
  return ids;
}

std::vector<uint64_t> Store::commit_staging(DocumentRecord doc) {
  Impl& im = *impl_;
  check_document_id(im.path, doc);
  bool retired = false;
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (!im.staging || im.staging->doc_id != doc.id) {
      fail(im.path, ": document '", doc.id, "' is not being written in parts");
    }
    Counters c = im.counters;
    rocksdb::WriteBatch batch;
    if (auto old = im.read_document(doc.id)) retired = im.delete_document(*old, &batch, &c);
    for (uint64_t id = im.staging->first_id; id < c.next_passage_id; ++id) ids.push_back(id);
    doc.passage_ids = ids;
    batch.Put(im.cf(kDocuments), doc.id, encode_document(doc));
    batch.Put(im.cf(kSources), doc.source + std::string(1, '\0') + doc.id, "");
    batch.Delete(im.cf(kManifest), kStagingKey);
    c.documents += 1;
    c.sequence += 1;
    im.write(&batch, c, "completing document '" + doc.id + "'");
    im.staging.reset();
  }
  if (retired) collect_garbage();
  return ids;
}

void Store::abort_staging() {
  Impl& im = *impl_;
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (!im.staging) return;
    im.abort_staging_locked();
  }
  collect_garbage();
}

void Store::Impl::abort_staging_locked() {
  Counters c = counters;
  std::string keys;
  for (uint64_t id = staging->first_id; id < c.next_passage_id; ++id) keys += id_key(id);
  rocksdb::WriteBatch batch;
  add_garbage(keys, &batch);
  batch.Delete(cf(kManifest), kStagingKey);
  c.sequence += 1;
  write(&batch, c, "dropping the parts of document '" + staging->doc_id + "'");
  staging.reset();
}

int64_t Store::collect_garbage(size_t per_batch) {
  Impl& im = *impl_;
  per_batch = std::max<size_t>(per_batch, 1);
  int64_t deleted = 0;
  for (;;) {
    std::lock_guard<std::mutex> lock(im.mu);
    std::string garbage;
    if (!im.get(kManifest, kGarbageKey, &garbage)) return deleted;
    if (garbage.size() % 8 != 0) fail_corrupt(im.path, ": damaged garbage list");
    const size_t n = garbage.size() / 8;  // 0: only the empty list left to delete
    const size_t take = std::min(n, per_batch);
    Counters c = im.counters;
    rocksdb::WriteBatch batch;
    for (size_t i = n - take; i < n; ++i) {
      const uint64_t id = key_id(garbage.data() + i * 8);
      std::string v;
      if (!im.get(kPassages, id_key(id), &v)) continue;  // deleted before a crash
      im.delete_passage(id, v, &batch, &c);
      ++deleted;
    }
    garbage.resize((n - take) * 8);
    if (garbage.empty()) {
      batch.Delete(im.cf(kManifest), kGarbageKey);
    } else {
      batch.Put(im.cf(kManifest), kGarbageKey, garbage);
    }
    c.sequence += 1;
    im.write(&batch, c, "deleting retired passages");
  }
}

void Store::recover() {
  Impl& im = *impl_;
  {
    std::lock_guard<std::mutex> lock(im.mu);
    std::string text;
    if (im.get(kManifest, kStagingKey, &text)) {
      const std::string origin = im.path + " (staging marker)";
      const Json j = parse_json_text(text, origin);
      im.staging =
          Impl::Staging{json_string_or(j, "doc_id", "", origin), j.value("first_id", uint64_t{0})};
      im.abort_staging_locked();  // a document cut off while being written in parts
    }
  }
  collect_garbage();
}

std::optional<DocumentRecord> Store::get_document(const std::string& doc_id) const {
  return impl_->read_document(doc_id);
}

std::vector<DocumentRecord> Store::documents_by_source(const std::string& source) const {
  const Impl& im = *impl_;
  std::vector<DocumentRecord> out;
  if (has_nul(source)) return out;
  const std::string prefix = source + std::string(1, '\0');
  rocksdb::ReadOptions ro;
  std::unique_ptr<rocksdb::Iterator> it(im.db->NewIterator(ro, im.cf(kSources)));
  std::vector<std::string> ids;
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    ids.push_back(it->key().ToString().substr(prefix.size()));
  }
  if (!it->status().ok()) im.fail_status("scanning sources", it->status());
  for (const auto& id : ids) {
    if (auto d = im.read_document(id)) out.push_back(std::move(*d));
  }
  return out;
}

std::optional<PassageRecord> Store::get_passage(uint64_t id) const {
  std::string v;
  if (!impl_->get(kPassages, id_key(id), &v)) return std::nullopt;
  return decode_passage(id, v, impl_->passage_what(id)).rec;
}

std::optional<std::vector<float>> Store::get_embeddings(uint64_t id) const {
  std::string v;
  if (!impl_->get(kEmbeddings, id_key(id), &v)) return std::nullopt;
  return decode_embedding(v, nullptr, impl_->passage_what(id) + " embeddings");
}

std::optional<std::vector<float>> Store::get_retriever_vector(uint64_t id) const {
  std::string v;
  if (!impl_->get(kRetriever, id_key(id), &v)) return std::nullopt;
  return decode_embedding(v, nullptr, impl_->passage_what(id) + " retriever vector");
}

void Store::for_each_retriever_vector(
    const std::function<void(uint64_t, const std::vector<float>&)>& fn) const {
  const Impl& im = *impl_;
  std::unique_ptr<rocksdb::Iterator> it(
      im.db->NewIterator(rocksdb::ReadOptions(), im.cf(kRetriever)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != 8)
      fail_corrupt(im.path, ": damaged key in the retriever column family");
    const uint64_t id = key_id(it->key().data());
    fn(id, decode_embedding(it->value().ToString(), nullptr,
                            im.passage_what(id) + " retriever vector"));
  }
  if (!it->status().ok()) im.fail_status("scanning retriever vectors", it->status());
}

void Store::for_each_document(const std::function<void(const DocumentRecord&)>& fn) const {
  const Impl& im = *impl_;
  std::unique_ptr<rocksdb::Iterator> it(
      im.db->NewIterator(rocksdb::ReadOptions(), im.cf(kDocuments)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    fn(decode_document(it->value().ToString(),
                       im.path + ": document '" + it->key().ToString() + "'"));
  }
  if (!it->status().ok()) im.fail_status("scanning documents", it->status());
}

PostingsSnapshot Store::read_postings(const std::vector<std::string>& terms) const {
  const Impl& im = *impl_;
  PostingsSnapshot out;
  const rocksdb::Snapshot* snap = nullptr;
  {
    // The counters and the snapshot are taken together so that they describe the same data.
    std::lock_guard<std::mutex> lock(im.mu);
    out.stats = stats_of(im.counters);
    // A reader (secondary instance) has no snapshots; it changes only in catch_up(), which
    // the engine never runs beside a read (it holds its lock exclusively).
    if (im.reader_dir.empty() && !terms.empty()) snap = im.db->GetSnapshot();
  }
  struct SnapshotRelease {
    rocksdb::DB* db;
    const rocksdb::Snapshot* s;
    ~SnapshotRelease() {
      if (s) db->ReleaseSnapshot(s);
    }
  } release{im.db, snap};

  std::unordered_map<uint64_t, uint32_t> lengths;  // read once per passage
  out.terms.reserve(terms.size());
  for (const auto& term : terms) {
    TermPostings tp;
    tp.term = term;
    if (term.empty() || has_nul(term)) {  // never stored (put_document rejects them)
      out.terms.push_back(std::move(tp));
      continue;
    }
    const std::string prefix = term + std::string(1, '\0');
    const std::string upper = term + std::string(1, '\1');
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.snapshot = snap;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(im.db->NewIterator(ro, im.cf(kPostings)));
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      const rocksdb::Slice key = it->key();
      if (!key.starts_with(prefix)) break;
      if (key.size() != prefix.size() + 8 || it->value().size() != 4) {
        fail_corrupt(im.path, ": damaged posting for term '", term, "'");
      }
      Posting p;
      p.passage_id = key_id(key.data() + prefix.size());
      p.tf = static_cast<uint32_t>(get_le(it->value().data(), 4));
      tp.postings.push_back(p);
    }
    if (!it->status().ok()) im.fail_status("scanning postings", it->status());
    tp.df = static_cast<int64_t>(tp.postings.size());
    for (auto& p : tp.postings) {
      auto lit = lengths.find(p.passage_id);
      if (lit == lengths.end()) {
        std::string v;
        uint32_t len = 0;
        if (im.get(kPassageLen, id_key(p.passage_id), &v, snap) && v.size() == 4) {
          len = static_cast<uint32_t>(get_le(v.data(), 4));
        }
        lit = lengths.emplace(p.passage_id, len).first;
      }
      p.length = lit->second;
    }
    out.terms.push_back(std::move(tp));
  }
  return out;
}

StoreStats Store::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return stats_of(impl_->counters);
}

uint64_t Store::sequence() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->counters.sequence;
}

// ---------------------------------------------------------------------------------------
// Readers catching up, and shards

bool Store::catch_up() {
  if (impl_->reader_dir.empty()) return false;
  // TryCatchUpWithPrimary replays the writer's new log records into the reader's memtables
  // and links its new table files. A memtable whose rows the writer has since flushed is
  // dropped only when the reader moves on to a newer log; when the writer flushes and stops
  // writing (at its close), the reader would keep answering from that memtable, which RocksDB
  // reads before the newer table files. So when a log the reader saw is gone, it reopens
  // (reading the writer's MANIFEST and its live logs, a fresh view) instead.
  const std::set<std::string> wals = wal_files(impl_->path);
  const bool log_gone = !std::includes(wals.begin(), wals.end(), impl_->reader_wals.begin(),
                                       impl_->reader_wals.end());
  if (log_gone) {
    Manifest none;
    none.schema_version = 0;
    std::unique_ptr<Impl> fresh = open_impl(impl_->path, &none, /*reader=*/true);
    fresh->reader_wals = wals;
    const bool changed = fresh->counters.sequence != impl_->counters.sequence;
    impl_ = std::move(fresh);
    return changed;
  }
  Impl& im = *impl_;
  rocksdb::Status st = im.db->TryCatchUpWithPrimary();
  if (!st.ok()) im.fail_status("catching up with the writer", st);
  im.reader_wals = wals;
  std::string mtext, ctext;
  if (!im.get(kManifest, kManifestKey, &mtext) || !im.get(kManifest, kStatsKey, &ctext)) {
    fail_corrupt(im.path, ": the manifest or the counters disappeared while catching up");
  }
  const std::string origin = im.path + " (manifest)";
  const Manifest m = manifest_from_json(parse_json_text(mtext, origin), origin);
  const Counters c =
      counters_from_json(parse_json_text(ctext, im.path + " (counters)"), im.path + " (counters)");
  std::lock_guard<std::mutex> lock(im.mu);
  const bool changed = c.sequence != im.counters.sequence;
  im.counters = c;
  assign_settings(&im.manifest, m);  // the identity fields never change once it holds data
  return changed;
}

void Store::set_first_passage_id(uint64_t first) {
  Impl& im = *impl_;
  std::lock_guard<std::mutex> lock(im.mu);
  Counters c = im.counters;
  if (c.next_passage_id == first) return;
  if (c.next_passage_id != 0 || c.passages != 0) {
    fail_precondition(im.path, ": passage ids were handed out already (next ", c.next_passage_id,
                      "); a shard is made in a store of its own");
  }
  c.next_passage_id = first;
  rocksdb::WriteBatch batch;
  im.write(&batch, c, "setting the first passage id");
}

void Store::export_shard(const std::string& dir, int64_t index, int64_t count) const {
  const Impl& im = *impl_;
  std::lock_guard<std::mutex> lock(im.mu);  // no write meanwhile
  if (im.staging) {
    fail_precondition(im.path, ": document '", im.staging->doc_id, "' is being written in parts");
  }
  std::string garbage;
  if (im.get(kManifest, kGarbageKey, &garbage)) {
    fail_precondition(im.path, ": retired passages wait for deletion; open the store once first");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail_io(dir, ": cannot create the shard directory: ", ec.message());
  const std::string json_path = (fs::path(dir) / "shard.json").string();
  if (fs::exists(json_path, ec)) fail(dir, ": holds a shard already (shard.json)");
  Json files = Json::array();
  uint64_t first = 0, last = 0;
  for (int cf = 0; cf < kManifest; ++cf) {
    std::unique_ptr<rocksdb::Iterator> it(
        im.db->NewIterator(rocksdb::ReadOptions(), im.cf(static_cast<Cf>(cf))));
    it->SeekToFirst();
    if (!it->status().ok()) im.fail_status(std::string("scanning ") + kCfNames[cf], it->status());
    if (!it->Valid()) continue;  // RocksDB refuses empty files
    const std::string name = std::string(kCfNames[cf]) + ".sst";
    const std::string path = (fs::path(dir) / name).string();
    rocksdb::SstFileWriter w{rocksdb::EnvOptions(), rocksdb::Options()};
    rocksdb::Status st = w.Open(path);
    uint64_t entries = 0;
    for (; st.ok() && it->Valid(); it->Next()) {
      if (cf == kPassages && it->key().size() == 8) {
        const uint64_t id = key_id(it->key().data());
        if (entries == 0) first = id;
        last = id;
      }
      st = w.Put(it->key(), it->value());
      ++entries;
    }
    if (st.ok()) st = it->status();
    if (st.ok()) st = w.Finish();
    if (!st.ok()) fail_io(path, ": writing the shard file failed: ", st.ToString());
    files.push_back({{"cf", kCfNames[cf]},
                     {"file", name},
                     {"bytes", static_cast<uint64_t>(fs::file_size(path))},
                     {"entries", entries},
                     {"xxh3", hex64(xxh3_file(path))}});
  }
  Json j;
  j["format"] = "cocom-shard";
  j["version"] = 1;
  j["shard"] = {{"index", index}, {"count", count}};
  j["manifest"] = manifest_json(im.manifest);
  if (im.counters.passages > 0) j["passage_ids"] = {first, last};
  j["files"] = files;
  const std::string tmp = json_path + ".tmp";
  write_json_file(tmp, j);
  fs::rename(tmp, json_path, ec);
  if (ec) fail_io(json_path, ": cannot rename ", tmp, " into place: ", ec.message());
}

namespace {

// A shard made with other settings than the store's would mix incompatible rows.
void check_shard_manifest(const std::string& path, const Manifest& m, const ShardContents& s) {
  auto refuse = [&](const char* field, const std::string& shard, const std::string& store) {
    fail_precondition("shard ", s.dir, " was made with ", field, " ",
                      shard.empty() ? "<none>" : shard, ", the store at ", path, " holds ",
                      store.empty() ? "<none>" : store,
                      ": its rows would be mixed with incompatible ones; re-ingest the shard with "
                      "the store's model and settings");
  };
  const Manifest& w = s.manifest;
  auto same = [&](const char* field, const std::string& shard, const std::string& store) {
    if (shard != store) refuse(field, shard, store);
  };
  auto num = [](int64_t v) { return std::to_string(v); };
  same("the compressor (model fingerprint)", w.compressor_fingerprint, m.compressor_fingerprint);
  same("compression rate", num(w.compr_rate), num(m.compr_rate));
  same("embeddings per passage", num(w.embeddings_per_passage), num(m.embeddings_per_passage));
  same("embedding dim", num(w.embedding_dim), num(m.embedding_dim));
  same("embedding dtype", embedding_dtype_name(w.embedding_dtype),
       embedding_dtype_name(m.embedding_dtype));
  same("the retriever", w.retriever_fingerprint, m.retriever_fingerprint);
  same("retriever dim", num(w.retriever_dim), num(m.retriever_dim));
  same("context length (--context-max-length)", num(w.context_max_length),
       num(m.context_max_length));
  same("chunk overlap (--overlap)", num(w.chunk_overlap_tokens), num(m.chunk_overlap_tokens));
  same("query prefix", "'" + w.query_prefix + "'", "'" + m.query_prefix + "'");
  same("passage prefix", "'" + w.passage_prefix + "'", "'" + m.passage_prefix + "'");
  // The BM25 postings are the analyzer's terms ("" and "words" are the same analysis).
  auto analyzer = [](const std::string& a) { return a.empty() ? std::string("words") : a; };
  same("BM25 analyzer (--language)", analyzer(w.analyzer), analyzer(m.analyzer));
  if (!m.ingest_weights.empty()) {
    same("decoder weights (--weights)", w.ingest_weights, m.ingest_weights);
  }
}

const char kImportPrefix[] = "import/";

}  // namespace

ImportResult Store::import_shards(const std::vector<ShardContents>& shards) {
  Impl& im = *impl_;
  if (!im.reader_dir.empty()) {
    fail_precondition(im.path, ": cannot import: the store was opened for reading only");
  }
  std::lock_guard<std::mutex> lock(im.mu);
  if (im.staging) {
    fail_precondition(im.path, ": document '", im.staging->doc_id, "' is being written in parts");
  }
  ImportResult r;
  std::vector<const ShardContents*> todo;
  std::set<std::string> ids;
  for (const ShardContents& s : shards) {
    std::string v;
    if (im.get(kManifest, kImportPrefix + s.id, &v) || !ids.insert(s.id).second) {
      r.already.push_back(s.dir);
      continue;
    }
    check_shard_manifest(im.path, im.manifest, s);
    todo.push_back(&s);
  }
  // Documents: none may be stored already (its old rows would stay behind) or come twice.
  std::map<std::string, std::string> doc_shard;
  for (const ShardContents* s : todo) {
    for (const auto& d : s->document_ids) {
      auto [it, fresh] = doc_shard.emplace(d, s->dir);
      if (!fresh) {
        fail_precondition("shards ", it->second, " and ", s->dir, " both hold document '", d,
                          "': nothing was imported");
      }
      std::string v;
      if (im.get(kDocuments, d, &v)) {
        fail_precondition("shard ", s->dir, ": document '", d, "' is in the store at ", im.path,
                          " already; remove it first (cocom rm) or leave the shard out: nothing "
                          "was imported");
      }
    }
  }
  // Passage ids: each shard's range must be free in the store and among the shards.
  for (size_t i = 0; i < todo.size(); ++i) {
    const ShardContents& s = *todo[i];
    if (s.counts.passages == 0) continue;
    for (size_t j = 0; j < i; ++j) {
      const ShardContents& o = *todo[j];
      if (o.counts.passages > 0 && s.first_id <= o.last_id && o.first_id <= s.last_id) {
        fail_precondition("shards ", o.dir, " and ", s.dir, " use the same passage ids (",
                          s.first_id, "..", s.last_id,
                          "): they come from two runs that collided; make one "
                          "of them again: nothing was imported");
      }
    }
    std::unique_ptr<rocksdb::Iterator> it(
        im.db->NewIterator(rocksdb::ReadOptions(), im.cf(kPassages)));
    it->Seek(id_key(s.first_id));
    if (it->Valid() && it->key().size() == 8 && key_id(it->key().data()) <= s.last_id) {
      fail_precondition("shard ", s.dir, ": its passage ids ", s.first_id, "..", s.last_id,
                        " are used in the store at ", im.path, " (passage ",
                        key_id(it->key().data()),
                        "), by a shard of another run; make the shard again: nothing was imported");
    }
    if (!it->status().ok()) im.fail_status("scanning passages", it->status());
  }
  if (todo.empty()) return r;

  // The new counters and the markers, in a file of the manifest column family made here, so
  // that they are linked in the same MANIFEST edit as the data.
  Counters c = im.counters;
  std::map<std::string, std::string> rows;
  for (const ShardContents* s : todo) {
    c.documents += s->counts.documents;
    c.passages += s->counts.passages;
    c.embeddings += s->counts.embeddings;
    c.bm25_documents += s->counts.bm25_documents;
    c.total_terms += s->counts.total_terms;
    rows[kImportPrefix + s->id] = dump_json({{"dir", s->dir},
                                             {"shard", {{"index", s->index}, {"count", s->count}}},
                                             {"documents", s->counts.documents},
                                             {"passages", s->counts.passages}});
    r.imported.push_back(s->dir);
    r.documents += s->counts.documents;
    r.passages += s->counts.passages;
  }
  c.sequence += 1;
  rows[kStatsKey] = counters_json(c);
  const std::string tmp = (fs::path(im.path) / "cocom-import.tmp").string();
  std::error_code ec;
  fs::remove(tmp, ec);  // a leftover of an import that was killed
  {
    rocksdb::SstFileWriter w{rocksdb::EnvOptions(), rocksdb::Options()};
    rocksdb::Status st = w.Open(tmp);
    for (auto it = rows.begin(); st.ok() && it != rows.end(); ++it)
      st = w.Put(it->first, it->second);
    if (st.ok()) st = w.Finish();
    if (!st.ok()) im.fail_status("writing the import's counters", st);
  }
  std::vector<rocksdb::IngestExternalFileArg> args;
  for (int cf = 0; cf <= kManifest; ++cf) {
    rocksdb::IngestExternalFileArg a;
    a.column_family = im.cf(static_cast<Cf>(cf));
    a.options.move_files = false;          // copied: the shard stays as it was
    a.options.write_global_seqno = false;  // and is never written to
    a.options.verify_checksums_before_ingest = true;
    if (cf == kManifest) {
      a.external_files.push_back(tmp);
    } else {
      for (const ShardContents* s : todo) {
        for (const ShardFile& f : s->files) {
          if (f.cf == kCfNames[cf]) a.external_files.push_back(f.path);
        }
      }
    }
    if (!a.external_files.empty()) args.push_back(std::move(a));
  }
  rocksdb::Status st = im.db->IngestExternalFiles(args);
  fs::remove(tmp, ec);
  if (!st.ok()) im.fail_status("importing the shards", st);
  im.counters = c;
  return r;
}

}  // namespace cocom::storage
