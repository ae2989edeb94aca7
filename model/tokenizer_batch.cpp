// Tokenizer::encode_batch: batch encoding with truncation and padding, as the Hugging Face
// __call__ does for a list of texts.
#include <algorithm>

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model {

BatchEncoding Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                      const BatchEncodeOptions& opt) const {
  if (opt.max_length < 0) fail("encode_batch: max_length must be >= 0 (got ", opt.max_length, ")");
  if (opt.pad_to_multiple_of < 0) {
    fail("encode_batch: pad_to_multiple_of must be >= 0 (got ", opt.pad_to_multiple_of, ")");
  }
  const bool truncate = opt.truncation && opt.max_length > 0;
  const auto* base = dynamic_cast<const detail::TokenizerBase*>(this);

  BatchEncoding out;
  out.input_ids.reserve(texts.size());
  for (const auto& text : texts) {
    std::vector<int64_t> ids;
    if (base != nullptr) {
      // prepare_for_model: truncation counts the special tokens, then removes tokens from the
      // right of the text's own tokens. When there are not enough of them to remove,
      // transformers logs an error and leaves the sequence as it is; so does this.
      std::vector<int64_t> prefix, suffix;
      if (opt.add_special_tokens) base->special_affixes(&prefix, &suffix);
      std::vector<int64_t> body;
      for (const auto& [token, id] : base->tokenize_body(text)) body.push_back(id);
      if (truncate) {
        const size_t total = body.size() + prefix.size() + suffix.size();
        const auto max_len = static_cast<size_t>(opt.max_length);
        if (total > max_len && body.size() > total - max_len) {
          body.resize(body.size() - (total - max_len));
        }
      }
      ids = std::move(prefix);
      ids.insert(ids.end(), body.begin(), body.end());
      ids.insert(ids.end(), suffix.begin(), suffix.end());
    } else {
      ids = encode(text, opt.add_special_tokens);
      if (truncate && ids.size() > static_cast<size_t>(opt.max_length)) {
        ids.resize(static_cast<size_t>(opt.max_length));
      }
    }
    out.input_ids.push_back(std::move(ids));
  }

  size_t target = 0;
  if (opt.pad_to_longest) {
    for (const auto& ids : out.input_ids) target = std::max(target, ids.size());
    const auto m = static_cast<size_t>(opt.pad_to_multiple_of);
    if (m > 0 && target % m != 0) target = (target / m + 1) * m;
  }
  const int64_t pad = pad_id();
  for (auto& ids : out.input_ids) {
    const size_t real = ids.size();
    const size_t n_pad = target > real ? target - real : 0;
    if (n_pad > 0 && pad < 0) {
      fail("encode_batch: padding is needed but the ", kind(),
           " tokenizer has no pad token (pad_token is null)");
    }
    std::vector<int64_t> mask(real, 1);
    if (n_pad > 0) {
      if (opt.padding_side == PaddingSide::Left) {
        ids.insert(ids.begin(), n_pad, pad);
        mask.insert(mask.begin(), n_pad, 0);
      } else {
        ids.insert(ids.end(), n_pad, pad);
        mask.insert(mask.end(), n_pad, 0);
      }
    }
    out.token_type_ids.emplace_back(ids.size(), 0);
    out.attention_mask.push_back(std::move(mask));
  }
  return out;
}

}  // namespace cocom::model
