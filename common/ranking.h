// Ranking of (id, score) results: best score first, ties broken by the smaller id, so that
// every retriever orders equal scores the same, deterministic way.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace cocom {

// Sorts `results` best first and keeps at most `k` of them.
template <typename Score>
void keep_top_k(std::vector<std::pair<uint64_t, Score>>* results, size_t k) {
  auto better = [](const std::pair<uint64_t, Score>& a, const std::pair<uint64_t, Score>& b) {
    if (a.second != b.second) return a.second > b.second;
    return a.first < b.first;
  };
  const size_t top = std::min(k, results->size());
  std::partial_sort(results->begin(), results->begin() + static_cast<std::ptrdiff_t>(top),
                    results->end(), better);
  results->resize(top);
}

}  // namespace cocom
