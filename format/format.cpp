#include "format/format.h"

#include "common/error.h"

namespace cocom::format {

const std::vector<std::string> kSpecialTokens = {"<MEM>", "<AE>", "<ENC>", "<SEP>"};

namespace {

std::string repeat(const std::string& s, int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) out += s;
  return out;
}

}  // namespace

Tokens Tokens::of(const model::Tokenizer& tok, bool use_sep) {
  Tokens t;
  t.tokenizer = &tok;
  t.use_sep = use_sep;
  int64_t* ids[] = {&t.mem, &t.ae, &t.enc, &t.sep};
  for (size_t i = 0; i < kSpecialTokens.size(); ++i) {
    const auto id = tok.token_to_id(kSpecialTokens[i]);
    if (!id) {
      fail("the decoder tokenizer lacks the COCOM token ", kSpecialTokens[i],
           " (<MEM> <AE> <ENC> <SEP> are added when a COCOM model is loaded)");
    }
    *ids[i] = *id;
  }
  if (tok.bos_id() < 0 || tok.eos_id() < 0) fail("the decoder tokenizer has no <s> or </s> token");
  return t;
}

std::string Tokens::bos() const { return tokenizer->id_to_token(tokenizer->bos_id()); }
std::string Tokens::eos() const { return tokenizer->id_to_token(tokenizer->eos_id()); }

int64_t slots_per_passage(int64_t context_max_length, int64_t compr_rate) {
  if (context_max_length < 1 || compr_rate < 1) {
    fail("slots per passage: context length ", context_max_length, " and compression rate ",
         compr_rate, " must be positive");
  }
  return (context_max_length + compr_rate - 1) / compr_rate;
}

std::string compressor_text(const Tokens& t, const std::string& passage) {
  return t.tokenizer->id_to_token(t.enc) + t.bos() + passage + t.eos();
}

void append_memory_slots(const Tokens& t, int64_t n, std::vector<int64_t>* ids,
                         std::vector<int64_t>* mask) {
  ids->insert(ids->end(), size_t(n), t.mem);
  mask->insert(mask->end(), size_t(n), 1);
}

std::string passage_slots(const Tokens& t, int64_t k, int64_t n) {
  const std::string one = repeat(t.tokenizer->id_to_token(t.mem), n) +
                          (t.use_sep ? t.tokenizer->id_to_token(t.sep) : "");
  return repeat(one, k);
}

int64_t passage_slot_offset(const Tokens& t, int64_t first, int64_t j, int64_t n) {
  return first + j * (n + (t.use_sep ? 1 : 0));
}

std::string instruction(const std::string& question) { return "[INST]" + question + "\n[/INST]\n"; }

std::string qa_prompt(const Tokens& t, int64_t k, int64_t n, const std::string& question) {
  return t.bos() + passage_slots(t, k, n) + instruction(question);
}

std::string autoencoding_prompt(const Tokens& t, int64_t n) {
  if (n < 1) fail("an auto-encoding prompt needs at least one <MEM> slot");
  return t.tokenizer->id_to_token(t.ae) + t.bos() + repeat(t.tokenizer->id_to_token(t.mem), n);
}

std::string continuation_prompt(const Tokens& t, int64_t n) {
  return t.bos() + repeat(t.tokenizer->id_to_token(t.mem), n);
}

std::string closed_book_prompt(const Tokens& t, const std::string& question) {
  return t.bos() + instruction(question);
}

std::string uncompressed_prompt(const Tokens& t, const std::vector<std::string>& passages,
                                const std::string& question) {
  std::string docs;
  for (size_t i = 0; i < passages.size(); ++i) {
    docs += "Document " + std::to_string(i + 1) + ": " + passages[i] + "\n";
  }
  return t.bos() + "[INST]Answer the question briefly, using the documents.\n\n" + docs +
         "\nQuestion: " + question + "\n[/INST]\n";
}

}  // namespace cocom::format
