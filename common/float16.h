// fp32 <-> fp16 / bf16 conversion of single values: the one scalar implementation (stored
// embeddings, checkpoints written by cocom, the weight kernels' scalar tails). Round to
// nearest even; NaN stays a quiet NaN; overflow gives infinity; fp16 subnormals are exact.
// (FAISS 1.7.3's portable encoder, used without F16C at our -march, rounds ties upwards and
// reads floats through pointer casts; libtorch's is not available to the torch-free store.)
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace cocom::f16 {

inline uint32_t float_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x;
}

inline float bits_float(uint32_t x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t exp = (x >> 23) & 0xffu;
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) {                                              // inf or nan
    if (mant == 0) return sign | 0x7c00u;                         // inf
    return static_cast<uint16_t>(sign | 0x7e00u | (mant >> 13));  // quiet nan, keeps payload
  }
  const int e = static_cast<int>(exp) - 127 + 15;  // biased half exponent
  if (e >= 31) return sign | 0x7c00u;              // overflow -> inf
  if (e <= 0) {
    // Half subnormal (or zero). value = (1.mant) * 2^(e - 15); in units of 2^-24 that is
    // (mant | 2^23) >> (14 - e), rounded.
    if (e < -10) return sign;  // below half the smallest subnormal: rounds to (signed) zero
    mant |= 0x800000u;
    const int shift = 14 - e;  // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;  // may become the smallest normal
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry may give inf: correct
  return static_cast<uint16_t>(sign | h);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);  // exact (zero or subnormal)
    return sign ? -v : v;
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

inline uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // nan: keep it a (quiet) nan
    return static_cast<uint16_t>((x >> 16) | 0x0040u);
  }
  const uint32_t bias = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + bias) >> 16);  // overflow rounds to inf, as it should
}

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

}  // namespace cocom::f16
