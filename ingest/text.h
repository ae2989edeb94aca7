// Text helpers shared by the readers and the chunker (internal to ingest/).
#pragma once

#include <string>

namespace cocom::ingest::detail {

bool is_space(unsigned char c);
std::string trim(const std::string& s);
// Collapses runs of ASCII whitespace into one space and trims.
std::string collapse_ws(const std::string& s);
std::string to_lower(std::string s);
// Text normalisation applied to every extracted document text.
std::string normalize_text(const std::string& s);
std::string normalize_title(const std::string& s);

}  // namespace cocom::ingest::detail
