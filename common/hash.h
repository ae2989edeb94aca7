// 64-bit FNV-1a, for fingerprints, content hashes and file checksums (not cryptographic).
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

}  // namespace cocom
