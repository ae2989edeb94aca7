#include "train/examples.h"

#include <algorithm>

#include "common/error.h"
#include "format/format.h"
#include "model/weights.h"

namespace cocom::train {

namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Pads (or leaves) every row to `length` on `side` with `pad`; mask 0 on pads.
void pad_rows(std::vector<std::vector<int64_t>>* ids, std::vector<std::vector<int64_t>>* mask,
              size_t length, int64_t pad, model::PaddingSide side) {
  mask->clear();
  for (auto& row : *ids) {
    const size_t real = row.size();
    const size_t n_pad = length > real ? length - real : 0;
    std::vector<int64_t> m(real, 1);
    if (side == model::PaddingSide::Left) {
      row.insert(row.begin(), n_pad, pad);
      m.insert(m.begin(), n_pad, 0);
    } else {
      row.insert(row.end(), n_pad, pad);
      m.insert(m.end(), n_pad, 0);
    }
    mask->push_back(std::move(m));
  }
}

// Tokenizes `texts`, truncating on the right to max_length (special tokens kept), unpadded.
std::vector<std::vector<int64_t>> tokenize(const model::Tokenizer& tok,
                                           const std::vector<std::string>& texts,
                                           bool add_special_tokens, int64_t max_length) {
  model::BatchEncodeOptions o;
  o.add_special_tokens = add_special_tokens;
  o.pad_to_longest = false;
  o.max_length = max_length;
  o.truncation = max_length > 0;
  return tok.encode_batch(texts, o).input_ids;
}

void check_format(const ExampleFormat& f) {
  const model::Tokenizer* tok = f.tokens.tokenizer;
  if (tok == nullptr) fail("training examples: no decoder tokenizer");
  if (f.compr_rate < 1) fail("training examples: compr_rate must be positive");
  if (f.context_max_length < 1) fail("--context-max-length must be positive");
  if (f.tokens.mem < 0 || f.tokens.ae < 0 || f.tokens.enc < 0 || f.tokens.sep < 0) {
    fail("training examples: the decoder tokenizer lacks the COCOM tokens <MEM> <AE> <ENC> <SEP>");
  }
  if (tok->bos_id() < 0 || tok->eos_id() < 0) {
    fail("training examples: the decoder tokenizer needs <s> and </s>");
  }
}

// Where `ids` holds a memory slot (<MEM>; PISCO: any of <MEM0> .. <MEMn-1>).
at::Tensor slot_mask(const ExampleFormat& f, const at::Tensor& ids) {
  return (ids >= f.tokens.mem).logical_and(ids < f.tokens.mem + f.tokens.mem_count);
}

// Labels for the pretraining decoder rows: every id except pads, <s>, <MEM> (and <AE>).
at::Tensor pretraining_labels(const ExampleFormat& f, const at::Tensor& ids, const at::Tensor& mask,
                              bool mask_ae) {
  const model::Tokenizer& tok = *f.tokens.tokenizer;
  at::Tensor labels = ids.clone();
  at::Tensor drop = (mask == 0).logical_or(ids == tok.bos_id()).logical_or(slot_mask(f, ids));
  if (tok.pad_id() >= 0) drop = drop.logical_or(ids == tok.pad_id());
  if (mask_ae) drop = drop.logical_or(ids == f.tokens.ae);
  return labels.masked_fill(drop, kIgnoreIndex);
}

// Every decoder row must hold exactly k * n <MEM> slots (and every decoder-compressor row n):
// a passage or question containing the literal text <MEM> would shift the replacement.
void check_slots(const ExampleFormat& f, const TrainBatch& b) {
  const int64_t want = b.passages_per_row * b.mem_per_passage;
  at::Tensor per_row = slot_mask(f, b.dec_input_ids).sum(1);
  for (int64_t i = 0; i < per_row.size(0); ++i) {
    if (per_row[i].item<int64_t>() != want) {
      fail("training example ", i, " of a ", batch_kind_name(b.kind), " batch has ",
           per_row[i].item<int64_t>(), " <MEM> slots, expected ", want,
           " (does its text contain the literal token <MEM>, or is it truncated?)");
    }
  }
  if (f.compressor_tokenizer == nullptr) {
    at::Tensor enc_rows = slot_mask(f, b.enc_input_ids).sum(1);
    if (!(enc_rows == b.mem_per_passage).all().item<bool>()) {
      fail("a passage of a ", batch_kind_name(b.kind),
           " batch contains the literal token <MEM>; remove it from the data");
    }
  }
}

TrainBatch make_pretraining_batch(const ExampleFormat& f, const std::vector<std::string>& passages,
                                  const std::vector<std::string>& targets, BatchKind kind) {
  check_format(f);
  if (passages.empty()) fail("training examples: empty batch");
  TrainBatch b;
  b.kind = kind;
  encode_passages(f, passages, &b);
  const model::Tokenizer& tok = *f.tokens.tokenizer;
  const int64_t n = f.mem_per_passage();
  const format::Tokens& ft = f.tokens;
  const std::string prompt = kind == BatchKind::AutoEncoding ? format::autoencoding_prompt(ft, n)
                                                             : format::continuation_prompt(ft, n);
  std::vector<std::string> texts;
  for (const auto& t : targets) texts.push_back(prompt + t + ft.eos());
  const int64_t max_len = 3 + n + f.context_max_length;
  // The reference tokenizes the continuation rows with the tokenizer's default
  // add_special_tokens=True (an extra leading <s>, masked like every <s>).
  auto ids = tokenize(tok, texts, kind == BatchKind::TextContinuation, max_len);
  std::vector<std::vector<int64_t>> mask;
  pad_rows(&ids, &mask, size_t(max_len), tok.pad_id() >= 0 ? tok.pad_id() : tok.bos_id(),
           model::PaddingSide::Left);
  b.dec_input_ids = model::ids_tensor(ids);
  b.dec_attention_mask = model::ids_tensor(mask);
  b.labels =
      pretraining_labels(f, b.dec_input_ids, b.dec_attention_mask, kind == BatchKind::AutoEncoding);
  check_slots(f, b);
  return b;
}

}  // namespace

int64_t ExampleFormat::mem_per_passage() const {
  if (tokens.family == format::Family::Pisco) return tokens.mem_count;
  return format::slots_per_passage(context_max_length, compr_rate);
}

const char* batch_kind_name(BatchKind k) {
  switch (k) {
    case BatchKind::AutoEncoding:
      return "ae";
    case BatchKind::TextContinuation:
      return "tc";
    case BatchKind::QA:
      return "qa";
  }
  return "?";
}

int64_t TrainBatch::tokens() const {
  return enc_attention_mask.sum().item<int64_t>() + dec_attention_mask.sum().item<int64_t>();
}

int64_t TrainBatch::labelled() const { return (labels != kIgnoreIndex).sum().item<int64_t>(); }

void encode_passages(const ExampleFormat& f, const std::vector<std::string>& passages,
                     TrainBatch* batch) {
  check_format(f);
  const int64_t n = f.mem_per_passage();
  const format::Tokens& ft = f.tokens;
  batch->mem_per_passage = n;
  std::vector<std::vector<int64_t>> ids, mask;
  if (f.compressor_tokenizer == nullptr) {
    const model::Tokenizer& tok = *f.tokens.tokenizer;
    std::vector<std::string> texts;
    for (const auto& p : passages) texts.push_back(format::compressor_text(ft, p));
    // PISCO: every row cut and padded to its fixed compressor length, as at inference.
    const int64_t L = ft.family == format::Family::Pisco ? format::kPiscoCompressorTokens
                                                         : f.context_max_length + 3;
    ids = tokenize(tok, texts, false, L);
    pad_rows(&ids, &mask, size_t(L), tok.pad_id() >= 0 ? tok.pad_id() : tok.bos_id(),
             model::PaddingSide::Left);
    for (size_t i = 0; i < ids.size(); ++i) format::append_memory_slots(ft, n, &ids[i], &mask[i]);
  } else {
    const model::Tokenizer& tok = *f.compressor_tokenizer;
    if (tok.pad_id() < 0) fail("training examples: the compressor tokenizer has no [PAD] token");
    ids = tokenize(tok, passages, true, f.context_max_length);
    pad_rows(&ids, &mask, size_t(round_up(f.context_max_length, f.compr_rate)), tok.pad_id(),
             model::PaddingSide::Right);
  }
  batch->enc_input_ids = model::ids_tensor(ids);
  batch->enc_attention_mask = model::ids_tensor(mask);
}

TrainBatch make_autoencoding_batch(const ExampleFormat& f, const std::vector<std::string>& texts) {
  return make_pretraining_batch(f, texts, texts, BatchKind::AutoEncoding);
}

TrainBatch make_continuation_batch(const ExampleFormat& f, const std::vector<std::string>& texts,
                                   const std::vector<std::string>& continuations) {
  if (texts.size() != continuations.size()) {
    fail("training examples: ", texts.size(), " passages but ", continuations.size(),
         " continuations");
  }
  return make_pretraining_batch(f, texts, continuations, BatchKind::TextContinuation);
}

TrainBatch make_qa_batch(const ExampleFormat& f, const std::vector<QAExample>& examples,
                         int64_t k) {
  check_format(f);
  if (examples.empty()) fail("training examples: empty batch");
  if (k < 1) fail("QA examples: at least one passage per question is needed");
  const model::Tokenizer& tok = *f.tokens.tokenizer;
  TrainBatch b;
  b.kind = BatchKind::QA;
  b.passages_per_row = k;
  std::vector<std::string> passages;
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& e = examples[i];
    if (static_cast<int64_t>(e.contexts.size()) < k) {
      fail("QA example ", i, " ('", e.question.substr(0, 60), "') has ", e.contexts.size(),
           " contexts; ", k, " are needed (--k)");
    }
    passages.insert(passages.end(), e.contexts.begin(), e.contexts.begin() + k);
  }
  encode_passages(f, passages, &b);
  const int64_t n = b.mem_per_passage;
  const format::Tokens& ft = f.tokens;
  std::vector<std::vector<int64_t>> ids, label_rows;
  for (const auto& e : examples) {
    const std::string prompt = format::qa_prompt(ft, k, n, e.question);
    std::vector<int64_t> p = tok.encode(prompt, false);
    std::vector<int64_t> full = tok.encode(prompt + e.answer, false);
    // The answer starts where the joint tokenization leaves the prompt's (they agree up to the
    // boundary; a piece merged across it counts as answer).
    size_t start = 0;
    while (start < p.size() && start < full.size() && p[start] == full[start]) ++start;
    if (static_cast<int64_t>(full.size() - start) > f.max_answer_tokens) {
      full.resize(start + size_t(f.max_answer_tokens));
    }
    full.push_back(tok.eos_id());
    std::vector<int64_t> lab(full.size(), kIgnoreIndex);
    for (size_t t = start; t < full.size(); ++t) lab[t] = full[t];
    ids.push_back(std::move(full));
    label_rows.push_back(std::move(lab));
  }
  size_t longest = 0;
  for (const auto& r : ids) longest = std::max(longest, r.size());
  std::vector<std::vector<int64_t>> mask, unused;
  pad_rows(&ids, &mask, longest, tok.pad_id() >= 0 ? tok.pad_id() : tok.bos_id(),
           model::PaddingSide::Left);
  pad_rows(&label_rows, &unused, longest, kIgnoreIndex, model::PaddingSide::Left);
  b.dec_input_ids = model::ids_tensor(ids);
  b.dec_attention_mask = model::ids_tensor(mask);
  b.labels = model::ids_tensor(label_rows);
  check_slots(f, b);
  return b;
}

std::pair<std::string, std::string> split_for_continuation(const ExampleFormat& f,
                                                           const std::string& text) {
  check_format(f);
  const model::Tokenizer& tok = *f.tokens.tokenizer;
  std::vector<int64_t> ids = tok.encode(text, false);
  const size_t L = static_cast<size_t>(f.context_max_length);
  size_t cut = ids.size() > L ? L : ids.size() / 2;
  size_t end = std::min(ids.size(), cut + L);
  std::vector<int64_t> first(ids.begin(), ids.begin() + long(cut));
  std::vector<int64_t> second(ids.begin() + long(cut), ids.begin() + long(end));
  return {tok.decode(first, true), tok.decode(second, true)};
}

}  // namespace cocom::train
