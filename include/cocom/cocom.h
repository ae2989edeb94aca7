// cocom: retrieval-augmented answers from COCOM context embeddings, in process.
//
// The public API of the engine. It follows the LevelDB/RocksDB conventions: an Options struct
// with documented defaults, a Status (or Result<T>) from every call that can fail, and no
// exceptions, libtorch, FAISS or RocksDB types across this header.
//
//   cocom::Options opt;
//   opt.db_path = "/var/lib/myapp/kb";
//   opt.model_dir = "/models/cocom-v1-16-mistral-7b";  // needed once, when the store is created
//   std::unique_ptr<cocom::Engine> engine;
//   cocom::Status s = cocom::Engine::Open(opt, &engine);
//   if (!s.ok()) { std::cerr << s.ToString() << "\n"; return 1; }
//   engine->Ingest({"docs/"});
//   cocom::Result<cocom::Answer> a = engine->Ask("What does the GPL guarantee?");
//   if (a.ok()) std::cout << a->text << "\n";
//
// Two objects, like llama.cpp's model and context: a Model holds the weights and tokenizers
// (loaded once; thread-safe; usable without any store: Compress() and Generate()), and an
// Engine is one store (RocksDB + FAISS + BM25) answering through a Model. Any number of
// Engines may share one Model:
//
//   cocom::ModelOptions mo;
//   mo.model_dir = "/models/cocom-v1-16-mistral-7b";
//   mo.weights = cocom::WeightFormat::kInt8;
//   std::shared_ptr<cocom::Model> model;
//   cocom::Status s = cocom::Model::Open(mo, &model);
//   std::unique_ptr<cocom::Engine> docs, tickets;
//   cocom::Engine::Open(docs_options, model, &docs);        // both read the same weights
//   cocom::Engine::Open(tickets_options, model, &tickets);
//
// Thread safety: a Model may be used by any number of threads and Engines at once. An Engine
// may be shared by many threads. Search(), Ask(), AskStreaming() and
// Stats() may run concurrently with each other and with one Ingest()/IngestDocuments()/Remove()
// at a time (writers are serialised; a reader sees every document either fully or not at all).
// Status and Result are plain values.
//
// Performance note: libgomp's default busy-waiting makes ATen's worker threads compete with
// the BLAS threads; programs embedding cocom should run with OMP_WAIT_POLICY=PASSIVE in their
// environment (the cocom binary sets it for itself).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cocom {

// ---------------------------------------------------------------------------------------------
// Status and Result<T>

class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,     // a bad option, path or input; the message names it
    kNotFound,            // a missing file, directory, store or document
    kCorruption,          // stored data or a checkpoint that cannot be read as what it claims to be
    kIOError,             // the operating system refused a read or write
    kCancelled,           // a callback asked to stop
    kFailedPrecondition,  // the call needs something the engine was not opened with
    kInternal,            // a bug or an unexpected library error (the message says which)
  };

  Status() = default;  // OK
  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status IOError(std::string msg) { return Status(Code::kIOError, std::move(msg)); }
  static Status Cancelled(std::string msg) { return Status(Code::kCancelled, std::move(msg)); }
  static Status FailedPrecondition(std::string msg) {
    return Status(Code::kFailedPrecondition, std::move(msg));
  }
  static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "OK", or "<code name>: <message>", e.g. "NotFound: model directory /m has no config.json".
  std::string ToString() const;

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status that explains why there is none. Accessing the value of a failed
// Result aborts with the status message (a programming error, like dereferencing null).
template <class T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit on purpose
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status::Internal("Result built from an OK status without a value");
  }
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & {
    check();
    return *value_;
  }
  const T& value() const& {
    check();
    return *value_;
  }
  T&& value() && {
    check();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void check() const;
  Status status_;
  std::optional<T> value_;
};

[[noreturn]] void AbortOnBadResultAccess(const Status& s);
template <class T>
void Result<T>::check() const {
  if (!status_.ok()) AbortOnBadResultAccess(status_);
}

// ---------------------------------------------------------------------------------------------
// Logging

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };

// Receives each library log message (one line, no trailing newline) at or above the level.
using LogCallback = std::function<void(LogLevel level, const std::string& message)>;

// ---------------------------------------------------------------------------------------------
// Formats

// How a decoder's linear layers (and lm_head) are held in memory.
enum class WeightFormat {
  kFp32,   // "fp32": as computed by the reference
  kBf16,   // "bf16": half the memory
  kInt8,   // "int8": one scale per output channel; a quarter, the fastest decode on CPU
  kInt8g,  // "int8g": int8 with one scale per 64 inputs, closer to fp32 for 1/16 more bytes
};

// How context embeddings are kept on disk.
enum class EmbeddingDType {
  kFp16,  // "fp16"
  kBf16,  // "bf16"
  kFp32,  // "fp32"
  kInt8,  // "int8": symmetric, one fp32 scale per vector (about half of fp16)
};

// The names above (and the aliases the command line takes: float32, bfloat16, q8, int8-g64,
// float16); nullopt for anything else.
std::optional<WeightFormat> ParseWeightFormat(const std::string& name);
const char* WeightFormatName(WeightFormat format);
std::optional<EmbeddingDType> ParseEmbeddingDType(const std::string& name);
const char* EmbeddingDTypeName(EmbeddingDType dtype);

// ---------------------------------------------------------------------------------------------
// Options

enum class SearchMode {
  kAuto,    // hybrid when the store has a dense retriever, else BM25
  kHybrid,  // reciprocal-rank fusion of dense and BM25
  kDense,   // FAISS over the retriever's vectors (needs a retriever)
  kBm25,    // lexical
};

struct GenerationOptions {
  int max_new_tokens = 64;
  double temperature = 0.0;  // 0 = greedy (what the paper evaluates)
  int top_k = 0;             // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;         // for sampling
};

struct Options {
  // The store directory (RocksDB + the FAISS file + cocom-db.json). Required.
  std::string db_path;
  // A COCOM checkpoint directory (Hugging Face layout), remembered by the store, so later
  // opens may leave it empty. Left empty when a store is created, the project's default model
  // is used (DefaultModelDir()). Search() and Remove() never load the model.
  std::string model_dir;
  // A sentence-transformers style retriever directory for dense/hybrid search. Optional
  // (BM25 works without); remembered by the store.
  std::string retriever_dir;
  // Tokenizer directories when the checkpoint does not carry its own (published COCOM
  // checkpoints name a base model whose tokenizer must be found locally).
  std::string decoder_tokenizer, compressor_tokenizer;
  // Create the store when db_path has none. False: Open fails with NotFound instead.
  bool create_if_missing = true;
  // Open an existing store for reading only, without taking its lock, so it works while
  // another process ingests into it (a RocksDB secondary instance: a replica on the same or
  // a shared directory; any number of them). Before each Search, Ask and Stats it catches up
  // with what the writer has committed since (RocksDB's TryCatchUpWithPrimary, which tails
  // the writer's MANIFEST and log; when the store changed, the dense index is reloaded from
  // the writer's file or rebuilt from RocksDB). A document being written in parts is seen
  // only once complete. Ingest and Remove fail with FailedPrecondition; it never writes the
  // store. `cocom search`, `info`, `ask` and `console` fall back to it when the store is
  // locked by another process; `--read-only` (ask, console, serve) asks for it.
  bool read_only = false;
  // Load the COCOM model at Open (true) or on the first Ingest/Ask (false).
  bool load_model_eagerly = false;
  // "cpu" or "cuda" / "cuda:N" (needs a CUDA build of libtorch).
  std::string device = "cpu";
  // How the decoder's linear layers are held in memory (WeightFormat). bf16/int8/int8g are
  // CPU-only. A Mistral-7B checkpoint needs one of them on a 24 GB machine. Ingestion
  // compresses with the same decoder: a store refuses to ingest with another format than its
  // embeddings were made with (asking with another one is allowed).
  WeightFormat weights = WeightFormat::kFp32;
  // Threads for libtorch's intra-op pool; 0 = all cores (std::thread::hardware_concurrency;
  // libtorch's own default can be a single thread). The setting is process-wide (libtorch
  // has one pool), applied by every Open.
  int threads = 0;
  // The most memory one answer's prompt may take, in MB, by the engine's estimate (every
  // head's attention scores over the prompt, the key/value cache, the layer activations). A
  // question whose prompt (question + k passages' embeddings) needs more, or more positions
  // than the decoder has, is refused with InvalidArgument naming the sizes and the largest k
  // that fits. An Engine on a shared Model uses the Model's ModelOptions::prompt_memory_mb.
  int64_t prompt_memory_mb = 8192;
  // Passages retrieved per question (the published models were trained with 5). The most
  // that fit follows from the prompt budget above (Ask refuses more).
  size_t top_k = 5;
  SearchMode search_mode = SearchMode::kAuto;
  GenerationOptions generation;
  // Answer from the passages' text instead of their context embeddings (the uncompressed
  // RAG baseline with the same decoder; for A/B comparisons).
  bool no_compress = false;
  // The store's settings. They are kept in the store (its RocksDB manifest) when it is
  // created and fixed from then on: unset = the stored value (or the default shown, for a
  // new store); set to a value other than the stored one = Open fails with InvalidArgument
  // naming both. (The model may move: Options::model_dir may name a new place as long as
  // its fingerprint is the store's.) Ingesting with another `weights` format than the
  // store's embeddings were made with is refused too; asking with another one is allowed.
  std::optional<std::string> index_factory;       // FAISS factory string; "Flat"
  std::optional<EmbeddingDType> embedding_dtype;  // context embeddings on disk; kFp16
  std::optional<int> context_max_length;          // compressor tokens per passage; 128
  std::optional<int> chunk_overlap_tokens;        // tokens repeated between passages; 0
  // BM25's language: Snowball stemming (and, for English, stop words) of passages and
  // questions alike ("english", "german", ... any libstemmer language), or "words" for none;
  // "english". Stores made before this was kept read as "words".
  std::optional<std::string> bm25_language;
  // A document of more passages than this is compressed and written in parts of this many
  // (memory bounded by the part, whatever the document's size), each its own write; readers
  // see the document only once every part is in. Ingest's progress is called after each
  // part; stopping it in the middle, a crash or a kill drops the unfinished document whole.
  int passages_per_batch = 256;
  // Retriever prompt prefixes (e5-style models want "query: " / "passage: "); "".
  std::optional<std::string> query_prefix, passage_prefix;
  // The library's log: level and destination. Unset (and no callback): left as it is, which
  // is warnings and errors on stderr unless an earlier Open chose otherwise. The library has
  // one logger for the process (the last Open that sets it wins) and never touches spdlog's
  // default logger or global level.
  std::optional<LogLevel> log_level;
  LogCallback log_callback;  // set: messages go here instead of stderr
  // Same as log_level = LogLevel::kDebug.
  bool verbose = false;
};

// What a Model is opened with. The same fields of Options mean the same.
struct ModelOptions {
  // A COCOM checkpoint directory (Hugging Face layout). Empty: DefaultModelDir().
  std::string model_dir;
  std::string decoder_tokenizer, compressor_tokenizer;
  std::string device = "cpu";
  WeightFormat weights = WeightFormat::kFp32;  // see Options::weights
  int threads = 0;                             // 0 = all cores; process-wide
  int64_t prompt_memory_mb = 8192;             // see Options::prompt_memory_mb
  std::optional<LogLevel> log_level;
  LogCallback log_callback;
  // Continuous batching. 0 (default): every Generate/Ask decodes in its calling thread, on its
  // own. N > 0: one scheduler thread runs the decoder passes of every answer on this Model
  // (Compress and ingestion still run in their callers); answers asked concurrently (from
  // any threads and Engines) are prefilled and decoded together, up to N per decoder step,
  // and a new one joins between two steps. A step reads all weights once, so on a
  // memory-bound CPU answers per second grow with the answers in flight. Streaming callbacks
  // then run on the scheduler thread: keep them short. A server's setting (cocom serve).
  int max_batch = 0;
};

// ---------------------------------------------------------------------------------------------
// Ingestion

struct Document {
  std::string id;      // stable id; re-ingesting the same id replaces the document when changed
  std::string title;   // may be empty
  std::string text;    // UTF-8 (invalid sequences are repaired with U+FFFD and reported)
  std::string source;  // provenance shown with answers (e.g. a URL or path); may be empty
};

struct IngestProgress {
  size_t documents_done = 0, documents_total = 0;
  int64_t passages_done = 0;
  double seconds = 0;
};

struct IngestOptions {
  // fnmatch globs (paths only). Hidden files and directories under a walked directory are left
  // out unless an include glob names them with their leading dot (".notes", ".*").
  std::vector<std::string> include, exclude;
  // Called after every document, and after every part of a long one (see
  // Options::passages_per_batch). Return false to stop: the documents already complete stay
  // stored, a long document cut between its parts is dropped whole (an older version of it
  // stays); the result's status is then OK and `stopped_early` is set.
  std::function<bool(const IngestProgress&)> progress;
  // Ingest(paths) only: the id and source recorded for a file, from its absolute path (a jsonl
  // record's id is "NAME#line" when it has none). Unset: the absolute path. A server that
  // saved an upload to a temporary file names it after the upload.
  std::function<std::string(const std::string& path)> source_name;
  // Ingest(paths) only: limits for hostile files. A file larger than max_file_bytes (any
  // format; 0 = no limit) is skipped before it is read, the reason naming the limit and its
  // size. Nesting deeper than max_nesting_depth (>= 1) is flattened in HTML (tags dropped,
  // text kept, with a warning) and skips a JSON line ("FILE:N" in `skipped`).
  int64_t max_file_bytes = int64_t{256} << 20;
  int64_t max_nesting_depth = 256;
  // Ingest(paths) only: a .gz/.bz2/.xz file or a .docx/.odt/.epub container unpacking to more
  // than max_unpacked_bytes, or a container of more than max_archive_entries entries, is
  // skipped with a reason naming the file and the limit (0 = no limit; < 0 is an error).
  int64_t max_unpacked_bytes = int64_t{256} << 20;
  int64_t max_archive_entries = 10000;
};

struct SkippedInput {
  std::string path;    // file, or "file:line" for a jsonl record, or the document id
  std::string reason;  // why it was not stored
};

struct IngestStats {
  int64_t added = 0, unchanged = 0, replaced = 0, passages = 0;
  std::vector<SkippedInput> skipped;
  std::vector<std::string> warnings;
  bool stopped_early = false;
  double seconds = 0;
  // Ingest(paths) only: files that gave documents, by the format they were read as ("text",
  // "markdown", "html", "pdf", "jsonl", "rst", "org", "tex", "csv", "docx", "odt", "epub";
  // "text (gzip)" for a compressed one).
  std::map<std::string, int64_t> formats;
};

// ---------------------------------------------------------------------------------------------
// Sharded bulk ingestion (docs/scale-out.md)
//
// N workers (a shell loop, SLURM, Kubernetes Jobs...) each call IngestShard on the same inputs
// with the same model and settings and their own index I of N. Each reads every input, keeps
// the documents whose id hashes to I, compresses them, and writes them as RocksDB SST files
// (one per column family) with shard.json into ShardOptions::export_dir; no store is left
// behind. ImportShards links shards into a store.

struct ShardOptions {
  int index = 0;  // I, 0 <= I < count
  int count = 0;  // N, the run's workers (1..1024)
  // Where the shard goes: absent or empty (the "work" sub-directory a killed worker left is
  // cleared). Options::db_path is ignored: the worker's store lives in export_dir/work while
  // it runs.
  std::string export_dir;
};

// Ingests shard `shard.index` of `shard.count` of `paths` (files and directories as Ingest
// takes them; a document's id is its absolute path, so workers must see the inputs under the
// same paths) and exports it. `options` are those of a new store (model, retriever, dtype,
// context length, overlap, prefixes, weights); the import refuses a shard made with others.
// When ingest.progress stops it, nothing is exported (stopped_early is set).
Result<IngestStats> IngestShard(const Options& options, const std::vector<std::string>& paths,
                                const ShardOptions& shard, const IngestOptions& ingest = {});

struct ImportStats {
  std::vector<std::string> imported;          // shard directories linked in now
  std::vector<std::string> already_imported;  // imported before: skipped (idempotent)
  int64_t documents = 0, passages = 0;        // added now
  int64_t index_vectors = 0;                  // in the rebuilt dense index (0: no retriever)
  double seconds = 0;
};

// Links shards into the store at db_path (created from the first shard's settings when there
// is none) with one RocksDB IngestExternalFiles over every column family: the shards' SST
// files are copied in as they are, never rewritten, with the new BM25 counters and a marker
// per shard, recorded in one MANIFEST edit; then the dense index is rebuilt. Every shard is
// read and checked row by row first (Corruption for a damaged or hostile one). Nothing is
// imported (FailedPrecondition, naming both values) when a shard was made with another model
// or setting, holds a document the store already has, or uses passage ids the store uses.
// A shard imported before is skipped. A crash at any point leaves the store as it was before
// the call or as after it. Needs the store's lock (no other writer).
Result<ImportStats> ImportShards(const std::string& db_path,
                                 const std::vector<std::string>& shard_dirs);

// ---------------------------------------------------------------------------------------------
// Search and answers

struct Passage {
  uint64_t id = 0;  // passage id in the store
  std::string document_id, title, source;
  int64_t index = 0;  // position of the passage within its document
  std::string text;   // "Title. chunk"
  double score = 0;   // retrieval score (higher is better; RRF score for hybrid)
};

struct SearchOptions {
  size_t k = 0;                    // 0 = Options::top_k
  std::optional<SearchMode> mode;  // unset = Options::search_mode
};

struct Timings {
  double retrieve_ms = 0;         // retrieval (query embedding + FAISS/BM25)
  double load_embeddings_ms = 0;  // reading the passages' context embeddings (or text)
  double prefill_ms = 0;          // prompt assembly and the decoder's first forward pass
  double decode_ms = 0;           // every step after the first token
  double total_ms = 0;
  int64_t prompt_tokens = 0;  // decoder input length (context embeddings count one each)
  int64_t generated_tokens = 0;
  double decode_tokens_per_second = 0;
};

struct AskOptions {
  size_t k = 0;                                 // 0 = Options::top_k
  std::optional<SearchMode> mode;               // unset = Options::search_mode
  std::optional<bool> no_compress;              // unset = Options::no_compress
  std::optional<GenerationOptions> generation;  // unset = Options::generation
  // Called once with the retrieved passages (the future Answer::sources), before the answer
  // is generated: a server sends them ahead of the streamed text.
  std::function<void(const std::vector<Passage>&)> on_sources;
};

struct Answer {
  std::string text;
  std::vector<Passage> sources;  // the passages the decoder read, in retrieval order
  Timings timings;
  bool cancelled = false;  // the token callback stopped the generation
  bool compressed = true;  // false when answered from the passages' text
};

// Receives the answer text as it grows: each call gets the new piece of text (UTF-8, never a
// split character). Return false to stop the generation; the Answer then has what was
// produced so far and cancelled = true.
using TokenCallback = std::function<bool(const std::string& piece)>;

struct EngineStats {
  std::string db_path, model_dir, retriever_dir;
  int64_t documents = 0, passages = 0;
  int64_t compression_rate = 0;  // r: ceil(128 / r) embeddings per passage
  int64_t embeddings_per_passage = 0;
  int64_t embedding_dim = 0;
  EmbeddingDType embedding_dtype = EmbeddingDType::kFp16;
  std::string index_factory;
  std::string bm25_analyzer;    // "words" or "snowball:<language>"
  int64_t embedding_bytes = 0;  // context embeddings stored, in bytes
  bool has_dense_retriever = false;
  bool model_loaded = false;
  int64_t questions_answered = 0;  // by this Engine since Open
  std::string json;                // everything above and the store's manifest, as JSON
};

// ---------------------------------------------------------------------------------------------
// The model: weights and tokenizers, shared

struct ModelInfo {
  std::string model_dir;
  std::string fingerprint;       // what stores remember to recognise the checkpoint
  std::string compressor;        // "decoder" (COCOM) or "bert" (COCOM-light)
  int64_t compression_rate = 0;  // r: a passage of L tokens becomes ceil(L / r) vectors
  int64_t embedding_dim = 0;     // the decoder's hidden size: the width of every vector
  int64_t generation_top_k = 0;  // passages per question the checkpoint was trained with
  int64_t max_positions = 0;     // the decoder's longest prompt + answer
  WeightFormat weights = WeightFormat::kFp32;
  std::string device;
  int64_t decoder_parameters = 0;
  double load_seconds = 0;
};

// Context embeddings of `count` passages, [count, vectors, dim] row-major fp32: what a store
// keeps for every passage, and what an application with its own vector database keeps.
struct ContextEmbeddings {
  int64_t count = 0;    // passages
  int64_t vectors = 0;  // per passage: ceil(context_max_length / compression_rate)
  int64_t dim = 0;      // ModelInfo::embedding_dim
  std::vector<float> data;

  // Passage i's vectors (vectors * dim values).
  const float* passage(int64_t i) const { return data.data() + i * vectors * dim; }
  // Passages [first, first + n) as their own ContextEmbeddings (copies).
  ContextEmbeddings Slice(int64_t first, int64_t n) const;
  // Passages of several sets (same vectors and dim) one after another, in order.
  static Result<ContextEmbeddings> Concat(const std::vector<ContextEmbeddings>& parts);
};

struct CompressOptions {
  int context_max_length = 128;  // compressor tokens per passage (longer text is cut)
  int batch_size = 8;            // passages per forward pass
};

// What a Model's continuous-batching scheduler has done (all zero when max_batch is 0).
struct ModelStats {
  int max_batch = 0;
  int64_t answers = 0;            // completed (cancelled ones included)
  int64_t decode_steps = 0;       // decoder steps after the first token
  int64_t sequences_stepped = 0;  // sum over the steps of the answers each advanced
  // steps_by_batch[b]: steps that advanced b answers at once (size max_batch + 1).
  std::vector<int64_t> steps_by_batch;
  int64_t generated_tokens = 0;
  int64_t waiting = 0;  // asked, not started
  int64_t running = 0;  // being decoded
  double busy_seconds = 0;
};
// An answer generated without a store.
struct Generation {
  std::string text;
  bool cancelled = false;  // the token callback stopped it
  Timings timings;         // retrieve_ms and load_embeddings_ms are 0
};

class Model {
 public:
  // Loads the checkpoint (seconds to minutes for a 7B model). The returned Model may be shared
  // by any number of Engines and threads.
  static Status Open(const ModelOptions& options, std::shared_ptr<Model>* model);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelInfo& Info() const;

  // Compresses passages (UTF-8 text; "Title. text" is how stores lay them out) into their
  // context embeddings, each passage on its own (batch-mates never change a result).
  Result<ContextEmbeddings> Compress(const std::vector<std::string>& passages,
                                     const CompressOptions& options = {}) const;

  // Answers a question from the context embeddings of its passages (contexts.count of them,
  // in the order the decoder should read them; the published models were trained with 5).
  // on_token, when set, streams the answer as in Engine::AskStreaming.
  Result<Generation> Generate(const std::string& question, const ContextEmbeddings& contexts,
                              const GenerationOptions& options = {},
                              const TokenCallback& on_token = nullptr) const;
  // The uncompressed baseline: the same decoder reads the passages' text (empty: no passages).
  Result<Generation> GenerateFromText(const std::string& question,
                                      const std::vector<std::string>& passages,
                                      const GenerationOptions& options = {},
                                      const TokenCallback& on_token = nullptr) const;
  // The continuous-batching counters (ModelOptions::max_batch).
  ModelStats Stats() const;

 private:
  struct Impl;
  friend struct InternalAccess;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// The engine

class Engine {
 public:
  // Opens (or creates, see Options::create_if_missing) the store at options.db_path. The
  // model the store names is loaded on first use (or at Open, see load_model_eagerly) and
  // belongs to this Engine.
  static Status Open(const Options& options, std::unique_ptr<Engine>* engine);
  // The same on a Model already open, which this Engine shares (it keeps it alive). The
  // store must have been built with this model (or is created with it); Options::model_dir
  // may be left empty or must name the model's directory, and Options::device, weights,
  // threads and the tokenizer directories are the Model's.
  static Status Open(const Options& options, std::shared_ptr<Model> model,
                     std::unique_ptr<Engine>* engine);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Reads files and directories (.txt .md .markdown .html .htm .pdf .jsonl), cuts them into
  // passages, compresses every passage once and stores it. Unchanged documents are skipped,
  // changed ones replaced. One bad file never stops the batch: it is listed in `skipped`.
  Result<IngestStats> Ingest(const std::vector<std::string>& paths,
                             const IngestOptions& options = {});
  // The same for documents the application already holds in memory.
  Result<IngestStats> IngestDocuments(const std::vector<Document>& documents,
                                      const IngestOptions& options = {});
  // Removes a document by id, or every document read from a source path. Returns how many.
  Result<int64_t> Remove(const std::string& id_or_source);

  Result<std::vector<Passage>> Search(const std::string& query,
                                      const SearchOptions& options = {}) const;

  // Retrieves the top-k passages and answers from their stored context embeddings.
  Result<Answer> Ask(const std::string& question, const AskOptions& options = {});
  // The same, streaming the answer through on_token as it is generated.
  Result<Answer> AskStreaming(const std::string& question, const TokenCallback& on_token,
                              const AskOptions& options = {});

  Result<EngineStats> Stats() const;

  // The Model this Engine answers with: the one given to Open, or the one it loaded itself
  // (loading it now if it has not yet; fails like Ask would).
  Result<std::shared_ptr<Model>> GetModel() const;

 private:
  struct Impl;
  friend struct InternalAccess;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// "0.1.0"
const char* Version();

// The directory of the small default model this project trains itself (models/default,
// installed as <prefix>/share/cocom/models/default), used when a store is created without
// Options::model_dir: the environment variable COCOM_DEFAULT_MODEL when it is set (alone: a
// set variable that names no checkpoint gives empty), otherwise the install location, then the
// source tree the library was built from. Empty when none has a config.json.
std::string DefaultModelDir();

}  // namespace cocom
