// DenseIndex: a FAISS index (inner product) behind an IndexIDMap2, with a buffer of vectors
// kept aside (and searched exactly) until an index that needs training has enough of them.
//
// File layout written by save() (native little-endian, all integers fixed width):
//   "COCOMDIX"            8 bytes magic
//   u32 version           (1)
//   i64 dim
//   u32 factory length, factory bytes
//   u64 store sequence
//   u64 buffered count n, n x u64 ids, n x dim x f32 vectors
//   u64 faiss length m, m bytes of faiss::write_index output (an IndexIDMap2)
//   u64 FNV-1a 64 checksum of every byte before it
#include "index/dense_index.h"

#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/VectorTransform.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <unordered_set>

#include "common/error.h"
#include "common/hash.h"
#include "common/ranking.h"

namespace cocom::index {

namespace {

using fidx = faiss::Index::idx_t;  // faiss::idx_t in later FAISS versions

constexpr char kMagic[8] = {'C', 'O', 'C', 'O', 'M', 'D', 'I', 'X'};
constexpr uint32_t kVersion = 1;
// FAISS's k-means warns below this many training points per centroid
// (ClusteringParameters::min_points_per_centroid).
constexpr int64_t kPointsPerCentroid = 39;
// Untrained components we do not recognise (e.g. scalar quantizers) train on at least this.
constexpr int64_t kDefaultTrainingVectors = 1000;

// The training rule, from the structure of the index: IVF -> 39 * nlist (coarse k-means),
// PQ -> 39 * ksub (per-subquantizer k-means), OPQ -> 39 * 256, PCA / other linear transforms ->
// their input dimension, HNSW -> its storage's rule; the maximum over the components.
int64_t training_rule(const faiss::Index* idx) {
  if (idx == nullptr || idx->is_trained) return 0;
  int64_t need = 0;
  bool known = false;
  if (auto* pt = dynamic_cast<const faiss::IndexPreTransform*>(idx)) {
    known = true;
    for (const auto* vt : pt->chain) {
      if (vt->is_trained) continue;
      if (auto* opq = dynamic_cast<const faiss::OPQMatrix*>(vt)) {
        (void)opq;
        need = std::max<int64_t>(need, kPointsPerCentroid * 256);
      } else {
        need = std::max<int64_t>(need, std::max<int64_t>(vt->d_in, 1));
      }
    }
    need = std::max(need, training_rule(pt->index));
  }
  if (auto* ivf = dynamic_cast<const faiss::IndexIVF*>(idx)) {
    known = true;
    need = std::max<int64_t>(need, kPointsPerCentroid * static_cast<int64_t>(ivf->nlist));
    if (auto* ivfpq = dynamic_cast<const faiss::IndexIVFPQ*>(idx)) {
      need = std::max<int64_t>(need, kPointsPerCentroid * static_cast<int64_t>(ivfpq->pq.ksub));
    }
  }
  if (auto* pq = dynamic_cast<const faiss::IndexPQ*>(idx)) {
    known = true;
    need = std::max<int64_t>(need, kPointsPerCentroid * static_cast<int64_t>(pq->pq.ksub));
  }
  if (auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(idx)) {
    known = true;
    need = std::max(need, training_rule(hnsw->storage));
  }
  if (!known) need = kDefaultTrainingVectors;
  return std::max<int64_t>(need, 1);
}

// Search-time defaults that FAISS sets too low for retrieval (they are saved with the index).
void tune(faiss::Index* idx) {
  if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(idx)) tune(pt->index);
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(idx)) {
    hnsw->hnsw.efSearch = std::max(hnsw->hnsw.efSearch, 128);
  }
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(idx)) {
    ivf->nprobe = std::max<size_t>(ivf->nprobe, std::min<size_t>(ivf->nlist, 16));
  }
}

fidx to_faiss_id(uint64_t id) {
  if (id > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail("dense index: id ", std::to_string(id), " is too large (ids must be below 2^63)");
  }
  return static_cast<fidx>(id);
}

std::unique_ptr<faiss::IndexIDMap2> make_index(const std::string& factory, int64_t dim) {
  if (dim <= 0) fail("dense index: dimension must be positive (got ", std::to_string(dim), ")");
  if (dim > std::numeric_limits<int>::max()) fail("dense index: dimension too large");
  std::unique_ptr<faiss::Index> inner;
  try {
    inner.reset(
        faiss::index_factory(static_cast<int>(dim), factory.c_str(), faiss::METRIC_INNER_PRODUCT));
  } catch (const faiss::FaissException& e) {
    fail("dense index: FAISS rejected the factory string '", factory, "': ", e.what());
  } catch (const std::exception& e) {
    fail("dense index: FAISS rejected the factory string '", factory, "': ", e.what());
  }
  if (!inner) fail("dense index: FAISS rejected the factory string '", factory, "'");
  if (dynamic_cast<faiss::IndexIDMap*>(inner.get()) != nullptr) {
    fail("dense index: factory string '", factory, "' must not contain IDMap (added already)");
  }
  tune(inner.get());
  auto map = std::make_unique<faiss::IndexIDMap2>(inner.get());
  map->own_fields = true;
  inner.release();
  return map;
}

// Little readers/writers for our header.
void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}
template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  put_bytes(out, &v, sizeof(T));
}

struct Reader {
  const std::vector<uint8_t>& data;
  size_t pos;
  const std::string& path;
  void get_bytes(void* p, size_t n, const char* what) {
    if (n > data.size() - pos) {
      fail_corrupt("dense index file ", path, ": truncated (while reading ", what, " at byte ",
           std::to_string(pos), " of ", std::to_string(data.size()), ")");
    }
    if (n == 0) return;  // p may be the null data() of an empty vector
    std::memcpy(p, data.data() + pos, n);
    pos += n;
  }
  template <typename T>
  T get(const char* what) {
    T v;
    get_bytes(&v, sizeof(T), what);
    return v;
  }
  size_t remaining() const { return data.size() - pos; }
};

}  // namespace

struct DenseIndex::Impl {
  std::string factory;
  int64_t dim = 0;
  std::unique_ptr<faiss::IndexIDMap2> index;
  // Vectors waiting for training (only while !index->is_trained).
  std::vector<uint64_t> buf_ids;
  std::vector<float> buf_vecs;
  uint64_t saved_sequence = 0;

  void train_if_ready() {
    if (index->is_trained) return;
    int64_t need = training_rule(index->index);
    if (static_cast<int64_t>(buf_ids.size()) < need) return;
    const auto n = static_cast<fidx>(buf_ids.size());
    std::vector<fidx> fids(buf_ids.begin(), buf_ids.end());
    try {
      index->train(n, buf_vecs.data());
      index->add_with_ids(n, buf_vecs.data(), fids.data());
    } catch (const faiss::FaissException& e) {
      fail("dense index '", factory, "': training on ", std::to_string(n),
           " vectors failed: ", e.what());
    }
    buf_ids.clear();
    buf_ids.shrink_to_fit();
    buf_vecs.clear();
    buf_vecs.shrink_to_fit();
  }

  // Removal for index types where FAISS's IndexIDMap::remove_ids is wrong or missing: IVF
  // (its entries keep their old internal ids while the id map is compacted) and HNSW (not
  // implemented). Reconstructs the kept vectors, resets the (still trained) index and adds
  // them back. Lossy for compressed codes only as far as a decode/encode round trip is.
  void rebuild_without(const std::unordered_set<fidx>& gone) {
    std::vector<fidx> keep_ids;
    std::vector<float> keep_vecs;
    std::vector<float> row(static_cast<size_t>(dim));
    auto keep = [&](fidx internal) {
      fidx id = index->id_map.at(static_cast<size_t>(internal));
      if (gone.count(id)) return false;
      keep_ids.push_back(id);
      return true;
    };
    try {
      if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index->index)) {
        for (size_t l = 0; l < ivf->nlist; ++l) {
          size_t n = ivf->invlists->list_size(l);
          if (n == 0) continue;
          faiss::InvertedLists::ScopedIds lids(ivf->invlists, l);
          for (size_t o = 0; o < n; ++o) {
            if (!keep(lids.get()[o])) continue;
            ivf->reconstruct_from_offset(static_cast<int64_t>(l), static_cast<int64_t>(o),
                                         row.data());
            keep_vecs.insert(keep_vecs.end(), row.begin(), row.end());
          }
        }
      } else {
        for (fidx i = 0; i < index->ntotal; ++i) {
          if (!keep(i)) continue;
          index->index->reconstruct(i, row.data());
          keep_vecs.insert(keep_vecs.end(), row.begin(), row.end());
        }
      }
    } catch (const faiss::FaissException& e) {
      fail("dense index '", factory, "': cannot remove ids (this index type supports neither ",
           "removal nor reconstruction): ", e.what());
    }
    try {
      index->reset();
      const auto n = static_cast<fidx>(keep_ids.size());
      if (n > 0) index->add_with_ids(n, keep_vecs.data(), keep_ids.data());
      index->construct_rev_map();  // reset() leaves IndexIDMap2's reverse map stale
    } catch (const faiss::FaissException& e) {
      fail("dense index '", factory, "': rebuilding after removal failed: ", e.what());
    }
  }
};

DenseIndex::DenseIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DenseIndex::~DenseIndex() = default;

std::unique_ptr<DenseIndex> DenseIndex::create(const std::string& factory, int64_t dim) {
  auto impl = std::make_unique<Impl>();
  impl->factory = factory;
  impl->dim = dim;
  impl->index = make_index(factory, dim);
  return std::unique_ptr<DenseIndex>(new DenseIndex(std::move(impl)));
}

void DenseIndex::add(const std::vector<uint64_t>& ids, const std::vector<float>& vectors) {
  Impl& m = *impl_;
  if (vectors.size() != ids.size() * static_cast<size_t>(m.dim)) {
    fail("dense index add: ", std::to_string(ids.size()), " ids need ",
         std::to_string(ids.size() * static_cast<size_t>(m.dim)), " floats (dim ",
         std::to_string(m.dim), "), got ", std::to_string(vectors.size()));
  }
  if (ids.empty()) return;
  std::unordered_set<uint64_t> seen;
  std::vector<fidx> fids;
  fids.reserve(ids.size());
  for (uint64_t id : ids) {
    fids.push_back(to_faiss_id(id));
    if (!seen.insert(id).second) {
      fail("dense index add: id ", std::to_string(id), " appears twice in one batch");
    }
  }
  std::unordered_set<uint64_t> buffered(m.buf_ids.begin(), m.buf_ids.end());
  for (uint64_t id : ids) {
    if (buffered.count(id) || m.index->rev_map.count(static_cast<fidx>(id))) {
      fail("dense index add: id ", std::to_string(id),
           " is already in the index (remove it first)");
    }
  }
  for (float v : vectors) {
    if (!std::isfinite(v)) fail("dense index add: vectors contain a NaN or infinite value");
  }
  if (m.index->is_trained) {
    try {
      m.index->add_with_ids(static_cast<fidx>(ids.size()), vectors.data(), fids.data());
    } catch (const faiss::FaissException& e) {
      fail("dense index '", m.factory, "': add failed: ", e.what());
    }
    return;
  }
  m.buf_ids.insert(m.buf_ids.end(), ids.begin(), ids.end());
  m.buf_vecs.insert(m.buf_vecs.end(), vectors.begin(), vectors.end());
  m.train_if_ready();
}

void DenseIndex::remove(const std::vector<uint64_t>& ids) {
  Impl& m = *impl_;
  if (ids.empty()) return;
  std::unordered_set<uint64_t> gone(ids.begin(), ids.end());
  // The untrained buffer.
  if (!m.buf_ids.empty()) {
    size_t w = 0;
    const size_t d = static_cast<size_t>(m.dim);
    for (size_t r = 0; r < m.buf_ids.size(); ++r) {
      if (gone.count(m.buf_ids[r])) continue;
      if (w != r) {
        m.buf_ids[w] = m.buf_ids[r];
        std::copy_n(m.buf_vecs.begin() + static_cast<std::ptrdiff_t>(r * d), d,
                    m.buf_vecs.begin() + static_cast<std::ptrdiff_t>(w * d));
      }
      ++w;
    }
    m.buf_ids.resize(w);
    m.buf_vecs.resize(w * d);
  }
  // The FAISS index: only ids it holds (others, and ids >= 2^63, are ignored).
  std::vector<fidx> present;
  for (uint64_t id : gone) {
    if (id > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) continue;
    auto fid = static_cast<fidx>(id);
    if (m.index->rev_map.count(fid)) present.push_back(fid);
  }
  if (present.empty()) return;
  // IndexIDMap::remove_ids is only right when the sub-index compacts its storage in order
  // (the flat-codes family: Flat, PQ, SQ, LSH); other types are rebuilt.
  const faiss::Index* sub = m.index->index;
  if (auto* pt = dynamic_cast<const faiss::IndexPreTransform*>(sub)) sub = pt->index;
  if (dynamic_cast<const faiss::IndexFlatCodes*>(sub) != nullptr) {
    faiss::IDSelectorBatch sel(present.size(), present.data());
    try {
      m.index->remove_ids(sel);
    } catch (const faiss::FaissException& e) {
      fail("dense index '", m.factory, "': remove failed: ", e.what());
    }
  } else {
    m.rebuild_without(std::unordered_set<fidx>(present.begin(), present.end()));
  }
}

std::vector<std::pair<uint64_t, float>> DenseIndex::search(const std::vector<float>& query,
                                                           size_t k) const {
  const Impl& m = *impl_;
  if (query.size() != static_cast<size_t>(m.dim)) {
    fail("dense index search: query has ", std::to_string(query.size()), " values, the index ",
         std::to_string(m.dim), " dimensions");
  }
  std::vector<std::pair<uint64_t, float>> out;
  if (k == 0) return out;
  // Exact search over the untrained buffer.
  const size_t d = static_cast<size_t>(m.dim);
  for (size_t r = 0; r < m.buf_ids.size(); ++r) {
    const float* v = m.buf_vecs.data() + r * d;
    float s = 0.f;
    for (size_t j = 0; j < d; ++j) s += v[j] * query[j];
    out.emplace_back(m.buf_ids[r], s);
  }
  if (m.index->ntotal > 0) {
    const auto kk = static_cast<fidx>(std::min<size_t>(k, static_cast<size_t>(m.index->ntotal)));
    std::vector<float> scores(static_cast<size_t>(kk));
    std::vector<fidx> labels(static_cast<size_t>(kk), -1);
    try {
      m.index->search(1, query.data(), kk, scores.data(), labels.data());
    } catch (const faiss::FaissException& e) {
      fail("dense index '", m.factory, "': search failed: ", e.what());
    }
    for (size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] < 0) continue;
      out.emplace_back(static_cast<uint64_t>(labels[i]), scores[i]);
    }
  }
  keep_top_k(&out, k);
  return out;
}

int64_t DenseIndex::size() const {
  return static_cast<int64_t>(impl_->index->ntotal) + static_cast<int64_t>(impl_->buf_ids.size());
}
int64_t DenseIndex::dim() const { return impl_->dim; }
const std::string& DenseIndex::factory() const { return impl_->factory; }
uint64_t DenseIndex::saved_sequence() const { return impl_->saved_sequence; }
int64_t DenseIndex::min_training_vectors() const { return training_rule(impl_->index->index); }

void DenseIndex::save(const std::string& path, uint64_t store_sequence) const {
  const Impl& m = *impl_;
  faiss::VectorIOWriter w;
  try {
    faiss::write_index(m.index.get(), &w);
  } catch (const faiss::FaissException& e) {
    fail("dense index file ", path, ": FAISS could not serialise the index: ", e.what());
  }
  std::vector<uint8_t> out;
  out.reserve(w.data.size() + m.buf_vecs.size() * 4 + m.buf_ids.size() * 8 + 128);
  put_bytes(out, kMagic, sizeof(kMagic));
  put<uint32_t>(out, kVersion);
  put<int64_t>(out, m.dim);
  put<uint32_t>(out, static_cast<uint32_t>(m.factory.size()));
  put_bytes(out, m.factory.data(), m.factory.size());
  put<uint64_t>(out, store_sequence);
  put<uint64_t>(out, m.buf_ids.size());
  put_bytes(out, m.buf_ids.data(), m.buf_ids.size() * sizeof(uint64_t));
  put_bytes(out, m.buf_vecs.data(), m.buf_vecs.size() * sizeof(float));
  put<uint64_t>(out, w.data.size());
  put_bytes(out, w.data.data(), w.data.size());
  put<uint64_t>(out, fnv1a64(out.data(), out.size()));

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail_io("dense index file ", tmp, ": cannot open for writing: ", std::strerror(errno));
  bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  ok = (std::fflush(f) == 0) && ok;
  ok = (::fsync(fileno(f)) == 0) && ok;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    int err = errno;
    std::remove(tmp.c_str());
    fail("dense index file ", tmp, ": write failed: ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    fail("dense index file ", path, ": cannot rename ", tmp, " into place: ", std::strerror(err));
  }
}

std::unique_ptr<DenseIndex> DenseIndex::load(const std::string& path, int64_t dim) {
  std::vector<uint8_t> data;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail_io("dense index file ", path, ": cannot open: ", std::strerror(errno));
    data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) fail("dense index file ", path, ": read error");
  }
  Reader r{data, 0, path};
  char magic[8];
  r.get_bytes(magic, sizeof(magic), "the magic");
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    fail_corrupt("dense index file ", path, ": bad magic (not a cocom dense index file)");
  }
  auto version = r.get<uint32_t>("the version");
  if (version != kVersion) {
    fail("dense index file ", path, ": unsupported version ", std::to_string(version),
         " (this build reads version ", std::to_string(kVersion), ")");
  }
  auto file_dim = r.get<int64_t>("the dimension");
  if (file_dim != dim) {
    fail("dense index file ", path, ": dimension mismatch: the file has ", std::to_string(file_dim),
         ", expected ", std::to_string(dim), " (the retriever model changed? rebuild the index)");
  }
  if (data.size() < 8 || fnv1a64(data.data(), data.size() - 8) != [&] {
        uint64_t c;
        std::memcpy(&c, data.data() + data.size() - 8, 8);
        return c;
      }()) {
    // Distinguish a short file from flipped bytes for the message.
    fail_corrupt("dense index file ", path, ": checksum mismatch (truncated or corrupt file, ",
         std::to_string(data.size()), " bytes)");
  }
  auto flen = r.get<uint32_t>("the factory length");
  if (flen > r.remaining()) fail_corrupt("dense index file ", path, ": truncated (factory string)");
  std::string factory(flen, '\0');
  r.get_bytes(factory.data(), flen, "the factory string");
  auto seq = r.get<uint64_t>("the store sequence");
  auto nbuf = r.get<uint64_t>("the buffered count");
  const uint64_t row_bytes = 8 + static_cast<uint64_t>(dim) * 4;
  if (dim <= 0 || nbuf > r.remaining() / row_bytes) {
    fail_corrupt("dense index file ", path, ": truncated (", std::to_string(nbuf), " buffered vectors)");
  }
  auto impl = std::make_unique<Impl>();
  impl->factory = factory;
  impl->dim = dim;
  impl->saved_sequence = seq;
  impl->buf_ids.resize(nbuf);
  impl->buf_vecs.resize(nbuf * static_cast<uint64_t>(dim));
  r.get_bytes(impl->buf_ids.data(), nbuf * 8, "buffered ids");
  r.get_bytes(impl->buf_vecs.data(), impl->buf_vecs.size() * 4, "buffered vectors");
  auto flen2 = r.get<uint64_t>("the FAISS index length");
  if (flen2 > r.remaining() || r.remaining() - flen2 != 8) {
    fail_corrupt("dense index file ", path, ": truncated or malformed (FAISS index of ",
         std::to_string(flen2), " bytes, ", std::to_string(r.remaining()), " left)");
  }
  faiss::VectorIOReader vr;
  vr.data.assign(data.begin() + static_cast<std::ptrdiff_t>(r.pos),
                 data.begin() + static_cast<std::ptrdiff_t>(r.pos + flen2));
  std::unique_ptr<faiss::Index> idx;
  try {
    idx.reset(faiss::read_index(&vr));
  } catch (const faiss::FaissException& e) {
    fail("dense index file ", path, ": FAISS cannot read the index: ", e.what());
  }
  auto* map = dynamic_cast<faiss::IndexIDMap2*>(idx.get());
  if (map == nullptr) fail("dense index file ", path, ": the FAISS index is not an IDMap2");
  if (map->d != dim) {
    fail("dense index file ", path, ": dimension mismatch: the FAISS index has ",
         std::to_string(map->d), ", expected ", std::to_string(dim));
  }
  if (map->is_trained && nbuf != 0) {
    fail("dense index file ", path, ": malformed (buffered vectors beside a trained index)");
  }
  idx.release();
  impl->index.reset(map);
  std::unordered_set<uint64_t> seen;
  for (auto id : impl->buf_ids) {
    if (!seen.insert(id).second || impl->index->rev_map.count(static_cast<fidx>(id))) {
      fail("dense index file ", path, ": malformed (id ", std::to_string(id), " stored twice)");
    }
  }
  return std::unique_ptr<DenseIndex>(new DenseIndex(std::move(impl)));
}

std::vector<std::pair<uint64_t, double>> reciprocal_rank_fusion(
    const std::vector<std::vector<uint64_t>>& rankings, size_t k, double k0) {
  if (!(k0 >= 0.0)) fail("reciprocal_rank_fusion: k0 must be >= 0 (got ", std::to_string(k0), ")");
  // Ranks per document (first occurrence in each list), summed in a canonical order so that
  // documents with the same multiset of ranks get bit-identical scores (and tie on id).
  std::map<uint64_t, std::vector<size_t>> ranks;
  for (const auto& list : rankings) {
    std::unordered_set<uint64_t> seen;
    for (size_t i = 0; i < list.size(); ++i) {
      if (!seen.insert(list[i]).second) continue;
      ranks[list[i]].push_back(i + 1);
    }
  }
  std::vector<std::pair<uint64_t, double>> out;
  out.reserve(ranks.size());
  for (auto& [id, rs] : ranks) {
    std::sort(rs.begin(), rs.end());
    double s = 0.0;
    for (size_t rank : rs) s += 1.0 / (k0 + static_cast<double>(rank));
    out.emplace_back(id, s);
  }
  keep_top_k(&out, k);
  return out;
}

}  // namespace cocom::index
