// `cocom eval`: answer quality of a COCOM checkpoint, measured the way the paper does.
//
//  - reconstruction: every passage is compressed (the engine regime, as ingestion stores it)
//    and decoded back greedily through the auto-encoding prompt '<AE><s>' + '<MEM>' * n (the
//    pre-training row without its passage), until '</s>'. A passage longer than the
//    compressor's context length is first cut as ingestion cuts it (the first passage that
//    ingest::chunk_document makes of it); the reference for scoring is that cut text, i.e.
//    exactly what was compressed. Scores: ROUGE-L and normalised exact match.
//  - retrieval: questions with gold document ids searched in a knowledge store, no model
//    loaded: recall@k and MRR (the reciprocal rank of the first gold passage in the top k, 0
//    when none is there) for bm25 and, with a dense retriever, dense and hybrid.
//  - qa: questions answered from k passages -- retrieved from a knowledge store (its stored
//    context embeddings, as `cocom ask` answers) or the line's "contexts" compressed on the
//    fly -- with the runtime's decoder prompt and greedy decoding. Scores (each the best over
//    the gold answers, then averaged): Match, EM, token F1, ROUGE-L (eval/metrics.h); recall@k
//    of the retrieval when the line names its gold documents. Baselines with the same decoder:
//    closed-book (the question alone) and uncompressed (the passages' text in the prompt).
//
// Scoring (score_example, mean_scores, recall_of_example) is separate from generation, and
// torch-free, like this header.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "eval/metrics.h"

namespace cocom::eval {

// ---- data -------------------------------------------------------------------------------

struct PassageExample {
  size_t line = 0;  // 1-based line number in the file
  std::string id, title, text;
};

struct QaExample {
  size_t line = 0;
  std::string id;
  std::string question;
  std::vector<std::string> answers;   // non-empty
  std::vector<std::string> contexts;  // may be empty (then a store must provide passages)
  std::vector<std::string> gold;      // gold document ids (titles or file stems); may be empty
};

// Read jsonl files, skipping blank lines, stopping after `limit` examples (0 = all). Every
// error names the file and the line: invalid JSON, a line that is not an object, a missing or
// mistyped field, an empty "text"/"question", an "answers" that is not a non-empty list of
// strings, "contexts" entries that are neither strings nor {"text", "title"} objects (an
// object becomes "Title. text"), "gold" entries that are neither strings nor integers.
// `need_contexts`: a line without contexts is an error (no store to retrieve from).
std::vector<PassageExample> read_passages(const std::string& path, size_t limit = 0);
// `retrieval`: "answers" may be absent and "gold" is required (--task retrieval).
std::vector<QaExample> read_qa(const std::string& path, size_t limit = 0,
                               bool need_contexts = false, bool retrieval = false);

// ---- scoring (no model) -----------------------------------------------------------------

struct ExampleScores {
  double match = 0, exact_match = 0, f1 = 0, rouge_l = 0;
};
// Each metric the best over `golds` (eval/metrics.h).
ExampleScores score_example(const std::string& prediction, const std::vector<std::string>& golds);
// Means over examples (count = size; all zero when empty).
QaScores mean_scores(const std::vector<ExampleScores>& scores);

// What the store keeps about a retrieved passage's document.
struct RetrievedDoc {
  std::string doc_id, title, source;
};
// A retrieved passage is gold when its document's title, its id, or the stem of its source
// file (the name without directory and extension) equals one of the gold ids.
bool is_gold(const RetrievedDoc& doc, const std::vector<std::string>& gold);
// recall@k of one question: the share of its distinct gold ids found among the retrieved
// passages (1 or 0 for a single gold id). Throws for an empty gold list.
double recall_of_example(const std::vector<RetrievedDoc>& retrieved,
                         const std::vector<std::string>& gold);

// ---- running ----------------------------------------------------------------------------

struct EvalProgress {
  size_t done = 0, total = 0;
  double seconds = 0;
};

struct EvalOptions {
  std::string task;   // "reconstruction", "qa" or "retrieval"
  std::string model;  // COCOM checkpoint (default: the store's with --db, else
                      // cocom::DefaultModelDir())
  std::string data;
  std::string db;           // qa: knowledge store to retrieve from (made by `cocom ingest`)
  std::string search_mode;  // dense, bm25, hybrid; empty = hybrid with a retriever, else bm25
  std::string decoder_tokenizer, compressor_tokenizer;
  std::string device = "cpu";
  std::string weights = "fp32";      // resident format of the decoder: fp32, bf16, int8
  size_t limit = 0;                  // first N examples (0 = all)
  int64_t k = 5;                     // passages per question
  int64_t max_new_tokens = 0;        // 0 = default (qa 64; reconstruction: the passage budget + 8)
  int64_t context_max_length = 128;  // without --db (with it: the store's)
  int64_t batch_size = 8;            // examples decoded together (left-padded batch)
  std::vector<std::string> baselines;                 // "closed-book", "uncompressed" (qa only)
  std::string predictions;                            // jsonl path: one line per example (optional)
  std::function<void(const EvalProgress&)> progress;  // after every batch
};

// One configuration's results.
struct ConfigResult {
  std::string name;    // "compressed", "closed-book", "uncompressed"
  QaScores scores;     // reconstruction: rouge_l and exact_match are the reported ones
  double seconds = 0;  // compression (on the fly) + prompt assembly + generation
  bool uses_retrieval = false;
  double recall = 0, mrr = 0;  // retrieval: means over the questions
};

struct EvalReport {
  std::string task, model, data, db, search_mode;
  size_t n = 0;
  int64_t k = 0, max_new_tokens = 0, context_max_length = 0;
  std::vector<ConfigResult> configs;
  // Retrieval (qa with a store).
  std::optional<double> recall_at_k;  // over the questions with gold ids
  size_t recall_questions = 0;
  size_t no_passage_questions = 0;  // retrieved nothing: answered without passages
  double retrieve_seconds = 0;
  size_t truncated = 0;  // reconstruction: passages cut to the context length
  double seconds = 0;    // the whole run, model loading included

  Json to_json() const;
};

// Mean reciprocal rank's term for one question: 1 / (1 + the index of the first gold passage
// among `retrieved`), 0 when none is gold.
double reciprocal_rank(const std::vector<RetrievedDoc>& retrieved,
                       const std::vector<std::string>& gold);

// Throws cocom::Error naming the file/line or option at fault.
EvalReport run_evaluation(const EvalOptions& opt);

// The reconstruction inputs of passages: the text actually compressed (see the top of this
// file) and whether it was cut. `count_tokens` counts the compressor's input tokens of a text
// (special tokens included), as ingestion does.
struct CutPassage {
  std::string text;
  bool truncated = false;
};
CutPassage cut_passage(const std::string& text, int64_t context_max_length,
                       const std::function<int64_t(const std::string&)>& count_tokens);

}  // namespace cocom::eval
