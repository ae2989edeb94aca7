#include "storage/codec.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "common/float16.h"
#include "storage/bytes.h"

namespace cocom::storage {

namespace {

using detail::get_le;
using detail::put_le;
using f16::bf16_to_float;
using f16::bits_float;
using f16::float_bits;
using f16::float_to_bf16;
using f16::float_to_half;
using f16::half_to_float;

size_t dtype_size(EmbeddingDType t) {
  return t == EmbeddingDType::F32 ? 4 : t == EmbeddingDType::I8 ? 1 : 2;
}

}  // namespace

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
    fail_corrupt(what, ": embedding blob truncated (", blob.size(),
                 " bytes, the header alone is 7)");
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
    fail_corrupt(what, ": embedding blob truncated (", blob.size(), " bytes, its header needs ",
                 header, ")");
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

}  // namespace cocom::storage
