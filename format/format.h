// The COCOM format: where context embeddings go in the compressor's and the decoder's inputs.
// The one place that lays out <MEM> <AE> <ENC> <SEP> (compress/, generate/ and the trainer's
// batches call it; nothing else writes these tokens). Torch-free: text in, text out, the
// tokenizer does the rest.
//
//   passage slots   n = ceil(context_max_length / compr_rate) context embeddings per passage
//   compressor      '<ENC><s>' + passage + '</s>', then n '<MEM>' (decoder compressor; BERT
//                   reads the passage with its own [CLS] ... [SEP])
//   QA prompt       '<s>' + ('<MEM>' * n [+ '<SEP>']) * k + '[INST]' + question + '\n[/INST]\n'
//   auto-encoding   '<AE><s>' + '<MEM>' * n (then the passage and '</s>' when training)
//   continuation    '<s>' + '<MEM>' * n (then the continuation and '</s>' when training)
//   closed book     '<s>[INST]' + question + '\n[/INST]\n'
//   uncompressed    '<s>[INST]Answer the question briefly, using the documents.\n\n'
//                   + ('Document i: ' + passage + '\n') * k + '\nQuestion: ' + question
//                   + '\n[/INST]\n'
//
// PISCO as published (naver/pisco-*; Family::Pisco) differs in its tokens and prompt:
//   slot tokens     n distinct tokens <MEM0> .. <MEM{n-1}> (n = doc_max_length / compr_rate),
//                   then <AE> <ENC> <SEP>
//   compressor      '<ENC><s>' + passage + '</s>', cut and left-padded to exactly 131 tokens
//                   (kPiscoCompressorTokens), then <MEM0> .. <MEM{n-1}>
//   QA prompt       '<s> [INST] ' + system + '\n\n' + user + ' [/INST]' with
//                   user = 'Background:\n' + ('<MEM0>..<MEM{n-1}><SEP>') * k + '\n\nQuestion:'
//                   + question, every ':\\ ' in user written ': '
//   closed book     the QA prompt without 'Background:...'; uncompressed: the passages' text,
//                   one per line, in place of the slots
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace cocom::format {

// The tokens COCOM appends to the decoder vocabulary, in this order.
extern const std::vector<std::string> kSpecialTokens;  // <MEM> <AE> <ENC> <SEP>

enum class Family { Cocom, Pisco };

// The tokens a published PISCO checkpoint appends: <MEM0> .. <MEM{n-1}>, <AE>, <ENC>, <SEP>.
std::vector<std::string> pisco_special_tokens(int64_t n);
// PISCO's compressor rows: 128 text tokens + 3 (fixed in the published code, whatever
// doc_max_length says).
constexpr int64_t kPiscoCompressorTokens = 131;
// PISCO's system message (the published prompt).
extern const char* const kPiscoSystemPrompt;

// The COCOM tokens of one decoder tokenizer (which must outlive this).
struct Tokens {
  const model::Tokenizer* tokenizer = nullptr;
  int64_t mem = -1, ae = -1, enc = -1, sep = -1;  // PISCO: mem is <MEM0>
  bool use_sep = true;  // config `sep`: a <SEP> after each passage's slots in the QA prompt
  Family family = Family::Cocom;
  int64_t mem_count = 1;  // PISCO: n slot tokens, ids mem .. mem + n - 1

  // Looks the tokens up; throws naming the tokenizer when one is missing.
  static Tokens of(const model::Tokenizer& decoder_tokenizer, bool use_sep);
  // PISCO's n slot tokens, <AE>, <ENC> and <SEP> (consecutive ids, as the model adds them).
  static Tokens pisco(const model::Tokenizer& decoder_tokenizer, int64_t n);
  std::string bos() const;
  std::string eos() const;
  // The token of a passage's slot j (COCOM: always <MEM>).
  int64_t slot_id(int64_t j) const;
  // True for every slot token.
  bool is_slot(int64_t id) const { return id >= mem && id < mem + mem_count; }
};

// Context embeddings per passage: ceil(context_max_length / compr_rate).
int64_t slots_per_passage(int64_t context_max_length, int64_t compr_rate);

// The decoder compressor's text for one passage (its <MEM> slots are appended as ids, after
// padding: append_memory_slots).
std::string compressor_text(const Tokens& t, const std::string& passage);
// Appends the n <MEM> slots (mask 1) to a tokenized compressor row.
void append_memory_slots(const Tokens& t, int64_t n, std::vector<int64_t>* ids,
                         std::vector<int64_t>* mask);

// ('<MEM>' * n [+ '<SEP>']) * k: the passages' slots in the QA prompt.
std::string passage_slots(const Tokens& t, int64_t k, int64_t n);
// Where passage j's n slots start in a QA prompt row whose first slot is at `first`.
int64_t passage_slot_offset(const Tokens& t, int64_t first, int64_t j, int64_t n);

std::string instruction(const std::string& question);
std::string qa_prompt(const Tokens& t, int64_t k, int64_t n, const std::string& question);
std::string autoencoding_prompt(const Tokens& t, int64_t n);
std::string continuation_prompt(const Tokens& t, int64_t n);
std::string closed_book_prompt(const Tokens& t, const std::string& question);
std::string uncompressed_prompt(const Tokens& t, const std::vector<std::string>& passages,
                                const std::string& question);

}  // namespace cocom::format
