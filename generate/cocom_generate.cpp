#include "generate/cocom_generate.h"

#include "common/error.h"

namespace cocom::generate {

namespace {

// The question part of every decoder prompt (compressed, closed-book).
std::string instruction(const std::string& question) {
  return "[INST]" + question + "\n[/INST]\n";
}

}  // namespace

void encode_prompts(const model::CocomModel& m, DecoderInputs* in) {
  model::BatchEncodeOptions o;
  o.add_special_tokens = false;  // the prompts carry their own <s>
  o.padding_side = model::PaddingSide::Left;
  model::BatchEncoding enc = m.decoder_tokenizer().encode_batch(in->prompts, o);
  const int64_t Q = static_cast<int64_t>(in->prompts.size());
  const int64_t L = static_cast<int64_t>(enc.input_ids[0].size());
  in->input_ids = at::empty({Q, L}, at::kLong);
  in->attention_mask = at::empty({Q, L}, at::kLong);
  for (int64_t i = 0; i < Q; ++i) {
    std::copy(enc.input_ids[size_t(i)].begin(), enc.input_ids[size_t(i)].end(),
              in->input_ids[i].data_ptr<int64_t>());
    std::copy(enc.attention_mask[size_t(i)].begin(), enc.attention_mask[size_t(i)].end(),
              in->attention_mask[i].data_ptr<int64_t>());
  }
}

DecoderInputs decoder_prompts(const model::CocomModel& m, const std::vector<std::string>& questions,
                              int64_t k, int64_t n) {
  if (questions.empty()) fail("generate: no questions given");
  if (k < 1) fail("generate: each question needs at least one passage");
  const model::Tokenizer& tok = m.decoder_tokenizer();
  const std::string mem = tok.id_to_token(m.mem_id()), sep = tok.id_to_token(m.sep_id());
  std::string slots;
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t i = 0; i < n; ++i) slots += mem;
    if (m.config().sep) slots += sep;
  }
  DecoderInputs in;
  for (size_t q = 0; q < questions.size(); ++q) {
    if (questions[q].find_first_not_of(" \t\r\n") == std::string::npos) {
      fail("generate: question ", q, " is empty");
    }
    in.prompts.push_back(tok.id_to_token(tok.bos_id()) + slots + instruction(questions[q]));
  }
  encode_prompts(m, &in);
  return in;
}

at::Tensor embed_with_contexts(const model::CocomModel& m, const DecoderInputs& in,
                               const at::Tensor& compressed, int64_t k) {
  const int64_t Q = in.input_ids.size(0);
  if (compressed.dim() != 3 || compressed.size(0) != Q * k) {
    fail("generate: expected context embeddings [", Q * k, ", n, ", m.decoder().config().hidden_size,
         "], got ", model::shape_str(compressed.sizes()));
  }
  const int64_t n = compressed.size(1);
  if (compressed.size(2) != m.decoder().config().hidden_size) {
    fail("generate: context embeddings have width ", compressed.size(2), " but the decoder's hidden size is ",
         m.decoder().config().hidden_size);
  }
  at::Tensor embeds = m.decoder().embed(in.input_ids).clone();
  const int64_t stride = n + (m.config().sep ? 1 : 0);
  at::Tensor ctx = compressed.to(embeds.device(), at::kFloat);
  for (int64_t q = 0; q < Q; ++q) {
    at::Tensor row = in.input_ids[q];
    at::Tensor is_mem = row == m.mem_id();
    const int64_t count = is_mem.sum().item<int64_t>();
    if (count != k * n) {
      fail("generate: prompt ", q, " has ", count, " <MEM> slots, expected ", k * n,
           " (does the question contain the literal text <MEM>?)");
    }
    const int64_t first = is_mem.to(at::kLong).argmax().item<int64_t>();
    for (int64_t j = 0; j < k; ++j) {
      embeds[q].narrow(0, first + j * stride, n).copy_(ctx[q * k + j]);
    }
  }
  return embeds;
}

Answers generate_answers(const model::CocomModel& m, const at::Tensor& inputs_embeds,
                         const at::Tensor& attention_mask, const model::SamplingOptions& opt,
                         const model::TokenCallback& on_token) {
  Answers a;
  model::SamplingOptions so = opt;
  const model::Tokenizer& tok = m.decoder_tokenizer();
  if (!so.eos_id && tok.eos_id() >= 0) so.eos_id = tok.eos_id();
  a.generation = model::generate(m.decoder(), inputs_embeds, attention_mask, so, on_token);
  for (int64_t q = 0; q < a.generation.tokens.size(0); ++q) {
    std::vector<int64_t> ids;
    for (int64_t t = 0; t < a.generation.tokens.size(1); ++t) {
      ids.push_back(a.generation.tokens[q][t].item<int64_t>());
    }
    a.texts.push_back(tok.decode(ids, /*skip_special_tokens=*/true));
  }
  return a;
}

std::string uncompressed_prompt(const model::CocomModel& m, const std::vector<std::string>& passages,
                                const std::string& question) {
  const model::Tokenizer& tok = m.decoder_tokenizer();
  std::string docs;
  for (size_t i = 0; i < passages.size(); ++i) {
    docs += "Document " + std::to_string(i + 1) + ": " + passages[i] + "\n";
  }
  return tok.id_to_token(tok.bos_id()) + "[INST]Answer the question briefly, using the documents.\n\n" +
         docs + "\nQuestion: " + question + "\n[/INST]\n";
}

std::string closed_book_prompt(const model::CocomModel& m, const std::string& question) {
  const model::Tokenizer& tok = m.decoder_tokenizer();
  return tok.id_to_token(tok.bos_id()) + instruction(question);
}

std::string autoencoding_prompt(const model::CocomModel& m, int64_t mem_per_passage) {
  if (mem_per_passage < 1) fail("generate: an auto-encoding prompt needs at least one <MEM> slot");
  const model::Tokenizer& tok = m.decoder_tokenizer();
  std::string p = tok.id_to_token(m.ae_id()) + tok.id_to_token(tok.bos_id());
  for (int64_t i = 0; i < mem_per_passage; ++i) p += tok.id_to_token(m.mem_id());
  return p;
}

}  // namespace cocom::generate
