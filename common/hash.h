// 64-bit FNV-1a, for fingerprints, content hashes and file checksums (not cryptographic), and
// XXH3 for hashing large files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cocom {

constexpr uint64_t kFnv1aOffset = 14695981039346656037ULL;
constexpr uint64_t kFnv1aPrime = 1099511628211ULL;

inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1aOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnv1aPrime;
  }
  return h;
}

inline uint64_t fnv1a64(const std::string& s, uint64_t h = kFnv1aOffset) {
  return fnv1a64(s.data(), s.size(), h);
}

// 16 lower-case hex digits.
std::string hex64(uint64_t v);

// XXH3-64 of a whole file, read in blocks (several GB/s: fast enough for multi-GB
// checkpoints). Throws cocom::Error naming the file when it cannot be read.
uint64_t xxh3_file(const std::string& path);

}  // namespace cocom
