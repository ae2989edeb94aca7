#include "generate/cocom_generate.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>

#include "common/error.h"
#include "common/log.h"
#include "generate/stream_decoder.h"

namespace cocom::generate {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::mutex& observer_mu() {
  static std::mutex mu;
  return mu;
}
DecoderInputObserver& observer() {
  static DecoderInputObserver fn;
  return fn;
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// A checkpoint answers best with the number of passages it was trained with. Said once per
// process: a console or server asks many questions with the same k.
void warn_unusual_k(const model::CocomModel& m, int64_t k) {
  static std::atomic<bool> warned{false};
  if (k != m.config().generation_top_k && !warned.exchange(true)) {
    log::warn(
        "{} passages per question, but this checkpoint was trained with generation_top_k = {}", k,
        m.config().generation_top_k);
  }
}

int64_t check_contexts(const model::CocomModel& m,
                       const std::vector<std::vector<std::string>>& contexts,
                       const std::vector<std::string>& questions) {
  if (questions.empty()) fail("generate: no questions given");
  if (contexts.size() != questions.size()) {
    fail("generate: ", questions.size(), " questions but ", contexts.size(), " context lists");
  }
  const size_t k = contexts[0].size();
  if (k == 0) fail("generate: question 0 has no contexts");
  for (size_t q = 0; q < contexts.size(); ++q) {
    if (contexts[q].size() != k) {
      fail("generate: question ", q, " has ", contexts[q].size(), " contexts but question 0 has ",
           k, "; every question of a batch needs the same number");
    }
  }
  warn_unusual_k(m, static_cast<int64_t>(k));
  return static_cast<int64_t>(k);
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
  const format::Tokens t = m.tokens();
  DecoderInputs in;
  for (size_t q = 0; q < questions.size(); ++q) {
    if (blank(questions[q])) fail("generate: question ", q, " is empty");
    in.prompts.push_back(format::qa_prompt(t, k, n, questions[q]));
  }
  encode_prompts(m, &in);
  return in;
}

at::Tensor embed_with_contexts(const model::CocomModel& m, const DecoderInputs& in,
                               const at::Tensor& compressed, int64_t k) {
  const int64_t Q = in.input_ids.size(0);
  if (compressed.dim() != 3 || compressed.size(0) != Q * k) {
    fail("generate: expected context embeddings [", Q * k, ", n, ",
         m.decoder().config().hidden_size, "], got ", model::shape_str(compressed.sizes()));
  }
  const int64_t n = compressed.size(1);
  if (compressed.size(2) != m.decoder().config().hidden_size) {
    fail("generate: context embeddings have width ", compressed.size(2),
         " but the decoder's hidden size is ", m.decoder().config().hidden_size);
  }
  at::Tensor embeds = m.decoder().embed(in.input_ids).clone();
  const format::Tokens t = m.tokens();
  at::Tensor ctx = compressed.to(embeds.device(), at::kFloat);
  for (int64_t q = 0; q < Q; ++q) {
    at::Tensor row = in.input_ids[q];
    at::Tensor is_mem = (row >= t.mem) & (row < t.mem + t.mem_count);
    const int64_t count = is_mem.sum().item<int64_t>();
    if (count != k * n) {
      fail("generate: prompt ", q, " has ", count, " <MEM> slots, expected ", k * n,
           " (does the question contain the literal text <MEM>?)");
    }
    const int64_t first = is_mem.to(at::kLong).argmax().item<int64_t>();
    for (int64_t j = 0; j < k; ++j) {
      embeds[q].narrow(0, format::passage_slot_offset(t, first, j, n), n).copy_(ctx[q * k + j]);
    }
  }
  return embeds;
}

Answers generate_answers(const model::CocomModel& m, const at::Tensor& inputs_embeds,
                         const at::Tensor& attention_mask, const model::SamplingOptions& opt,
                         const model::TokenCallback& on_token) {
  {
    std::lock_guard<std::mutex> lock(observer_mu());
    if (observer()) observer()(inputs_embeds, attention_mask);
  }
  Answers a;
  model::SamplingOptions so = opt;
  const model::Tokenizer& tok = m.decoder_tokenizer();
  if (!so.eos_id && tok.eos_id() >= 0) so.eos_id = tok.eos_id();
  check_prompt_budget(m, inputs_embeds.size(0), inputs_embeds.size(1), so.max_new_tokens);
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

double generation_bytes(const model::CocomModel& m, int64_t batch, int64_t prompt_tokens,
                        int64_t max_new_tokens) {
  const model::DecoderConfig& c = m.decoder().config();
  const double B = double(batch), T = double(prompt_tokens), N = T + double(max_new_tokens);
  const double f = 4;  // the cache, scores and activations are fp32 whatever the weights
  const double scores = 2 * B * double(c.num_attention_heads) * T * T * f;  // scores + probs
  const double mask = B * T * T;                                            // bool, per prompt
  const double cache = 2 * double(c.num_hidden_layers) * B * double(c.num_key_value_heads) * N *
                       double(c.head_dim) * f;
  const double acts =
      B * T * (3 * double(c.intermediate_size) + 6 * double(c.hidden_size)) * f;  // MLP + residuals
  return scores + mask + cache + acts;
}

int64_t max_prompt_tokens(const model::CocomModel& m, int64_t max_new_tokens, int64_t batch) {
  int64_t hi = m.decoder().config().max_position_embeddings;
  if (hi < 1) return 0;
  const double budget = double(m.prompt_memory_bytes());
  if (generation_bytes(m, batch, hi, max_new_tokens) <= budget) return hi;
  int64_t lo = 0;  // largest length known to fit
  while (lo < hi - 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (generation_bytes(m, batch, mid, max_new_tokens) <= budget) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

void check_prompt_budget(const model::CocomModel& m, int64_t batch, int64_t prompt_tokens,
                         int64_t max_new_tokens, const std::string& what) {
  const int64_t positions = m.decoder().config().max_position_embeddings;
  if (prompt_tokens > positions) {
    fail(what, ": the prompt has ", prompt_tokens, " tokens, but the decoder has ", positions,
         " positions (max_position_embeddings)");
  }
  const double need = generation_bytes(m, batch, prompt_tokens, max_new_tokens);
  if (need > double(m.prompt_memory_bytes())) {
    const int64_t fits = max_prompt_tokens(m, max_new_tokens, batch);
    fail(what, ": ", batch == 1 ? "the prompt has " : "the prompts have ", prompt_tokens, " tokens",
         batch == 1 ? "" : " each (" + std::to_string(batch) + " of them)", ", needing about ",
         int64_t(need / double(1 << 20)), " MB to answer, over the prompt memory budget of ",
         m.prompt_memory_bytes() >> 20, " MB (prompt_memory_mb): at most ", fits,
         " prompt tokens fit");
  }
}

int64_t qa_prompt_tokens(const model::CocomModel& m, const std::string& question, int64_t k,
                         int64_t n) {
  const format::Tokens t = m.tokens();
  const int64_t one = static_cast<int64_t>(
      m.decoder_tokenizer().encode(format::qa_prompt(t, 1, n, question), false).size());
  return one + (k - 1) * (n + (t.use_sep ? 1 : 0));
}

int64_t max_passages(const model::CocomModel& m, const std::string& question, int64_t n,
                     int64_t max_new_tokens) {
  const int64_t one = qa_prompt_tokens(m, question, 1, n);
  const int64_t fits = max_prompt_tokens(m, max_new_tokens);
  if (fits < one) return 0;
  return 1 + (fits - one) / (n + (m.tokens().use_sep ? 1 : 0));
}

std::string uncompressed_prompt(const model::CocomModel& m,
                                const std::vector<std::string>& passages,
                                const std::string& question) {
  return format::uncompressed_prompt(m.tokens(), passages, question);
}

std::string closed_book_prompt(const model::CocomModel& m, const std::string& question) {
  return format::closed_book_prompt(m.tokens(), question);
}

std::string autoencoding_prompt(const model::CocomModel& m, int64_t mem_per_passage) {
  return format::autoencoding_prompt(m.tokens(), mem_per_passage);
}

void set_decoder_input_observer(DecoderInputObserver fn) {
  std::lock_guard<std::mutex> lock(observer_mu());
  observer() = std::move(fn);
}

PreparedAnswer prepare_answer(const model::CocomModel& m, const AnswerRequest& req) {
  if (blank(req.question)) fail("generate: the question is empty");
  const auto t_asm = Clock::now();
  DecoderInputs in;
  PreparedAnswer p;
  if (req.contexts.defined()) {
    const at::Tensor& c = req.contexts;
    if (c.dim() != 3 || c.size(0) < 1) {
      fail("answer: expected passage embeddings [k, n, H], got ", model::shape_str(c.sizes()));
    }
    const int64_t k = c.size(0), n = c.size(1);
    warn_unusual_k(m, k);
    in = decoder_prompts(m, {req.question}, k, n);
    check_prompt_budget(m, 1, in.input_ids.size(1), req.sampling.max_new_tokens, "answer");
    p.embeds = embed_with_contexts(m, in, c, k);
  } else {
    in.prompts.push_back(req.passages.empty() ? closed_book_prompt(m, req.question)
                                              : uncompressed_prompt(m, req.passages, req.question));
    encode_prompts(m, &in);
    check_prompt_budget(m, 1, in.input_ids.size(1), req.sampling.max_new_tokens, "answer");
    p.embeds = m.decoder().embed(in.input_ids);
  }
  p.attention_mask = in.attention_mask;
  p.sampling = req.sampling;
  const model::Tokenizer& tok = m.decoder_tokenizer();
  if (!p.sampling.eos_id && tok.eos_id() >= 0) p.sampling.eos_id = tok.eos_id();
  p.assembly_seconds = since(t_asm);
  return p;
}

AnswerResult answer(const model::CocomModel& m, const AnswerRequest& req) {
  const PreparedAnswer p = prepare_answer(m, req);
  AnswerResult r;
  r.assembly_seconds = p.assembly_seconds;

  std::unique_ptr<StreamDecoder> stream;
  model::TokenCallback step_cb;
  if (req.on_text) {
    stream = std::make_unique<StreamDecoder>(m.decoder_tokenizer());
    step_cb = [&](int64_t, const at::Tensor& next) {
      const std::string piece = stream->push(next[0].item<int64_t>());
      if (!piece.empty() && !req.on_text(piece)) r.cancelled = true;
      return !r.cancelled;
    };
  }
  Answers a = generate_answers(m, p.embeds, p.attention_mask, p.sampling, step_cb);
  r.text = a.texts.at(0);
  r.generation = std::move(a.generation);
  if (stream && !r.cancelled) {
    const std::string rest = stream->finish(r.text);
    if (!rest.empty()) req.on_text(rest);  // the generation is over: nothing left to stop
  }
  return r;
}

AnswerResult answer(const model::CocomModel& m, const std::string& question,
                    const at::Tensor& contexts, const model::SamplingOptions& sampling) {
  if (!contexts.defined()) fail("answer: no context embeddings given");
  AnswerRequest req;
  req.question = question;
  req.contexts = contexts;
  req.sampling = sampling;
  return answer(m, req);
}

TextGeneration generate_from_text(const model::CocomModel& m,
                                  const std::vector<std::vector<std::string>>& contexts,
                                  const std::vector<std::string>& questions,
                                  const TextGenerationOptions& opt) {
  const int64_t k = check_contexts(m, contexts, questions);
  std::vector<std::string> flat;
  for (const auto& c : contexts) flat.insert(flat.end(), c.begin(), c.end());
  TextGeneration r;
  const auto t0 = Clock::now();
  r.encoder = compress::encoder_inputs(m, flat, opt.context_max_length, compress::Padding::Longest);
  r.compressed = compress::compress(m, r.encoder);
  r.compress_seconds = since(t0);
  r.decoder = decoder_prompts(m, questions, k, r.encoder.mem_per_passage);
  r.decoder_embeds = embed_with_contexts(m, r.decoder, r.compressed, k);
  r.answers = generate_answers(m, r.decoder_embeds, r.decoder.attention_mask, opt.sampling);
  return r;
}

TextGeneration generate_uncompressed(const model::CocomModel& m,
                                     const std::vector<std::vector<std::string>>& contexts,
                                     const std::vector<std::string>& questions,
                                     const TextGenerationOptions& opt) {
  check_contexts(m, contexts, questions);
  TextGeneration r;
  for (size_t q = 0; q < questions.size(); ++q) {
    if (blank(questions[q])) fail("generate: question ", q, " is empty");
    r.decoder.prompts.push_back(uncompressed_prompt(m, contexts[q], questions[q]));
  }
  encode_prompts(m, &r.decoder);
  r.decoder_embeds = m.decoder().embed(r.decoder.input_ids);
  r.answers = generate_answers(m, r.decoder_embeds, r.decoder.attention_mask, opt.sampling);
  return r;
}

}  // namespace cocom::generate
