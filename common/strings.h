// Small string helpers shared by the tools and benchmarks.
#pragma once

#include <string>
#include <vector>

namespace cocom {

// "a, b,,c " -> {"a", "b", "c"}: items between separators, trimmed of spaces and tabs; empty
// items are dropped.
inline std::vector<std::string> split_list(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(start, end - start);
    const size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a != std::string::npos) out.push_back(item.substr(a, b - a + 1));
    start = end + 1;
  }
  return out;
}

}  // namespace cocom
