#include "eval/evaluate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "cocom/cocom.h"
#include "common/error.h"
#include "common/log.h"
#include "compress/compressor.h"
#include "engine/knowledge_store.h"
#include "generate/cocom_generate.h"
#include "ingest/documents.h"
#include "model/cocom.h"
#include "model/quant.h"
#include "model/runtime.h"

namespace fs = std::filesystem;

namespace cocom::eval {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// A value quoted in an error message, cut short.
std::string quoted(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

const char* type_name(const Json& v) {
  if (v.is_null()) return "null";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  if (v.is_object()) return "an object";
  if (v.is_boolean()) return "a boolean";
  return "a number";
}

// Calls `fn(json, where)` for every non-blank line until `limit` of them (0 = all).
void for_each_record(const std::string& path, size_t limit,
                     const std::function<void(const Json&, size_t, const std::string&)>& fn) {
  if (path.empty()) fail("--data: a jsonl file is required");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("--data ", path, ": cannot open");
  std::string line;
  size_t no = 0, taken = 0;
  while ((limit == 0 || taken < limit) && std::getline(in, line)) {
    ++no;
    if (blank(line)) continue;
    const std::string where = path + ":" + std::to_string(no);
    Json j = parse_json_text(line, where);
    if (!j.is_object()) fail(where, ": expected a JSON object, got ", type_name(j));
    fn(j, no, where);
    ++taken;
  }
  if (in.bad()) fail("--data ", path, ": read error after line ", no);
  if (taken == 0) fail("--data ", path, ": no examples (the file has no non-blank lines)");
}

std::string required_text(const Json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail(where, ": missing field '", key, "'");
  if (!it->is_string()) {
    fail(where, ": field '", key, "' must be a string, got ", type_name(*it), " ", quoted(*it));
  }
  std::string s = it->get<std::string>();
  if (blank(s)) fail(where, ": field '", key, "' is empty");
  return s;
}

// An optional id: a string or an integer.
std::string optional_id(const Json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<int64_t>());
  fail(where, ": field '", key, "' must be a string or an integer, got ", type_name(*it));
}

std::string optional_string(const Json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (!it->is_string()) fail(where, ": field '", key, "' must be a string, got ", type_name(*it));
  return it->get<std::string>();
}

}  // namespace

// ---- data ---------------------------------------------------------------------------------

std::vector<PassageExample> read_passages(const std::string& path, size_t limit) {
  std::vector<PassageExample> out;
  for_each_record(path, limit, [&](const Json& j, size_t no, const std::string& where) {
    PassageExample e;
    e.line = no;
    e.text = required_text(j, "text", where);
    e.id = optional_id(j, "id", where);
    e.title = optional_string(j, "title", where);
    out.push_back(std::move(e));
  });
  return out;
}

std::vector<QaExample> read_qa(const std::string& path, size_t limit, bool need_contexts,
                               bool retrieval) {
  std::vector<QaExample> out;
  for_each_record(path, limit, [&](const Json& j, size_t no, const std::string& where) {
    QaExample e;
    e.line = no;
    e.question = required_text(j, "question", where);
    e.id = optional_id(j, "id", where);
    auto a = j.find("answers");
    const bool no_answers = a == j.end() || a->is_null();
    if (no_answers && !retrieval) {
      fail(where, ": missing field 'answers' (a list of gold answer strings)");
    }
    if (!no_answers) {  // optional for retrieval questions, checked when given
      if (!a->is_array()) {
        fail(where, ": field 'answers' must be a list of strings, got ", type_name(*a), " ",
             quoted(*a));
      }
      if (a->empty()) fail(where, ": field 'answers' is an empty list (give at least one answer)");
      for (size_t i = 0; i < a->size(); ++i) {
        const Json& v = (*a)[i];
        if (!v.is_string()) {
          fail(where, ": answers[", i, "] must be a string, got ", type_name(v), " ", quoted(v));
        }
        e.answers.push_back(v.get<std::string>());
      }
    }
    auto c = j.find("contexts");
    if (c != j.end() && !c->is_null()) {
      if (!c->is_array()) {
        fail(where, ": field 'contexts' must be a list of passages, got ", type_name(*c));
      }
      for (size_t i = 0; i < c->size(); ++i) {
        const Json& v = (*c)[i];
        if (v.is_string()) {
          e.contexts.push_back(v.get<std::string>());
        } else if (v.is_object() && v.contains("text") && v["text"].is_string()) {
          const std::string title =
              optional_string(v, "title", where + " contexts[" + std::to_string(i) + "]");
          const std::string text = v["text"].get<std::string>();
          e.contexts.push_back(title.empty() ? text : title + ". " + text);
        } else {
          fail(where, ": contexts[", i,
               "] must be a string or an object with a 'text' string, got ", type_name(v), " ",
               quoted(v));
        }
        if (blank(e.contexts.back())) fail(where, ": contexts[", i, "] is empty");
      }
    }
    if (need_contexts && e.contexts.empty()) {
      fail(where,
           ": no 'contexts' and no --db: give the line's passages in \"contexts\", or "
           "retrieve them from a knowledge store with --db STORE");
    }
    auto g = j.find("gold");
    if (g != j.end() && !g->is_null()) {
      if (!g->is_array()) {
        fail(where, ": field 'gold' must be a list of document ids, got ", type_name(*g));
      }
      for (size_t i = 0; i < g->size(); ++i) {
        const Json& v = (*g)[i];
        if (v.is_string()) {
          e.gold.push_back(v.get<std::string>());
        } else if (v.is_number_integer()) {
          e.gold.push_back(std::to_string(v.get<int64_t>()));
        } else {
          fail(where, ": gold[", i, "] must be a string or an integer, got ", type_name(v));
        }
      }
    }
    if (retrieval && e.gold.empty()) {
      fail(where,
           ": no 'gold' ids: a retrieval question names the documents that answer it "
           "(ids, titles or file stems)");
    }
    out.push_back(std::move(e));
  });
  return out;
}

// ---- scoring ------------------------------------------------------------------------------

ExampleScores score_example(const std::string& prediction, const std::vector<std::string>& golds) {
  ExampleScores s;
  s.match = match(prediction, golds);
  s.exact_match = exact_match(prediction, golds);
  s.f1 = token_f1(prediction, golds);
  s.rouge_l = rouge_l(prediction, golds);
  return s;
}

QaScores mean_scores(const std::vector<ExampleScores>& scores) {
  QaScores m;
  m.count = scores.size();
  if (scores.empty()) return m;
  for (const auto& s : scores) {
    m.match += s.match;
    m.exact_match += s.exact_match;
    m.f1 += s.f1;
    m.rouge_l += s.rouge_l;
  }
  const double n = static_cast<double>(scores.size());
  m.match /= n;
  m.exact_match /= n;
  m.f1 /= n;
  m.rouge_l /= n;
  return m;
}

bool is_gold(const RetrievedDoc& doc, const std::vector<std::string>& gold) {
  const std::string stem = doc.source.empty() ? "" : fs::path(doc.source).stem().string();
  for (const auto& g : gold) {
    if (g.empty()) continue;
    if (g == doc.title || g == doc.doc_id || g == stem) return true;
  }
  return false;
}

double recall_of_example(const std::vector<RetrievedDoc>& retrieved,
                         const std::vector<std::string>& gold) {
  std::set<std::string> wanted(gold.begin(), gold.end());
  wanted.erase("");
  if (wanted.empty()) fail("recall@k: the question has no gold ids");
  size_t found = 0;
  for (const auto& g : wanted) {
    for (const auto& d : retrieved) {
      if (is_gold(d, {g})) {
        ++found;
        break;
      }
    }
  }
  return static_cast<double>(found) / static_cast<double>(wanted.size());
}

CutPassage cut_passage(const std::string& text, int64_t context_max_length,
                       const std::function<int64_t(const std::string&)>& count_tokens) {
  ingest::Document doc;
  doc.text = text;
  ingest::ChunkOptions co;
  co.max_tokens = context_max_length;
  std::vector<ingest::Passage> ps = ingest::chunk_document(doc, co, count_tokens);
  if (ps.empty()) fail("the passage has no text");
  return {ps[0].text, ps.size() > 1};
}

// ---- report -------------------------------------------------------------------------------

Json EvalReport::to_json() const {
  Json j;
  j["task"] = task;
  j["model"] = model;
  j["data"] = data;
  j["db"] = db.empty() ? Json(nullptr) : Json(db);
  j["n"] = n;
  j["max_new_tokens"] = max_new_tokens;
  j["context_max_length"] = context_max_length;
  if (task == "qa" || task == "retrieval") j["k"] = k;
  Json cj = Json::object();
  for (const auto& c : configs) {
    Json o;
    if (task == "retrieval") {
      o["recall_at_k"] = c.recall;
      o["mrr"] = c.mrr;
    } else if (task == "qa") {
      o["match"] = c.scores.match;
      o["exact_match"] = c.scores.exact_match;
      o["f1"] = c.scores.f1;
      o["rouge_l"] = c.scores.rouge_l;
      o["recall_at_k"] = c.uses_retrieval && recall_at_k ? Json(*recall_at_k) : Json(nullptr);
    } else {
      o["rouge_l"] = c.scores.rouge_l;
      o["exact_match"] = c.scores.exact_match;
    }
    o["n"] = c.scores.count;
    o["seconds"] = c.seconds;
    o["examples_per_second"] = c.seconds > 0 ? double(c.scores.count) / c.seconds : 0.0;
    cj[c.name] = o;
  }
  j["configurations"] = cj;
  if (task == "qa" && !db.empty()) {
    j["retrieval"] = {{"mode", search_mode},
                      {"k", k},
                      {"recall_at_k", recall_at_k ? Json(*recall_at_k) : Json(nullptr)},
                      {"questions_with_gold", recall_questions},
                      {"no_passage_questions", no_passage_questions},
                      {"seconds", retrieve_seconds}};
  }
  if (task == "reconstruction") j["truncated"] = truncated;
  j["seconds"] = seconds;
  return j;
}

double reciprocal_rank(const std::vector<RetrievedDoc>& retrieved,
                       const std::vector<std::string>& gold) {
  for (size_t i = 0; i < retrieved.size(); ++i) {
    if (is_gold(retrieved[i], gold)) return 1.0 / double(i + 1);
  }
  return 0;
}

// ---- running ------------------------------------------------------------------------------

namespace {

// Greedy answers of prompts whose token embeddings are given.
std::vector<std::string> decode_greedy(const model::CocomModel& m, const at::Tensor& embeds,
                                       const at::Tensor& mask, int64_t max_new_tokens) {
  model::SamplingOptions so;
  so.max_new_tokens = max_new_tokens;
  so.temperature = 0;
  return generate::generate_answers(m, embeds, mask, so).texts;
}

// Greedy answers of text prompts (closed-book, uncompressed).
std::vector<std::string> answer_text_prompts(const model::CocomModel& m,
                                             std::vector<std::string> prompts,
                                             int64_t max_new_tokens) {
  generate::DecoderInputs in;
  in.prompts = std::move(prompts);
  generate::encode_prompts(m, &in);
  at::Tensor embeds = m.decoder().embed(in.input_ids.to(m.decoder().device()));
  return decode_greedy(m, embeds, in.attention_mask.to(m.decoder().device()), max_new_tokens);
}

// Greedy answers from context embeddings: `emb[i]` [k_i, n, H] belongs to question i. Questions
// are decoded together in groups with the same k; a question without passages gets the
// closed-book prompt.
std::vector<std::string> answer_from_embeddings(const model::CocomModel& m,
                                                const std::vector<std::string>& questions,
                                                const std::vector<at::Tensor>& emb,
                                                int64_t max_new_tokens) {
  std::vector<std::string> out(questions.size());
  std::map<int64_t, std::vector<size_t>> groups;
  for (size_t i = 0; i < questions.size(); ++i)
    groups[emb[i].defined() ? emb[i].size(0) : 0].push_back(i);
  for (const auto& [k, idx] : groups) {
    std::vector<std::string> texts;
    if (k == 0) {
      std::vector<std::string> prompts;
      for (size_t i : idx) prompts.push_back(generate::closed_book_prompt(m, questions[i]));
      texts = answer_text_prompts(m, prompts, max_new_tokens);
    } else {
      std::vector<std::string> qs;
      std::vector<at::Tensor> parts;
      for (size_t i : idx) {
        qs.push_back(questions[i]);
        parts.push_back(emb[i]);
      }
      at::Tensor ctx = at::cat(parts, 0);  // [G * k, n, H]
      generate::DecoderInputs in = generate::decoder_prompts(m, qs, k, ctx.size(1));
      in.input_ids = in.input_ids.to(m.decoder().device());
      in.attention_mask = in.attention_mask.to(m.decoder().device());
      at::Tensor embeds = generate::embed_with_contexts(m, in, ctx, k);
      texts = decode_greedy(m, embeds, in.attention_mask, max_new_tokens);
    }
    for (size_t j = 0; j < idx.size(); ++j) out[idx[j]] = texts[j];
  }
  return out;
}

Json scores_json(const std::string& prediction, const ExampleScores& s, bool qa) {
  Json o;
  o["prediction"] = prediction;
  if (qa) {
    o["match"] = s.match;
    o["exact_match"] = s.exact_match;
    o["f1"] = s.f1;
  } else {
    o["exact_match"] = s.exact_match;
  }
  o["rouge_l"] = s.rouge_l;
  return o;
}

std::string dump_line(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

struct Loaded {
  std::unique_ptr<engine::KnowledgeStore> store;
  std::unique_ptr<model::CocomModel> own;
  const model::CocomModel* m = nullptr;
  std::string model_dir;  // without a store: the checkpoint loaded
};

Loaded load(const EvalOptions& opt) {
  model::CocomLoadOptions lo;
  lo.device = model::parse_device(opt.device);
  lo.decoder_tokenizer = opt.decoder_tokenizer;
  lo.compressor_tokenizer = opt.compressor_tokenizer;
  auto wf = model::parse_weight_format(opt.weights);
  if (!wf) fail("--weights ", opt.weights, ": expected fp32, bf16 or int8");
  lo.decoder_weights = *wf;
  Loaded l;
  if (!opt.db.empty()) {
    // Never create a store: it must have been made by `cocom ingest`.
    if (!file_exists(join_path(opt.db, "cocom-db.json"))) {
      fail("--db ", opt.db, ": no knowledge store there (make one with `cocom ingest --db ", opt.db,
           " --model DIR PATH...`)");
    }
    engine::KnowledgeStoreOptions so;
    so.db = opt.db;
    so.model_dir = opt.model;
    so.cocom = lo;
    so.need_model = false;
    l.store = engine::KnowledgeStore::open(so);
    l.m = &l.store->loaded_model();
  } else {
    l.model_dir = opt.model.empty() ? cocom::DefaultModelDir() : opt.model;
    if (l.model_dir.empty()) {
      fail(
          "--model: a COCOM checkpoint directory is required (no default model was found: "
          "models/default, $COCOM_DEFAULT_MODEL)");
    }
    l.own = model::CocomModel::load(l.model_dir, lo);
    l.m = l.own.get();
  }
  return l;
}

std::unique_ptr<std::ofstream> open_predictions(const std::string& path) {
  if (path.empty()) return nullptr;
  auto f = std::make_unique<std::ofstream>(path, std::ios::binary | std::ios::trunc);
  if (!*f) fail("--predictions ", path, ": cannot write");
  return f;
}

void run_reconstruction(const EvalOptions& opt, const Loaded& l,
                        const std::vector<PassageExample>& ex, EvalReport* rep,
                        Clock::time_point t0) {
  const model::CocomModel& m = *l.m;
  const bool light = m.config().light();
  const model::Tokenizer& ctok = light ? *m.compressor_tokenizer() : m.decoder_tokenizer();
  // The compressor's input tokens, counted as ingestion counts them.
  auto count = [&](const std::string& text) -> int64_t {
    return static_cast<int64_t>(ctok.encode(text, light).size()) + (light ? 0 : 3);
  };
  const int64_t cml = rep->context_max_length;
  std::vector<CutPassage> refs;
  int64_t longest = cml;
  for (const auto& e : ex) {
    try {
      refs.push_back(cut_passage(e.text, cml, count));
    } catch (const Error& err) {
      fail(opt.data, ":", e.line, ": ", err.what());
    }
    if (refs.back().truncated) ++rep->truncated;
    longest = std::max<int64_t>(
        longest,
        static_cast<int64_t>(m.decoder_tokenizer().encode(refs.back().text, false).size()));
  }
  rep->max_new_tokens = opt.max_new_tokens > 0 ? opt.max_new_tokens : longest + 8;
  auto pred_out = open_predictions(opt.predictions);
  ConfigResult cr;
  cr.name = "compressed";
  std::vector<ExampleScores> scores;
  const size_t B = static_cast<size_t>(std::max<int64_t>(1, opt.batch_size));
  for (size_t b = 0; b < ex.size(); b += B) {
    const size_t e = std::min(ex.size(), b + B);
    auto tb = Clock::now();
    std::vector<std::string> texts;
    for (size_t i = b; i < e; ++i) texts.push_back(refs[i].text);
    at::Tensor ctx = compress::compress_passages(m, texts, cml, opt.batch_size);
    generate::DecoderInputs in;
    in.prompts.assign(texts.size(), generate::autoencoding_prompt(m, ctx.size(1)));
    generate::encode_prompts(m, &in);
    in.input_ids = in.input_ids.to(m.decoder().device());
    in.attention_mask = in.attention_mask.to(m.decoder().device());
    at::Tensor embeds = generate::embed_with_contexts(m, in, ctx, 1);
    std::vector<std::string> preds =
        decode_greedy(m, embeds, in.attention_mask, rep->max_new_tokens);
    cr.seconds += since(tb);
    for (size_t i = b; i < e; ++i) {
      const std::string& p = preds[i - b];
      ExampleScores s;
      s.exact_match = exact_match(p, {refs[i].text});
      s.rouge_l = rouge_l(p, {refs[i].text});
      scores.push_back(s);
      if (pred_out) {
        Json line;
        line["line"] = ex[i].line;
        if (!ex[i].id.empty()) line["id"] = ex[i].id;
        if (!ex[i].title.empty()) line["title"] = ex[i].title;
        line["reference"] = refs[i].text;
        line["truncated"] = refs[i].truncated;
        line["compressed"] = scores_json(p, s, false);
        *pred_out << dump_line(line);
      }
    }
    if (pred_out) pred_out->flush();
    if (opt.progress) opt.progress({e, ex.size(), since(t0)});
  }
  if (pred_out && !*pred_out) fail("--predictions ", opt.predictions, ": write failed");
  cr.scores = mean_scores(scores);
  rep->configs.push_back(cr);
  rep->n = ex.size();
}

void run_qa(const EvalOptions& opt, const Loaded& l, const std::vector<QaExample>& ex,
            EvalReport* rep, Clock::time_point t0) {
  const model::CocomModel& m = *l.m;
  if (opt.k < 1) fail("--k must be at least 1");
  std::vector<std::string> configs = {"compressed"};
  for (const auto& b : opt.baselines) {
    if (b != "closed-book" && b != "uncompressed") {
      fail("--baselines ", b, ": expected closed-book and/or uncompressed");
    }
    if (std::find(configs.begin(), configs.end(), b) == configs.end()) configs.push_back(b);
  }
  const bool with_store = l.store != nullptr;
  rep->max_new_tokens = opt.max_new_tokens > 0 ? opt.max_new_tokens : 64;
  engine::SearchMode mode = engine::SearchMode::Bm25;
  if (with_store) {
    mode = opt.search_mode.empty()
               ? (l.store->has_dense() ? engine::SearchMode::Hybrid : engine::SearchMode::Bm25)
               : engine::parse_search_mode(opt.search_mode);
    if (mode != engine::SearchMode::Bm25 && !l.store->has_dense()) {
      fail("--mode ", opt.search_mode,
           ": this store has no dense retriever (ingest with --retriever DIR); use --mode bm25");
    }
    rep->search_mode = mode == engine::SearchMode::Dense  ? "dense"
                       : mode == engine::SearchMode::Bm25 ? "bm25"
                                                          : "hybrid";
  }
  if (opt.k != m.config().generation_top_k) {
    log::warn(
        "{} passages per question, but this checkpoint was trained with "
        "generation_top_k = {}",
        opt.k, m.config().generation_top_k);
  }
  const size_t nc = configs.size();
  std::vector<ConfigResult> results(nc);
  std::vector<std::vector<ExampleScores>> scores(nc);
  for (size_t c = 0; c < nc; ++c) {
    results[c].name = configs[c];
    results[c].uses_retrieval = with_store && configs[c] != "closed-book";
  }
  const bool need_compressed = true;  // "compressed" is always evaluated
  double recall_sum = 0;
  auto pred_out = open_predictions(opt.predictions);
  const size_t B = static_cast<size_t>(std::max<int64_t>(1, opt.batch_size));
  const int64_t k = opt.k;
  for (size_t b = 0; b < ex.size(); b += B) {
    const size_t e = std::min(ex.size(), b + B);
    const size_t nb = e - b;
    std::vector<std::string> questions;
    std::vector<std::vector<std::string>> passages(nb);
    std::vector<at::Tensor> emb(nb);
    std::vector<Json> retrieved(nb, Json::array());
    std::vector<std::optional<double>> recall(nb);
    for (size_t i = b; i < e; ++i) questions.push_back(ex[i].question);
    double compress_seconds = 0;
    if (with_store) {
      for (size_t i = 0; i < nb; ++i) {
        const QaExample& q = ex[b + i];
        engine::Retrieval r = l.store->retrieve(q.question, size_t(k), mode, need_compressed);
        rep->retrieve_seconds += r.retrieve_seconds;
        compress_seconds += r.load_seconds;
        std::vector<RetrievedDoc> docs;
        for (const auto& h : r.hits) {
          passages[i].push_back(h.passage.text);
          RetrievedDoc d{h.passage.doc_id, h.title, h.source};
          docs.push_back(d);
          Json hj = {{"passage_id", h.passage_id},
                     {"doc_id", d.doc_id},
                     {"title", d.title},
                     {"source", d.source},
                     {"score", h.score}};
          if (!q.gold.empty()) hj["gold"] = is_gold(d, q.gold);
          retrieved[i].push_back(hj);
        }
        if (r.hits.empty()) ++rep->no_passage_questions;
        if (!q.gold.empty()) {
          recall[i] = recall_of_example(docs, q.gold);
          recall_sum += *recall[i];
          ++rep->recall_questions;
        }
        if (!r.hits.empty()) {
          const int64_t n = r.embeddings_per_passage, h = r.embedding_dim;
          at::Tensor t = at::empty({static_cast<int64_t>(r.hits.size()), n, h}, at::kFloat);
          for (size_t p = 0; p < r.embeddings.size(); ++p) {
            if (static_cast<int64_t>(r.embeddings[p].size()) != n * h) {
              fail("--db ", opt.db, ": passage ", r.hits[p].passage_id, " has ",
                   r.embeddings[p].size(), " embedding values, expected ", n * h);
            }
            std::copy(r.embeddings[p].begin(), r.embeddings[p].end(),
                      t[static_cast<int64_t>(p)].data_ptr<float>());
          }
          emb[i] = t;
        }
      }
    } else {
      auto tc = Clock::now();
      std::vector<std::string> flat;
      for (size_t i = 0; i < nb; ++i) {
        const auto& c = ex[b + i].contexts;
        passages[i].assign(c.begin(), c.begin() + std::min<size_t>(c.size(), size_t(k)));
        flat.insert(flat.end(), passages[i].begin(), passages[i].end());
      }
      at::Tensor all = compress::compress_passages(m, flat, rep->context_max_length,
                                                   std::max<int64_t>(1, opt.batch_size));
      int64_t off = 0;
      for (size_t i = 0; i < nb; ++i) {
        const int64_t ki = static_cast<int64_t>(passages[i].size());
        emb[i] = all.narrow(0, off, ki);
        off += ki;
      }
      compress_seconds += since(tc);
    }
    std::vector<std::vector<std::string>> preds(nc);
    for (size_t c = 0; c < nc; ++c) {
      auto tg = Clock::now();
      if (configs[c] == "compressed") {
        preds[c] = answer_from_embeddings(m, questions, emb, rep->max_new_tokens);
        results[c].seconds += compress_seconds;
      } else {
        std::vector<std::string> prompts;
        for (size_t i = 0; i < nb; ++i) {
          const bool closed = configs[c] == "closed-book" || passages[i].empty();
          prompts.push_back(closed ? generate::closed_book_prompt(m, questions[i])
                                   : generate::uncompressed_prompt(m, passages[i], questions[i]));
        }
        preds[c] = answer_text_prompts(m, prompts, rep->max_new_tokens);
      }
      results[c].seconds += since(tg);
    }
    for (size_t i = 0; i < nb; ++i) {
      const QaExample& q = ex[b + i];
      Json line;
      line["line"] = q.line;
      if (!q.id.empty()) line["id"] = q.id;
      line["question"] = q.question;
      line["answers"] = q.answers;
      if (with_store) {
        line["retrieved"] = retrieved[i];
        if (!q.gold.empty()) line["gold"] = q.gold;
        line["recall"] = recall[i] ? Json(*recall[i]) : Json(nullptr);
      }
      for (size_t c = 0; c < nc; ++c) {
        ExampleScores s = score_example(preds[c][i], q.answers);
        scores[c].push_back(s);
        line[configs[c]] = scores_json(preds[c][i], s, true);
      }
      if (pred_out) *pred_out << dump_line(line);
    }
    if (pred_out) pred_out->flush();
    if (opt.progress) opt.progress({e, ex.size(), since(t0)});
  }
  if (pred_out && !*pred_out) fail("--predictions ", opt.predictions, ": write failed");
  for (size_t c = 0; c < nc; ++c) {
    results[c].scores = mean_scores(scores[c]);
    rep->configs.push_back(results[c]);
  }
  if (rep->recall_questions > 0) recall_sum /= double(rep->recall_questions);
  if (rep->recall_questions > 0) rep->recall_at_k = recall_sum;
  if (rep->no_passage_questions > 0) {
    log::warn("{} question(s) retrieved no passage and were answered without passages",
              rep->no_passage_questions);
  }
  rep->n = ex.size();
}

}  // namespace

namespace {

// --task retrieval: the store searched in each mode, no model loaded.
void run_retrieval(const EvalOptions& opt, const std::vector<QaExample>& ex, EvalReport* rep) {
  engine::KnowledgeStoreOptions so;
  so.db = opt.db;
  so.need_model = false;
  so.read_only = true;
  so.create_if_missing = false;
  auto store = engine::KnowledgeStore::open(so);
  std::vector<engine::SearchMode> modes;
  if (!opt.search_mode.empty()) {
    modes.push_back(engine::parse_search_mode(opt.search_mode));
    if (modes[0] != engine::SearchMode::Bm25 && !store->has_dense()) {
      fail("--mode ", opt.search_mode, ": the store at ", opt.db,
           " has no dense retriever (ingest with --retriever DIR)");
    }
  } else {
    modes.push_back(engine::SearchMode::Bm25);
    if (store->has_dense()) {
      modes.push_back(engine::SearchMode::Dense);
      modes.push_back(engine::SearchMode::Hybrid);
    }
  }
  rep->model = store->options().model_dir;
  rep->context_max_length = store->context_max_length();
  rep->recall_questions = ex.size();
  for (engine::SearchMode mode : modes) {
    ConfigResult c;
    c.name = mode == engine::SearchMode::Dense  ? "dense"
             : mode == engine::SearchMode::Bm25 ? "bm25"
                                                : "hybrid";
    c.uses_retrieval = true;
    const auto t = Clock::now();
    for (size_t i = 0; i < ex.size(); ++i) {
      std::vector<RetrievedDoc> docs;
      for (const auto& h : store->search(ex[i].question, size_t(opt.k), mode)) {
        docs.push_back({h.passage.doc_id, h.title, h.source});
      }
      if (docs.empty()) ++rep->no_passage_questions;
      c.recall += recall_of_example(docs, ex[i].gold);
      c.mrr += reciprocal_rank(docs, ex[i].gold);
      if (opt.progress) opt.progress({i + 1, ex.size(), since(t)});
    }
    c.scores.count = ex.size();
    if (!ex.empty()) {
      c.recall /= double(ex.size());
      c.mrr /= double(ex.size());
    }
    c.seconds = since(t);
    rep->configs.push_back(c);
  }
  rep->search_mode = rep->configs.size() == 1 ? rep->configs[0].name : "all";
}

}  // namespace

EvalReport run_evaluation(const EvalOptions& opt) {
  const auto t0 = Clock::now();
  if (opt.task != "reconstruction" && opt.task != "qa" && opt.task != "retrieval") {
    fail("--task ", opt.task, ": expected reconstruction, qa or retrieval");
  }
  if (opt.task == "retrieval") {
    if (opt.db.empty()) fail("--task retrieval: --db STORE is required (the store searched)");
    if (!opt.baselines.empty()) fail("--baselines: only for --task qa");
    if (opt.k < 1) fail("--k must be at least 1");
    const std::vector<QaExample> qs = read_qa(opt.data, opt.limit, false, /*retrieval=*/true);
    EvalReport rep;
    rep.task = opt.task;
    rep.data = opt.data;
    rep.db = opt.db;
    rep.k = opt.k;
    rep.n = qs.size();
    run_retrieval(opt, qs, &rep);
    rep.seconds = since(t0);
    return rep;
  }
  if (opt.task == "reconstruction" && !opt.db.empty()) {
    fail("--db: the reconstruction task compresses the passages of --data; it takes no store");
  }
  if (opt.task == "reconstruction" && !opt.baselines.empty()) {
    fail("--baselines: only for --task qa");
  }
  if (opt.batch_size < 1) fail("--batch-size must be at least 1");
  if (opt.max_new_tokens < 0) fail("--max-new-tokens must be positive");
  if (opt.context_max_length < 1) fail("--context-max-length must be positive");
  // Read (and check) the data before loading a model: a malformed file fails fast.
  std::vector<QaExample> qa;
  std::vector<PassageExample> passages;
  if (opt.task == "qa") {
    qa = read_qa(opt.data, opt.limit, opt.db.empty());
  } else {
    passages = read_passages(opt.data, opt.limit);
  }
  Loaded l = load(opt);
  EvalReport rep;
  rep.task = opt.task;
  rep.data = opt.data;
  rep.db = opt.db;
  rep.k = opt.k;
  rep.model = l.store ? l.store->options().model_dir : l.model_dir;
  rep.context_max_length = l.store ? l.store->context_max_length() : opt.context_max_length;
  if (opt.task == "qa") {
    run_qa(opt, l, qa, &rep, t0);
  } else {
    run_reconstruction(opt, l, passages, &rep, t0);
  }
  rep.seconds = since(t0);
  return rep;
}

}  // namespace cocom::eval
