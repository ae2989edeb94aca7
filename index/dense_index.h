// The FAISS dense index of passage retriever vectors, chosen by factory string ("Flat",
// "HNSW32", "IVF256,PQ16", ...), inner-product metric, ids = passage ids. Persisted beside the
// RocksDB store as a file; it can always be rebuilt from the store (the source of truth).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cocom::index {

class DenseIndex {
 public:
  // A new empty index of `dim` dimensions. Throws cocom::Error naming the factory string
  // when FAISS rejects it.
  static std::unique_ptr<DenseIndex> create(const std::string& factory, int64_t dim);
  // Loads a file written by save(); throws naming the file when it is unreadable or its
  // dimension differs from `dim`.
  static std::unique_ptr<DenseIndex> load(const std::string& path, int64_t dim);
  ~DenseIndex();

  // Adds vectors [n * dim] with their ids. Indexes that need training (IVF, PQ) are trained
  // on the first add of at least `min_training_vectors()` vectors; before that, vectors are
  // kept aside and searched exactly. Throws for a wrong size, NaN/inf values, ids >= 2^63, an
  // id repeated in the batch or already present (remove it first: no silent overwrite).
  void add(const std::vector<uint64_t>& ids, const std::vector<float>& vectors);
  // Ids not present are ignored. Flat-code indexes (Flat, PQ, SQ) remove in place through
  // IDSelectorBatch; IVF and HNSW (whose FAISS removal under an id map is wrong / missing) are
  // rebuilt from their reconstructed vectors, keeping the training.
  void remove(const std::vector<uint64_t>& ids);
  // Top-k (id, score) for one query vector [dim], best first (ties by smaller id); fewer
  // than k when the index holds fewer. Safe to call concurrently; add/remove/save are not.
  // create() raises FAISS's search defaults: HNSW efSearch >= 128, IVF nprobe >= min(nlist, 16).
  std::vector<std::pair<uint64_t, float>> search(const std::vector<float>& query, size_t k) const;
  int64_t size() const;
  int64_t dim() const;
  const std::string& factory() const;
  // Atomic save (temporary file + rename), with `store_sequence` recorded so that a stale
  // file can be detected on open.
  void save(const std::string& path, uint64_t store_sequence) const;
  // The store sequence recorded in the file that load() read (0 for a new index).
  uint64_t saved_sequence() const;
  // 0 once trained (or for indexes without training). Otherwise the largest need of the
  // index's components, from FAISS's k-means rule of 39 points per centroid: IVF 39 * nlist,
  // PQ / IVFPQ 39 * 2^nbits (9984 for 8-bit codes), OPQ 39 * 256, PCA its input dimension,
  // HNSW its storage's need, any other untrained component 1000.
  int64_t min_training_vectors() const;

  struct Impl;

 private:
  explicit DenseIndex(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reciprocal-rank fusion: score(d) = sum over lists of 1 / (k0 + rank_d), rank from 1.
// Best first, ties by smaller id; an id repeated within one list counts once, at its first
// rank; at most k results. Throws when k0 < 0.
std::vector<std::pair<uint64_t, double>> reciprocal_rank_fusion(
    const std::vector<std::vector<uint64_t>>& rankings, size_t k, double k0 = 60.0);

}  // namespace cocom::index
