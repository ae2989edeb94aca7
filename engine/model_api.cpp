// The public Model (include/cocom/cocom.h): a loaded COCOM checkpoint shared by Engines and
// usable without a store, and the pieces of the answer path both Model and Engine run.
#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "cocom/cocom.h"
#include "common/json_util.h"
#include "engine/api_internal.h"
#include "engine/knowledge_store.h"
#include "model/fingerprint.h"
#include "model/runtime.h"

namespace cocom {

using namespace api;  // NOLINT: this file is the API layer

struct Model::Impl {
  std::shared_ptr<const model::CocomModel> m;
  ModelInfo info;
  // Continuous batching of concurrent answers (ModelOptions::max_batch > 0).
  std::unique_ptr<generate::Batcher> batcher;
};

namespace api {

model::WeightFormat to_internal(WeightFormat f) {
  switch (f) {
    case WeightFormat::kBf16:
      return model::WeightFormat::bf16;
    case WeightFormat::kInt8:
      return model::WeightFormat::int8;
    case WeightFormat::kInt8g:
      return model::WeightFormat::int8g;
    case WeightFormat::kFp32:
      break;
  }
  return model::WeightFormat::fp32;
}

WeightFormat to_public(model::WeightFormat f) {
  switch (f) {
    case model::WeightFormat::bf16:
      return WeightFormat::kBf16;
    case model::WeightFormat::int8:
      return WeightFormat::kInt8;
    case model::WeightFormat::int8g:
      return WeightFormat::kInt8g;
    case model::WeightFormat::fp32:
      break;
  }
  return WeightFormat::kFp32;
}

storage::EmbeddingDType to_internal(EmbeddingDType d) {
  switch (d) {
    case EmbeddingDType::kBf16:
      return storage::EmbeddingDType::BF16;
    case EmbeddingDType::kFp32:
      return storage::EmbeddingDType::F32;
    case EmbeddingDType::kInt8:
      return storage::EmbeddingDType::I8;
    case EmbeddingDType::kFp16:
      break;
  }
  return storage::EmbeddingDType::F16;
}

EmbeddingDType to_public(storage::EmbeddingDType d) {
  switch (d) {
    case storage::EmbeddingDType::BF16:
      return EmbeddingDType::kBf16;
    case storage::EmbeddingDType::F32:
      return EmbeddingDType::kFp32;
    case storage::EmbeddingDType::I8:
      return EmbeddingDType::kInt8;
    case storage::EmbeddingDType::F16:
      break;
  }
  return EmbeddingDType::kFp16;
}

void configure_logging(const std::optional<LogLevel>& level, const LogCallback& callback,
                       bool verbose) {
  if (!level && !callback && !verbose) return;
  LogLevel l = verbose ? LogLevel::kDebug : level.value_or(LogLevel::kWarn);
  log::Sink sink;
  if (callback) {
    sink = [callback](log::Level lv, const std::string& msg) {
      callback(static_cast<LogLevel>(static_cast<int>(lv)), msg);
    };
  }
  log::configure(static_cast<log::Level>(static_cast<int>(l)), std::move(sink));
}

model::SamplingOptions to_sampling(const GenerationOptions& g) {
  model::SamplingOptions so;
  so.max_new_tokens = g.max_new_tokens;
  so.temperature = g.temperature;
  so.top_k = g.top_k;
  so.top_p = g.top_p;
  so.seed = g.seed;
  return so;
}

AnswerRun run_answer(const model::CocomModel& m, generate::AnswerRequest req,
                     const GenerationOptions& g, const TokenCallback* on_token,
                     generate::Batcher* batcher) {
  const auto t0 = Clock::now();
  req.sampling = to_sampling(g);
  if (on_token) req.on_text = *on_token;
  generate::AnswerResult res = batcher ? batcher->answer(req) : generate::answer(m, req);
  AnswerRun run;
  run.text = std::move(res.text);
  run.cancelled = res.cancelled;
  const model::GenerationResult& gr = res.generation;
  Timings& t = run.timings;
  t.prefill_ms = (res.assembly_seconds + gr.prefill_seconds) * 1e3;
  t.decode_ms = gr.decode_seconds * 1e3;
  t.prompt_tokens = gr.prompt_tokens;
  t.generated_tokens = gr.tokens.defined() ? gr.tokens.size(1) : 0;
  if (t.generated_tokens > 1 && gr.decode_seconds > 0) {
    t.decode_tokens_per_second = double(t.generated_tokens - 1) / gr.decode_seconds;
  }
  t.total_ms = ms_since(t0);
  return run;
}

at::Tensor contexts_tensor(const model::CocomModel& m, const ContextEmbeddings& c,
                           const std::string& what) {
  auto bad = [&](const std::string& why) {
    throw_status(Status::InvalidArgument(what + " " + why));
  };
  const int64_t H = m.decoder().config().hidden_size;
  if (c.count < 1) bad("holds no passage (count " + std::to_string(c.count) + ")");
  if (c.vectors < 1) bad("has " + std::to_string(c.vectors) + " vectors per passage");
  if (c.dim != H) {
    bad("has width " + std::to_string(c.dim) + " but this model's embeddings are " +
        std::to_string(H) + " wide (made by another model?)");
  }
  const int64_t slots = c.count * (c.vectors + (m.config().sep ? 1 : 0));
  const int64_t max_pos = m.decoder().config().max_position_embeddings;
  if (max_pos > 0 && slots >= max_pos) {
    bad("needs " + std::to_string(slots) + " prompt positions, more than the decoder's " +
        std::to_string(max_pos));
  }
  if (static_cast<int64_t>(c.data.size()) != c.count * c.vectors * c.dim) {
    bad("has " + std::to_string(c.data.size()) +
        " values, but count x vectors x dim = " + std::to_string(c.count * c.vectors * c.dim));
  }
  for (size_t i = 0; i < c.data.size(); ++i) {
    if (!std::isfinite(c.data[i])) {
      bad("value " + std::to_string(i) + " (passage " +
          std::to_string(int64_t(i) / (c.vectors * c.dim)) + ") is not finite");
    }
  }
  at::Tensor t = at::empty({c.count, c.vectors, c.dim}, at::kFloat);
  std::copy(c.data.begin(), c.data.end(), t.data_ptr<float>());
  return t.to(m.decoder().device());
}

}  // namespace api

std::shared_ptr<Model> InternalAccess::wrap_model(std::shared_ptr<const model::CocomModel> m,
                                                  const std::string& device) {
  auto impl = std::make_unique<Model::Impl>();
  ModelInfo& i = impl->info;
  i.model_dir = m->dir();
  i.fingerprint = model::checkpoint_fingerprint(m->dir());
  i.compressor = m->config().light() ? "bert" : "decoder";
  i.compression_rate = m->config().compr_rate;
  i.embedding_dim = m->decoder().config().hidden_size;
  i.generation_top_k = m->config().generation_top_k;
  i.max_positions = m->decoder().config().max_position_embeddings;
  i.weights = to_public(m->decoder().weight_format());
  i.device = device;
  i.decoder_parameters = m->decoder().parameter_count();
  i.load_seconds = m->load_seconds();
  impl->m = std::move(m);
  return std::shared_ptr<Model>(new Model(std::move(impl)));
}

std::optional<WeightFormat> ParseWeightFormat(const std::string& name) {
  const auto f = model::parse_weight_format(name);
  if (!f) return std::nullopt;
  return to_public(*f);
}

const char* WeightFormatName(WeightFormat f) { return model::weight_format_name(to_internal(f)); }

std::optional<EmbeddingDType> ParseEmbeddingDType(const std::string& name) {
  const auto d = storage::parse_embedding_dtype(name == "float16" ? "fp16" : name);
  if (!d) return std::nullopt;
  return to_public(*d);
}

const char* EmbeddingDTypeName(EmbeddingDType d) {
  return storage::embedding_dtype_name(to_internal(d));
}

std::shared_ptr<const model::CocomModel> InternalAccess::cocom_model(const Model& m) {
  return m.impl_->m;
}

generate::Batcher* InternalAccess::batcher(const Model& m) { return m.impl_->batcher.get(); }

ModelStats Model::Stats() const {
  ModelStats st;
  if (!impl_->batcher) return st;
  const generate::BatcherStats b = impl_->batcher->stats();
  st.max_batch = impl_->batcher->max_batch();
  st.answers = b.completed;
  st.decode_steps = b.steps;
  st.sequences_stepped = b.sequences_stepped;
  st.steps_by_batch = b.steps_by_batch;
  st.generated_tokens = b.tokens;
  st.waiting = b.waiting;
  st.running = b.running;
  st.busy_seconds = b.busy_seconds;
  return st;
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

const ModelInfo& Model::Info() const { return impl_->info; }

Status Model::Open(const ModelOptions& o, std::shared_ptr<Model>* out) {
  if (out == nullptr) return Status::InvalidArgument("Model::Open: the model pointer is null");
  out->reset();
  return guard("Model::Open", [&] {
    auto bad = [](const std::string& m) { throw_status(Status::InvalidArgument(m)); };
    if (o.threads < 0) {
      bad("ModelOptions::threads " + std::to_string(o.threads) +
          ": must be 0 (all cores) or positive");
    }
    c10::Device device = c10::kCPU;
    try {
      device = model::parse_device(o.device);
    } catch (const Error& e) {
      bad("ModelOptions::device '" + o.device + "': " + e.what());
    }
    configure_logging(o.log_level, o.log_callback, false);
    model::RuntimeOptions ro;
    ro.threads = o.threads;
    ro.device = o.device;
    model::init_runtime(ro);
    std::string dir = o.model_dir.empty() ? DefaultModelDir() : o.model_dir;
    if (dir.empty()) {
      bad("ModelOptions::model_dir is empty and no default model was found "
          "(COCOM_DEFAULT_MODEL, the installed or the source tree's models/default)");
    }
    if (!dir_exists(dir)) {
      throw_status(Status::NotFound("ModelOptions::model_dir " + dir +
                                    ": no such directory (a COCOM checkpoint directory)"));
    }
    for (const auto* t : {&o.decoder_tokenizer, &o.compressor_tokenizer}) {
      if (!t->empty() && !dir_exists(*t)) {
        throw_status(Status::NotFound(std::string(t == &o.decoder_tokenizer
                                                      ? "ModelOptions::decoder_tokenizer "
                                                      : "ModelOptions::compressor_tokenizer ") +
                                      *t + ": no such directory"));
      }
    }
    model::CocomLoadOptions lo;
    lo.decoder_tokenizer = o.decoder_tokenizer;
    lo.compressor_tokenizer = o.compressor_tokenizer;
    lo.device = device;
    lo.decoder_weights = to_internal(o.weights);
    if (o.prompt_memory_mb < 1) {
      throw_status(Status::InvalidArgument("ModelOptions::prompt_memory_mb " +
                                           std::to_string(o.prompt_memory_mb) +
                                           ": must be at least 1 (MB)"));
    }
    lo.prompt_memory_mb = o.prompt_memory_mb;
    std::shared_ptr<const model::CocomModel> m = model::CocomModel::load(dir, lo);
    std::shared_ptr<Model> wrapped = InternalAccess::wrap_model(m, o.device);
    if (o.max_batch > 0) {
      wrapped->impl_->batcher = std::make_unique<generate::Batcher>(std::move(m), o.max_batch);
    }
    *out = std::move(wrapped);
  });
}

Result<ContextEmbeddings> Model::Compress(const std::vector<std::string>& passages,
                                          const CompressOptions& options) const {
  ContextEmbeddings out;
  Status s = guard("Compress", [&] {
    auto bad = [](const std::string& m) { throw_status(Status::InvalidArgument(m)); };
    if (passages.empty()) bad("no passages given");
    if (options.context_max_length < 8 || options.context_max_length > 8192) {
      bad("CompressOptions::context_max_length " + std::to_string(options.context_max_length) +
          ": must be between 8 and 8192 compressor tokens (the published models use 128)");
    }
    if (options.batch_size < 1) {
      bad("CompressOptions::batch_size " + std::to_string(options.batch_size) +
          ": must be at least 1");
    }
    const model::CocomModel& m = *impl_->m;
    at::Tensor e =
        compress::compress_passages(m, passages, options.context_max_length, options.batch_size)
            .to(at::kCPU, at::kFloat)
            .contiguous();
    out.count = e.size(0);
    out.vectors = e.size(1);
    out.dim = e.size(2);
    out.data.assign(e.data_ptr<float>(), e.data_ptr<float>() + e.numel());
  });
  if (!s.ok()) return s;
  return out;
}

namespace {

// Model::Generate and GenerateFromText: checks, the one answer loop, the public result.
// `fill` completes the request (contexts or passages) once the question is known to be good.
Result<Generation> generate_with(const char* what, const model::CocomModel& m,
                                 generate::Batcher* batcher, const std::string& question,
                                 const GenerationOptions& options, const TokenCallback& on_token,
                                 const std::function<void(generate::AnswerRequest*)>& fill) {
  Generation g;
  Status s = guard(what, [&] {
    if (question.find_first_not_of(" \t\r\n") == std::string::npos) {
      throw_status(Status::InvalidArgument("the question is empty"));
    }
    check_generation(options, "GenerationOptions");
    generate::AnswerRequest req;
    req.question = question;
    fill(&req);
    AnswerRun run = run_answer(m, std::move(req), options, on_token ? &on_token : nullptr, batcher);
    g.text = std::move(run.text);
    g.cancelled = run.cancelled;
    g.timings = run.timings;
  });
  if (!s.ok()) return s;
  return g;
}

}  // namespace

Result<Generation> Model::Generate(const std::string& question, const ContextEmbeddings& contexts,
                                   const GenerationOptions& options,
                                   const TokenCallback& on_token) const {
  const model::CocomModel& m = *impl_->m;
  return generate_with(
      "Generate", m, impl_->batcher.get(), question, options, on_token,
      [&](generate::AnswerRequest* r) { r->contexts = contexts_tensor(m, contexts, "contexts"); });
}

Result<Generation> Model::GenerateFromText(const std::string& question,
                                           const std::vector<std::string>& passages,
                                           const GenerationOptions& options,
                                           const TokenCallback& on_token) const {
  return generate_with("GenerateFromText", *impl_->m, impl_->batcher.get(), question, options,
                       on_token, [&](generate::AnswerRequest* r) { r->passages = passages; });
}

ContextEmbeddings ContextEmbeddings::Slice(int64_t first, int64_t n) const {
  ContextEmbeddings out;
  out.vectors = vectors;
  out.dim = dim;
  first = std::max<int64_t>(0, std::min(first, count));
  n = std::max<int64_t>(0, std::min(n, count - first));
  out.count = n;
  const int64_t per = vectors * dim;
  if (static_cast<int64_t>(data.size()) >= (first + n) * per) {
    out.data.assign(data.begin() + first * per, data.begin() + (first + n) * per);
  }
  return out;
}

Result<ContextEmbeddings> ContextEmbeddings::Concat(const std::vector<ContextEmbeddings>& parts) {
  ContextEmbeddings out;
  for (size_t i = 0; i < parts.size(); ++i) {
    const ContextEmbeddings& p = parts[i];
    if (static_cast<int64_t>(p.data.size()) != p.count * p.vectors * p.dim) {
      return Status::InvalidArgument("Concat: parts[" + std::to_string(i) + "] has " +
                                     std::to_string(p.data.size()) +
                                     " values, not count x vectors x dim");
    }
    if (i == 0) {
      out.vectors = p.vectors;
      out.dim = p.dim;
    } else if (p.vectors != out.vectors || p.dim != out.dim) {
      return Status::InvalidArgument("Concat: parts[" + std::to_string(i) + "] is [" +
                                     std::to_string(p.vectors) + ", " + std::to_string(p.dim) +
                                     "] per passage, parts[0] [" + std::to_string(out.vectors) +
                                     ", " + std::to_string(out.dim) + "]");
    }
    out.count += p.count;
    out.data.insert(out.data.end(), p.data.begin(), p.data.end());
  }
  return out;
}

}  // namespace cocom
