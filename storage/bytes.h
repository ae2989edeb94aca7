// Byte-level helpers of the store's records and blobs (internal to storage/): little-endian
// integers, big-endian ids (key order = numeric order), LEB128 varints with zigzag.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "common/error.h"

namespace cocom::storage::detail {

// little/big-endian and varint helpers

inline void put_le(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}

inline uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

inline std::string id_key(uint64_t id) {
  std::string k(8, '\0');
  for (int i = 0; i < 8; ++i) k[i] = static_cast<char>((id >> (8 * (7 - i))) & 0xffu);
  return k;
}

inline uint64_t key_id(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

inline std::string u32_value(uint64_t v) {
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
    if (pos_ != s_.size())
      fail_corrupt(what_, ": record is damaged (", s_.size() - pos_, " stray bytes)");
  }

 private:
  void need(uint64_t n) {
    if (n > s_.size() - pos_) fail_corrupt(what_, ": record is damaged (truncated)");
  }
  const std::string& s_;
  std::string what_;
  size_t pos_ = 0;
};

}  // namespace cocom::storage::detail
