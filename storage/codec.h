// The codecs of stored context embeddings: dtypes (fp16, bf16, fp32, int8 with a scale per
// vector), the blob format, and what a collection will take. Torch-free, RocksDB-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cocom::storage {

// I8: symmetric int8 with one fp32 scale per vector (per row of the last dimension):
// value = q * scale, q in [-127, 127], scale = max|x| / 127 (0 for an all-zero vector).
enum class EmbeddingDType { F16, BF16, F32, I8 };
const char* embedding_dtype_name(EmbeddingDType t);  // "fp16", "bf16", "fp32", "int8"
std::optional<EmbeddingDType> parse_embedding_dtype(const std::string& s);

// Bytes of stored data for `vectors` vectors of `dim` values in `dtype` (int8 includes its
// fp32 scale per vector); the blob header and RocksDB overhead are not counted.
uint64_t embedding_payload_bytes(int64_t vectors, int64_t dim, EmbeddingDType dtype);

// What storing the context embeddings of an input will take, estimated from its size in
// bytes before ingesting it: passages ~= input_bytes / (bytes_per_token * context_tokens), at
// least one per document, each ceil(context_tokens / compr_rate) vectors of `dim` values in
// `dtype`.
struct StorageEstimate {
  int64_t passages = 0;
  int64_t vectors_per_passage = 0;
  uint64_t bytes_per_passage = 0;
  uint64_t total_bytes = 0;
};
StorageEstimate estimate_embedding_storage(uint64_t input_bytes, int64_t context_tokens,
                                           int64_t compr_rate, int64_t dim, EmbeddingDType dtype,
                                           uint64_t documents = 0, double bytes_per_token = 4.0);
// "512 B", "1.5 KB", "6.2 TB" (powers of 1000).
std::string human_bytes(uint64_t bytes);

// Embedding blobs: a small header (magic "CCEM", version, dtype, ndim, shape) + data. int8
// blobs hold, per vector (row of the last dimension), its fp32 scale then its int8 values.
// int8 encoding throws for non-finite values; decoding throws naming `what` for any blob
// whose sizes, dtype code, scales or values are not what the encoder writes.
std::string encode_embedding(const std::vector<float>& values, const std::vector<int64_t>& shape,
                             EmbeddingDType dtype);
std::vector<float> decode_embedding(const std::string& blob, std::vector<int64_t>* shape,
                                    const std::string& what);

}  // namespace cocom::storage
