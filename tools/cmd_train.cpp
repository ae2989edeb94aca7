// `cocom train pretrain|finetune`: COCOM training with libtorch autograd (train/trainer.h).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "tools/commands.h"
#include "train/trainer.h"

namespace cocom::cli {

namespace {

struct TrainArgs {
  train::TrainOptions opt;
  std::string resume;
};

void add_options(CLI::App* c, TrainArgs& a, bool pretrain) {
  train::TrainOptions& o = a.opt;
  c->add_option("--model", o.model,
                "COCOM, COCOM-light or PISCO checkpoint to start from (e.g. made by `cocom "
                "model init --arch cocom`); a PISCO one is saved in its published layout");
  c->add_option("--data", o.data,
                pretrain
                    ? "jsonl with one {\"text\": ...} passage per line"
                    : "jsonl with {\"question\", \"answers\": [...], \"contexts\": [...]} lines");
  c->add_option("--out", o.out, "output model directory (checkpoints in OUT/checkpoints/step-N)");
  c->add_option("--decoder-tokenizer", o.decoder_tokenizer,
                "base decoder directory (tokenizer.model + config.json)");
  c->add_option("--compressor-tokenizer", o.compressor_tokenizer,
                "COCOM-light: base compressor directory (vocab.txt + config.json)");
  c->add_option("--compr-rate", o.compr_rate,
                "new compression rate when starting a run (default: the checkpoint's)");
  if (pretrain) {
    c->add_option("--tc-ratio", o.tc_ratio,
                  "share of text-continuation batches (rest: auto-encoding)")
        ->capture_default_str();
  } else {
    c->add_option("--k", o.passages_per_question, "passages per question")->capture_default_str();
    c->add_option("--max-answer-tokens", o.max_answer_tokens, "longer answers are cut")
        ->capture_default_str();
  }
  c->add_option("--lora-r", o.lora_r,
                "LoRA rank on every decoder linear layer (alpha = 2r); 0 = full-parameter. "
                "A PISCO checkpoint trains its own two adapters at their rank")
      ->capture_default_str();
  c->add_option("--lora-dropout", o.lora_dropout, "LoRA dropout")->capture_default_str();
  c->add_flag("--merge-lora", o.merge_lora,
              "merge LoRA into the weights of the saved model (not for PISCO, whose published "
              "layout keeps its adapters apart)");
  c->add_option("--training-form", o.training_form,
                "both, or compressor (decoder frozen; COCOM-light)")
      ->check(CLI::IsMember({"both", "compressor"}))
      ->capture_default_str();
  c->add_option("--lr", o.lr, "peak learning rate (AdamW)")->capture_default_str();
  c->add_option("--warmup-ratio", o.warmup_ratio, "share of steps with linear warm-up")
      ->capture_default_str();
  c->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->capture_default_str();
  c->add_option("--epochs", o.epochs, "passes over the data")->capture_default_str();
  c->add_option("--max-steps", o.max_steps, "optimizer steps (overrides --epochs)");
  c->add_option("--batch-size", o.batch_size, "examples per micro-batch")->capture_default_str();
  c->add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step")
      ->capture_default_str();
  c->add_option("--context-max-length", o.context_max_length, "compressor tokens per passage")
      ->capture_default_str();
  c->add_option("--seed", o.seed, "data order, LoRA init, dropout")->capture_default_str();
  c->add_option("--save-every", o.save_every, "checkpoint every N steps (0 = none)")
      ->capture_default_str();
  c->add_option("--log-every", o.log_every, "progress line every N steps")->capture_default_str();
  c->add_option("--eval-data", o.eval_data,
                "held-out jsonl (same format as --data) for the evaluation loss; logged and "
                "appended to OUT/eval-log.jsonl");
  c->add_option("--eval-every", o.eval_every,
                "evaluate every N optimizer steps and after the last (0 = only after the last)")
      ->capture_default_str();
  c->add_option("--eval-examples", o.eval_examples, "evaluate on the first M lines of --eval-data")
      ->capture_default_str();
  c->add_flag("--bf16", o.bf16,
              "forward passes under bf16 autocast (weights, optimizer and loss stay fp32); "
              "meant for --device cuda: on cpu it works but is slower than fp32");
  c->add_option("--resume", a.resume,
                "continue from a checkpoint directory (its options are used; --out and the "
                "global --device may change)");
}

int run_train(const GlobalOptions& g, TrainArgs& a, train::Task task, bool device_given) {
  c10::Device device = setup_runtime(g);
  auto print = [](const std::string& s) {
    std::fprintf(stderr, "%s\n", s.c_str());
    std::fflush(stderr);
  };
  std::unique_ptr<train::Trainer> t;
  if (!a.resume.empty()) {
    // The checkpoint's device unless --device was given (checkpoints hold CPU tensors).
    t = train::Trainer::resume(a.resume, a.opt.out, device_given ? device.str() : "");
    if ((t->options().task == train::Task::Pretrain) != (task == train::Task::Pretrain)) {
      fail("--resume ", a.resume, ": that checkpoint is from a different task");
    }
  } else {
    if (a.opt.model.empty()) fail("--model is required (or --resume DIR)");
    if (a.opt.data.empty()) fail("--data is required");
    if (a.opt.out.empty()) fail("--out is required");
    a.opt.task = task;
    a.opt.device = device.str();
    t = train::Trainer::create(a.opt);
  }
  t->log = print;
  t->run();
  return 0;
}

}  // namespace

void add_train_commands(CLI::App& app, const GlobalOptions& g, int& rc) {
  auto* c_train = app.add_subcommand("train", "train a COCOM model (pre-training, QA fine-tuning)");
  c_train->require_subcommand(1);
  static TrainArgs pre, fine;
  CLI::App* root = &app;
  auto device_given = [root] {
    const CLI::Option* o = root->get_option_no_throw("--device");
    return o != nullptr && o->count() > 0;
  };
  auto* c_pre = c_train->add_subcommand(
      "pretrain", "auto-encoding + text continuation on {\"text\"} jsonl (mixed by --tc-ratio)");
  add_options(c_pre, pre, true);
  c_pre->callback(
      [&, device_given] { rc = run_train(g, pre, train::Task::Pretrain, device_given()); });
  auto* c_fine = c_train->add_subcommand(
      "finetune", "QA fine-tuning: k passages compressed, the answer as the only label");
  add_options(c_fine, fine, false);
  c_fine->callback(
      [&, device_given] { rc = run_train(g, fine, train::Task::Finetune, device_given()); });
}

}  // namespace cocom::cli
