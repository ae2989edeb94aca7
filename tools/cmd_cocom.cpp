// cocom generate / compress / model init --arch cocom|cocom-light, and the COCOM parts of
// cocom conformance.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/error.h"
#include "generate/cocom_generate.h"
#include "model/checkpoint_io.h"
#include "model/runtime.h"
#include "tools/commands.h"

namespace fs = std::filesystem;

namespace cocom::cli {

namespace {

struct QaLine {
  std::string question;
  std::vector<std::string> contexts;
};

std::vector<Json> read_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::vector<Json> out;
  std::string line;
  size_t no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json j = parse_json_text(line, path + ":" + std::to_string(no));
    if (!j.is_object()) fail(path, ":", no, ": expected a JSON object");
    out.push_back(std::move(j));
  }
  if (out.empty()) fail(path, ": no records");
  return out;
}

std::vector<QaLine> read_qa(const std::string& path) {
  std::vector<QaLine> out;
  size_t no = 0;
  for (const Json& j : read_jsonl(path)) {
    ++no;
    const std::string where = path + " record " + std::to_string(no);
    QaLine q;
    q.question = json_string_or(j, "question", "", where);
    if (!j.contains("contexts") || !j["contexts"].is_array()) {
      fail(where, ": field 'contexts' must be a list of strings");
    }
    for (const auto& c : j["contexts"]) {
      if (!c.is_string()) fail(where, ": field 'contexts' must contain only strings");
      q.contexts.push_back(c.get<std::string>());
    }
    out.push_back(std::move(q));
  }
  return out;
}

model::CocomLoadOptions load_options(const GlobalOptions& g, const std::string& dec_tok,
                                     const std::string& comp_tok) {
  model::CocomLoadOptions o;
  o.device = model::parse_device(g.device);
  o.decoder_tokenizer = dec_tok;
  o.compressor_tokenizer = comp_tok;
  return o;
}

Json ids_until_eos(const at::Tensor& row, int64_t eos) {
  Json ids = Json::array();
  for (int64_t t = 0; t < row.size(0); ++t) {
    int64_t v = row[t].item<int64_t>();
    if (v == eos) break;
    ids.push_back(v);
  }
  return ids;
}

void make_dir(const std::string& d) {
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec) fail(d, ": cannot create directory (", ec.message(), ")");
}

}  // namespace

int cmd_generate(const GlobalOptions& g, const GenerateArgs& a) {
  setup_runtime(g);
  if (a.batch_size < 1) fail("--batch-size ", a.batch_size, ": must be at least 1");
  std::vector<QaLine> qa = read_qa(a.in);
  model::CocomLoadOptions lo = load_options(g, a.decoder_tokenizer, a.compressor_tokenizer);
  lo.decoder_weights = weight_format_option(a.weights);
  auto m = model::CocomModel::load(a.model, lo);
  std::fprintf(stderr, "loaded %s in %.2f s (compr_rate %lld, %s compressor)\n", a.model.c_str(),
               m->load_seconds(), static_cast<long long>(m->config().compr_rate),
               m->config().light() ? "BERT" : "decoder");
  if (!a.dump_dir.empty()) make_dir(a.dump_dir);
  std::ofstream out_file;
  if (!a.out.empty()) {
    out_file.open(a.out + ".tmp", std::ios::binary | std::ios::trunc);
    if (!out_file) fail("--out ", a.out, ": cannot create");
  }
  std::ostream& out = a.out.empty() ? std::cout : out_file;
  generate::TextGenerationOptions opt;
  opt.sampling.max_new_tokens = a.max_new_tokens;
  opt.context_max_length = a.context_max_length;
  const int64_t eos = m->decoder_tokenizer().eos_id();
  Stopwatch total;
  for (size_t b = 0; b < qa.size(); b += size_t(a.batch_size)) {
    const size_t e = std::min(qa.size(), b + size_t(a.batch_size));
    std::vector<std::string> questions;
    std::vector<std::vector<std::string>> contexts;
    for (size_t i = b; i < e; ++i) {
      questions.push_back(qa[i].question);
      contexts.push_back(qa[i].contexts);
    }
    Stopwatch sw;
    generate::TextGeneration r = a.no_compress
                                     ? generate::generate_uncompressed(*m, contexts, questions, opt)
                                     : generate::generate_from_text(*m, contexts, questions, opt);
    for (size_t i = 0; i < questions.size(); ++i) {
      Json line;
      line["answer"] = r.answers.texts[i];
      line["token_ids"] = ids_until_eos(r.answers.generation.tokens[int64_t(i)], eos);
      out << line.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
    }
    if (!a.dump_dir.empty()) {
      model::NamedTensors t = {{"dec_input_ids", r.decoder.input_ids},
                               {"dec_attention_mask", r.decoder.attention_mask}};
      if (r.compressed.defined()) {
        t.push_back({"enc_input_ids", r.encoder.input_ids});
        t.push_back({"enc_attention_mask", r.encoder.attention_mask});
        t.push_back({"compressed_embeddings", r.compressed});
      }
      char name[64];
      std::snprintf(name, sizeof name, "batch_%05zu.safetensors", b / size_t(a.batch_size));
      model::write_tensors(join_path(a.dump_dir, name), t);
    }
    std::fprintf(
        stderr,
        "[%zu/%zu] %zu questions in %.2f s (compress %.2f s, prefill %.2f s, decode %.2f s)\n", e,
        qa.size(), questions.size(), sw.seconds(), r.compress_seconds,
        r.answers.generation.prefill_seconds, r.answers.generation.decode_seconds);
  }
  if (!a.out.empty()) {
    out_file.close();
    if (!out_file || std::rename((a.out + ".tmp").c_str(), a.out.c_str()) != 0) {
      fail("--out ", a.out, ": write failed");
    }
  }
  std::fprintf(stderr, "%zu questions answered in %.2f s\n", qa.size(), total.seconds());
  return 0;
}

int cmd_compress(const GlobalOptions& g, const CompressArgs& a) {
  setup_runtime(g);
  std::vector<std::string> passages;
  size_t no = 0;
  for (const Json& j : read_jsonl(a.in)) {
    ++no;
    std::string where = a.in + " record " + std::to_string(no);
    if (!j.contains("text") || !j["text"].is_string())
      fail(where, ": field 'text' must be a string");
    passages.push_back(j["text"].get<std::string>());
  }
  auto m = model::CocomModel::load(a.model,
                                   load_options(g, a.decoder_tokenizer, a.compressor_tokenizer));
  Stopwatch sw;
  at::Tensor emb = compress::compress_passages(*m, passages, a.context_max_length, a.batch_size);
  model::SafetensorsWriter w;
  at::Tensor c = emb.contiguous();
  w.add("embeddings", model::DType::F32, c.sizes().vec(), c.data_ptr(), size_t(c.numel()) * 4);
  w.set_metadata("compr_rate", std::to_string(m->config().compr_rate));
  w.set_metadata("context_max_length", std::to_string(a.context_max_length));
  w.set_metadata("model", a.model);
  w.write(a.out);
  const double s = sw.seconds();
  std::fprintf(stderr,
               "compressed %zu passages into %s [%lld, %lld, %lld] in %.2f s (%.1f passages/s)\n",
               passages.size(), a.out.c_str(), static_cast<long long>(emb.size(0)),
               static_cast<long long>(emb.size(1)), static_cast<long long>(emb.size(2)), s,
               double(passages.size()) / s);
  return 0;
}

// ---- conformance parts ------------------------------------------------------------------

void run_cocom_conformance(const GlobalOptions& g, const std::string& fixtures,
                           const std::string& part, const std::string& out_dir) {
  const std::string dir = join_path(fixtures, part);
  const std::string gpath = join_path(dir, "golden.json");
  Json gj = read_json_file(gpath);
  auto m = model::CocomModel::load(dir, load_options(g, "", ""));
  // The PISCO goldens name the passages "documents" and their tensors after the published code.
  const bool pisco = m->config().pisco;
  const std::string passages = pisco ? "documents" : "contexts";
  std::vector<std::string> questions;
  std::vector<std::vector<std::string>> contexts;
  if (!gj.contains("questions") || !gj["questions"].is_array())
    fail(gpath, ": missing 'questions'");
  if (!gj.contains(passages) || !gj[passages].is_array()) {
    fail(gpath, ": missing '", passages, "'");
  }
  for (const auto& q : gj["questions"]) questions.push_back(q.get<std::string>());
  for (const auto& c : gj[passages]) contexts.push_back(c.get<std::vector<std::string>>());
  generate::TextGenerationOptions opt;
  opt.sampling.max_new_tokens = json_int_or(gj, "max_new_tokens", 8, gpath);
  opt.sampling.keep_step_logits = true;
  opt.context_max_length =
      json_int_or(gj, pisco ? "doc_max_length" : "context_max_length", 128, gpath);
  // PISCO's generation pads a finished row with its tokenizer's pad (<s>), not </s>.
  if (pisco) opt.sampling.pad_id = json_int_or(gj, "generation_pad_token_id", 1, gpath);
  generate::TextGeneration r = generate::generate_from_text(*m, contexts, questions, opt);
  const std::string out = join_path(out_dir, part);
  make_dir(out);
  const at::Tensor& steps = r.answers.generation.step_logits;
  model::NamedTensors t = {
      {pisco ? "compressor_input_ids" : "enc_input_ids", r.encoder.input_ids},
      {pisco ? "compressor_attention_mask" : "enc_attention_mask", r.encoder.attention_mask},
      {"compressed_embs", r.compressed},
      {pisco ? "decoder_input_ids" : "dec_input_ids", r.decoder.input_ids},
      {pisco ? "decoder_attention_mask" : "dec_attention_mask", r.decoder.attention_mask},
      {pisco ? "decoder_inputs_embeds" : "dec_inputs_embeds", r.decoder_embeds},
      {"generated_ids", r.answers.generation.tokens},
      {"gen_logits", steps}};
  if (pisco) t.push_back({"first_step_logits", steps.select(1, 0).contiguous()});
  model::write_tensors(join_path(out, "engine.safetensors"), t);
  Json ej;
  ej["decoded"] = r.answers.texts;
  write_file_atomic(join_path(out, "engine.json"),
                    ej.dump(1, ' ', false, Json::error_handler_t::replace) + "\n");
  std::fprintf(stderr, "%s: %zu questions x %zu passages, %lld embeddings each\n", part.c_str(),
               questions.size(), contexts[0].size(),
               static_cast<long long>(r.encoder.mem_per_passage));
}

}  // namespace cocom::cli
