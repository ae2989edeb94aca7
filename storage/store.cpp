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
// BM25: Okapi BM25 with the Lucene/Anserini idf, idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
// and score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl)), where N is the
// number of passages with at least one term and avgdl = total_terms / N. Each DISTINCT query
// term counts once (a repeated query term does not weigh more). Unlike Lucene, passage
// lengths are exact (Lucene stores them lossily in one byte). Ties are broken by smaller id.
#include "storage/store.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>
#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <unordered_map>

#include "common/error.h"
#include "common/float16.h"
#include "common/json_util.h"
#include "common/ranking.h"

namespace cocom::storage {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------
// dtype names

const char* embedding_dtype_name(EmbeddingDType t) {
  switch (t) {
    case EmbeddingDType::F16:
      return "fp16";
    case EmbeddingDType::BF16:
      return "bf16";
    case EmbeddingDType::F32:
      return "fp32";
    case EmbeddingDType::I8:
      return "int8";
  }
  return "?";
}

std::optional<EmbeddingDType> parse_embedding_dtype(const std::string& s) {
  if (s == "fp16" || s == "float16" || s == "f16" || s == "half") return EmbeddingDType::F16;
  if (s == "bf16" || s == "bfloat16") return EmbeddingDType::BF16;
  if (s == "fp32" || s == "float32" || s == "f32" || s == "float") return EmbeddingDType::F32;
  if (s == "int8" || s == "i8") return EmbeddingDType::I8;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------
// float <-> half / bfloat16: common/float16.h

namespace {

using f16::bf16_to_float;
using f16::bits_float;
using f16::float_bits;
using f16::float_to_bf16;
using f16::float_to_half;
using f16::half_to_float;

size_t dtype_size(EmbeddingDType t) {
  return t == EmbeddingDType::F32 ? 4 : t == EmbeddingDType::I8 ? 1 : 2;
}

// ---------------------------------------------------------------------------------------
// little/big-endian and varint helpers

void put_le(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}

uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

std::string id_key(uint64_t id) {
  std::string k(8, '\0');
  for (int i = 0; i < 8; ++i) k[i] = static_cast<char>((id >> (8 * (7 - i))) & 0xffu);
  return k;
}

uint64_t key_id(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string u32_value(uint64_t v) {
  std::string s;
  put_le(&s, std::min<uint64_t>(v, 0xffffffffu), 4);
  return s;
}

class Writer {
 public:
  void u8(uint8_t v) { s_.push_back(static_cast<char>(v)); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      s_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    s_.push_back(static_cast<char>(v));
  }
  void zz(int64_t v) { varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
  void str(const std::string& v) {
    varint(v.size());
    s_.append(v);
  }
  std::string take() { return std::move(s_); }

 private:
  std::string s_;
};

class Reader {
 public:
  Reader(const std::string& s, std::string what) : s_(s), what_(std::move(what)) {}
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(s_[pos_++]);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const uint8_t b = u8();
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail_corrupt(what_, ": record is damaged (bad varint)");
  }
  int64_t zz() {
    const uint64_t u = varint();
    return static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
  }
  std::string str() {
    const uint64_t n = varint();
    need(n);
    std::string v = s_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  void finish() {
    if (pos_ != s_.size()) fail_corrupt(what_, ": record is damaged (", s_.size() - pos_, " stray bytes)");
  }

 private:
  void need(uint64_t n) {
    if (n > s_.size() - pos_) fail_corrupt(what_, ": record is damaged (truncated)");
  }
  const std::string& s_;
  std::string what_;
  size_t pos_ = 0;
};

// What the store remembers about a passage besides the public record.
struct StoredPassage {
  PassageRecord rec;
  bool has_embeddings = false;
  bool has_retriever = false;
  uint64_t length = 0;
  std::vector<std::string> terms;  // distinct
};

std::string encode_document(const DocumentRecord& d) {
  Writer w;
  w.u8(1);
  w.str(d.id);
  w.str(d.source);
  w.str(d.title);
  w.str(d.content_hash);
  w.str(d.meta_json);
  w.varint(d.passage_ids.size());
  for (uint64_t id : d.passage_ids) w.varint(id);
  return w.take();
}

DocumentRecord decode_document(const std::string& s, const std::string& what) {
  Reader r(s, what);
  if (r.u8() != 1) fail(what, ": record has an unknown version");
  DocumentRecord d;
  d.id = r.str();
  d.source = r.str();
  d.title = r.str();
  d.content_hash = r.str();
  d.meta_json = r.str();
  const uint64_t n = r.varint();
  if (n > s.size()) fail_corrupt(what, ": record is damaged (passage count ", n, ")");
  d.passage_ids.reserve(n);
  for (uint64_t i = 0; i < n; ++i) d.passage_ids.push_back(r.varint());
  r.finish();
  return d;
}

std::string encode_passage(const StoredPassage& p) {
  Writer w;
  w.u8(1);
  w.str(p.rec.doc_id);
  w.zz(p.rec.index);
  w.str(p.rec.text);
  w.zz(p.rec.char_begin);
  w.zz(p.rec.char_end);
  w.u8((p.has_embeddings ? 1 : 0) | (p.has_retriever ? 2 : 0));
  w.varint(p.length);
  w.varint(p.terms.size());
  for (const auto& t : p.terms) w.str(t);
  return w.take();
}

StoredPassage decode_passage(uint64_t id, const std::string& s, const std::string& what) {
  Reader r(s, what);
  if (r.u8() != 1) fail(what, ": record has an unknown version");
  StoredPassage p;
  p.rec.id = id;
  p.rec.doc_id = r.str();
  p.rec.index = r.zz();
  p.rec.text = r.str();
  p.rec.char_begin = r.zz();
  p.rec.char_end = r.zz();
  const uint8_t flags = r.u8();
  p.has_embeddings = flags & 1;
  p.has_retriever = flags & 2;
  p.length = r.varint();
  const uint64_t n = r.varint();
  if (n > s.size()) fail_corrupt(what, ": record is damaged (term count ", n, ")");
  p.terms.reserve(n);
  for (uint64_t i = 0; i < n; ++i) p.terms.push_back(r.str());
  r.finish();
  return p;
}

// ---------------------------------------------------------------------------------------
// Manifest and counters as JSON

struct Counters {
  uint64_t next_passage_id = 0;
  int64_t documents = 0, passages = 0, embeddings = 0, bm25_documents = 0, total_terms = 0;
  uint64_t sequence = 0;
};

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

// Column family indices.
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
const char* const kCfNames[kNumCf] = {"documents", "passages",    "embeddings", "retriever",
                                      "postings",  "passage_len", "sources",    "manifest"};
const char kManifestKey[] = "manifest";
const char kStatsKey[] = "stats";

bool has_nul(const std::string& s) { return s.find('\0') != std::string::npos; }

}  // namespace

// ---------------------------------------------------------------------------------------
// Embedding blobs: "CCEM", u8 version (1), u8 dtype (0 fp16, 1 bf16, 2 fp32), u8 ndim,
// int64 little-endian shape[ndim], then the values little-endian.

namespace {
constexpr uint8_t kBlobVersion = 1;
constexpr size_t kBlobHeader = 7;
constexpr uint8_t kMaxNdim = 8;

uint8_t dtype_code(EmbeddingDType t) {
  switch (t) {
    case EmbeddingDType::F16:
      return 0;
    case EmbeddingDType::BF16:
      return 1;
    case EmbeddingDType::F32:
      return 2;
    case EmbeddingDType::I8:
      return 3;
  }
  return 255;
}

// Symmetric per-vector int8: scale = max|x| / 127, q = round(x / scale), so every value is
// within scale / 2 of the original; an all-zero vector gets scale 0.
void encode_int8_rows(const std::vector<float>& values, int64_t row, std::string* out) {
  if (row <= 0) return;  // no values
  const size_t n = static_cast<size_t>(row);
  for (size_t b = 0; b < values.size(); b += n) {
    float amax = 0.0f;
    for (size_t i = b; i < b + n; ++i) {
      if (!std::isfinite(values[i])) {
        fail("encode_embedding: int8 needs finite values, value ", i, " is ", values[i]);
      }
      amax = std::max(amax, std::abs(values[i]));
    }
    const float scale = amax / 127.0f;
    put_le(out, float_bits(scale), 4);
    for (size_t i = b; i < b + n; ++i) {
      long q = 0;
      if (scale > 0.0f) q = std::lround(values[i] / scale);
      q = std::min(127L, std::max(-127L, q));
      out->push_back(static_cast<char>(static_cast<int8_t>(q)));
    }
  }
}

std::vector<float> decode_int8_rows(const char* p, uint64_t rows, uint64_t row,
                                    const std::string& what) {
  std::vector<float> out(rows * row);
  float* o = out.data();
  for (uint64_t r = 0; r < rows; ++r) {
    const float scale = bits_float(static_cast<uint32_t>(get_le(p, 4)));
    if (!std::isfinite(scale) || scale < 0.0f) {
      fail(what, ": int8 embedding blob has an invalid scale ", scale, " for vector ", r);
    }
    p += 4;
    for (uint64_t i = 0; i < row; ++i) {
      const int8_t q = static_cast<int8_t>(*p++);
      if (q == -128) fail(what, ": int8 embedding blob has value -128 in vector ", r);
      *o++ = static_cast<float>(q) * scale;
    }
  }
  return out;
}
}  // namespace

uint64_t embedding_payload_bytes(int64_t vectors, int64_t dim, EmbeddingDType dtype) {
  if (vectors < 0 || dim < 0) fail("embedding_payload_bytes: negative size");
  const uint64_t v = static_cast<uint64_t>(vectors), d = static_cast<uint64_t>(dim);
  return v * d * dtype_size(dtype) + (dtype == EmbeddingDType::I8 ? 4 * v : 0);
}

StorageEstimate estimate_embedding_storage(uint64_t input_bytes, int64_t context_tokens,
                                           int64_t compr_rate, int64_t dim, EmbeddingDType dtype,
                                           uint64_t documents, double bytes_per_token) {
  if (context_tokens < 1 || compr_rate < 1 || dim < 1 || !(bytes_per_token > 0)) {
    fail("estimate_embedding_storage: context length, compression rate, dimension and bytes ",
         "per token must be positive");
  }
  StorageEstimate e;
  const double per_passage = bytes_per_token * static_cast<double>(context_tokens);
  e.passages = static_cast<int64_t>(std::max(
      std::ceil(static_cast<double>(input_bytes) / per_passage), static_cast<double>(documents)));
  e.vectors_per_passage = (context_tokens + compr_rate - 1) / compr_rate;
  e.bytes_per_passage = embedding_payload_bytes(e.vectors_per_passage, dim, dtype);
  e.total_bytes = static_cast<uint64_t>(e.passages) * e.bytes_per_passage;
  return e;
}

std::string human_bytes(uint64_t bytes) {
  static const char* const units[] = {"B", "KB", "MB", "GB", "TB", "PB", "EB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1000.0 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1000.0;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::string encode_embedding(const std::vector<float>& values, const std::vector<int64_t>& shape,
                             EmbeddingDType dtype) {
  if (shape.size() > kMaxNdim) fail("encode_embedding: ", shape.size(), " dimensions (max 8)");
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("encode_embedding: negative dimension ", d);
    count *= static_cast<uint64_t>(d);
  }
  if (count != values.size()) {
    fail("encode_embedding: shape holds ", count, " values, got ", values.size());
  }
  std::string out = "CCEM";
  out.reserve(kBlobHeader + 8 * shape.size() + values.size() * dtype_size(dtype));
  out.push_back(static_cast<char>(kBlobVersion));
  out.push_back(static_cast<char>(dtype_code(dtype)));
  out.push_back(static_cast<char>(shape.size()));
  for (int64_t d : shape) put_le(&out, static_cast<uint64_t>(d), 8);
  if (dtype == EmbeddingDType::I8) {
    encode_int8_rows(values, shape.empty() ? 1 : shape.back(), &out);
    return out;
  }
  for (float v : values) {
    switch (dtype) {
      case EmbeddingDType::F16:
        put_le(&out, float_to_half(v), 2);
        break;
      case EmbeddingDType::BF16:
        put_le(&out, float_to_bf16(v), 2);
        break;
      case EmbeddingDType::F32:
        put_le(&out, float_bits(v), 4);
        break;
      case EmbeddingDType::I8:  // handled above
        break;
    }
  }
  return out;
}

std::vector<float> decode_embedding(const std::string& blob, std::vector<int64_t>* shape,
                                    const std::string& what) {
  if (blob.size() < kBlobHeader) {
    fail_corrupt(what, ": embedding blob truncated (", blob.size(), " bytes, the header alone is 7)");
  }
  if (blob.compare(0, 4, "CCEM") != 0) fail_corrupt(what, ": not an embedding blob (bad magic)");
  const uint8_t version = static_cast<uint8_t>(blob[4]);
  if (version != kBlobVersion) {
    fail(what, ": embedding blob version ", int(version), " (this build reads 1)");
  }
  const uint8_t code = static_cast<uint8_t>(blob[5]);
  if (code > 3) fail(what, ": embedding blob has unknown dtype code ", int(code));
  const EmbeddingDType dtype = code == 0   ? EmbeddingDType::F16
                               : code == 1 ? EmbeddingDType::BF16
                               : code == 2 ? EmbeddingDType::F32
                                           : EmbeddingDType::I8;
  const uint8_t ndim = static_cast<uint8_t>(blob[6]);
  if (ndim > kMaxNdim) fail(what, ": embedding blob claims ", int(ndim), " dimensions (max 8)");
  const size_t header = kBlobHeader + 8 * size_t(ndim);
  if (blob.size() < header) {
    fail_corrupt(what, ": embedding blob truncated (", blob.size(), " bytes, its header needs ", header,
         ")");
  }
  std::vector<int64_t> dims(ndim);
  uint64_t count = 1;
  const uint64_t elem = dtype_size(dtype);
  const uint64_t max_count = (blob.size() - header) / elem + 1;
  for (size_t i = 0; i < ndim; ++i) {
    const int64_t d = static_cast<int64_t>(get_le(blob.data() + kBlobHeader + 8 * i, 8));
    if (d < 0) fail(what, ": embedding blob has negative dimension ", d);
    dims[i] = d;
    // Guard the product against overflow: any count beyond what the data could hold is wrong.
    if (d != 0 && count > max_count / static_cast<uint64_t>(d) + 1)
      count = max_count + 1;
    else
      count *= static_cast<uint64_t>(d);
  }
  // int8: each vector (row of the last dimension) carries a 4-byte scale besides its values.
  const uint64_t row = ndim == 0 ? 1 : static_cast<uint64_t>(dims.back());
  const uint64_t rows = row == 0 ? 0 : count / row;
  const uint64_t data_bytes =
      dtype == EmbeddingDType::I8 ? (count > max_count ? 0 : count + 4 * rows) : count * elem;
  if (count > max_count || data_bytes != blob.size() - header) {
    fail(what, ": embedding blob shape does not match its data (", blob.size() - header,
         " bytes of ", embedding_dtype_name(dtype), " data)");
  }
  if (dtype == EmbeddingDType::I8) {
    std::vector<float> out = decode_int8_rows(blob.data() + header, rows, row, what);
    if (shape) *shape = std::move(dims);
    return out;
  }
  std::vector<float> out(count);
  const char* p = blob.data() + header;
  for (uint64_t i = 0; i < count; ++i, p += elem) {
    switch (dtype) {
      case EmbeddingDType::F16:
        out[i] = half_to_float(static_cast<uint16_t>(get_le(p, 2)));
        break;
      case EmbeddingDType::BF16:
        out[i] = bf16_to_float(static_cast<uint16_t>(get_le(p, 2)));
        break;
      case EmbeddingDType::F32:
        out[i] = bits_float(static_cast<uint32_t>(get_le(p, 4)));
        break;
      case EmbeddingDType::I8:  // handled above
        break;
    }
  }
  if (shape) *shape = std::move(dims);
  return out;
}

// ---------------------------------------------------------------------------------------
// analyze: NFKC + case folding, then runs of letters/digits. Combining marks (M*) continue a
// run that a letter or digit started, so that words of scripts written with marks (Devanagari
// vowel signs, viramas) are not cut apart. Invalid UTF-8 bytes act as separators.

std::vector<std::string> analyze(const std::string& text) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  // Replace invalid UTF-8 with U+FFFD first: utf8proc_map rejects the whole string otherwise.
  std::string clean;
  clean.reserve(text.size());
  const auto* s = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t n = static_cast<utf8proc_ssize_t>(text.size());
  utf8proc_uint8_t buf[4];
  for (utf8proc_ssize_t i = 0; i < n;) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t len = utf8proc_iterate(s + i, n - i, &cp);
    if (len <= 0 || cp < 0) {
      cp = 0xFFFD;
      len = 1;
    }
    const utf8proc_ssize_t m = utf8proc_encode_char(cp, buf);
    clean.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(m));
    i += len;
  }
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

// ---------------------------------------------------------------------------------------
// Store

struct Store::Impl {
  std::string path;
  Manifest manifest;
  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // all opened, ours first (kNumCf)
  mutable std::mutex mu;                              // serialises writers; guards counters
  Counters counters;

  ~Impl() {
    if (!db) return;
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    db->Close();
    delete db;
  }

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

  // Adds to `batch` the deletion of everything `doc` owns; updates `c`.
  void delete_document(const DocumentRecord& doc, rocksdb::WriteBatch* batch, Counters* c) const {
    for (uint64_t id : doc.passage_ids) {
      const std::string key = id_key(id);
      std::string v;
      if (!get(kPassages, key, &v)) {
        fail(path, ": passage ", id, " of document '", doc.id,
             "' is missing (the store is damaged)");
      }
      StoredPassage p = decode_passage(id, v, passage_what(id));
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
    batch->Delete(cf(kSources), doc.source + std::string(1, '\0') + doc.id);
    batch->Delete(cf(kDocuments), doc.id);
    c->documents -= 1;
  }

  void write(rocksdb::WriteBatch* batch, const Counters& c, const std::string& doing) {
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
  fail_precondition(path, ": the store was built with ", field, " ", show(stored), ", not ", show(wanted),
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
    check_field(path, "embeddings per passage", m.embeddings_per_passage,
                w.embeddings_per_passage);
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

std::unique_ptr<Store::Impl> open_impl(const std::string& path, const Manifest* wanted) {
  if (path.empty()) fail("store path is empty");
  std::error_code ec;
  const fs::file_status fst = fs::status(path, ec);
  const bool exists = fs::exists(fst);
  if (exists && !fs::is_directory(fst)) {
    fail(path, ": is not a directory (a cocom store is a directory; use another --db)");
  }
  const bool has_db = exists && fs::exists(fs::path(path) / "CURRENT", ec);
  if (!has_db) {
    if (!wanted) fail_not_found(path, ": no cocom store here (no RocksDB database)");
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
  // Column families: ours, then "default", then any extra ones an existing database holds.
  std::vector<std::string> names(kCfNames, kCfNames + kNumCf);
  names.push_back(rocksdb::kDefaultColumnFamilyName);
  if (has_db) {
    std::vector<std::string> existing;
    rocksdb::Status st = rocksdb::DB::ListColumnFamilies(opt, path, &existing);
    if (!st.ok()) fail_open(path, st);
    for (int i = 0; i < kNumCf; ++i) {
      if (std::find(existing.begin(), existing.end(), kCfNames[i]) == existing.end()) {
        fail_corrupt(path, ": not a cocom store (RocksDB database without the column family '", kCfNames[i],
             "'; it has ", cf_list(existing), ")");
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
  rocksdb::Status st =
      rocksdb::DB::Open(rocksdb::DBOptions(opt), path, descs, &impl->handles, &impl->db);
  if (!st.ok()) {
    impl->db = nullptr;
    impl->handles.clear();
    fail_open(path, st);
  }

  std::string mtext;
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
  return std::unique_ptr<Store>(new Store(open_impl(path, &manifest)));
}

std::unique_ptr<Store> Store::open_existing(const std::string& path) {
  return std::unique_ptr<Store>(new Store(open_impl(path, nullptr)));
}

void Store::check(const Manifest& wanted) const {
  check_manifest(impl_->path, impl_->manifest, wanted);
}

void Store::set_settings(const Manifest& st) {
  Manifest m = manifest();
  m.context_max_length = st.context_max_length;
  m.chunk_overlap_tokens = st.chunk_overlap_tokens;
  m.has_prefixes = st.has_prefixes;
  m.query_prefix = st.query_prefix;
  m.passage_prefix = st.passage_prefix;
  m.ingest_weights = st.ingest_weights;
  m.model_dir = st.model_dir;
  m.retriever_dir = st.retriever_dir;
  std::lock_guard<std::mutex> lock(impl_->mu);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s =
      impl_->db->Put(wo, impl_->cf(kManifest), kManifestKey, dump_json(manifest_json(m)));
  if (!s.ok()) impl_->fail_status("writing the manifest", s);
  // Field by field: readers use the other fields without the lock (they never change).
  Manifest& cur = impl_->manifest;
  cur.context_max_length = m.context_max_length;
  cur.chunk_overlap_tokens = m.chunk_overlap_tokens;
  cur.has_prefixes = m.has_prefixes;
  cur.query_prefix = m.query_prefix;
  cur.passage_prefix = m.passage_prefix;
  cur.ingest_weights = m.ingest_weights;
  cur.model_dir = m.model_dir;
  cur.retriever_dir = m.retriever_dir;
}

Manifest Store::manifest() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->manifest;
}
const std::string& Store::path() const { return impl_->path; }

std::vector<uint64_t> Store::put_document(DocumentRecord doc, std::vector<NewPassage> passages) {
  Impl& im = *impl_;
  const Manifest& m = im.manifest;
  if (doc.id.empty()) fail(im.path, ": a document needs a non-empty id");
  if (has_nul(doc.id)) fail(im.path, ": document id contains a NUL byte");
  if (has_nul(doc.source)) fail(im.path, ": document '", doc.id, "': source contains a NUL byte");
  const int64_t per = m.embeddings_per_passage * m.embedding_dim;
  for (size_t i = 0; i < passages.size(); ++i) {
    const NewPassage& p = passages[i];
    if (!p.embeddings.empty() && per > 0 && static_cast<int64_t>(p.embeddings.size()) != per) {
      fail(im.path, ": document '", doc.id, "' passage ", i, " has ", p.embeddings.size(),
           " embedding values; the store holds ", m.embeddings_per_passage, " x ", m.embedding_dim,
           " = ", per);
    }
    if (!p.retriever_vector.empty() && m.retriever_dim > 0 &&
        static_cast<int64_t>(p.retriever_vector.size()) != m.retriever_dim) {
      fail(im.path, ": document '", doc.id, "' passage ", i, " has a retriever vector of ",
           p.retriever_vector.size(), " values; the store's retriever dim is ", m.retriever_dim);
    }
    for (const auto& t : p.terms) {
      if (t.empty() || has_nul(t)) {
        fail(im.path, ": document '", doc.id, "' passage ", i,
             " has an empty term or one with a NUL byte");
      }
    }
  }

  std::lock_guard<std::mutex> lock(im.mu);
  Counters c = im.counters;
  rocksdb::WriteBatch batch;
  if (auto old = im.read_document(doc.id)) im.delete_document(*old, &batch, &c);

  std::vector<uint64_t> ids;
  ids.reserve(passages.size());
  for (NewPassage& np : passages) {
    const uint64_t id = c.next_passage_id++;
    ids.push_back(id);
    const std::string key = id_key(id);
    StoredPassage sp;
    sp.rec = std::move(np.record);
    sp.rec.id = id;
    sp.rec.doc_id = doc.id;
    std::map<std::string, uint64_t> tf;
    for (const auto& t : np.terms) ++tf[t];
    sp.length = np.terms.size();
    for (const auto& [t, n] : tf) {
      sp.terms.push_back(t);
      batch.Put(im.cf(kPostings), t + std::string(1, '\0') + key, u32_value(n));
    }
    if (sp.length > 0) {
      batch.Put(im.cf(kPassageLen), key, u32_value(sp.length));
      c.bm25_documents += 1;
      c.total_terms += static_cast<int64_t>(sp.length);
    }
    if (!np.embeddings.empty()) {
      std::vector<int64_t> shape;
      if (per > 0) {
        shape = {m.embeddings_per_passage, m.embedding_dim};
      } else {
        shape = {static_cast<int64_t>(np.embeddings.size())};
      }
      batch.Put(im.cf(kEmbeddings), key, encode_embedding(np.embeddings, shape, m.embedding_dtype));
      sp.has_embeddings = true;
      c.embeddings += 1;
    }
    if (!np.retriever_vector.empty()) {
      batch.Put(
          im.cf(kRetriever), key,
          encode_embedding(np.retriever_vector, {static_cast<int64_t>(np.retriever_vector.size())},
                           EmbeddingDType::F32));
      sp.has_retriever = true;
    }
    batch.Put(im.cf(kPassages), key, encode_passage(sp));
    c.passages += 1;
  }
  doc.passage_ids = ids;
  batch.Put(im.cf(kDocuments), doc.id, encode_document(doc));
  batch.Put(im.cf(kSources), doc.source + std::string(1, '\0') + doc.id, "");
  c.documents += 1;
  c.sequence += 1;
  im.write(&batch, c, "writing document '" + doc.id + "'");
  return ids;
}

std::optional<std::vector<uint64_t>> Store::remove_document(const std::string& doc_id) {
  Impl& im = *impl_;
  std::lock_guard<std::mutex> lock(im.mu);
  auto old = im.read_document(doc_id);
  if (!old) return std::nullopt;
  Counters c = im.counters;
  rocksdb::WriteBatch batch;
  im.delete_document(*old, &batch, &c);
  c.sequence += 1;
  im.write(&batch, c, "removing document '" + doc_id + "'");
  return old->passage_ids;
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
    if (it->key().size() != 8) fail_corrupt(im.path, ": damaged key in the retriever column family");
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

std::vector<std::pair<uint64_t, double>> Store::bm25_search(const std::vector<std::string>& terms,
                                                            size_t k, double k1, double b) const {
  const Impl& im = *impl_;
  std::vector<std::pair<uint64_t, double>> out;
  if (k == 0 || terms.empty()) return out;
  Counters c;
  const rocksdb::Snapshot* snap = nullptr;
  {
    // The counters and the snapshot are taken together so that they describe the same data.
    std::lock_guard<std::mutex> lock(im.mu);
    c = im.counters;
    snap = im.db->GetSnapshot();
  }
  struct SnapshotRelease {
    rocksdb::DB* db;
    const rocksdb::Snapshot* s;
    ~SnapshotRelease() { db->ReleaseSnapshot(s); }
  } release{im.db, snap};
  if (c.bm25_documents <= 0) return out;
  const double n_docs = static_cast<double>(c.bm25_documents);
  const double avgdl = static_cast<double>(c.total_terms) / n_docs;

  std::set<std::string> distinct;
  for (const auto& t : terms) {
    if (!t.empty() && !has_nul(t)) distinct.insert(t);
  }
  std::unordered_map<uint64_t, double> scores;
  std::unordered_map<uint64_t, double> lengths;
  std::vector<std::pair<uint64_t, uint64_t>> hits;  // id, tf
  for (const auto& term : distinct) {
    const std::string prefix = term + std::string(1, '\0');
    const std::string upper = term + std::string(1, '\1');
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.snapshot = snap;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(im.db->NewIterator(ro, im.cf(kPostings)));
    hits.clear();
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      const rocksdb::Slice key = it->key();
      if (!key.starts_with(prefix)) break;
      if (key.size() != prefix.size() + 8 || it->value().size() != 4) {
        fail_corrupt(im.path, ": damaged posting for term '", term, "'");
      }
      hits.emplace_back(key_id(key.data() + prefix.size()), get_le(it->value().data(), 4));
    }
    if (!it->status().ok()) im.fail_status("scanning postings", it->status());
    if (hits.empty()) continue;
    const double df = static_cast<double>(hits.size());
    const double idf = std::log(1.0 + (n_docs - df + 0.5) / (df + 0.5));
    for (const auto& [id, tf_u] : hits) {
      auto lit = lengths.find(id);
      if (lit == lengths.end()) {
        std::string v;
        double len = 0;
        if (im.get(kPassageLen, id_key(id), &v, snap) && v.size() == 4) {
          len = static_cast<double>(get_le(v.data(), 4));
        }
        lit = lengths.emplace(id, len).first;
      }
      const double tf = static_cast<double>(tf_u);
      scores[id] += idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * lit->second / avgdl));
    }
  }
  out.assign(scores.begin(), scores.end());
  keep_top_k(&out, k);
  return out;
}

StoreStats Store::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const Counters& c = impl_->counters;
  StoreStats s;
  s.documents = c.documents;
  s.passages = c.passages;
  s.embeddings = c.embeddings;
  s.bm25_documents = c.bm25_documents;
  s.total_terms = c.total_terms;
  s.next_passage_id = c.next_passage_id;
  return s;
}

uint64_t Store::sequence() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->counters.sequence;
}

}  // namespace cocom::storage
