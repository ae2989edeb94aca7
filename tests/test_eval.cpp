// `cocom eval` (eval/evaluate.h, tools/cmd_eval.cpp): scoring and aggregation against
// hand-computed values, recall@k against a store whose gold documents are known, jsonl errors
// that name the file and line, the reconstruction prompt, budget and reference, predictions
// checked against independent computations with the fixture checkpoint, and the CLI's --json.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cocom/cocom.h"
#include "common/error.h"
#include "common/json_util.h"
#include "compress/compressor.h"
#include "eval/evaluate.h"
#include "generate/cocom_generate.h"
#include "model/cocom.h"
#include "model/generation.h"
#include "tests/test_util.h"
#include "train/examples.h"

namespace fs = std::filesystem;
using cocom::Json;
using namespace cocom;

namespace {

std::string model_dir() { return test::fixtures_dir() + "/cocom"; }

bool has(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

using test::error_of;

std::vector<Json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<Json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(Json::parse(line));
  }
  return out;
}

struct TempDir {
  std::string path;
  explicit TempDir(const std::string& tag) : path(test::make_temp_dir(tag)) {}
  ~TempDir() {
    if (!::testing::Test::HasFailure()) fs::remove_all(path);
  }
  std::string file(const std::string& name, const std::string& bytes) const {
    std::string p = path + "/" + name;
    test::write_bytes(p, bytes);
    return p;
  }
};

std::string greedy_text(const model::CocomModel& m, const std::vector<int64_t>& ids,
                        const at::Tensor& embeds, int64_t max_new_tokens) {
  model::SamplingOptions so;
  so.max_new_tokens = max_new_tokens;
  so.eos_id = m.decoder_tokenizer().eos_id();
  at::Tensor mask = at::ones({1, static_cast<int64_t>(ids.size())}, at::kLong);
  model::GenerationResult g = model::generate(m.decoder(), embeds, mask, so);
  std::vector<int64_t> out;
  for (int64_t t = 0; t < g.tokens.size(1); ++t) out.push_back(g.tokens[0][t].item<int64_t>());
  return m.decoder_tokenizer().decode(out, true);
}

}  // namespace

// ---- scoring ------------------------------------------------------------------------------

TEST(EvalScoring, AggregationMatchesHandComputedMeans) {
  const std::vector<std::string> preds = {"The Eiffel Tower", "it is in Paris, France", "London",
                                          "no idea"};
  const std::vector<std::vector<std::string>> golds = {
      {"eiffel tower"}, {"Paris"}, {"Paris", "london"}, {"Berlin"}};
  std::vector<eval::ExampleScores> s;
  for (size_t i = 0; i < preds.size(); ++i) s.push_back(eval::score_example(preds[i], golds[i]));
  // "it is in paris france" vs "paris": 1 common token of 5 -> P 1/5, R 1, F1 = 1/3; the LCS is
  // 1 token as well, so ROUGE-L is 1/3 too.
  EXPECT_DOUBLE_EQ(s[1].match, 1.0);
  EXPECT_DOUBLE_EQ(s[1].exact_match, 0.0);
  EXPECT_NEAR(s[1].f1, 1.0 / 3, 1e-12);
  EXPECT_NEAR(s[1].rouge_l, 1.0 / 3, 1e-12);
  // The best gold answer counts.
  EXPECT_DOUBLE_EQ(s[2].exact_match, 1.0);
  EXPECT_DOUBLE_EQ(s[3].match, 0.0);
  EXPECT_DOUBLE_EQ(s[3].f1, 0.0);
  eval::QaScores m = eval::mean_scores(s);
  EXPECT_EQ(m.count, 4u);
  EXPECT_NEAR(m.match, 0.75, 1e-12);
  EXPECT_NEAR(m.exact_match, 0.5, 1e-12);
  EXPECT_NEAR(m.f1, (1 + 1.0 / 3 + 1 + 0) / 4, 1e-12);
  // ROUGE-L keeps the article: "the eiffel tower" vs "eiffel tower" is P 2/3, R 1, F 0.8.
  EXPECT_NEAR(s[0].rouge_l, 0.8, 1e-12);
  EXPECT_DOUBLE_EQ(s[0].exact_match, 1.0);
  EXPECT_NEAR(m.rouge_l, (0.8 + 1.0 / 3 + 1 + 0) / 4, 1e-12);
  // The same means as the metrics module's own aggregate.
  eval::QaScores ref = eval::score_qa(preds, golds);
  EXPECT_NEAR(m.f1, ref.f1, 1e-12);
  EXPECT_EQ(eval::mean_scores({}).count, 0u);
  EXPECT_EQ(eval::mean_scores({}).match, 0.0);
}

TEST(EvalScoring, ReciprocalRankOfTheFirstGoldPassage) {
  const std::vector<eval::RetrievedDoc> docs = {
      {"a", "Alpha", "/x/a.txt"}, {"b", "Beta", "/x/b.md"}, {"c", "Gamma", "/x/c.txt"}};
  EXPECT_DOUBLE_EQ(eval::reciprocal_rank(docs, {"a"}), 1.0);
  EXPECT_DOUBLE_EQ(eval::reciprocal_rank(docs, {"Gamma", "b"}), 0.5);  // the first gold counts
  EXPECT_DOUBLE_EQ(eval::reciprocal_rank(docs, {"c"}), 1.0 / 3);
  EXPECT_DOUBLE_EQ(eval::reciprocal_rank(docs, {"z"}), 0.0);
  EXPECT_DOUBLE_EQ(eval::reciprocal_rank({}, {"a"}), 0.0);
}

TEST(EvalScoring, GoldDocumentsByTitleIdOrSourceStem) {
  eval::RetrievedDoc gpl{"/data/docs/gpl.txt", "gpl", "/data/docs/gpl.txt"};
  eval::RetrievedDoc faq{"faq-2", "Patents", "/data/docs/faq.jsonl"};
  eval::RetrievedDoc md{"/data/notes/apache.md", "Apache License", "/data/notes/apache.md"};
  EXPECT_TRUE(eval::is_gold(gpl, {"gpl"}));            // stem (and title)
  EXPECT_TRUE(eval::is_gold(md, {"apache"}));          // stem only
  EXPECT_TRUE(eval::is_gold(md, {"Apache License"}));  // title only
  EXPECT_TRUE(eval::is_gold(faq, {"x", "faq-2"}));     // document id
  EXPECT_TRUE(eval::is_gold(faq, {"faq"}));            // the jsonl file's stem
  EXPECT_FALSE(eval::is_gold(md, {"apache.md"}));      // not the file name
  EXPECT_FALSE(eval::is_gold(md, {"Apache"}));         // not a prefix of the title
  EXPECT_FALSE(eval::is_gold(gpl, {"GPL"}));           // case matters
  EXPECT_FALSE(eval::is_gold(gpl, {""}));
  // Two distinct gold ids (one listed twice), one found: 1/2.
  EXPECT_DOUBLE_EQ(eval::recall_of_example({faq, gpl}, {"gpl", "apache", "gpl"}), 0.5);
  EXPECT_DOUBLE_EQ(eval::recall_of_example({faq, md}, {"apache", "Patents"}), 1.0);
  EXPECT_DOUBLE_EQ(eval::recall_of_example({}, {"gpl"}), 0.0);
  EXPECT_THROW(eval::recall_of_example({gpl}, {}), Error);
}

// ---- data ---------------------------------------------------------------------------------

TEST(EvalData, MalformedQaLinesNameFileAndLine) {
  TempDir d("eval_data");
  const std::string good =
      R"({"question": "Where?", "answers": ["Paris"], "contexts": ["Paris is big."]})";
  struct Case {
    std::string second_line, want;
  };
  const std::vector<Case> cases = {
      {R"({"question": "Where?", "answers": ["Paris"], )", "invalid JSON"},
      {R"(["question"])", "expected a JSON object"},
      {R"({"question": "Where?", "contexts": ["x"]})", "missing field 'answers'"},
      {R"({"question": "Where?", "answers": "Paris", "contexts": ["x"]})",
       "'answers' must be a list"},
      {R"({"question": "Where?", "answers": [], "contexts": ["x"]})", "empty list"},
      {R"({"question": "Where?", "answers": ["a", 3], "contexts": ["x"]})", "answers[1]"},
      {R"({"answers": ["a"], "contexts": ["x"]})", "missing field 'question'"},
      {R"({"question": 7, "answers": ["a"], "contexts": ["x"]})", "'question' must be a string"},
      {R"({"question": "Where?", "answers": ["a"], "contexts": "x"})", "'contexts' must be a list"},
      {R"({"question": "Where?", "answers": ["a"], "contexts": [{"title": "T"}]})", "contexts[0]"},
      {R"({"question": "Where?", "answers": ["a"], "contexts": ["x"], "gold": "g"})",
       "'gold' must be a list"},
  };
  for (const auto& c : cases) {
    // A blank line first: line numbers count every line of the file.
    const std::string p = d.file("qa.jsonl", good + "\n\n" + c.second_line + "\n");
    const std::string msg = error_of([&] { eval::read_qa(p); });
    EXPECT_TRUE(has(msg, p + ":3")) << c.second_line << " -> " << msg;
    EXPECT_TRUE(has(msg, c.want)) << c.second_line << " -> " << msg;
  }
  // --limit stops before a broken line; the examples before it are read.
  const std::string broken = d.file("qa.jsonl", good + "\n{oops\n");
  EXPECT_EQ(eval::read_qa(broken, 1).size(), 1u);
  EXPECT_TRUE(has(error_of([&] { eval::read_qa(broken, 2); }), broken + ":2"));

  // Neither contexts nor a store.
  const std::string no_ctx =
      d.file("q.jsonl", good + "\n" + R"({"question": "Who?", "answers": ["me"]})" + "\n");
  const std::string msg = error_of([&] { eval::read_qa(no_ctx, 0, /*need_contexts=*/true); });
  EXPECT_TRUE(has(msg, no_ctx + ":2")) << msg;
  EXPECT_TRUE(has(msg, "--db")) << msg;
  auto ok = eval::read_qa(no_ctx, 0, /*need_contexts=*/false);
  ASSERT_EQ(ok.size(), 2u);
  EXPECT_TRUE(ok[1].contexts.empty());
  EXPECT_EQ(ok[1].line, 2u);

  // Contexts as objects read as "Title. text"; gold ids as strings or integers.
  const std::string obj = d.file(
      "o.jsonl",
      R"({"question": "Q", "answers": ["a", "b"], "contexts": [{"title": "T", "text": "body"}, {"text": "plain"}], "gold": ["doc", 12]})"
      "\n");
  auto o = eval::read_qa(obj);
  ASSERT_EQ(o.size(), 1u);
  EXPECT_EQ(o[0].contexts, (std::vector<std::string>{"T. body", "plain"}));
  EXPECT_EQ(o[0].gold, (std::vector<std::string>{"doc", "12"}));
  EXPECT_EQ(o[0].answers.size(), 2u);

  const std::string empty = d.file("e.jsonl", "\n  \n");
  EXPECT_TRUE(has(error_of([&] { eval::read_qa(empty); }), "no examples"));
  EXPECT_TRUE(has(error_of([&] { eval::read_qa(d.path + "/missing.jsonl"); }), "cannot open"));
}

TEST(EvalData, MalformedPassageLinesNameFileAndLine) {
  TempDir d("eval_passages");
  const std::string p1 = d.file("p.jsonl", "{\"text\": \"ok\"}\n{\"title\": \"no text\"}\n");
  std::string msg = error_of([&] { eval::read_passages(p1); });
  EXPECT_TRUE(has(msg, p1 + ":2") && has(msg, "missing field 'text'")) << msg;
  const std::string p2 = d.file("p.jsonl", "{\"text\": [\"a\"]}\n");
  msg = error_of([&] { eval::read_passages(p2); });
  EXPECT_TRUE(has(msg, p2 + ":1") && has(msg, "'text' must be a string")) << msg;
  const std::string p3 = d.file("p.jsonl", "{\"text\": \"a\", \"id\": 5, \"title\": \"T\"}\n");
  auto ps = eval::read_passages(p3);
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].id, "5");
  EXPECT_EQ(ps[0].title, "T");
}

// ---- reconstruction -----------------------------------------------------------------------

TEST(EvalReconstruction, PromptIsTheTrainingRowWithoutItsPassage) {
  auto m = model::CocomModel::load(model_dir());
  const model::Tokenizer& tok = m->decoder_tokenizer();
  // <AE> = 1001, <s> = 1, <MEM> = 1000 in the fixture vocabulary.
  EXPECT_EQ(tok.encode(generate::autoencoding_prompt(*m, 2), false),
            (std::vector<int64_t>{1001, 1, 1000, 1000}));
  // The same ids start the auto-encoding training row (after its left padding).
  train::ExampleFormat f;
  f.tokens = m->tokens();
  f.compr_rate = m->config().compr_rate;
  f.context_max_length = 8;
  train::TrainBatch b = train::make_autoencoding_batch(f, {"Paris is big."});
  std::vector<int64_t> real;
  for (int64_t t = 0; t < b.dec_input_ids.size(1); ++t) {
    if (b.dec_attention_mask[0][t].item<int64_t>())
      real.push_back(b.dec_input_ids[0][t].item<int64_t>());
  }
  const auto prompt = tok.encode(generate::autoencoding_prompt(*m, f.mem_per_passage()), false);
  ASSERT_GT(real.size(), prompt.size());
  EXPECT_EQ(std::vector<int64_t>(real.begin(), real.begin() + long(prompt.size())), prompt);
}

TEST(EvalReconstruction, LongPassagesAreCutToTheBudgetAndScoredAgainstTheCut) {
  auto m = model::CocomModel::load(model_dir());
  const model::Tokenizer& tok = m->decoder_tokenizer();
  auto count = [&](const std::string& t) { return int64_t(tok.encode(t, false).size()) + 3; };
  const std::string short_text = "Paris is big.";
  const std::string long_text =
      "The GNU General Public License is a free software license. It guarantees end users the "
      "freedom to run, study, share and modify the software. Each contributor grants a patent "
      "license to every recipient. The program is distributed without any warranty.";
  const int64_t cml = 32;
  ASSERT_GT(count(long_text), cml);
  eval::CutPassage s = eval::cut_passage(short_text, cml, count);
  EXPECT_EQ(s.text, short_text);
  EXPECT_FALSE(s.truncated);
  eval::CutPassage l = eval::cut_passage(long_text, cml, count);
  EXPECT_TRUE(l.truncated);
  EXPECT_LE(count(l.text), cml);
  EXPECT_GT(l.text.size(), 10u);
  EXPECT_EQ(long_text.rfind(l.text, 0), 0u) << l.text;  // a prefix of the passage

  TempDir d("eval_recon");
  const std::string data =
      d.file("p.jsonl", Json({{"text", short_text}, {"id", "a"}}).dump() + "\n" +
                            Json({{"text", long_text}}).dump() + "\n" +
                            Json({{"text", "The cat sat on the mat."}}).dump() + "\n");
  eval::EvalOptions o;
  o.task = "reconstruction";
  o.model = model_dir();
  o.data = data;
  o.context_max_length = cml;
  o.batch_size = 1;  // no padding: comparable with the single-row computation below
  o.predictions = d.path + "/pred.jsonl";
  size_t progress_calls = 0;
  o.progress = [&](const eval::EvalProgress& p) {
    ++progress_calls;
    EXPECT_EQ(p.total, 3u);
  };
  eval::EvalReport r = eval::run_evaluation(o);
  EXPECT_EQ(progress_calls, 3u);
  EXPECT_EQ(r.n, 3u);
  EXPECT_EQ(r.truncated, 1u);
  EXPECT_EQ(r.max_new_tokens, cml + 8);  // the passage budget + 8
  ASSERT_EQ(r.configs.size(), 1u);
  auto lines = read_jsonl(o.predictions);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["id"], "a");
  EXPECT_EQ(lines[1]["reference"], l.text);
  EXPECT_EQ(lines[1]["truncated"], true);
  EXPECT_EQ(lines[0]["reference"], short_text);
  double rouge = 0, em = 0;
  const int64_t n = (cml + m->config().compr_rate - 1) / m->config().compr_rate;
  for (const auto& line : lines) {
    const std::string ref = line["reference"], pred = line["compressed"]["prediction"];
    EXPECT_DOUBLE_EQ(line["compressed"]["rouge_l"].get<double>(), eval::rouge_l(pred, {ref}));
    EXPECT_DOUBLE_EQ(line["compressed"]["exact_match"].get<double>(),
                     eval::exact_match(pred, {ref}));
    rouge += line["compressed"]["rouge_l"].get<double>();
    em += line["compressed"]["exact_match"].get<double>();
    // Independently: <AE> <s> <MEM>*n by id, the slots replaced by the passage's embeddings
    // (engine regime), greedy decoding.
    std::vector<int64_t> ids = {m->ae_id(), tok.bos_id()};
    for (int64_t i = 0; i < n; ++i) ids.push_back(m->mem_id());
    at::Tensor ctx = compress::compress_passages(*m, {ref}, cml);
    ASSERT_EQ(ctx.size(1), n);
    at::Tensor embeds = m->decoder().embed(at::tensor(ids, at::kLong).view({1, -1})).clone();
    embeds[0].narrow(0, 2, n).copy_(ctx[0]);
    EXPECT_EQ(pred, greedy_text(*m, ids, embeds, cml + 8)) << ref;
  }
  EXPECT_NEAR(r.configs[0].scores.rouge_l, rouge / 3, 1e-12);
  EXPECT_NEAR(r.configs[0].scores.exact_match, em / 3, 1e-12);
  Json j = r.to_json();
  EXPECT_EQ(j["task"], "reconstruction");
  EXPECT_EQ(j["truncated"], 1);
  EXPECT_TRUE(j["configurations"]["compressed"].contains("rouge_l"));
}

// ---- qa -----------------------------------------------------------------------------------

TEST(EvalQa, ContextsCompressedOnTheFlyMatchTheRuntimeAndBaselines) {
  auto m = model::CocomModel::load(model_dir());
  Json g = read_json_file(model_dir() + "/golden.json");
  TempDir d("eval_qa");
  std::string data;
  const std::vector<std::vector<std::string>> answers = {{"free", "GNU"}, {"code"}};
  for (size_t q = 0; q < 2; ++q) {
    data += Json({{"question", g["questions"][q]},
                  {"answers", answers[q]},
                  {"contexts", g["contexts"][q]}})
                .dump() +
            "\n";
  }
  eval::EvalOptions o;
  o.task = "qa";
  o.model = model_dir();
  o.data = d.file("qa.jsonl", data);
  o.max_new_tokens = 8;
  o.batch_size = 1;
  o.baselines = {"uncompressed", "closed-book", "uncompressed"};
  o.predictions = d.path + "/pred.jsonl";
  eval::EvalReport r = eval::run_evaluation(o);
  ASSERT_EQ(r.configs.size(), 3u);  // duplicates dropped, in the order given
  EXPECT_EQ(r.configs[0].name, "compressed");
  EXPECT_EQ(r.configs[1].name, "uncompressed");
  EXPECT_EQ(r.configs[2].name, "closed-book");
  EXPECT_FALSE(r.recall_at_k.has_value());
  auto lines = read_jsonl(o.predictions);
  ASSERT_EQ(lines.size(), 2u);
  std::vector<std::vector<eval::ExampleScores>> want(3);
  for (size_t q = 0; q < 2; ++q) {
    const std::string question = g["questions"][q];
    const std::vector<std::string> ctx = g["contexts"][q];
    model::SamplingOptions so;
    so.max_new_tokens = 8;
    // Compressed: the engine path (engine regime compression, stored-embedding answering).
    at::Tensor emb = compress::compress_passages(*m, ctx, 128, /*batch_size=*/1);
    const std::string compressed = generate::answer(*m, question, emb, so).text;
    // Uncompressed: the runtime's baseline.
    generate::TextGenerationOptions to;
    to.sampling = so;
    const std::string uncompressed =
        generate::generate_uncompressed(*m, {ctx}, {question}, to).answers.texts[0];
    // Closed-book: the question alone in the instruction, by hand.
    const std::string prompt = "<s>[INST]" + question + "\n[/INST]\n";
    auto ids = m->decoder_tokenizer().encode(prompt, false);
    EXPECT_EQ(ids[0], 1);
    const std::string closed =
        greedy_text(*m, ids, m->decoder().embed(at::tensor(ids, at::kLong).view({1, -1})), 8);
    EXPECT_EQ(lines[q]["compressed"]["prediction"], compressed);
    EXPECT_EQ(lines[q]["uncompressed"]["prediction"], uncompressed);
    EXPECT_EQ(lines[q]["closed-book"]["prediction"], closed);
    EXPECT_EQ(lines[q]["line"], q + 1);
    want[0].push_back(eval::score_example(compressed, answers[q]));
    want[1].push_back(eval::score_example(uncompressed, answers[q]));
    want[2].push_back(eval::score_example(closed, answers[q]));
  }
  for (size_t c = 0; c < 3; ++c) {
    eval::QaScores s = eval::mean_scores(want[c]);
    EXPECT_DOUBLE_EQ(r.configs[c].scores.match, s.match) << c;
    EXPECT_DOUBLE_EQ(r.configs[c].scores.f1, s.f1) << c;
    EXPECT_DOUBLE_EQ(r.configs[c].scores.rouge_l, s.rouge_l) << c;
    EXPECT_DOUBLE_EQ(r.configs[c].scores.exact_match, s.exact_match) << c;
  }
  // Without --db and without contexts: the error names the line before any model loads.
  o.data = d.file("bad.jsonl", data + R"({"question": "Q", "answers": ["a"]})" + "\n");
  std::string msg = error_of([&] { eval::run_evaluation(o); });
  EXPECT_TRUE(has(msg, o.data + ":3")) << msg;
  o.baselines = {"open-book"};
  o.data = d.path + "/qa.jsonl";
  EXPECT_TRUE(has(error_of([&] { eval::run_evaluation(o); }), "open-book"));
}

TEST(EvalQa, StoreRetrievalRecallAndAnswersFromStoredEmbeddings) {
  TempDir d("eval_store");
  const std::string corpus = d.path + "/corpus";
  fs::create_directories(corpus + "/notes");
  test::write_bytes(corpus + "/gpl.txt",
                    "The GNU General Public License is a free software license. It guarantees "
                    "end users the freedom to run, study, share and modify the software.");
  test::write_bytes(corpus + "/notes/apache.md",
                    "# Apache License\n\nThe Apache License requires preservation of the "
                    "copyright notice and disclaimer. It is a permissive license.\n");
  test::write_bytes(corpus + "/faq.jsonl",
                    "{\"id\": \"faq-1\", \"title\": \"Warranty\", \"text\": \"The program is "
                    "distributed without any warranty.\"}\n"
                    "{\"id\": \"faq-2\", \"title\": \"Patents\", \"text\": \"Each contributor "
                    "grants a patent license to every recipient.\"}\n");
  const std::string db = d.path + "/db";
  // The questions, their gold documents (file stem, Markdown title, jsonl title, and a wrong
  // one), and what top-1 BM25 retrieval must find for each (distinctive words).
  const std::vector<std::string> questions = {
      "GNU General Public free software?", "preservation of the copyright notice disclaimer?",
      "patent contributor recipient?", "GNU General Public free software freedom?"};
  const std::vector<std::string> gold = {"gpl", "Apache License", "Patents", "Warranty"};
  std::vector<std::string> asked;
  {
    cocom::Options eo;
    eo.db_path = db;
    eo.model_dir = model_dir();
    eo.threads = 2;
    eo.generation.max_new_tokens = 8;
    std::unique_ptr<cocom::Engine> e;
    cocom::Status s = cocom::Engine::Open(eo, &e);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto ing = e->Ingest({corpus});
    ASSERT_TRUE(ing.ok()) << ing.status().ToString();
    cocom::AskOptions ao;
    ao.k = 1;
    ao.mode = cocom::SearchMode::kBm25;
    for (const auto& q : questions) {
      auto a = e->Ask(q, ao);
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      asked.push_back(a.value().text);
    }
  }  // the engine closes the store before the evaluation opens it
  std::string data;
  for (size_t q = 0; q < questions.size(); ++q) {
    data +=
        Json({{"question", questions[q]}, {"answers", {"license"}}, {"gold", {gold[q]}}}).dump() +
        "\n";
  }
  data += Json({{"question", "software?"}, {"answers", {"x"}}}).dump() + "\n";  // no gold
  eval::EvalOptions o;
  o.task = "qa";
  o.db = db;  // the model is the store's
  o.data = d.file("qa.jsonl", data);
  o.k = 1;
  o.search_mode = "bm25";
  o.max_new_tokens = 8;
  o.batch_size = 1;  // one at a time, like `cocom ask`: comparable answers
  o.baselines = {"closed-book", "uncompressed"};
  o.predictions = d.path + "/pred.jsonl";
  eval::EvalReport r = eval::run_evaluation(o);
  EXPECT_EQ(r.n, 5u);
  EXPECT_EQ(r.search_mode, "bm25");
  EXPECT_EQ(r.recall_questions, 4u);
  ASSERT_TRUE(r.recall_at_k.has_value());
  EXPECT_DOUBLE_EQ(*r.recall_at_k, 0.75);
  EXPECT_EQ(fs::path(r.model).filename().string(), "cocom");
  auto lines = read_jsonl(o.predictions);
  ASSERT_EQ(lines.size(), 5u);
  const std::vector<double> want_recall = {1, 1, 1, 0};
  for (size_t q = 0; q < 4; ++q) {
    EXPECT_DOUBLE_EQ(lines[q]["recall"].get<double>(), want_recall[q]) << q;
    ASSERT_EQ(lines[q]["retrieved"].size(), 1u);
    EXPECT_EQ(lines[q]["retrieved"][0]["gold"], want_recall[q] == 1) << q;
  }
  EXPECT_TRUE(lines[4]["recall"].is_null());
  // The compressed answers are what `cocom ask` answers from the stored embeddings.
  for (size_t q = 0; q < 4; ++q) {
    EXPECT_EQ(lines[q]["compressed"]["prediction"], asked[q]) << q;
  }
  Json j = r.to_json();
  EXPECT_DOUBLE_EQ(j["retrieval"]["recall_at_k"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(j["configurations"]["compressed"]["recall_at_k"].get<double>(), 0.75);
  EXPECT_TRUE(j["configurations"]["closed-book"]["recall_at_k"].is_null());

  // Batched (left-padded) decoding: the same retrieval, the same recall.
  o.batch_size = 3;
  o.predictions.clear();
  eval::EvalReport rb = eval::run_evaluation(o);
  EXPECT_EQ(rb.n, 5u);
  ASSERT_TRUE(rb.recall_at_k.has_value());
  EXPECT_DOUBLE_EQ(*rb.recall_at_k, 0.75);
  ASSERT_EQ(rb.configs.size(), 3u);
  EXPECT_EQ(rb.configs[2].scores.count, 5u);

  // --task retrieval on the same store: BM25 top 1 (no model loaded), recall@1 = MRR = 0.75
  // over the four questions with gold ids; a line without gold ids is named.
  eval::EvalOptions ro;
  ro.task = "retrieval";
  ro.db = db;
  ro.data = o.data;
  ro.k = 1;
  ro.limit = 4;
  eval::EvalReport rr = eval::run_evaluation(ro);
  ASSERT_EQ(rr.configs.size(), 1u);  // no dense retriever: bm25 only
  EXPECT_EQ(rr.configs[0].name, "bm25");
  EXPECT_DOUBLE_EQ(rr.configs[0].recall, 0.75);
  EXPECT_DOUBLE_EQ(rr.configs[0].mrr, 0.75);
  EXPECT_DOUBLE_EQ(rr.to_json()["configurations"]["bm25"]["mrr"].get<double>(), 0.75);
  ro.limit = 0;
  const std::string msg = error_of([&] { eval::run_evaluation(ro); });
  EXPECT_TRUE(has(msg, "qa.jsonl:5") && has(msg, "gold")) << msg;
  ro.db.clear();
  EXPECT_TRUE(has(error_of([&] { eval::run_evaluation(ro); }), "--db"));

  // A directory that is not a store is refused (and not created).
  o.db = d.path + "/nostore";
  EXPECT_TRUE(has(error_of([&] { eval::run_evaluation(o); }), "no knowledge store"));
  EXPECT_FALSE(fs::exists(o.db));
}

// ---- the command line ---------------------------------------------------------------------

TEST(EvalCli, JsonOutputAndErrors) {
  TempDir d("eval_cli");
  Json g = read_json_file(model_dir() + "/golden.json");
  const std::string qa = d.file(
      "qa.jsonl",
      Json({{"question", g["questions"][0]}, {"answers", {"free"}}, {"contexts", g["contexts"][0]}})
              .dump() +
          "\n" +
          Json({{"question", g["questions"][1]},
                {"answers", {"code"}},
                {"contexts", g["contexts"][1]}})
              .dump() +
          "\n");
  const std::string out = d.path + "/out.json";
  std::string log;
  int rc = test::run_command(
      // stdout alone to the file (run_command sends the subshell's stderr to `log`).
      "(" + test::cocom_binary() + " --threads 2 eval --task qa --model " + model_dir() +
          " --data " + qa + " --max-new-tokens 6 --limit 1 --baselines closed-book --json > " +
          out + ")",
      &log);
  ASSERT_EQ(rc, 0) << log;
  EXPECT_TRUE(has(log, "eval: 1/1 examples")) << log;  // progress on stderr
  Json j = read_json_file(out);
  EXPECT_EQ(j["task"], "qa");
  EXPECT_EQ(j["model"], model_dir());
  EXPECT_EQ(j["data"], qa);
  EXPECT_EQ(j["n"], 1);
  EXPECT_EQ(j["k"], 5);
  EXPECT_TRUE(j["db"].is_null());
  for (const char* c : {"compressed", "closed-book"}) {
    ASSERT_TRUE(j["configurations"].contains(c)) << j.dump();
    for (const char* f : {"match", "exact_match", "f1", "rouge_l", "seconds"}) {
      EXPECT_TRUE(j["configurations"][c][f].is_number()) << c << " " << f;
    }
    EXPECT_TRUE(j["configurations"][c]["recall_at_k"].is_null());
  }
  EXPECT_FALSE(j["configurations"].contains("uncompressed"));
  EXPECT_TRUE(j["seconds"].is_number());

  // Reconstruction, table output.
  const std::string ps = d.file("p.jsonl", "{\"text\": \"Paris is big.\"}\n");
  rc = test::run_command(test::cocom_binary() + " --threads 2 eval --task reconstruction --model " +
                             model_dir() + " --data " + ps + " --context-max-length 32",
                         &log);
  ASSERT_EQ(rc, 0) << log;
  EXPECT_TRUE(has(log, "ROUGE-L")) << log;
  EXPECT_TRUE(has(log, "compressed")) << log;

  // Errors name the file and line.
  const std::string bad = d.file("bad.jsonl", "{\"question\": \"Q\", \"answers\": \"a\"}\n");
  rc = test::run_command(
      test::cocom_binary() + " eval --task qa --model " + model_dir() + " --data " + bad, &log);
  EXPECT_NE(rc, 0);
  EXPECT_TRUE(has(log, bad + ":1")) << log;
  EXPECT_TRUE(has(log, "'answers' must be a list")) << log;
  rc = test::run_command(test::cocom_binary() + " eval --task qa --model " + model_dir() +
                             " --data " +
                             d.file("nc.jsonl", "{\"question\": \"Q\", \"answers\": [\"a\"]}\n"),
                         &log);
  EXPECT_NE(rc, 0);
  EXPECT_TRUE(has(log, "nc.jsonl:1") && has(log, "--db")) << log;
  rc = test::run_command(test::cocom_binary() + " eval --help", &log);
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(has(log, "--baselines") && has(log, "recall@k") && has(log, "<AE><s>")) << log;
}
