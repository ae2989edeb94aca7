// Training batches for COCOM, in the format the reference training code builds them (the
// paper's data collators, also used by naver/bergen):
//
//  encoder (decoder compressor): '<ENC><s>' + passage + '</s>', no special tokens added,
//      padded on the left to context_max_length + 3 with <s>, truncated on the right, then
//      n = ceil(context_max_length / compr_rate) <MEM> slots appended (mask 1).
//  encoder (COCOM-light): the BERT tokenizer with [CLS]/[SEP], padded on the right to
//      context_max_length (rounded up to a multiple of compr_rate), truncated on the right.
//  auto-encoding: decoder '<AE><s>' + '<MEM>' * n + passage + '</s>' (no special tokens added),
//      left-padded with <s> to 3 + n + context_max_length; labels = the ids with pads, <s>,
//      <MEM> and <AE> set to -100 (so the passage tokens and </s> are predicted).
//  text continuation: the first part is compressed; decoder '<s>' + '<MEM>' * n + continuation
//      + '</s>' tokenized *with* special tokens (so the row starts '<s><s>', as the reference),
//      same padding; labels mask pads, <s> and <MEM>.
//  QA fine-tuning: k passages per question compressed; decoder = the inference prompt
//      '<s>' + ('<MEM>' * n [+ '<SEP>']) * k + '[INST]' + question + '\n[/INST]\n', followed by
//      the answer and '</s>'; only the answer tokens and '</s>' are labelled. Rows are
//      left-padded with <s> to the longest row.
// Torch types appear here only as the batch's tensors (int64, CPU).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "format/format.h"
#include "model/tokenizer.h"

namespace cocom::train {

constexpr int64_t kIgnoreIndex = -100;

// What a batch builder needs to know about the model (see TrainableCocom::example_format()).
struct ExampleFormat {
  // The decoder tokenizer (pad = <s> when it has none) and the COCOM or PISCO tokens in it;
  // tokens.use_sep: <SEP> after each passage's slots (QA prompt).
  format::Tokens tokens;
  const model::Tokenizer* compressor_tokenizer = nullptr;  // nullptr: the decoder compresses
  int64_t compr_rate = 16;
  int64_t context_max_length = 128;  // compressor tokens per passage
  int64_t max_answer_tokens = 128;   // QA: longer answers are cut (before </s>)

  // Slots per passage: ceil(context_max_length / compr_rate); PISCO: its memory tokens.
  int64_t mem_per_passage() const;
};

enum class BatchKind { AutoEncoding, TextContinuation, QA };
const char* batch_kind_name(BatchKind k);  // "ae", "tc", "qa"

struct TrainBatch {
  BatchKind kind = BatchKind::AutoEncoding;
  at::Tensor enc_input_ids, enc_attention_mask;          // [rows * k, Le]
  at::Tensor dec_input_ids, dec_attention_mask, labels;  // [rows, Ld]
  int64_t mem_per_passage = 0;
  int64_t passages_per_row = 1;
  // Real (unpadded) tokens through the compressor and the decoder, for tokens/s.
  int64_t tokens() const;
  int64_t labelled() const;  // labels != -100
};

struct QAExample {
  std::string question;
  std::string answer;  // the label (the first of the dataset's answers)
  std::vector<std::string> contexts;
};

// Compressor inputs for passages (the encoder half of every batch).
void encode_passages(const ExampleFormat& f, const std::vector<std::string>& passages,
                     TrainBatch* batch);

TrainBatch make_autoencoding_batch(const ExampleFormat& f, const std::vector<std::string>& texts);
// `texts[i]` is compressed, `continuations[i]` is predicted.
TrainBatch make_continuation_batch(const ExampleFormat& f, const std::vector<std::string>& texts,
                                   const std::vector<std::string>& continuations);
// Every example must have at least `k` contexts; the first k are used.
TrainBatch make_qa_batch(const ExampleFormat& f, const std::vector<QAExample>& examples, int64_t k);

// Splits one pretraining text into (passage, continuation) in decoder tokens, like the
// reference's 128-token chunks: a text longer than context_max_length tokens gives its first
// context_max_length tokens and the next (at most) context_max_length tokens; a shorter one is
// cut in the middle. The halves are decoded back to text (as the reference does).
std::pair<std::string, std::string> split_for_continuation(const ExampleFormat& f,
                                                           const std::string& text);

}  // namespace cocom::train
