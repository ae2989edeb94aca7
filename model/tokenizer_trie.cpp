// AddedTokenTrie: the Trie.split of Hugging Face's PreTrainedTokenizer (transformers 4.41), on
// code points: splits text along the added tokens.

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model::detail {

AddedTokenTrie::AddedTokenTrie() : nodes_(1) {}

int32_t AddedTokenTrie::child(int32_t node, uint32_t cp) const {
  const auto& next = nodes_[static_cast<size_t>(node)].next;
  auto it = next.find(cp);
  return it == next.end() ? -1 : it->second;
}

void AddedTokenTrie::add(const std::string& token) {
  if (token.empty()) return;
  int32_t node = 0;
  for (const auto& u : utf8_units(token)) {
    int32_t next = child(node, u.cp);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      nodes_[static_cast<size_t>(node)].next.emplace(u.cp, next);
    }
    node = next;
  }
  nodes_[static_cast<size_t>(node)].terminal = true;
}

std::vector<std::string> AddedTokenTrie::split(const std::string& text) const {
  const auto units = utf8_units(text);
  const size_t n = units.size();
  auto byte_at = [&](size_t unit) { return unit < n ? units[unit].offset : text.size(); };
  auto terminal = [&](int32_t node) { return nodes_[static_cast<size_t>(node)].terminal; };

  // Partial matches: (start unit, trie node), in increasing start order.
  std::vector<std::pair<size_t, int32_t>> states;
  std::vector<size_t> offsets{0};
  size_t skip = 0;
  for (size_t current = 0; current < n; ++current) {
    if (skip != 0 && current < skip) continue;
    const uint32_t cp = units[current].cp;
    std::vector<size_t> to_remove;
    bool reset = false;
    for (size_t si = 0; si < states.size(); ++si) {
      size_t start = states[si].first;
      const int32_t node = states[si].second;
      if (terminal(node)) {
        // A match ended: look ahead for the longest one, also from earlier partial matches.
        size_t end = 0;
        for (size_t li = 0; li < states.size(); ++li) {
          const size_t lookstart = states[li].first;
          int32_t lnode = states[li].second;
          size_t look = 0;
          if (lookstart > start) break;
          if (lookstart < start) {
            look = current + 1;  // this state already consumed the current character
            end = current + 1;
          } else {
            look = current;
            end = current;
          }
          if (terminal(lnode)) {
            start = lookstart;
            end = look;
            skip = look;
          }
          while (look < n) {
            const int32_t next = child(lnode, units[look].cp);
            if (next < 0) break;
            lnode = next;
            ++look;
            if (terminal(lnode)) {
              start = lookstart;
              end = look;
              skip = look;
            }
          }
        }
        offsets.push_back(start);
        offsets.push_back(end);
        reset = true;
        break;
      }
      const int32_t next = child(node, cp);
      if (next >= 0) {
        states[si].second = next;
      } else {
        to_remove.push_back(si);
      }
    }
    if (reset) {
      states.clear();
    } else if (!to_remove.empty()) {
      std::vector<std::pair<size_t, int32_t>> kept;
      size_t r = 0;
      for (size_t si = 0; si < states.size(); ++si) {
        if (r < to_remove.size() && to_remove[r] == si) {
          ++r;
        } else {
          kept.push_back(states[si]);
        }
      }
      states.swap(kept);
    }
    if (current >= skip) {
      const int32_t first = child(0, cp);
      if (first >= 0) states.emplace_back(current, first);
    }
  }
  for (const auto& [start, node] : states) {
    if (terminal(node)) {
      offsets.push_back(start);
      offsets.push_back(n);
      break;
    }
  }

  // cut_text
  offsets.push_back(n);
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t end : offsets) {
    if (start >= end) continue;  // zero-width cut, or (never expected) a backwards one
    parts.push_back(text.substr(byte_at(start), byte_at(end) - byte_at(start)));
    start = end;
  }
  return parts;
}
}  // namespace cocom::model::detail
