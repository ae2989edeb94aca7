// OpenAI `stop` sequences over streamed text: pieces are released as soon as they cannot be
// the start of a stop sequence, and the text ends before the first stop sequence.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace cocom::serve {

class StopText {
 public:
  explicit StopText(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds a piece; returns the text that may be shown now (possibly empty).
  std::string push(const std::string& piece) {
    if (hit_) return {};
    text_ += piece;
    size_t first = std::string::npos;
    for (const auto& s : stops_) {
      // An occurrence cannot start inside the released text (it was checked piece by piece).
      const size_t from = released_ >= s.size() ? released_ - s.size() + 1 : 0;
      const size_t at = text_.find(s, from);
      if (at != std::string::npos) first = std::min(first, at);
    }
    if (first != std::string::npos) {
      hit_ = true;
      text_.resize(first);
      return take(first);
    }
    size_t hold = 0;  // the longest tail that is the start of a stop sequence
    for (const auto& s : stops_) {
      for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k) {
        if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
      }
    }
    return take(text_.size() - hold);
  }

  // The generation is over: what was held back (nothing after a stop sequence).
  std::string finish() { return hit_ ? std::string() : take(text_.size()); }

  bool hit() const { return hit_; }
  // Everything pushed, cut before the stop sequence when one was found.
  const std::string& text() const { return text_; }

 private:
  std::string take(size_t end) {
    if (end <= released_) return {};
    std::string out = text_.substr(released_, end - released_);
    released_ = end;
    return out;
  }

  std::vector<std::string> stops_;
  std::string text_;
  size_t released_ = 0;
  bool hit_ = false;
};

}  // namespace cocom::serve
