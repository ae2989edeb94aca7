// Streaming text from generated token ids: after every id the ids so far are decoded and only
// the new suffix is handed out, never a split UTF-8 character. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/utf8.h"
#include "model/tokenizer.h"

namespace cocom::generate {

class StreamDecoder {
 public:
  explicit StreamDecoder(const model::Tokenizer& tok) : tok_(tok) {}

  // Adds one generated id; returns the text it completes (often empty). Text that ends in
  // U+FFFD is held back: with byte-fallback tokens it is the first byte(s) of a character
  // whose other bytes are still to come, and the next decoding replaces it.
  std::string push(int64_t id) {
    ids_.push_back(id);
    const std::string text = tok_.decode(ids_, /*skip_special_tokens=*/true);
    if (text.compare(0, emitted_.size(), emitted_) != 0) return {};  // wait until it agrees
    const size_t end = utf8::complete_prefix_length(text);
    if (end <= emitted_.size()) return {};
    std::string fresh = text.substr(emitted_.size(), end - emitted_.size());
    if (ends_with_replacement(fresh)) return {};
    emitted_ += fresh;
    return fresh;
  }

  // Once generation is over: what is left of `final_text` (the decoding of every id) after
  // the pieces already handed out. Empty when nothing is left, or when the pieces are not a
  // prefix of it (not seen with sentencepiece or WordPiece decoding).
  std::string finish(const std::string& final_text) {
    if (final_text.size() <= emitted_.size() ||
        final_text.compare(0, emitted_.size(), emitted_) != 0) {
      return {};
    }
    std::string rest = final_text.substr(emitted_.size());
    emitted_ = final_text;
    return rest;
  }

  const std::string& emitted() const { return emitted_; }

 private:
  static bool ends_with_replacement(const std::string& s) {
    return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
  }
  const model::Tokenizer& tok_;
  std::vector<int64_t> ids_;
  std::string emitted_;
};

}  // namespace cocom::generate
