// `cocom eval --task reconstruction|qa`: answer quality of a COCOM checkpoint (eval/evaluate.h).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "common/strings.h"
#include "eval/evaluate.h"
#include "tools/commands.h"

namespace cocom::cli {

namespace {

struct EvalArgs {
  eval::EvalOptions opt;
  std::string baselines;  // comma list
  bool json = false;
  double progress_every = 10;  // seconds between progress lines on stderr
};

void print_table(const eval::EvalReport& r) {
  if (r.task == "retrieval") {
    std::printf("cocom eval retrieval: %zu questions from %s\nstore %s, top %lld\n\n", r.n,
                r.data.c_str(), r.db.c_str(), static_cast<long long>(r.k));
    const std::string rk = "recall@" + std::to_string(r.k);
    std::printf("%-8s %9s %7s %9s\n", "mode", rk.c_str(), "MRR", "seconds");
    for (const auto& c : r.configs) {
      std::printf("%-8s %9.3f %7.3f %9.2f\n", c.name.c_str(), c.recall, c.mrr, c.seconds);
    }
    if (r.no_passage_questions > 0) {
      std::printf("(%zu searches found no passage)\n", r.no_passage_questions);
    }
    std::printf("(means over the questions; %.2f s in all)\n", r.seconds);
    return;
  }
  const bool qa = r.task == "qa";
  std::printf("cocom eval %s: %zu examples from %s\n", r.task.c_str(), r.n, r.data.c_str());
  std::printf("model %s", r.model.c_str());
  if (!r.db.empty()) {
    std::printf(", store %s (top %lld, %s)", r.db.c_str(), static_cast<long long>(r.k),
                r.search_mode.c_str());
  } else if (qa) {
    std::printf(", the lines' contexts (first %lld)", static_cast<long long>(r.k));
  }
  std::printf(", greedy, at most %lld new tokens\n", static_cast<long long>(r.max_new_tokens));
  if (!qa && r.truncated > 0) {
    std::printf(
        "%zu passage(s) longer than %lld compressor tokens were cut (scored against the "
        "cut text)\n",
        r.truncated, static_cast<long long>(r.context_max_length));
  }
  std::printf("\n");
  if (qa) {
    const std::string rk = "recall@" + std::to_string(r.k);
    std::printf("%-14s %7s %7s %7s %8s %9s %9s\n", "configuration", "Match", "EM", "F1", "ROUGE-L",
                rk.c_str(), "seconds");
    for (const auto& c : r.configs) {
      char recall[32] = "-";
      if (c.uses_retrieval && r.recall_at_k)
        std::snprintf(recall, sizeof recall, "%.3f", *r.recall_at_k);
      std::printf("%-14s %7.3f %7.3f %7.3f %8.3f %9s %9.2f\n", c.name.c_str(), c.scores.match,
                  c.scores.exact_match, c.scores.f1, c.scores.rouge_l, recall, c.seconds);
    }
    if (!r.db.empty()) {
      if (r.recall_at_k) {
        std::printf("\nrecall@%lld over the %zu question(s) with gold ids\n",
                    static_cast<long long>(r.k), r.recall_questions);
      } else {
        std::printf("\nno line has \"gold\" ids: recall@%lld not measured\n",
                    static_cast<long long>(r.k));
      }
    }
  } else {
    std::printf("%-14s %8s %7s %9s\n", "configuration", "ROUGE-L", "EM", "seconds");
    for (const auto& c : r.configs) {
      std::printf("%-14s %8.3f %7.3f %9.2f\n", c.name.c_str(), c.scores.rouge_l,
                  c.scores.exact_match, c.seconds);
    }
  }
  std::printf("(scores are means in [0, 1]; %.2f s in all)\n", r.seconds);
}

int run_eval(const GlobalOptions& g, EvalArgs& a) {
  setup_runtime(g);
  a.opt.device = g.device;
  a.opt.baselines = split_list(a.baselines);
  double last = 0;
  a.opt.progress = [&](const eval::EvalProgress& p) {
    if (p.done < p.total && p.seconds - last < a.progress_every) return;
    last = p.seconds;
    std::fprintf(stderr, "eval: %zu/%zu examples, %.2f examples/s\n", p.done, p.total,
                 p.seconds > 0 ? double(p.done) / p.seconds : 0.0);
    std::fflush(stderr);
  };
  eval::EvalReport r = eval::run_evaluation(a.opt);
  if (a.json) {
    std::printf("%s\n", r.to_json().dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
  } else {
    print_table(r);
  }
  return 0;
}

}  // namespace

void add_eval_command(CLI::App& app, const GlobalOptions& g, int& rc) {
  static EvalArgs a;
  eval::EvalOptions& o = a.opt;
  auto* c = app.add_subcommand(
      "eval",
      "answer quality of a COCOM checkpoint: passage reconstruction from context embeddings "
      "(ROUGE-L, exact match) or QA (Match, EM, F1, ROUGE-L, recall@k; closed-book and "
      "uncompressed baselines with the same decoder)");
  c->footer(
      "reconstruction: each {\"text\"} line (optional \"id\", \"title\") is compressed as "
      "ingestion compresses it and decoded back greedily from the prompt <AE><s> + <MEM> x n "
      "until </s>. A passage longer than the context length is first cut as ingestion cuts "
      "it (its first chunk, at a sentence or word boundary); that cut text is what is "
      "compressed and the reference it is scored against.\n"
      "qa: each {\"question\", \"answers\": [...], \"contexts\": [...], \"gold\": [...]} line is "
      "answered greedily with the runtime's prompt <s> + (<MEM> x n [+ <SEP>]) x k + "
      "[INST]question\\n[/INST]\\n. With --db the top --k passages are retrieved from the store "
      "and answered from their stored context embeddings (as `cocom ask`; the line's "
      "contexts are then ignored); without it the line's first --k contexts (strings, or "
      "{\"title\", \"text\"} objects read as \"Title. text\") are compressed on the fly. "
      "Scores are the best over the gold answers, averaged. Match: a normalised gold answer "
      "occurs in the prediction (the paper's main metric). recall@k (with --db and \"gold\" "
      "ids): the share of a question's gold ids found among its retrieved passages, a passage "
      "counting as gold when its document's title, id or source file stem equals a gold id. "
      "Baselines: closed-book = <s>[INST]question\\n[/INST]\\n; uncompressed = the passages' "
      "text in the prompt (as `cocom ask --no-compress`). A question whose retrieval finds "
      "nothing is answered without passages (counted in the JSON's retrieval object).\n"
      "retrieval (--db required, no model loaded): each {\"question\", \"gold\": [...]} line "
      "is searched in the store with --mode, or with bm25 and, when the store has a dense "
      "retriever, dense and hybrid; recall@k and MRR (1 / the rank of the first gold passage "
      "in the top k, 0 when none) are averaged over the questions. A passage is gold as for qa.\n"
      "PISCO checkpoints use their own published prompts in every configuration (system "
      "message, \"Background:\" with the <MEM0>..<MEMn-1> slots or the passages' text, "
      "\"Question:\"); reconstruction uses <AE><s> + <MEM0>..<MEMn-1>.");
  c->add_option("--task", o.task, "reconstruction, qa or retrieval")
      ->required()
      ->check(CLI::IsMember({"reconstruction", "qa", "retrieval"}));
  c->add_option(
      "--model", o.model,
      "COCOM or PISCO checkpoint directory (default: the store's with --db, else the project's "
      "default model, models/default or $COCOM_DEFAULT_MODEL)");
  c->add_option("--data", o.data,
                "jsonl: {\"text\"} passages (reconstruction), {\"question\", \"answers\"} "
                "lines (qa) or {\"question\", \"gold\"} lines (retrieval)")
      ->required();
  c->add_option("--db", o.db,
                "qa: retrieve the passages from this store (made by cocom ingest); retrieval: "
                "the store searched (required)");
  c->add_option("--k", o.k, "qa and retrieval: passages per question")->capture_default_str();
  c->add_option("--mode", o.search_mode,
                "qa with --db: dense, bm25 or hybrid (default: hybrid with a retriever, else "
                "bm25); retrieval: the one mode measured (default: every mode the store has)");
  c->add_option("--baselines", a.baselines,
                "qa: comma list of closed-book, uncompressed (evaluated beside the compressed "
                "answers)");
  c->add_option("--limit", o.limit, "evaluate the first N examples only (0 = all)")
      ->capture_default_str();
  c->add_option("--max-new-tokens", o.max_new_tokens,
                "tokens per prediction at most (default: qa 64; reconstruction the passage "
                "budget + 8: the context length, or the longest cut passage in decoder tokens "
                "when that is longer, plus 8)");
  c->add_option("--context-max-length", o.context_max_length,
                "compressor tokens per passage without --db (with --db: the store's)")
      ->capture_default_str();
  c->add_option("--batch-size", o.batch_size,
                "examples decoded together (a left-padded batch: faster; 1 = one at a time, "
                "exactly as `cocom ask` decodes)")
      ->capture_default_str();
  c->add_option("--weights", o.weights,
                "resident format of the decoder's linear layers: fp32, bf16, int8 or int8g")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "int8g"}));
  c->add_option("--decoder-tokenizer", o.decoder_tokenizer, "base decoder directory");
  c->add_option("--compressor-tokenizer", o.compressor_tokenizer, "base compressor directory");
  c->add_flag("--json", a.json,
              "print one JSON object on stdout (task, model, data, n, per configuration the "
              "metric means, recall@k and seconds)");
  c->add_option("--predictions", o.predictions,
                "write one jsonl line per example: prediction(s), reference or answers, scores "
                "(and the retrieved passages)");
  c->add_option("--progress-every", a.progress_every, "seconds between progress lines on stderr")
      ->capture_default_str();
  c->callback([&] { rc = run_eval(g, a); });
}

}  // namespace cocom::cli
