#include "generate/batcher.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <exception>

#include "common/error.h"
#include "common/log.h"
#include "generate/stream_decoder.h"

namespace cocom::generate {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
// Prompt tokens (padding included) prefilled in one forward pass at most.
constexpr int64_t kPrefillTokens = 4096;

int64_t pick(const at::Tensor& logits_row, const model::SamplingOptions& so, at::Generator* gen) {
  at::Tensor l = logits_row;  // [1, V]
  if (so.vocab_limit > 0 && so.vocab_limit < l.size(-1)) l = l.narrow(-1, 0, so.vocab_limit);
  return model::select_next_tokens(l, so, gen)[0].item<int64_t>();
}
}  // namespace

struct Batcher::Sequence {
  const AnswerRequest* request = nullptr;
  PreparedAnswer in;
  model::KVCache cache;
  at::Generator gen;
  std::unique_ptr<StreamDecoder> stream;
  std::vector<int64_t> tokens;
  int64_t next_position = 0;
  bool done = false;      // no more tokens to generate
  bool complete = false;  // result handed back (guarded by mu_)
  AnswerResult result;
  std::exception_ptr error;
  Clock::time_point first_token;
  std::condition_variable* done_cv = nullptr;
};

Batcher::Batcher(std::shared_ptr<const model::CocomModel> model, int max_batch)
    : model_(std::move(model)), max_batch_(max_batch) {
  if (!model_) fail("Batcher: no model");
  if (max_batch_ < 1) fail("Batcher: max_batch ", max_batch_, ": must be at least 1");
  stats_.steps_by_batch.assign(size_t(max_batch_) + 1, 0);
  thread_ = std::thread([this] { run(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

BatcherStats Batcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

AnswerResult Batcher::answer(const AnswerRequest& request) {
  Sequence s;
  s.request = &request;
  s.in = prepare_answer(*model_, request);
  s.result.assembly_seconds = s.in.assembly_seconds;
  if (s.in.sampling.max_new_tokens <= 0) {
    s.result.generation.tokens = at::empty({1, 0}, at::kLong);
    return std::move(s.result);
  }
  std::condition_variable done_cv;
  s.done_cv = &done_cv;
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) {
    s.result.cancelled = true;
    s.result.generation.tokens = at::empty({1, 0}, at::kLong);
    return std::move(s.result);
  }
  waiting_.push_back(&s);
  stats_.waiting = static_cast<int64_t>(waiting_.size());
  wake_.notify_all();
  done_cv.wait(lock, [&] { return s.complete; });
  lock.unlock();
  if (s.error) std::rethrow_exception(s.error);
  return std::move(s.result);
}

void Batcher::run() {
  std::vector<Sequence*> running;
  for (;;) {
    std::vector<Sequence*> admit;
    bool stop = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !running.empty(); });
      if (stopping_) {
        stop = true;
        admit.assign(waiting_.begin(), waiting_.end());
        waiting_.clear();
      } else {
        while (!waiting_.empty() && running.size() + admit.size() < size_t(max_batch_)) {
          admit.push_back(waiting_.front());
          waiting_.pop_front();
        }
      }
      stats_.waiting = static_cast<int64_t>(waiting_.size());
    }
    if (stop) {
      // Everything still waiting or running is cancelled: the callers get what was made.
      for (Sequence* s : admit) {
        s->result.cancelled = true;
        finish(*s);
      }
      for (Sequence* s : running) {
        s->result.cancelled = true;
        finish(*s);
      }
      return;
    }
    const auto t0 = Clock::now();
    // New requests are prefilled together, in groups of at most kPrefillTokens prompt tokens.
    for (size_t first = 0; first < admit.size();) {
      size_t end = first + 1;
      int64_t longest = admit[first]->in.embeds.size(1);
      while (end < admit.size()) {
        const int64_t l = std::max(longest, admit[end]->in.embeds.size(1));
        if (l * int64_t(end + 1 - first) > kPrefillTokens) break;
        longest = l;
        ++end;
      }
      std::vector<Sequence*> group(admit.begin() + long(first), admit.begin() + long(end));
      first = end;
      try {
        prefill(group);
      } catch (...) {
        for (Sequence* s : group) finish(*s, std::current_exception());
        continue;
      }
      for (Sequence* s : group) {
        if (s->done) {
          finish(*s);
        } else {
          running.push_back(s);
        }
      }
    }
    if (!running.empty()) {
      try {
        step(running);
      } catch (...) {
        // A failed step leaves every cache in an unknown state: all its sequences fail.
        for (Sequence* s : running) finish(*s, std::current_exception());
        running.clear();
      }
      std::vector<Sequence*> still, over;
      for (Sequence* s : running) (s->done ? over : still).push_back(s);
      running.swap(still);
      {
        // Counted before the callers are woken: a caller that reads stats() after its
        // answer returned sees it gone.
        std::lock_guard<std::mutex> lock(mu_);
        stats_.running = static_cast<int64_t>(running.size());
      }
      for (Sequence* s : over) finish(*s);
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.prefills += static_cast<int64_t>(admit.size());
    stats_.running = static_cast<int64_t>(running.size());
    stats_.busy_seconds += since(t0);
  }
}

void Batcher::prefill(const std::vector<Sequence*>& group) {
  const model::MistralModel& dec = model_->decoder();
  const int64_t B = static_cast<int64_t>(group.size());
  int64_t L = 0;
  for (Sequence* s : group) L = std::max(L, s->in.embeds.size(1));
  // Left-padded like a batch of generate(): pads are hidden keys, positions count tokens.
  at::Tensor embeds, mask;
  if (B == 1) {
    embeds = group[0]->in.embeds;
    mask = group[0]->in.attention_mask.to(dec.device(), at::kLong);
  } else {
    const int64_t H = group[0]->in.embeds.size(2);
    embeds = at::zeros({B, L, H}, group[0]->in.embeds.options().dtype(at::kFloat));
    mask = at::zeros({B, L}, at::TensorOptions().dtype(at::kLong).device(dec.device()));
    for (int64_t b = 0; b < B; ++b) {
      const Sequence& s = *group[size_t(b)];
      const int64_t l = s.in.embeds.size(1);
      embeds[b].narrow(0, L - l, l).copy_(s.in.embeds[0]);
      mask[b].narrow(0, L - l, l).copy_(s.in.attention_mask[0]);
    }
  }
  const auto t0 = Clock::now();
  model::KVCache shared = dec.make_cache(B, L);
  model::DecoderForwardOptions fo;
  fo.last_logits_only = true;
  const at::Tensor pos = model::MistralModel::cumsum_positions(mask);
  model::DecoderOutput out = dec.forward_embeds(embeds, mask, pos, &shared, fo);
  const double seconds = since(t0);
  for (int64_t b = 0; b < B; ++b) {
    Sequence& s = *group[size_t(b)];
    // The sequence's own cache: its row of the group's, with room for its answer.
    s.cache = dec.make_cache(1, L + s.in.sampling.max_new_tokens);
    for (size_t l = 0; l < shared.k.size(); ++l) {
      s.cache.k[l].narrow(2, 0, L).copy_(shared.k[l].narrow(0, b, 1));
      s.cache.v[l].narrow(2, 0, L).copy_(shared.v[l].narrow(0, b, 1));
    }
    s.cache.key_mask.narrow(1, 0, L).copy_(shared.key_mask.narrow(0, b, 1));
    s.cache.length = L;
    s.gen = at::make_generator<at::CPUGeneratorImpl>(s.in.sampling.seed);
    if (s.request->on_text) s.stream = std::make_unique<StreamDecoder>(model_->decoder_tokenizer());
    s.result.generation.prompt_tokens = s.in.attention_mask.sum().item<int64_t>();
    s.next_position = pos[b][L - 1].item<int64_t>() + 1;
    const int64_t token = pick(out.logits.select(1, 0).narrow(0, b, 1), s.in.sampling, &s.gen);
    s.result.generation.prefill_seconds = seconds;
    s.first_token = Clock::now();
    try {
      accept(s, token);
    } catch (...) {
      s.error = std::current_exception();
      s.done = true;
    }
  }
}

void Batcher::step(std::vector<Sequence*>& running) {
  const int64_t B = static_cast<int64_t>(running.size());
  at::Tensor tokens = at::empty({B}, at::kLong), positions = at::empty({B}, at::kLong);
  std::vector<model::KVCache*> caches;
  for (int64_t b = 0; b < B; ++b) {
    Sequence& s = *running[size_t(b)];
    tokens[b] = s.tokens.back();
    positions[b] = s.next_position;
    caches.push_back(&s.cache);
  }
  const at::Tensor logits = model_->decoder().decode_step(tokens, positions, caches);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.steps += 1;
    stats_.sequences_stepped += B;
    stats_.steps_by_batch[size_t(B)] += 1;
  }
  for (int64_t b = 0; b < B; ++b) {
    Sequence& s = *running[size_t(b)];
    s.next_position += 1;
    try {
      accept(s, pick(logits.narrow(0, b, 1), s.in.sampling, &s.gen));
    } catch (...) {
      s.error = std::current_exception();
      s.done = true;
    }
  }
}

void Batcher::accept(Sequence& s, int64_t token) {
  s.tokens.push_back(token);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.tokens += 1;
  }
  if (s.stream) {
    const std::string piece = s.stream->push(token);
    if (!piece.empty() && !s.request->on_text(piece)) s.result.cancelled = true;
  }
  const int64_t eos = s.in.sampling.eos_id.value_or(model_->decoder().config().eos_token_id);
  if (s.result.cancelled || token == eos ||
      static_cast<int64_t>(s.tokens.size()) >= s.in.sampling.max_new_tokens) {
    s.done = true;
  }
}

void Batcher::finish(Sequence& s, std::exception_ptr error) {
  if (!error) error = s.error;
  if (!error) {
    try {
      AnswerResult& r = s.result;
      r.generation.tokens = at::empty({1, static_cast<int64_t>(s.tokens.size())}, at::kLong);
      std::copy(s.tokens.begin(), s.tokens.end(), r.generation.tokens.data_ptr<int64_t>());
      if (!s.tokens.empty()) r.generation.decode_seconds = since(s.first_token);
      r.text = model_->decoder_tokenizer().decode(s.tokens, /*skip_special_tokens=*/true);
      if (s.stream && !r.cancelled) {
        const std::string rest = s.stream->finish(r.text);
        if (!rest.empty()) s.request->on_text(rest);  // the generation is over
      }
    } catch (...) {
      error = std::current_exception();
    }
  }
  std::condition_variable* cv = s.done_cv;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.error = error;
    s.complete = true;
    stats_.completed += 1;
    // `s` belongs to the waiting caller: it may be gone as soon as the lock is released.
    cv->notify_all();
  }
}

}  // namespace cocom::generate
