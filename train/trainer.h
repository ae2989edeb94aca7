// The COCOM trainer: pre-training (auto-encoding + text continuation, mixed by tc_ratio) and
// QA fine-tuning over jsonl files streamed from disk, with AdamW, warm-up + linear decay,
// gradient accumulation, gradient-norm clipping, skipped non-finite steps, exact-resume
// checkpoints and progress lines. The model is saved in the layout CocomModel::load reads.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "train/examples.h"
#include "train/trainable_cocom.h"

namespace cocom::train {

enum class Task { Pretrain, Finetune };

struct TrainOptions {
  Task task = Task::Pretrain;
  std::string model;  // COCOM checkpoint to start from
  std::string data;   // jsonl: {"text"} (pretrain) or {"question","answers","contexts"} (finetune)
  std::string out;    // final model; checkpoints go to <out>/checkpoints/step-N
  std::string decoder_tokenizer, compressor_tokenizer;
  int64_t compr_rate = 0;  // > 0: change the checkpoint's rate (new runs only)
  double tc_ratio = 0.5;   // pretrain: share of text-continuation batches
  int64_t lora_r = 16;     // 0 = full-parameter
  double lora_dropout = 0.1;
  std::string training_form = "both";
  bool merge_lora = false;  // at the final save
  double lr = 1e-4;
  double warmup_ratio = 0.05;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  int64_t epochs = 1;
  int64_t max_steps = 0;  // > 0 overrides epochs
  int64_t batch_size = 8;
  int64_t grad_accum = 1;
  uint64_t seed = 42;
  int64_t save_every = 0;  // optimizer steps between checkpoints (0 = only at the end)
  int64_t log_every = 1;
  int64_t context_max_length = 128;
  int64_t passages_per_question = 5;  // finetune: k
  int64_t max_answer_tokens = 128;
  std::string device = "cpu";
  // Forward passes under libtorch autocast with bf16 (CUDA; on CPU, CPU autocast, which works
  // but is slower than fp32 in this libtorch). Weights, optimizer state and the loss stay fp32.
  bool bf16 = false;
  // Held-out evaluation: a jsonl in the same format as `data`; its first eval_examples lines,
  // in file order, in fixed batches of batch_size. eval_every > 0: every N optimizer steps
  // (and after the last); 0: only after the last step.
  std::string eval_data;
  int64_t eval_every = 0;
  int64_t eval_examples = 64;

  Json to_json() const;
  static TrainOptions from_json(const Json& j, const std::string& origin);
};

// A jsonl file indexed by line offsets (one pass over the file, 8 bytes per line kept), read
// line by line on demand in a seeded shuffled order.
class JsonlDataset {
 public:
  explicit JsonlDataset(const std::string& path);
  int64_t size() const { return static_cast<int64_t>(offsets_.size()); }
  Json line(int64_t i) const;  // parsed; throws naming file and line
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<uint64_t> offsets_;  // start of each non-empty line
  std::vector<int64_t> numbers_;   // its 1-based line number
};

struct StepResult {
  int64_t step = 0;  // optimizer steps done after this one
  double loss = 0;   // mean over the micro-batches
  double lr = 0;
  double grad_norm = 0;  // before clipping
  bool skipped = false;  // non-finite gradients: no update
  int64_t tokens = 0;
  double seconds = 0;
  std::string kinds;  // batch kinds of the micro-batches, e.g. "ae,tc"
};

// One held-out evaluation: the mean over the fixed evaluation batches of each batch's loss
// (mean cross-entropy over its labelled tokens). Pretraining evaluates every example both as
// auto-encoding and as text continuation; fine-tuning the QA answer loss.
struct EvalResult {
  int64_t step = 0;  // optimizer steps done when evaluated
  int64_t examples = 0;
  std::optional<double> ae_loss, tc_loss, qa_loss;
  std::vector<double> ae_batch_losses, tc_batch_losses, qa_batch_losses;
  double seconds = 0;

  static double perplexity(double loss) { return std::exp(loss); }
  // {"step", "examples", "ae_loss", "ae_ppl", "tc_loss", "tc_ppl" | "qa_loss", "qa_ppl",
  // "seconds"} (the per-batch losses are not included).
  Json to_json() const;
  static EvalResult from_json(const Json& j, const std::string& origin);
};

class Trainer {
 public:
  // A new run from opt.model.
  static std::unique_ptr<Trainer> create(const TrainOptions& opt);
  // Resumes from a checkpoint written by save_checkpoint(): model, optimizer, schedule step,
  // data position and random states; the options are the checkpoint's (out/device may be
  // overridden by `out` and `device` when non-empty).
  static std::unique_ptr<Trainer> resume(const std::string& checkpoint_dir,
                                         const std::string& out = {},
                                         const std::string& device = {});
  ~Trainer();

  const TrainOptions& options() const { return opt_; }
  TrainableCocom& model() { return *model_; }
  int64_t step() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  bool done() const { return step_ >= total_steps_; }
  double lr_at(int64_t step) const;  // schedule for optimizer step `step` (0-based)

  // One optimizer step (grad_accum micro-batches).
  StepResult train_step();
  // Evaluates the model on the held-out data (opt.eval_data; fails without it): eval mode, no
  // gradients, the training batch builders, the same autocast as training. Touches neither the
  // random states nor the data position, so training continues exactly as without it.
  EvalResult evaluate();
  // The last evaluation run() recorded (kept in checkpoints).
  const std::optional<EvalResult>& last_eval() const { return last_eval_; }
  // The loop: steps until done, progress lines every log_every steps, an evaluation every
  // eval_every steps and after the last (logged, appended to <out>/eval-log.jsonl), a
  // checkpoint every save_every steps, then the final model in opt.out.
  void run();

  void save_checkpoint(const std::string& dir) const;
  void save_model(const std::string& dir) const;

  // Progress and warnings go here (default: spdlog info/warn).
  std::function<void(const std::string&)> log;
  // Called after backward, before the gradients are checked (tests inject non-finite values).
  std::function<void(const NamedTensorList&)> after_backward;

 private:
  struct Optim;
  Trainer() = default;
  void init_common();
  TrainBatch next_batch();
  Json next_example();
  TrainBatch build_batch(const std::vector<Json>& examples, BatchKind kind,
                         const std::string& origin, int64_t first_index) const;
  LossOutput forward_loss(const TrainBatch& batch);
  void record_eval(const EvalResult& r);

  TrainOptions opt_;
  std::unique_ptr<TrainableCocom> model_;
  std::unique_ptr<JsonlDataset> data_;
  std::unique_ptr<JsonlDataset> eval_data_;
  std::optional<EvalResult> last_eval_;
  std::unique_ptr<Optim> optim_;
  ExampleFormat format_;
  int64_t step_ = 0, total_steps_ = 0;
  int64_t epoch_ = 0, index_ = 0;  // data position: next example = order_[index_] of epoch_
  std::vector<int64_t> order_;
  std::mt19937_64 rng_;  // batch kinds (AE / TC)
  double tokens_seen_ = 0;
};

}  // namespace cocom::train
