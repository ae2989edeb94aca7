#include "compress/compressor.h"

#include "common/error.h"
#include "common/log.h"
#include "model/weights.h"

namespace cocom::compress {

namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace

EncoderInputs encoder_inputs(const model::CocomModel& m, const std::vector<std::string>& passages,
                             int64_t context_max_length, Padding padding) {
  if (passages.empty()) fail("compress: no passages given");
  if (context_max_length < 1) fail("--context-max-length must be positive");
  const int64_t r = m.config().compr_rate;
  const bool light = m.config().light();
  // PISCO: every row is cut and padded to exactly kPiscoCompressorTokens, whatever the regime.
  const bool pisco = m.config().pisco;
  const int64_t max_tokens = pisco ? format::kPiscoCompressorTokens : context_max_length;
  const model::Tokenizer& tok = light ? *m.compressor_tokenizer() : m.decoder_tokenizer();
  std::vector<std::string> texts;
  texts.reserve(passages.size());
  for (const auto& p : passages) {
    if (light) {
      texts.push_back(p);
    } else {
      texts.push_back(format::compressor_text(m.tokens(), p));
    }
  }
  model::BatchEncodeOptions o;
  o.add_special_tokens = light;  // BERT: [CLS] ... [SEP]; decoder: the text carries its tokens
  o.padding_side = light ? model::PaddingSide::Right : model::PaddingSide::Left;
  o.max_length = max_tokens;
  o.truncation = true;
  o.pad_to_multiple_of = pisco ? 1 : r;
  o.pad_to_longest = padding == Padding::Longest && !pisco;
  model::BatchEncoding enc = tok.encode_batch(texts, o);
  EncoderInputs in;
  // Count truncations: encode without truncation is costly; compare against the limit instead.
  for (size_t i = 0; i < texts.size(); ++i) {
    int64_t real = 0;
    for (int64_t v : enc.attention_mask[i]) real += v;
    if (real == max_tokens) {
      int64_t full = static_cast<int64_t>(tok.encode(texts[i], light).size());
      if (full > max_tokens) {
        ++in.truncated;
        log::debug("compress: passage {} has {} tokens; truncated to {}", i, full, max_tokens);
      }
    }
  }
  if (padding == Padding::MaxLength || pisco) {
    // Pad every row to the same fixed length (context_max_length rounded up to r).
    const int64_t L = pisco ? max_tokens : round_up(context_max_length, r);
    const int64_t pad = tok.pad_id();
    if (pad < 0) fail("compress: the compressor tokenizer has no padding token");
    for (size_t i = 0; i < enc.input_ids.size(); ++i) {
      auto& ids = enc.input_ids[i];
      auto& mask = enc.attention_mask[i];
      // Strip the batch padding, then pad to L on the tokenizer's side.
      std::vector<int64_t> real_ids;
      for (size_t t = 0; t < ids.size(); ++t) {
        if (mask[t]) real_ids.push_back(ids[t]);
      }
      const int64_t n_pad = L - static_cast<int64_t>(real_ids.size());
      std::vector<int64_t> pids(size_t(n_pad), pad), pmask(size_t(n_pad), 0);
      std::vector<int64_t> rmask(real_ids.size(), 1);
      if (light) {
        ids = real_ids;
        ids.insert(ids.end(), pids.begin(), pids.end());
        mask = rmask;
        mask.insert(mask.end(), pmask.begin(), pmask.end());
      } else {
        ids = pids;
        ids.insert(ids.end(), real_ids.begin(), real_ids.end());
        mask = pmask;
        mask.insert(mask.end(), rmask.begin(), rmask.end());
      }
    }
  }
  const int64_t L = static_cast<int64_t>(enc.input_ids[0].size());
  const int64_t n = pisco ? m.slots_per_passage(L) : format::slots_per_passage(L, r);
  in.mem_per_passage = n;
  if (!light) {
    const format::Tokens t = m.tokens();
    for (size_t i = 0; i < enc.input_ids.size(); ++i) {
      format::append_memory_slots(t, n, &enc.input_ids[i], &enc.attention_mask[i]);
    }
  }
  in.input_ids = model::ids_tensor(enc.input_ids);
  in.attention_mask = model::ids_tensor(enc.attention_mask);
  return in;
}

at::Tensor compress(const model::CocomModel& m, const EncoderInputs& in) {
  return compress_on_device(m, in).to(at::kCPU);
}

at::Tensor compress_on_device(const model::CocomModel& m, const EncoderInputs& in,
                              const model::ForwardHooks* hooks) {
  const int64_t N = in.input_ids.size(0), n = in.mem_per_passage;
  if (!m.config().light()) {
    // The reference calls the decoder without position_ids: positions 0..L-1, pads counted.
    model::DecoderForwardOptions fo;
    fo.compute_logits = false;
    if (hooks && m.compressor_hooks()) {
      fail("compress: this model's compressor already runs with adapters of its own");
    }
    fo.hooks = hooks ? hooks : m.compressor_hooks();
    const model::MistralModel& dec = m.decoder();
    at::Tensor pos = model::MistralModel::arange_positions(in.attention_mask);
    model::DecoderOutput o = dec.forward(in.input_ids, in.attention_mask, pos, nullptr, fo);
    const format::Tokens& t = m.tokens();
    at::Tensor is_mem = ((in.input_ids >= t.mem) & (in.input_ids < t.mem + t.mem_count))
                            .to(o.last_hidden_state.device());
    at::Tensor rows = o.last_hidden_state.index({is_mem});  // [N * n, H] in row order
    if (rows.size(0) != N * n) {
      fail("compress: found ", rows.size(0), " <MEM> positions, expected ", N * n,
           " (does a passage contain the literal text <MEM>?)");
    }
    return rows.view({N, n, -1});
  }
  const model::BertModel& bert = *m.bert();
  // token_type_ids are not passed by the reference: zeros.
  model::BertOutput o = bert.forward(in.input_ids, in.attention_mask, {}, false, hooks);
  at::Tensor h = o.last_hidden_state;  // [N, L, Hb], padded rows included
  const int64_t r = m.config().compr_rate, Hb = h.size(2);
  if (h.size(1) != n * r) fail("compress: encoder length ", h.size(1), " is not n * compr_rate");
  at::Tensor grouped = h.reshape({N, n, r, Hb});
  at::Tensor feats =
      m.config().compr_linear_type == "concat" ? grouped.reshape({N, n, r * Hb}) : grouped.mean(2);
  return model::dense(feats, m.projection_weight(), m.projection_bias());
}

at::Tensor compress_passages(const model::CocomModel& m, const std::vector<std::string>& passages,
                             int64_t context_max_length, int64_t batch_size) {
  if (batch_size < 1) fail("--batch-size must be at least 1");
  std::vector<at::Tensor> parts;
  for (size_t b = 0; b < passages.size(); b += size_t(batch_size)) {
    std::vector<std::string> chunk(
        passages.begin() + long(b),
        passages.begin() + long(std::min(passages.size(), b + size_t(batch_size))));
    parts.push_back(compress(m, encoder_inputs(m, chunk, context_max_length, Padding::MaxLength)));
  }
  return at::cat(parts, 0);
}

}  // namespace cocom::compress
