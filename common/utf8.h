// The UTF-8 toolkit: well-formedness (Unicode's Table 3-7: no overlong forms, surrogates or
// code points above U+10FFFF), repair, streaming boundaries and conversions. Every module
// that looks at UTF-8 bytes uses these (tokenizers, safetensors headers, document readers,
// the streaming answer, metrics); utf8proc encodes code points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cocom::utf8 {

inline constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The well-formed sequence at s[i] (i < n): its length (1..4), with its code point in *cp;
// 0 when s[i] starts an ill-formed one, with *bad = the length of its maximal ill-formed
// subpart (>= 1, the unit that WHATWG and Python's errors="replace" turn into one U+FFFD).
size_t decode(const char* s, size_t n, size_t i, uint32_t* cp, size_t* bad);

// Byte offset of the first ill-formed sequence, or std::string::npos.
size_t first_invalid(const char* s, size_t n);
bool is_valid(const std::string& s);

// Replaces every maximal ill-formed subpart with U+FFFD; returns how many were replaced.
size_t repair(std::string* s);

// Length of the longest prefix of `s` that does not end inside a (possibly still incomplete)
// sequence: what a stream may hand out before the next bytes arrive.
size_t complete_prefix_length(const std::string& s);

// Appends a code point (U+FFFD for a value that is not one).
void append(std::string* out, uint32_t cp);
// Code points of `s`; each byte of an ill-formed sequence becomes one U+FFFD (the unit the
// tokenizers' byte fallback works on).
std::u32string to_u32(const std::string& s);
std::string from_u32(const std::u32string& s);

}  // namespace cocom::utf8
