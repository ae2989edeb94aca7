#include "train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "model/checkpoint_io.h"

namespace cocom::train {

namespace fs = std::filesystem;

struct Trainer::Optim {
  std::unique_ptr<torch::optim::AdamW> adam;
};

namespace {

const char* task_name(Task t) { return t == Task::Pretrain ? "pretrain" : "finetune"; }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Fisher-Yates with a 64-bit Mersenne twister: the same order on every platform.
std::vector<int64_t> shuffled(int64_t n, uint64_t seed) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = i;
  std::mt19937_64 g(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(g() % static_cast<uint64_t>(i + 1));
    std::swap(v[size_t(i)], v[size_t(j)]);
  }
  return v;
}

uint64_t epoch_seed(uint64_t seed, int64_t epoch) {
  return seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 1;
}

double uniform01(std::mt19937_64& g) { return static_cast<double>(g() >> 11) * 0x1.0p-53; }

std::string text_field(const Json& j, const std::string& key, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) {
    fail(where, ": expected a string field '", key, "'");
  }
  return j[key].get<std::string>();
}

// libtorch >= 2.4 has device-type autocast calls (the CUDA-only ones are deprecated there).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool autocast_enabled(c10::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
void set_autocast(c10::DeviceType t, bool on) { at::autocast::set_autocast_enabled(t, on); }
at::ScalarType autocast_dtype(c10::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
void set_autocast_dtype(c10::DeviceType t, at::ScalarType d) {
  at::autocast::set_autocast_dtype(t, d);
}
#else
bool autocast_enabled(c10::DeviceType t) {
  return t == c10::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void set_autocast(c10::DeviceType t, bool on) {
  if (t == c10::kCUDA) {
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_cpu_enabled(on);
  }
}
at::ScalarType autocast_dtype(c10::DeviceType t) {
  return t == c10::kCUDA ? at::autocast::get_autocast_gpu_dtype()
                         : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast_dtype(c10::DeviceType t, at::ScalarType d) {
  if (t == c10::kCUDA) {
    at::autocast::set_autocast_gpu_dtype(d);
  } else {
    at::autocast::set_autocast_cpu_dtype(d);
  }
}
#endif

// Forward passes under libtorch autocast with bf16 on `device` (CUDA, or CPU autocast) while
// alive; restores the previous autocast state and drops the cast-weight cache on exit (the
// weights change at every optimizer step).
class AutocastScope {
 public:
  AutocastScope(bool enabled, c10::Device device)
      : enabled_(enabled), type_(device.is_cuda() ? c10::kCUDA : c10::kCPU) {
    if (!enabled_) return;
    prev_enabled_ = autocast_enabled(type_);
    prev_dtype_ = autocast_dtype(type_);
    set_autocast_dtype(type_, at::kBFloat16);
    set_autocast(type_, true);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_autocast(type_, prev_enabled_);
    set_autocast_dtype(type_, prev_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  c10::DeviceType type_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

// Moves AdamW's per-parameter state (moments) to `device`.
void move_optimizer_state(torch::optim::AdamW& adam, c10::Device device) {
  for (auto& kv : adam.state()) {
    auto& s = static_cast<torch::optim::AdamWParamState&>(*kv.second);
    if (s.exp_avg().defined()) s.exp_avg(s.exp_avg().to(device));
    if (s.exp_avg_sq().defined()) s.exp_avg_sq(s.exp_avg_sq().to(device));
    if (s.max_exp_avg_sq().defined()) s.max_exp_avg_sq(s.max_exp_avg_sq().to(device));
  }
}

std::string loss_text(const char* name, double loss) {
  return std::string(" | ") + name + "-loss " + fmt("%.4f", loss) + " (ppl " +
         fmt("%.4g", EvalResult::perplexity(loss)) + ")";
}

}  // namespace

Json TrainOptions::to_json() const {
  Json j;
  j["task"] = task_name(task);
  j["model"] = model;
  j["data"] = data;
  j["out"] = out;
  j["decoder_tokenizer"] = decoder_tokenizer;
  j["compressor_tokenizer"] = compressor_tokenizer;
  j["compr_rate"] = compr_rate;
  j["tc_ratio"] = tc_ratio;
  j["lora_r"] = lora_r;
  j["lora_dropout"] = lora_dropout;
  j["training_form"] = training_form;
  j["merge_lora"] = merge_lora;
  j["lr"] = lr;
  j["warmup_ratio"] = warmup_ratio;
  j["weight_decay"] = weight_decay;
  j["max_grad_norm"] = max_grad_norm;
  j["epochs"] = epochs;
  j["max_steps"] = max_steps;
  j["batch_size"] = batch_size;
  j["grad_accum"] = grad_accum;
  j["seed"] = seed;
  j["save_every"] = save_every;
  j["log_every"] = log_every;
  j["context_max_length"] = context_max_length;
  j["passages_per_question"] = passages_per_question;
  j["max_answer_tokens"] = max_answer_tokens;
  j["device"] = device;
  j["bf16"] = bf16;
  j["eval_data"] = eval_data;
  j["eval_every"] = eval_every;
  j["eval_examples"] = eval_examples;
  return j;
}

TrainOptions TrainOptions::from_json(const Json& j, const std::string& origin) {
  TrainOptions o;
  const std::string task = json_string_or(j, "task", "pretrain", origin);
  if (task != "pretrain" && task != "finetune") fail(origin, ": unknown task '", task, "'");
  o.task = task == "pretrain" ? Task::Pretrain : Task::Finetune;
  o.model = json_string_or(j, "model", "", origin);
  o.data = json_string_or(j, "data", "", origin);
  o.out = json_string_or(j, "out", "", origin);
  o.decoder_tokenizer = json_string_or(j, "decoder_tokenizer", "", origin);
  o.compressor_tokenizer = json_string_or(j, "compressor_tokenizer", "", origin);
  o.compr_rate = json_int_or(j, "compr_rate", o.compr_rate, origin);
  o.tc_ratio = json_number_or(j, "tc_ratio", o.tc_ratio, origin);
  o.lora_r = json_int_or(j, "lora_r", o.lora_r, origin);
  o.lora_dropout = json_number_or(j, "lora_dropout", o.lora_dropout, origin);
  o.training_form = json_string_or(j, "training_form", o.training_form, origin);
  o.merge_lora = json_bool_or(j, "merge_lora", o.merge_lora, origin);
  o.lr = json_number_or(j, "lr", o.lr, origin);
  o.warmup_ratio = json_number_or(j, "warmup_ratio", o.warmup_ratio, origin);
  o.weight_decay = json_number_or(j, "weight_decay", o.weight_decay, origin);
  o.max_grad_norm = json_number_or(j, "max_grad_norm", o.max_grad_norm, origin);
  o.epochs = json_int_or(j, "epochs", o.epochs, origin);
  o.max_steps = json_int_or(j, "max_steps", o.max_steps, origin);
  o.batch_size = json_int_or(j, "batch_size", o.batch_size, origin);
  o.grad_accum = json_int_or(j, "grad_accum", o.grad_accum, origin);
  o.seed = static_cast<uint64_t>(json_int_or(j, "seed", static_cast<int64_t>(o.seed), origin));
  o.save_every = json_int_or(j, "save_every", o.save_every, origin);
  o.log_every = json_int_or(j, "log_every", o.log_every, origin);
  o.context_max_length = json_int_or(j, "context_max_length", o.context_max_length, origin);
  o.passages_per_question =
      json_int_or(j, "passages_per_question", o.passages_per_question, origin);
  o.max_answer_tokens = json_int_or(j, "max_answer_tokens", o.max_answer_tokens, origin);
  o.device = json_string_or(j, "device", o.device, origin);
  o.bf16 = json_bool_or(j, "bf16", o.bf16, origin);
  o.eval_data = json_string_or(j, "eval_data", o.eval_data, origin);
  o.eval_every = json_int_or(j, "eval_every", o.eval_every, origin);
  o.eval_examples = json_int_or(j, "eval_examples", o.eval_examples, origin);
  return o;
}

Json EvalResult::to_json() const {
  Json j;
  j["step"] = step;
  j["examples"] = examples;
  auto put = [&](const char* name, const std::optional<double>& loss) {
    if (!loss) return;
    j[std::string(name) + "_loss"] = *loss;
    j[std::string(name) + "_ppl"] = perplexity(*loss);
  };
  put("ae", ae_loss);
  put("tc", tc_loss);
  put("qa", qa_loss);
  j["seconds"] = seconds;
  return j;
}

EvalResult EvalResult::from_json(const Json& j, const std::string& origin) {
  EvalResult r;
  r.step = json_int_or(j, "step", 0, origin);
  r.examples = json_int_or(j, "examples", 0, origin);
  for (auto [name, field] : {std::pair<const char*, std::optional<double>*>{"ae_loss", &r.ae_loss},
                             {"tc_loss", &r.tc_loss},
                             {"qa_loss", &r.qa_loss}}) {
    if (j.contains(name)) *field = json_number_or(j, name, 0, origin);
  }
  r.seconds = json_number_or(j, "seconds", 0, origin);
  return r;
}

JsonlDataset::JsonlDataset(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open the training data");
  std::string line;
  uint64_t pos = 0;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") != std::string::npos) {
      offsets_.push_back(pos);
      numbers_.push_back(number);
    }
    pos += line.size() + 1;
  }
  if (offsets_.empty()) fail(path, ": no examples (expected one JSON object per line)");
}

Json JsonlDataset::line(int64_t i) const {
  std::ifstream in(path_, std::ios::binary);
  if (!in) fail(path_, ": cannot open the training data");
  in.seekg(static_cast<std::streamoff>(offsets_[size_t(i)]));
  std::string text;
  std::getline(in, text);
  return parse_json_text(text, path_ + ":" + std::to_string(numbers_[size_t(i)]));
}

Trainer::~Trainer() = default;

void Trainer::init_common() {
  const TrainOptions& o = opt_;
  if (o.batch_size < 1) fail("--batch-size must be at least 1");
  if (o.grad_accum < 1) fail("--grad-accum must be at least 1");
  if (o.lr <= 0) fail("--lr must be positive");
  if (o.warmup_ratio < 0 || o.warmup_ratio > 1) fail("--warmup-ratio must be in [0, 1]");
  if (o.tc_ratio < 0 || o.tc_ratio > 1) fail("--tc-ratio must be in [0, 1]");
  if (o.epochs < 1 && o.max_steps < 1) fail("give --epochs >= 1 or --max-steps >= 1");
  if (o.eval_every < 0) fail("--eval-every must be >= 0 (0 = only after the last step)");
  if (o.eval_examples < 1) fail("--eval-examples must be at least 1");
  if (o.eval_every > 0 && o.eval_data.empty()) fail("--eval-every needs --eval-data FILE");
  if (!log) {
    log = [](const std::string& s) { log::info("{}", s); };
  }
  data_ = std::make_unique<JsonlDataset>(o.data);
  if (!o.eval_data.empty()) eval_data_ = std::make_unique<JsonlDataset>(o.eval_data);
  const c10::Device device = model_->options().device;
  if (o.bf16 && !device.is_cpu() && !device.is_cuda()) {
    fail("--bf16: autocast is supported on cpu and cuda, not ", device.str());
  }
  format_ = model_->example_format(o.context_max_length);
  format_.max_answer_tokens = o.max_answer_tokens;
  const int64_t per_step = o.batch_size * o.grad_accum;
  total_steps_ =
      o.max_steps > 0 ? o.max_steps : (o.epochs * data_->size() + per_step - 1) / per_step;
  std::vector<at::Tensor> params;
  for (const auto& [name, t] : model_->trainable_parameters()) params.push_back(t);
  if (params.empty()) fail("nothing to train: no trainable parameters for these options");
  torch::optim::AdamWOptions ao(o.lr);
  ao.weight_decay(o.weight_decay);
  optim_ = std::make_unique<Optim>();
  optim_->adam = std::make_unique<torch::optim::AdamW>(params, ao);
}

std::unique_ptr<Trainer> Trainer::create(const TrainOptions& opt) {
  std::unique_ptr<Trainer> t(new Trainer());
  t->opt_ = opt;
  TrainableOptions mo;
  mo.lora_r = opt.lora_r;
  mo.lora_dropout = opt.lora_dropout;
  mo.training_form = opt.training_form;
  mo.compr_rate = opt.compr_rate;
  mo.device = c10::Device(opt.device);
  mo.seed = opt.seed;
  mo.decoder_tokenizer = opt.decoder_tokenizer;
  mo.compressor_tokenizer = opt.compressor_tokenizer;
  t->model_ = TrainableCocom::load(opt.model, mo);
  t->init_common();
  t->rng_.seed(opt.seed);
  t->order_ = shuffled(t->data_->size(), epoch_seed(opt.seed, 0));
  return t;
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& dir, const std::string& out,
                                         const std::string& device) {
  const std::string state_path = join_path(dir, "trainer_state.json");
  if (!file_exists(state_path))
    fail("--resume ", dir, ": no trainer_state.json (not a checkpoint)");
  Json st = read_json_file(state_path);
  if (!st.contains("options")) fail(state_path, ": no 'options'");
  std::unique_ptr<Trainer> t(new Trainer());
  t->opt_ = TrainOptions::from_json(st["options"], state_path);
  if (!out.empty()) t->opt_.out = out;
  if (!device.empty()) t->opt_.device = device;
  TrainableOptions mo;
  mo.lora_r = t->opt_.lora_r;
  mo.lora_dropout = t->opt_.lora_dropout;
  mo.training_form = t->opt_.training_form;
  mo.device = c10::Device(t->opt_.device);
  mo.seed = t->opt_.seed;
  t->model_ = TrainableCocom::load(join_path(dir, "model"), mo);
  t->init_common();
  // The trainable parameters must line up with the optimizer state.
  const Json& names = st["parameters"];
  const auto& params = t->model_->trainable_parameters();
  if (!names.is_array() || names.size() != params.size()) {
    fail(state_path, ": the checkpoint has ", names.size(), " trainable tensors, the model ",
         params.size());
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (names[i].get<std::string>() != params[i].first) {
      fail(state_path, ": trainable tensor ", i, " is '", names[i].get<std::string>(),
           "' in the checkpoint but '", params[i].first, "' in the model");
    }
  }
  // Saved as CPU tensors; mapped onto this run's device.
  torch::load(*t->optim_->adam, join_path(dir, "optimizer.pt"), c10::Device(t->opt_.device));
  t->step_ = json_int(st, "step", state_path);
  t->total_steps_ = json_int(st, "total_steps", state_path);
  t->epoch_ = json_int(st, "epoch", state_path);
  t->index_ = json_int(st, "index", state_path);
  t->tokens_seen_ = json_number_or(st, "tokens_seen", 0, state_path);
  if (json_int(st, "data_size", state_path) != t->data_->size()) {
    fail(state_path, ": the data file ", t->opt_.data, " has changed (", t->data_->size(),
         " examples, the checkpoint saw ", json_int(st, "data_size", state_path), ")");
  }
  std::istringstream rs(json_string_or(st, "batch_rng", "", state_path));
  rs >> t->rng_;
  if (rs.fail()) fail(state_path, ": unreadable 'batch_rng'");
  t->order_ = shuffled(t->data_->size(), epoch_seed(t->opt_.seed, t->epoch_));
  if (st.contains("last_eval") && st["last_eval"].is_object()) {
    t->last_eval_ = EvalResult::from_json(st["last_eval"], state_path + " (last_eval)");
  }
  // The dropout generator belongs to the device type it was saved on (CPU: a Mersenne twister,
  // CUDA: Philox seed and offset); resuming on another type reseeds it instead.
  const std::string saved_type = json_string_or(st, "dropout_generator_device", "cpu", state_path);
  const std::string new_type = c10::DeviceTypeName(c10::Device(t->opt_.device).type(), true);
  if (saved_type == new_type) {
    model::NamedTensors rng = model::read_all_tensors(join_path(dir, "rng.safetensors"));
    for (const auto& [name, tensor] : rng) {
      if (name == "dropout_generator") t->model_->set_rng_state(tensor.to(at::kByte));
    }
  } else {
    log::warn(
        "resuming a {} checkpoint on {}: the dropout generator is reseeded (the run "
        "continues, but not bit-identically)",
        saved_type, new_type);
    t->model_->set_rng_seed(t->opt_.seed + static_cast<uint64_t>(t->step_));
  }
  return t;
}

double Trainer::lr_at(int64_t s) const {
  const auto warm = static_cast<int64_t>(std::ceil(opt_.warmup_ratio * double(total_steps_)));
  if (s < warm) return opt_.lr * double(s) / double(std::max<int64_t>(1, warm));
  return opt_.lr * std::max(0.0, double(total_steps_ - s) /
                                     double(std::max<int64_t>(1, total_steps_ - warm)));
}

Json Trainer::next_example() {
  if (index_ >= data_->size()) {
    ++epoch_;
    index_ = 0;
    order_ = shuffled(data_->size(), epoch_seed(opt_.seed, epoch_));
  }
  return data_->line(order_[size_t(index_++)]);
}

TrainBatch Trainer::next_batch() {
  const auto n = static_cast<size_t>(opt_.batch_size);
  BatchKind kind = BatchKind::QA;
  if (opt_.task == Task::Pretrain) {
    kind = uniform01(rng_) < opt_.tc_ratio ? BatchKind::TextContinuation : BatchKind::AutoEncoding;
  }
  const int64_t first = index_;
  std::vector<Json> examples;
  for (size_t i = 0; i < n; ++i) examples.push_back(next_example());
  return build_batch(examples, kind, data_->path(), first);
}

// The batch of `kind` from parsed jsonl lines; errors name `origin` and the example's index.
TrainBatch Trainer::build_batch(const std::vector<Json>& lines, BatchKind kind,
                                const std::string& origin, int64_t first_index) const {
  auto where_of = [&](size_t i) {
    return origin + " (example " + std::to_string(first_index + int64_t(i)) + ")";
  };
  if (kind != BatchKind::QA) {
    std::vector<std::string> texts, nexts;
    for (size_t i = 0; i < lines.size(); ++i) {
      std::string text = text_field(lines[i], "text", where_of(i));
      if (kind == BatchKind::TextContinuation) {
        auto [head, tail] = split_for_continuation(format_, text);
        texts.push_back(head);
        nexts.push_back(tail);
      } else {
        texts.push_back(text);
      }
    }
    return kind == BatchKind::TextContinuation ? make_continuation_batch(format_, texts, nexts)
                                               : make_autoencoding_batch(format_, texts);
  }
  std::vector<QAExample> examples;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = where_of(i);
    const Json& j = lines[i];
    QAExample e;
    e.question = text_field(j, "question", where);
    if (j.contains("answers") && j["answers"].is_array() && !j["answers"].empty() &&
        j["answers"][0].is_string()) {
      e.answer = j["answers"][0].get<std::string>();
    } else if (j.contains("answers") && j["answers"].is_string()) {
      e.answer = j["answers"].get<std::string>();
    } else {
      e.answer = text_field(j, "answer", where + " (no 'answers' list)");
    }
    if (!j.contains("contexts") || !j["contexts"].is_array()) {
      fail(where, ": expected a 'contexts' list of passages");
    }
    for (const auto& c : j["contexts"]) {
      if (c.is_string()) {
        e.contexts.push_back(c.get<std::string>());
      } else if (c.is_object() && c.contains("text") && c["text"].is_string()) {
        std::string title =
            c.contains("title") && c["title"].is_string() ? c["title"].get<std::string>() : "";
        e.contexts.push_back(title.empty() ? c["text"].get<std::string>()
                                           : title + ". " + c["text"].get<std::string>());
      } else {
        fail(where, ": a context must be a string or an object with 'text'");
      }
    }
    examples.push_back(std::move(e));
  }
  return make_qa_batch(format_, examples, opt_.passages_per_question);
}

StepResult Trainer::train_step() {
  if (done()) fail("training is already complete (", total_steps_, " steps)");
  const auto t0 = std::chrono::steady_clock::now();
  StepResult r;
  model_->set_training(true);
  const auto& params = model_->trainable_parameters();
  for (const auto& [name, p] : params) p.mutable_grad() = at::Tensor();
  double loss_sum = 0;
  for (int64_t m = 0; m < opt_.grad_accum; ++m) {
    TrainBatch b = next_batch();
    LossOutput out = forward_loss(b);
    (out.loss / static_cast<double>(opt_.grad_accum)).backward();
    loss_sum += out.loss.item<double>();
    r.tokens += b.tokens();
    r.kinds += std::string(m ? "," : "") + batch_kind_name(b.kind);
  }
  if (after_backward) after_backward(params);
  double sq = 0;
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) sq += p.grad().to(at::kDouble).pow(2).sum().item<double>();
  }
  r.grad_norm = std::sqrt(sq);
  r.loss = loss_sum / static_cast<double>(opt_.grad_accum);
  r.lr = lr_at(step_);
  if (!std::isfinite(r.grad_norm)) {
    r.skipped = true;
    for (const auto& [name, p] : params) p.mutable_grad() = at::Tensor();
    log("step " + std::to_string(step_ + 1) + "/" + std::to_string(total_steps_) +
        ": non-finite gradient (norm " + fmt("%g", r.grad_norm) + ", loss " + fmt("%g", r.loss) +
        "); update skipped");
  } else {
    if (opt_.max_grad_norm > 0 && r.grad_norm > opt_.max_grad_norm) {
      const double coef = opt_.max_grad_norm / (r.grad_norm + 1e-6);
      for (const auto& [name, p] : params) {
        if (p.grad().defined()) p.mutable_grad().mul_(coef);
      }
    }
    for (auto& group : optim_->adam->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(r.lr);
    }
    optim_->adam->step();
  }
  ++step_;
  r.step = step_;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  tokens_seen_ += double(r.tokens);
  return r;
}

LossOutput Trainer::forward_loss(const TrainBatch& batch) {
  AutocastScope autocast(opt_.bf16, model_->options().device);
  return model_->loss(batch);
}

EvalResult Trainer::evaluate() {
  if (!eval_data_) fail("evaluation needs held-out data (--eval-data FILE)");
  const auto t0 = std::chrono::steady_clock::now();
  EvalResult r;
  r.step = step_;
  r.examples = std::min(opt_.eval_examples, eval_data_->size());
  // Eval mode (no dropout, so the dropout generator is not drawn from) and no autograd; the
  // batch-kind generator and the data position are not used.
  struct ModeGuard {
    TrainableCocom& m;
    bool was;
    ~ModeGuard() { m.set_training(was); }
  } mode{*model_, model_->training()};
  model_->set_training(false);
  at::NoGradGuard no_grad;
  std::vector<BatchKind> kinds;
  if (opt_.task == Task::Pretrain) {
    kinds = {BatchKind::AutoEncoding, BatchKind::TextContinuation};
  } else {
    kinds = {BatchKind::QA};
  }
  for (int64_t start = 0; start < r.examples; start += opt_.batch_size) {
    const int64_t end = std::min(r.examples, start + opt_.batch_size);
    std::vector<Json> lines;
    for (int64_t i = start; i < end; ++i) lines.push_back(eval_data_->line(i));
    for (BatchKind kind : kinds) {
      TrainBatch b = build_batch(lines, kind, eval_data_->path(), start);
      const double loss = forward_loss(b).loss.item<double>();
      (kind == BatchKind::AutoEncoding       ? r.ae_batch_losses
       : kind == BatchKind::TextContinuation ? r.tc_batch_losses
                                             : r.qa_batch_losses)
          .push_back(loss);
    }
  }
  auto mean = [](const std::vector<double>& v) -> std::optional<double> {
    if (v.empty()) return std::nullopt;
    double s = 0;
    for (double x : v) s += x;
    return s / double(v.size());
  };
  r.ae_loss = mean(r.ae_batch_losses);
  r.tc_loss = mean(r.tc_batch_losses);
  r.qa_loss = mean(r.qa_batch_losses);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void Trainer::record_eval(const EvalResult& r) {
  std::string line = "eval step " + std::to_string(r.step) + "/" + std::to_string(total_steps_);
  if (r.ae_loss) line += loss_text("ae", *r.ae_loss);
  if (r.tc_loss) line += loss_text("tc", *r.tc_loss);
  if (r.qa_loss) line += loss_text("qa", *r.qa_loss);
  line += " | " + std::to_string(r.examples) + " examples | " + fmt("%.1f", r.seconds) + " s";
  log(line);
  fs::create_directories(opt_.out);
  const std::string path = join_path(opt_.out, "eval-log.jsonl");
  std::ofstream out(path, std::ios::app);
  out << r.to_json().dump() << "\n";
  out.flush();
  if (!out) fail(path, ": cannot append the evaluation");
  last_eval_ = r;
}

void Trainer::save_checkpoint(const std::string& dir) const {
  const fs::path target(dir), tmp(dir + ".tmp"), old(dir + ".old");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  model_->save((tmp / "model").string(), /*merge_lora=*/false, model::DType::F32);
  // The optimizer state is written as CPU tensors (resumable on any device).
  const c10::Device device = model_->options().device;
  if (device.is_cpu()) {
    torch::save(*optim_->adam, (tmp / "optimizer.pt").string());
  } else {
    move_optimizer_state(*optim_->adam, c10::kCPU);
    try {
      torch::save(*optim_->adam, (tmp / "optimizer.pt").string());
    } catch (...) {
      move_optimizer_state(*optim_->adam, device);
      throw;
    }
    move_optimizer_state(*optim_->adam, device);
  }
  model::write_tensors((tmp / "rng.safetensors").string(),
                       {{"dropout_generator", model_->rng_state().to(at::kLong)}});
  Json st;
  st["step"] = step_;
  st["total_steps"] = total_steps_;
  st["epoch"] = epoch_;
  st["index"] = index_;
  st["data_size"] = data_->size();
  st["tokens_seen"] = tokens_seen_;
  std::ostringstream rs;
  rs << rng_;
  st["batch_rng"] = rs.str();
  st["options"] = opt_.to_json();
  st["dropout_generator_device"] = c10::DeviceTypeName(device.type(), /*lower_case=*/true);
  if (last_eval_) st["last_eval"] = last_eval_->to_json();
  Json names = Json::array();
  for (const auto& [name, t] : model_->trainable_parameters()) names.push_back(name);
  st["parameters"] = names;
  write_json_file((tmp / "trainer_state.json").string(), st);
  // Replace atomically: a crash leaves either the old checkpoint or the new one.
  fs::remove_all(old);
  if (fs::exists(target)) fs::rename(target, old);
  fs::rename(tmp, target);
  fs::remove_all(old);
}

void Trainer::save_model(const std::string& dir) const {
  model_->save(dir, opt_.merge_lora, model::DType::F32);
}

void Trainer::run() {
  const auto& o = opt_;
  log(std::string("cocom train ") + task_name(o.task) + ": " + std::to_string(data_->size()) +
      " examples, " + std::to_string(total_steps_) + " steps of " +
      std::to_string(o.batch_size * o.grad_accum) + " examples, " +
      std::to_string(model_->trainable_parameters().size()) + " trainable tensors (" +
      (o.training_form == "compressor" ? std::string("compressor only, decoder frozen")
       : model_->has_lora()
           ? (model_->config().pisco ? "PISCO adapters, LoRA r " : "decoder LoRA r ") +
                 std::to_string(model_->lora_rank())
           : std::string("full-parameter decoder")) +
      ")" + (step_ > 0 ? ", resumed at step " + std::to_string(step_) : "") + " on " +
      model_->options().device.str() + (o.bf16 ? " (bf16 autocast)" : ""));
  if (o.bf16 && model_->options().device.is_cpu()) {
    log("note: --bf16 on cpu uses CPU autocast, which is slower than fp32 in this libtorch "
        "(meant for checking the bf16 path; use it on cuda)");
  }
  double window_tokens = 0, window_seconds = 0, window_loss = 0;
  int64_t window_steps = 0;
  while (!done()) {
    StepResult r = train_step();
    window_tokens += double(r.tokens);
    window_seconds += r.seconds;
    window_loss += r.loss;
    ++window_steps;
    if (step_ % std::max<int64_t>(1, o.log_every) == 0 || done()) {
      const double epoch = double(epoch_) + double(index_) / double(data_->size());
      log("step " + std::to_string(step_) + "/" + std::to_string(total_steps_) + " | loss " +
          fmt("%.4f", window_loss / double(window_steps)) + " | lr " + fmt("%.3e", r.lr) +
          " | grad-norm " + fmt("%.3f", r.grad_norm) + " | " + r.kinds + " | " +
          fmt("%.0f", window_seconds > 0 ? window_tokens / window_seconds : 0) + " tok/s | epoch " +
          fmt("%.2f", epoch));
      window_tokens = window_seconds = window_loss = 0;
      window_steps = 0;
    }
    if (eval_data_ && ((o.eval_every > 0 && step_ % o.eval_every == 0) || done())) {
      record_eval(evaluate());
    }
    if (o.save_every > 0 && (step_ % o.save_every == 0 || done())) {
      const std::string ck =
          join_path(join_path(o.out, "checkpoints"), "step-" + std::to_string(step_));
      save_checkpoint(ck);
      log("checkpoint " + ck);
    }
  }
  save_model(o.out);
  log("model saved to " + o.out + (o.merge_lora ? " (LoRA merged)" : ""));
}

}  // namespace cocom::train
