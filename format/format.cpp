#include "format/format.h"

#include "common/error.h"

namespace cocom::format {

const std::vector<std::string> kSpecialTokens = {"<MEM>", "<AE>", "<ENC>", "<SEP>"};

const char* const kPiscoSystemPrompt =
    "You are a helpful assistant. Your task is to extract relevant information from provided "
    "documents and to answer to questions as briefly as possible.";

std::vector<std::string> pisco_special_tokens(int64_t n) {
  if (n < 1) fail("PISCO: ", n, " memory tokens (doc_max_length / compr_rate must be at least 1)");
  std::vector<std::string> out;
  for (int64_t j = 0; j < n; ++j) out.push_back("<MEM" + std::to_string(j) + ">");
  out.insert(out.end(), {"<AE>", "<ENC>", "<SEP>"});
  return out;
}

namespace {

std::string repeat(const std::string& s, int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) out += s;
  return out;
}

bool pisco(const Tokens& t) { return t.family == Family::Pisco; }

// A passage's n slot tokens as text.
std::string slot_text(const Tokens& t, int64_t n) {
  if (!pisco(t)) return repeat(t.tokenizer->id_to_token(t.mem), n);
  if (n != t.mem_count) {
    fail("PISCO: ", n, " slots per passage asked, the model has ", t.mem_count, " memory tokens");
  }
  std::string out;
  for (int64_t j = 0; j < n; ++j) out += t.tokenizer->id_to_token(t.slot_id(j));
  return out;
}

void replace_all(std::string* s, const std::string& from, const std::string& to) {
  for (size_t p = s->find(from); p != std::string::npos; p = s->find(from, p + to.size())) {
    s->replace(p, from.size(), to);
  }
}

// '<s> [INST] ' + system + '\n\n' + user + ' [/INST]' (the published PISCO prompt).
std::string pisco_prompt(const Tokens& t, std::string user) {
  replace_all(&user, ":\\ ", ": ");
  return t.bos() + " [INST] " + kPiscoSystemPrompt + "\n\n" + user + " [/INST]";
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

Tokens Tokens::pisco(const model::Tokenizer& tok, int64_t n) {
  Tokens t;
  t.tokenizer = &tok;
  t.use_sep = true;
  t.family = Family::Pisco;
  t.mem_count = n;
  const std::vector<std::string> names = pisco_special_tokens(n);
  std::vector<int64_t> ids;
  for (const auto& name : names) {
    const auto id = tok.token_to_id(name);
    if (!id) fail("the decoder tokenizer lacks the PISCO token ", name);
    ids.push_back(*id);
  }
  for (size_t i = 1; i < ids.size(); ++i) {
    if (ids[i] != ids[0] + int64_t(i)) {
      fail("the PISCO tokens ", names.front(), " .. ", names.back(),
           " do not have consecutive ids");
    }
  }
  t.mem = ids[0];
  t.ae = ids[size_t(n)];
  t.enc = ids[size_t(n) + 1];
  t.sep = ids[size_t(n) + 2];
  if (tok.bos_id() < 0 || tok.eos_id() < 0) fail("the decoder tokenizer has no <s> or </s> token");
  return t;
}

int64_t Tokens::slot_id(int64_t j) const {
  if (family == Family::Cocom) return mem;
  if (j < 0 || j >= mem_count) fail("PISCO: no memory token <MEM", j, ">");
  return mem + j;
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
  if (pisco(t) && n != t.mem_count) {
    fail("PISCO: ", n, " slots per passage asked, the model has ", t.mem_count, " memory tokens");
  }
  for (int64_t j = 0; j < n; ++j) ids->push_back(t.slot_id(j));
  mask->insert(mask->end(), size_t(n), 1);
}

std::string passage_slots(const Tokens& t, int64_t k, int64_t n) {
  const std::string one = slot_text(t, n) + (t.use_sep ? t.tokenizer->id_to_token(t.sep) : "");
  return repeat(one, k);
}

int64_t passage_slot_offset(const Tokens& t, int64_t first, int64_t j, int64_t n) {
  return first + j * (n + (t.use_sep ? 1 : 0));
}

std::string instruction(const std::string& question) { return "[INST]" + question + "\n[/INST]\n"; }

std::string qa_prompt(const Tokens& t, int64_t k, int64_t n, const std::string& question) {
  if (pisco(t)) {
    return pisco_prompt(t, "Background:\n" + passage_slots(t, k, n) + "\n\nQuestion:" + question);
  }
  return t.bos() + passage_slots(t, k, n) + instruction(question);
}

std::string autoencoding_prompt(const Tokens& t, int64_t n) {
  if (n < 1) fail("an auto-encoding prompt needs at least one <MEM> slot");
  return t.tokenizer->id_to_token(t.ae) + t.bos() + slot_text(t, n);
}

std::string continuation_prompt(const Tokens& t, int64_t n) { return t.bos() + slot_text(t, n); }

std::string closed_book_prompt(const Tokens& t, const std::string& question) {
  if (pisco(t)) return pisco_prompt(t, "Question:" + question);
  return t.bos() + instruction(question);
}

std::string uncompressed_prompt(const Tokens& t, const std::vector<std::string>& passages,
                                const std::string& question) {
  if (pisco(t)) {
    std::string docs;
    for (const auto& p : passages) docs += p + "\n";
    return pisco_prompt(t, "Background:\n" + docs + "\nQuestion:" + question);
  }
  std::string docs;
  for (size_t i = 0; i < passages.size(); ++i) {
    docs += "Document " + std::to_string(i + 1) + ": " + passages[i] + "\n";
  }
  return t.bos() + "[INST]Answer the question briefly, using the documents.\n\n" + docs +
         "\nQuestion: " + question + "\n[/INST]\n";
}

}  // namespace cocom::format
