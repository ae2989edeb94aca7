// The `cocom` command line.
#include <c10/util/Exception.h>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "bench/bench_efficiency.h"
#include "bench/bench_runtime.h"
#include "bench/bench_store.h"
#include "common/error.h"
#include "index/bm25.h"
#include "tools/commands.h"

using namespace cocom::cli;

namespace {
// libgomp reads OMP_WAIT_POLICY once, when it is loaded (before main). Its default busy-wait
// makes ATen's OpenMP workers compete with OpenBLAS's threads for the cores: prefill measured
// ~25% slower here. When the user has not chosen a policy and the command does heavy compute,
// re-run this binary with PASSIVE (the exec costs one more libtorch start-up, ~0.5 s, so the
// quick commands skip it).
void prefer_passive_openmp(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  bool heavy = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "bench" || a == "complete" || a == "generate" || a == "compress" || a == "ingest" ||
        a == "ask" || a == "console" || a == "serve") {
      heavy = true;
    }
    if (a == "train" || a == "eval") heavy = true;
  }
  if (!heavy) return;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::execv("/proc/self/exe", argv);
  // exec failed: carry on with the default policy.
}
}  // namespace

int main(int argc, char** argv) {
  prefer_passive_openmp(argc, argv);
  CLI::App app{
      "cocom: RAG with COCOM context embeddings -- a knowledge store (ingest, search, rm, "
      "info --db), COCOM answering from passages (generate, compress), the model runtime "
      "(info, tokenize, forward, complete, model init), conformance and benchmarks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("cocom ") + COCOM_VERSION);
  GlobalOptions g;
  app.add_option("--threads", g.threads, "compute threads (0 = all cores)")->capture_default_str();
  app.add_option("--device", g.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_flag("-v,--verbose", g.verbose, "debug logging on stderr");
  int rc = 0;

  InfoArgs info;
  auto* c_info = app.add_subcommand(
      "info", "describe a model directory: architecture, parameters, dtypes, tokenizer, load time");
  StoreArgs info_store;
  c_info->add_option("--model", info.model, "model directory (Hugging Face or COCOM layout)");
  c_info->add_option("--db", info_store.db, "a knowledge store: manifest, sizes and counts");
  c_info->add_flag("--json", info.json, "print one JSON object");
  c_info->add_option("--decoder-tokenizer", info.decoder_tokenizer,
                     "COCOM: base decoder directory (tokenizer.model + config.json)");
  c_info->add_option("--compressor-tokenizer", info.compressor_tokenizer,
                     "COCOM-light: base compressor directory (vocab.txt + config.json)");
  c_info->callback([&] {
    if (info.model.empty() == info_store.db.empty()) {
      throw CLI::ValidationError("info", "give exactly one of --model DIR or --db DIR");
    }
    rc = info_store.db.empty() ? cmd_info(g, info) : cmd_store_info(g, info_store, info.json);
  });

  TokenizeArgs tk;
  auto* c_tok = app.add_subcommand("tokenize", "print the token ids (and pieces) of a text");
  c_tok->add_option("--tokenizer", tk.tokenizer, "directory with tokenizer.model or vocab.txt")
      ->required();
  c_tok->add_flag("--json", tk.json, "print {\"ids\": [...], \"tokens\": [...]}");
  c_tok->add_flag("--no-special-tokens", tk.no_special, "do not add bos/eos or [CLS]/[SEP]");
  c_tok->add_option("text", tk.text, "text to tokenize")->required();
  c_tok->callback([&] { rc = cmd_tokenize(g, tk); });

  ForwardArgs fw;
  auto* c_fw = app.add_subcommand("forward",
                                  "run one forward pass; write logits (decoder) or "
                                  "last_hidden_state (BERT) as fp32 safetensors");
  c_fw->add_option("--model", fw.model, "model directory")->required();
  c_fw->add_option("--in", fw.in,
                   "JSON {\"input_ids\": [[...]], \"attention_mask\": [[...]]} (+ token_type_ids "
                   "for BERT, position_ids for decoders)")
      ->required();
  c_fw->add_option("--out", fw.out, "output .safetensors")->required();
  c_fw->add_flag("--hidden-states", fw.hidden_states, "also write hidden_states [layers+1,B,T,H]");
  c_fw->callback([&] { rc = cmd_forward(g, fw); });

  CompleteArgs cp;
  auto* c_cp = app.add_subcommand(
      "complete",
      "generate a continuation: token ids from --in to --out, or a text prompt printed as text");
  c_cp->add_option("--model", cp.model, "decoder model directory")->required();
  c_cp->add_option("--in", cp.in, "JSON with input_ids / attention_mask (left padded)");
  c_cp->add_option("--out", cp.out, "output JSON {\"generated_ids\": [[...]]}");
  c_cp->add_option("--tokenizer", cp.tokenizer, "tokenizer directory (default: the model's)");
  c_cp->add_option("--max-new-tokens", cp.max_new_tokens, "tokens to generate at most")
      ->capture_default_str();
  c_cp->add_option("--temperature", cp.temperature, "sampling temperature (0 = greedy)")
      ->capture_default_str();
  c_cp->add_option("--top-p", cp.top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
  c_cp->add_option("--top-k", cp.top_k, "keep the k most likely tokens (0 = off)")
      ->capture_default_str();
  c_cp->add_option("--seed", cp.seed, "random seed for sampling")->capture_default_str();
  c_cp->add_option("--weights", cp.weights,
                   "resident format of the decoder's linear layers: fp32, bf16 (half the memory), "
                   "int8 (weight-only, per-channel scales; a quarter)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "int8g"}));
  c_cp->add_option("prompt", cp.prompt, "prompt text (text mode)");
  c_cp->callback([&] { rc = cmd_complete(g, cp); });

  auto* c_model = app.add_subcommand("model", "model utilities");
  c_model->require_subcommand(1);
  InitArgs init;
  auto* c_init =
      c_model->add_subcommand("init", "write a random-weight checkpoint in Hugging Face layout");
  c_init
      ->add_option("--arch", init.arch,
                   "mistral, bert, cocom, cocom-light or pisco (the published naver/pisco-* "
                   "layout: adapters.pth, decoder_first_last_layers.pth, base_decoder/)")
      ->required()
      ->check(CLI::IsMember({"mistral", "bert", "cocom", "cocom-light", "pisco"}));
  c_init->add_option("--config", init.config, "config.json with the shape (or use --shape)");
  c_init
      ->add_option("--shape", init.shape,
                   "named shape instead of --config: tinyllama (2048 hidden, 16 layers), "
                   "mistral-7b, bert-base (for cocom-light: the decoder's shape; the compressor "
                   "is BERT-base)")
      ->check(CLI::IsMember({"tinyllama", "mistral-7b", "bert-base"}));
  c_init->add_option("--tokenizer", init.tokenizer,
                     "with --shape: tokenizer directory (tokenizer.model, or vocab.txt for bert); "
                     "default: train one with scripts/train-tokenizer.sh on text on this machine");
  c_init->add_option("--compressor-tokenizer", init.compressor_tokenizer,
                     "with --shape and --arch cocom-light: BERT vocab.txt directory (default: "
                     "trained like --tokenizer)");
  c_init->add_option("--vocab-size", init.vocab_size,
                     "with --shape: vocabulary size of the trained tokenizer (default 32000, "
                     "bert 30522)");
  c_init
      ->add_option("--compr-rate", init.compr_rate,
                   "with --shape, cocom* and pisco: compression rate")
      ->capture_default_str();
  c_init->add_flag("--sep,!--no-sep", init.sep, "with --shape, cocom*: <SEP> between passages")
      ->capture_default_str();
  c_init->add_option("--out", init.out, "output directory (created)")->required();
  c_init->add_option("--seed", init.seed, "random seed")->capture_default_str();
  c_init->add_option("--dtype", init.dtype, "bf16, fp16 or fp32")->capture_default_str();
  c_init->callback([&] { rc = cmd_model_init(g, init); });

  GenerateArgs gen;
  auto* c_gen = app.add_subcommand(
      "generate",
      "answer questions from their passages with a COCOM checkpoint (reference batch semantics)");
  c_gen->add_option("--model", gen.model, "COCOM checkpoint directory")->required();
  c_gen->add_option("--in", gen.in, "QA.jsonl: {\"question\": ..., \"contexts\": [...]} per line")
      ->required();
  c_gen->add_option("--out", gen.out, "answers jsonl (default: stdout)");
  c_gen->add_option("--batch-size", gen.batch_size, "questions per batch")->capture_default_str();
  c_gen->add_option("--max-new-tokens", gen.max_new_tokens, "tokens per answer at most")
      ->capture_default_str();
  c_gen
      ->add_option("--context-max-length", gen.context_max_length,
                   "compressor tokens per passage (128 for the published models)")
      ->capture_default_str();
  c_gen->add_option("--dump-dir", gen.dump_dir,
                    "write each batch's encoder/decoder inputs and embeddings as safetensors");
  c_gen->add_flag("--no-compress", gen.no_compress,
                  "uncompressed baseline: the same decoder reads the passages' text");
  c_gen
      ->add_option("--weights", gen.weights,
                   "resident format of the decoder's linear layers: fp32, bf16, int8 or int8g")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "int8g"}));
  c_gen->add_option("--decoder-tokenizer", gen.decoder_tokenizer,
                    "base decoder directory (tokenizer.model + config.json)");
  c_gen->add_option("--compressor-tokenizer", gen.compressor_tokenizer,
                    "base compressor directory for COCOM-light (vocab.txt + config.json)");
  c_gen->callback([&] { rc = cmd_generate(g, gen); });

  CompressArgs cmp;
  auto* c_cmp = app.add_subcommand(
      "compress", "compress passages into context embeddings (engine regime: fixed length)");
  c_cmp->add_option("--model", cmp.model, "COCOM checkpoint directory")->required();
  c_cmp->add_option("--in", cmp.in, "PASSAGES.jsonl: {\"text\": ...} per line")->required();
  c_cmp->add_option("--out", cmp.out, "output .safetensors ('embeddings' [N, n, H] fp32)")
      ->required();
  c_cmp->add_option("--batch-size", cmp.batch_size, "passages per forward pass")
      ->capture_default_str();
  c_cmp
      ->add_option("--context-max-length", cmp.context_max_length,
                   "tokens per passage; longer passages are truncated")
      ->capture_default_str();
  c_cmp->add_option("--decoder-tokenizer", cmp.decoder_tokenizer, "base decoder directory");
  c_cmp->add_option("--compressor-tokenizer", cmp.compressor_tokenizer,
                    "base compressor directory");
  c_cmp->callback([&] { rc = cmd_compress(g, cmp); });

  auto add_store_options = [](CLI::App* c, StoreArgs& s, bool with_model) {
    auto* db = c->add_option("--db", s.db,
                             with_model ? "knowledge store directory (required, except for a "
                                          "worker with --shard I/N --export-sst DIR)"
                                        : "knowledge store directory");
    if (!with_model) db->required();  // ingest: checked by cmd_ingest
    if (with_model) {
      c->add_option("--model", s.model,
                    "COCOM checkpoint (remembered by the store after the first ingest)");
      c->add_option("--retriever", s.retriever,
                    "dense retriever: a sentence-transformers BERT directory (optional)");
      c->add_option("--index", s.index_factory, "FAISS factory string (default Flat)");
      c->add_option("--language", s.language,
                    "BM25 stemming language of a new store: english (default; with English "
                    "stop words), any other Snowball language (" +
                        cocom::index::analyzer_languages() + "), or words (no stemming)");
      c->add_option("--embedding-dtype", s.embedding_dtype,
                    "fp16 (default), bf16, fp32 or int8 (per-vector scale)");
      c->add_option("--decoder-tokenizer", s.decoder_tokenizer, "base decoder directory");
      c->add_option("--compressor-tokenizer", s.compressor_tokenizer, "base compressor directory");
      c->add_option("--passage-prefix", s.passage_prefix, "retriever prefix for passages");
      c->add_option("--weights", s.weights,
                    "resident format of the decoder's linear layers while compressing: fp32, "
                    "bf16 or int8 (a 7B checkpoint needs bf16 or int8 on a 24 GB machine)")
          ->capture_default_str()
          ->check(CLI::IsMember({"fp32", "bf16", "int8", "int8g"}));
    }
    c->add_option("--query-prefix", s.query_prefix, "retriever prefix for queries");
  };
  IngestArgs ing;
  auto* c_ing = app.add_subcommand(
      "ingest",
      "read, chunk, compress and index documents (.txt .md .html .pdf .jsonl .rst .org .tex "
      ".csv .docx .odt .epub, the same compressed as .gz .bz2 .xz, text files typed by content; "
      "directories)");
  add_store_options(c_ing, ing.store, true);
  c_ing->add_option("--include", ing.include,
                    "glob of files to take (repeatable); hidden files and directories are "
                    "skipped unless a glob names them with their leading dot (.notes, .*)");
  c_ing->add_option("--exclude", ing.exclude, "glob of files to skip (repeatable)");
  c_ing->add_option("--overlap", ing.overlap,
                    "tokens repeated between consecutive passages (a new store: default 0; an "
                    "existing one keeps its own)");
  c_ing
      ->add_option("--passages-per-batch", ing.passages_per_batch,
                   "a longer document is compressed and written in parts of this many "
                   "passages (bounded memory, progress per part) and becomes visible once "
                   "complete; Ctrl-C or a crash in the middle drops it whole")
      ->capture_default_str();
  c_ing
      ->add_option("--max-file-mb", ing.max_file_mb,
                   "skip files larger than this many MB, before reading them (0 = no limit)")
      ->capture_default_str();
  c_ing
      ->add_option("--max-nesting-depth", ing.max_nesting_depth,
                   "HTML elements nested deeper are flattened (text kept); JSON lines nested "
                   "deeper are skipped")
      ->capture_default_str();
  c_ing
      ->add_option("--max-unpacked-mb", ing.max_unpacked_mb,
                   "skip a .gz/.bz2/.xz file or a .docx/.odt/.epub container that unpacks to "
                   "more than this many MB (0 = no limit)")
      ->capture_default_str();
  c_ing->add_flag("--json", ing.json, "print a JSON summary");
  c_ing->add_flag("--progress-lines", ing.progress_lines,
                  "print one progress line per document (and per part of a long one) to stderr "
                  "(for logs; a terminal gets a "
                  "single updating line without it)");
  c_ing->add_option("--shard", ing.shard,
                    "I/N: ingest only the documents whose id hashes to I of N (0 <= I < N <= "
                    "1024), for N workers; needs --export-sst");
  c_ing->add_option("--export-sst", ing.export_sst,
                    "with --shard: write the shard as RocksDB SST files + shard.json into this "
                    "new directory instead of a store (--db is then not used); merge shards "
                    "with cocom store import");
  c_ing->add_option("paths", ing.paths, "files and directories")->required();
  c_ing->callback([&] { rc = cmd_ingest(g, ing); });

  auto* c_store = app.add_subcommand("store", "store utilities: import shards");
  c_store->require_subcommand(1);
  ImportArgs imp;
  auto* c_imp = c_store->add_subcommand(
      "import",
      "link shards made by cocom ingest --shard I/N --export-sst DIR into a store (atomic, "
      "idempotent; created when --db holds none), then rebuild its dense index");
  c_imp->add_option("--db", imp.db, "the store directory")->required();
  c_imp->add_option("shards", imp.shards, "shard directories")->required();
  c_imp->add_flag("--json", imp.json, "print a JSON summary");
  c_imp->callback([&] { rc = cmd_store_import(g, imp); });

  SearchArgs srch;
  auto* c_srch = app.add_subcommand("search", "ranked passages for a query, with provenance");
  add_store_options(c_srch, srch.store, false);
  c_srch->add_option("--k", srch.k, "passages to return")->capture_default_str();
  c_srch->add_option("--mode", srch.mode,
                     "dense, bm25 or hybrid (default: hybrid with a retriever, else bm25)");
  c_srch->add_flag("--json", srch.json, "print JSON");
  c_srch->add_option("query", srch.query, "the query")->required();
  c_srch->callback([&] { rc = cmd_search(g, srch); });

  AskArgs ask;
  auto* c_ask = app.add_subcommand(
      "ask", "answer a question from a store's context embeddings, with its sources and timings");
  c_ask->add_option("--db", ask.db, "knowledge store directory")->required();
  c_ask->add_option("--model", ask.model, "COCOM checkpoint (default: the store's)");
  c_ask->add_option("--retriever", ask.retriever, "dense retriever (default: the store's)");
  c_ask->add_option("--decoder-tokenizer", ask.decoder_tokenizer, "base decoder directory");
  c_ask
      ->add_option("--weights", ask.weights,
                   "resident format of the decoder's linear layers: fp32, bf16 (half the "
                   "memory) or int8 (a quarter; fastest decode on CPU)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "int8g"}));
  c_ask->add_option("--compressor-tokenizer", ask.compressor_tokenizer,
                    "base compressor directory");
  c_ask->add_option("--query-prefix", ask.query_prefix, "retriever prefix for queries");
  c_ask->add_option("--k", ask.k, "passages to retrieve and read")->capture_default_str();
  c_ask->add_option("--mode", ask.mode,
                    "dense, bm25 or hybrid (default: hybrid with a retriever, else bm25)");
  c_ask->add_option("--max-new-tokens", ask.max_new_tokens, "tokens of the answer at most")
      ->capture_default_str();
  c_ask
      ->add_option(
          "--prompt-memory-mb", ask.prompt_memory_mb,
          "the most memory (MB) one answer's prompt may take: longer prompts (question + k "
          "passages) are refused, naming the largest --k that fits")
      ->capture_default_str();
  c_ask->add_option("--temperature", ask.temperature, "sampling temperature (0 = greedy)")
      ->capture_default_str();
  c_ask->add_option("--top-p", ask.top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
  c_ask->add_option("--top-k", ask.top_k, "keep the k most likely tokens (0 = off)")
      ->capture_default_str();
  c_ask->add_option("--seed", ask.seed, "random seed for sampling")->capture_default_str();
  c_ask->add_flag("--json", ask.json, "print one JSON object (answer, sources, timings)");
  c_ask->add_flag("--read-only", ask.read_only,
                  "open the store as a replica (a RocksDB secondary: no lock, never written, "
                  "caught up with its writer before answering)");
  c_ask->add_flag("--no-compress", ask.no_compress,
                  "uncompressed baseline: the decoder reads the passages' text");
  c_ask->add_option("question", ask.question, "the question")->required();
  c_ask->callback([&] { rc = cmd_ask(g, ask); });

  RmArgs rmv;
  auto* c_rm = app.add_subcommand("rm", "remove documents by id or source path");
  add_store_options(c_rm, rmv.store, false);
  c_rm->add_option("targets", rmv.targets, "document ids or source paths")->required();
  c_rm->callback([&] { rc = cmd_rm(g, rmv); });

  ConsoleArgs con;
  auto* c_con = app.add_subcommand(
      "console", "interactive questions over a store: streamed answers, sources, history");
  c_con->add_option("--db", con.db, "knowledge store directory")->required();
  c_con->add_option("--model", con.model, "COCOM checkpoint (default: the store's)");
  c_con->add_option("--retriever", con.retriever, "dense retriever (default: the store's)");
  c_con->add_option("--decoder-tokenizer", con.decoder_tokenizer, "base decoder directory");
  c_con
      ->add_option("--weights", con.weights,
                   "resident format of the decoder's linear layers: fp32, bf16 (half the "
                   "memory) or int8 (a quarter; fastest decode on CPU)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "int8g"}));
  c_con->add_option("--compressor-tokenizer", con.compressor_tokenizer,
                    "base compressor directory");
  c_con->add_option("--k", con.k, "passages per question")->capture_default_str();
  c_con->add_option("--mode", con.mode,
                    "dense, bm25 or hybrid (default: hybrid with a "
                    "retriever, else bm25)");
  c_con->add_option("--max-new-tokens", con.max_new_tokens, "tokens per answer at most")
      ->capture_default_str();
  c_con
      ->add_option(
          "--prompt-memory-mb", con.prompt_memory_mb,
          "the most memory (MB) one answer's prompt may take: longer prompts (question + k "
          "passages) are refused, naming the largest --k that fits")
      ->capture_default_str();
  c_con->add_flag("--no-compress", con.no_compress,
                  "answer from the passages' text instead of their context embeddings");
  c_con->add_flag("--read-only", con.read_only,
                  "open the store as a replica (a RocksDB secondary: no lock, never written, "
                  "caught up with its writer before each question)");
  c_con->callback([&] { rc = cmd_console(g, con); });

  ConformanceArgs conf;
  auto* c_conf = app.add_subcommand(
      "conformance", "run the engine on a golden fixture set; write outputs for check_fixtures.py");
  c_conf->add_option("--fixtures", conf.fixtures, "fixture set directory (like ../shared/fixtures)")
      ->required();
  c_conf->add_option("--out", conf.out, "output directory")->required();
  c_conf->add_option("--parts", conf.parts, "comma list of parts")->capture_default_str();
  c_conf->callback([&] { rc = cmd_conformance(g, conf); });

  ServeArgs serve_args;
  add_serve_command(app, g, serve_args, rc);

  auto* c_bench = app.add_subcommand("bench", "benchmarks (print numbers; never fail on time)");
  c_bench->require_subcommand(1);
  cocom::bench::RuntimeBenchOptions rb;
  auto* c_rb = c_bench->add_subcommand(
      "runtime", "decoder prefill/decode speed vs the machine's matmul rate and memory bandwidth");
  c_rb->add_option("--config", rb.config,
                   "decoder config.json (default: TinyLlama shape, random weights)");
  c_rb->add_option("--model", rb.model, "load this checkpoint instead of random weights");
  c_rb->add_option("--prompt-tokens", rb.prompt_tokens, "prompt length (default: 656 and 56)");
  c_rb->add_option("--new-tokens", rb.new_tokens, "decode steps to time")->capture_default_str();
  c_rb->add_option("--repeat", rb.repeat, "timed repetitions after a warm-up")
      ->capture_default_str();
  c_rb->add_option("--seed", rb.seed, "seed for random weights")->capture_default_str();
  c_rb->add_option("--weights", rb.weights,
                   "resident format of the linear layers: fp32, bf16, int8 or int8g (decode is "
                   "compared with the bandwidth bound for the bytes of that format)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "int8g"}));
  c_rb->add_option("--kernels", rb.kernels,
                   "comma list of kernel variants to measure in turn on the same model: auto, "
                   "avx512, avx2, generic (bf16/int8 weights; ratios are printed)")
      ->capture_default_str();
  c_rb->add_flag("--json", rb.json, "print one JSON object");
  c_rb->callback([&] {
    rb.device = g.device;
    setup_runtime(g);
    rc = cocom::bench::run_runtime_bench(rb);
  });

  cocom::bench::StoreBenchOptions sb;
  auto* c_sb = c_bench->add_subcommand(
      "store", "ingestion throughput (random COCOM checkpoints) and search latency at scale");
  c_sb->add_option("--what", sb.what, "comma list: ingest, search, import")->capture_default_str();
  c_sb->add_option("--import-passages", sb.import_passages,
                   "passages of the import part (a shard's merge against the write path)")
      ->capture_default_str();
  c_sb->add_option("--passages", sb.passages, "stored passages for the search part")
      ->capture_default_str();
  c_sb->add_option("--dim", sb.dim, "retriever dimension (dense search)")->capture_default_str();
  c_sb->add_option("--factories", sb.factories, "FAISS factory strings to time (comma list)")
      ->capture_default_str();
  c_sb->add_option("--queries", sb.queries, "queries per search measurement")
      ->capture_default_str();
  c_sb->add_option("--ingest-passages", sb.ingest_passages,
                   "synthetic passages per checkpoint for ingestion")
      ->capture_default_str();
  c_sb->add_option("--keep-dir", sb.keep_dir,
                   "work directory to keep (default: a temporary one, removed at the end)");
  c_sb->add_option("--seed", sb.seed, "seed for weights, vectors and text")->capture_default_str();
  c_sb->add_flag("--json", sb.json, "print one JSON object");
  c_sb->callback([&] {
    sb.device = g.device;
    setup_runtime(g);
    rc = cocom::bench::run_store_bench(sb);
  });

  add_bench_serve_command(*c_bench, g, rc);

  cocom::bench::EfficiencyBenchOptions eb;
  auto* c_eb = c_bench->add_subcommand(
      "efficiency",
      "the COCOM paper's efficiency set-up: answer latency from stored embeddings at several "
      "compression rates vs uncompressed RAG, compression cost, GFLOPs, memory, storage");
  c_eb->add_option("--mode", eb.mode, "generation, compression or both (comma list)")
      ->capture_default_str();
  c_eb->add_option("--compression-rate", eb.rates, "comma list of rates; 0 = uncompressed RAG")
      ->capture_default_str();
  c_eb->add_option("--batch-size", eb.batch_size, "questions per batch (the paper used 16)")
      ->capture_default_str();
  c_eb->add_option("--doc-length", eb.doc_length, "tokens per passage")->capture_default_str();
  c_eb->add_option("--top-k", eb.top_k, "passages per question")->capture_default_str();
  c_eb->add_option("--query-length", eb.query_length, "question tokens")->capture_default_str();
  c_eb->add_option("--label-length", eb.label_length, "new tokens per answer")
      ->capture_default_str();
  c_eb->add_option("--repeat", eb.repeat, "timed runs after one warm-up")->capture_default_str();
  c_eb->add_option("--collection-size", eb.collection_size,
                   "passages in the collection, for the storage estimate (KILT Wikipedia)")
      ->capture_default_str();
  c_eb->add_option("--model", eb.model, "COCOM checkpoint (default: random weights of --shape)");
  c_eb->add_option("--decoder-tokenizer", eb.decoder_tokenizer,
                   "base decoder directory (with --model), or the tokenizer a random-weight "
                   "shape reads its text with (default: the default model's)");
  c_eb->add_option("--compressor-tokenizer", eb.compressor_tokenizer,
                   "base compressor directory (with --model), or the BERT vocabulary of "
                   "--compressor bert-base (default: the source tree's test vocabulary)");
  c_eb->add_option("--shape", eb.shape, "random-weight decoder shape: tinyllama or mistral-7b")
      ->capture_default_str();
  c_eb->add_option("--config", eb.config, "decoder config.json (instead of --shape)");
  c_eb->add_option("--compressor", eb.compressor, "random compressor: decoder or bert-base")
      ->capture_default_str();
  c_eb->add_option("--compressor-config", eb.compressor_config,
                   "BERT config.json for --compressor bert-base (instead of BERT-base)");
  c_eb->add_option("--embedding-dtype", eb.embedding_dtype,
                   "store dtype of the timed runs: fp16, bf16, fp32 or int8")
      ->capture_default_str();
  c_eb->add_option("--weights", eb.weights,
                   "resident format of the decoder's linear layers: fp32, bf16, int8 or int8g")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16", "int8", "int8g"}));
  c_eb->add_flag("!--no-dtype-compare", eb.compare_dtypes,
                 "skip the int8/bf16/fp16 vs fp32 answer comparison");
  c_eb->add_option("--seed", eb.seed, "seed for weights and inputs")->capture_default_str();
  c_eb->add_flag("--json", eb.json, "print one JSON object (progress stays on stderr)");
  c_eb->callback([&] {
    eb.device = g.device;
    setup_runtime(g);
    rc = cocom::bench::run_efficiency_bench(eb);
  });

  add_train_commands(app, g, rc);  // cocom train pretrain|finetune
  add_eval_command(app, g, rc);    // cocom eval --task reconstruction|qa

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const cocom::Error& e) {
    std::fprintf(stderr, "cocom: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "cocom: error (libtorch): %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cocom: error: %s\n", e.what());
    return 1;
  }
  return rc;
}
