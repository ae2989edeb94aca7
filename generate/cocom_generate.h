// Answering from context embeddings: the decoder prompt with <MEM> slots, replacement of the
// slots by the passages' embeddings, and KV-cached generation.
//   prompt = '<s>' + ('<MEM>' * n [+ '<SEP>']) * k + '[INST]' + question + '\n[/INST]\n'
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "model/cocom.h"
#include "model/generation.h"

namespace cocom::generate {

struct DecoderInputs {
  at::Tensor input_ids;       // [Q, L] left padded with <s>
  at::Tensor attention_mask;  // [Q, L]
  std::vector<std::string> prompts;
};

// Tokenizes in->prompts (no special tokens added, left padding with <s>) into
// in->input_ids / in->attention_mask.
void encode_prompts(const model::CocomModel& m, DecoderInputs* in);

// Throws for an empty question list or an empty question.
DecoderInputs decoder_prompts(const model::CocomModel& m, const std::vector<std::string>& questions,
                              int64_t passages_per_question, int64_t mem_per_passage);

// Token embeddings of the prompts with the <MEM> slots of question i replaced, in order, by
// the rows of compressed[i * k + j] (j = 0..k-1); <SEP> rows keep their token embedding.
at::Tensor embed_with_contexts(const model::CocomModel& m, const DecoderInputs& in,
                               const at::Tensor& compressed, int64_t passages_per_question);

struct Answers {
  model::GenerationResult generation;  // tokens [Q, T'] (new tokens only), timings
  std::vector<std::string> texts;      // decoded, special tokens skipped
};

Answers generate_answers(const model::CocomModel& m, const at::Tensor& inputs_embeds,
                         const at::Tensor& attention_mask, const model::SamplingOptions& opt,
                         const model::TokenCallback& on_token = nullptr);

// The uncompressed baseline prompt: the same decoder reads the passages' text.
std::string uncompressed_prompt(const model::CocomModel& m, const std::vector<std::string>& passages,
                                const std::string& question);

// The closed-book baseline prompt: the compressed prompt without passages,
// '<s>[INST]' + question + '\n[/INST]\n'.
std::string closed_book_prompt(const model::CocomModel& m, const std::string& question);

// The auto-encoding (reconstruction) prompt: the training row '<AE><s>' + '<MEM>' * n +
// passage + '</s>' without the passage, so the decoder regenerates the compressed passage
// after it (stopping at '</s>'); one passage's embeddings replace the slots.
std::string autoencoding_prompt(const model::CocomModel& m, int64_t mem_per_passage);

}  // namespace cocom::generate
