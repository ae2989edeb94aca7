#include "tools/cli_util.h"

#include <regex>
#include <utility>

#include "common/error.h"
#include "common/log.h"
#include "model/runtime.h"

namespace cocom::cli {

c10::Device setup_runtime(const GlobalOptions& g) {
  log::configure(g.verbose ? log::Level::kDebug : log::Level::kWarn);
  model::RuntimeOptions ro;
  ro.threads = g.threads;
  ro.device = g.device;
  int n = model::init_runtime(ro);
  log::debug("runtime: {} threads, device {}", n, g.device);
  return model::parse_device(g.device);
}

namespace {
volatile sig_atomic_t g_sigint = 0;
void on_sigint(int) { g_sigint = 1; }
}  // namespace

SigintScope::SigintScope() {
  g_sigint = 0;
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_);
}
SigintScope::~SigintScope() { sigaction(SIGINT, &old_, nullptr); }
bool SigintScope::interrupted() { return g_sigint != 0; }

std::string cli_terms(const std::string& api_message) {
  static const std::pair<const char*, const char*> kFlags[] = {
      {"top_k", "--k"},
      {"k", "--k"},
      {"db_path", "--db"},
      {"model_dir", "--model"},
      {"retriever_dir", "--retriever"},
      {"decoder_tokenizer", "--decoder-tokenizer"},
      {"compressor_tokenizer", "--compressor-tokenizer"},
      {"weights", "--weights"},
      {"embedding_dtype", "--embedding-dtype"},
      {"index_factory", "--index"},
      {"bm25_language", "--language"},
      {"chunk_overlap_tokens", "--overlap"},
      {"passages_per_batch", "--passages-per-batch"},
      {"max_file_bytes", "--max-file-mb"},
      {"max_nesting_depth", "--max-nesting-depth"},
      {"max_unpacked_bytes", "--max-unpacked-mb"},
      {"query_prefix", "--query-prefix"},
      {"passage_prefix", "--passage-prefix"},
      {"device", "--device"},
      {"threads", "--threads"},
      {"prompt_memory_mb", "--prompt-memory-mb"},
      {"search_mode", "--mode"},
      {"mode", "--mode"},
      {"max_batch", "--max-batch"},
      {"generation.max_new_tokens", "--max-new-tokens"},
      {"generation.temperature", "--temperature"},
      {"generation.top_k", "--top-k"},
      {"generation.top_p", "--top-p"},
  };
  std::string out = api_message;
  static const std::pair<const char*, const char*> kPhrases[] = {
      {" (Options::create_if_missing is false)", ""},
      {" (Options::read_only)", ""},
      {"SearchMode::kBm25 / kAuto (--mode bm25)", "--mode bm25"},
  };
  for (const auto& [phrase, cli] : kPhrases) {
    for (size_t at; (at = out.find(phrase)) != std::string::npos;) {
      out.replace(at, std::char_traits<char>::length(phrase), cli);
    }
  }
  static const std::regex name(R"(\b(?:Ask|Search|Model|Ingest)?Options::([a-z_]+(?:\.[a-z_]+)?))");
  std::string result;
  auto last = out.cbegin();
  for (std::sregex_iterator it(out.begin(), out.end(), name), end; it != end; ++it) {
    const std::string field = (*it)[1].str();
    const char* flag = nullptr;
    for (const auto& [f, fl] : kFlags) {
      if (field == f) flag = fl;
    }
    result.append(last, (*it)[0].first);
    result += flag ? flag : (*it)[0].str();
    last = (*it)[0].second;
  }
  result.append(last, out.cend());
  // "--retriever (--retriever)" and "... (0 = off; --top-k)" after "--top-k": say it once.
  static const std::regex repeat(R"((--[a-z-]+)([^()]*) \(\1\))");
  static const std::regex repeat_after(R"((--[a-z-]+)([^()]*) \(([^()]*); \1\))");
  result = std::regex_replace(result, repeat, "$1$2");
  result = std::regex_replace(result, repeat_after, "$1$2 ($3)");
  return result;
}

AnyModel load_any_model(const std::string& dir, c10::Device device, model::WeightFormat weights) {
  std::string cfg_path = join_path(dir, "config.json");
  if (!dir_exists(dir)) fail("--model ", dir, ": no such directory");
  if (!file_exists(cfg_path))
    fail(dir, ": no config.json (is this a Hugging Face model directory?)");
  Json j = read_json_file(cfg_path);
  if (j.is_object() && j.contains("decoder_model_name")) {
    fail(cfg_path,
         ": this is a COCOM checkpoint (decoder_model_name is set); use cocom generate / ",
         "compress / info with it (forward and complete take a plain Mistral/Llama or BERT ",
         "directory)");
  }
  AnyModel m;
  m.arch = model::detect_arch(j, cfg_path);
  Stopwatch sw;
  if (m.arch == model::Arch::Decoder) {
    m.decoder = model::MistralModel::load(dir, device, {}, weights);
  } else {
    m.bert = model::BertModel::load(dir, device);
  }
  m.load_seconds = sw.seconds();
  return m;
}

std::string find_tokenizer_dir(const std::string& model_dir) {
  for (const std::string& d : {model_dir, join_path(model_dir, "tokenizer")}) {
    if (file_exists(join_path(d, "tokenizer.model")) || file_exists(join_path(d, "vocab.txt"))) {
      return d;
    }
  }
  fail(model_dir, ": no tokenizer found (looked for tokenizer.model or vocab.txt in ", model_dir,
       " and ", join_path(model_dir, "tokenizer"), "); pass --tokenizer DIR");
}

namespace {
at::Tensor rows_to_tensor(const Json& rows, const std::string& field, const std::string& path,
                          int64_t expect_rows, int64_t expect_cols) {
  if (!rows.is_array() || rows.empty()) {
    fail(path, ": field '", field, "' must be a non-empty list of rows");
  }
  const int64_t B = static_cast<int64_t>(rows.size());
  if (expect_rows >= 0 && B != expect_rows) {
    fail(path, ": field '", field, "' has ", B, " rows but input_ids has ", expect_rows);
  }
  int64_t T = -1;
  std::vector<int64_t> flat;
  for (int64_t b = 0; b < B; ++b) {
    const Json& row = rows[static_cast<size_t>(b)];
    if (!row.is_array()) fail(path, ": field '", field, "' row ", b, " is not a list");
    if (T < 0) T = static_cast<int64_t>(row.size());
    if (static_cast<int64_t>(row.size()) != T) {
      fail(path, ": field '", field, "' row ", b, " has ", row.size(), " values but row 0 has ", T,
           " (pad the rows to one length)");
    }
    for (size_t t = 0; t < row.size(); ++t) {
      if (!row[t].is_number_integer()) {
        fail(path, ": field '", field, "' row ", b, " position ", t, " is not an integer (",
             row[t].dump(), ")");
      }
      flat.push_back(row[t].get<int64_t>());
    }
  }
  if (T == 0) fail(path, ": field '", field, "' has empty rows");
  if (expect_cols >= 0 && T != expect_cols) {
    fail(path, ": field '", field, "' rows have ", T, " values but input_ids rows have ",
         expect_cols);
  }
  return at::tensor(flat, at::kLong).view({B, T});
}
}  // namespace

IdBatch read_id_batch(const std::string& path) {
  Json j = read_json_file(path);
  if (!j.is_object()) fail(path, ": expected a JSON object with an 'input_ids' field");
  if (!j.contains("input_ids")) fail(path, ": missing field 'input_ids'");
  IdBatch b;
  b.input_ids = rows_to_tensor(j["input_ids"], "input_ids", path, -1, -1);
  const int64_t B = b.input_ids.size(0), T = b.input_ids.size(1);
  auto opt = [&](const char* field) {
    return j.contains(field) && !j[field].is_null() ? rows_to_tensor(j[field], field, path, B, T)
                                                    : at::Tensor();
  };
  b.attention_mask = opt("attention_mask");
  if (!b.attention_mask.defined()) b.attention_mask = at::ones({B, T}, at::kLong);
  if (((b.attention_mask != 0) & (b.attention_mask != 1)).any().item<bool>()) {
    fail(path, ": field 'attention_mask' must contain only 0 and 1");
  }
  b.token_type_ids = opt("token_type_ids");
  b.position_ids = opt("position_ids");
  return b;
}

Json tensor_to_json(const at::Tensor& t0) {
  at::Tensor t = t0.to(at::kCPU, at::kLong).contiguous();
  Json rows = Json::array();
  for (int64_t b = 0; b < t.size(0); ++b) {
    Json row = Json::array();
    for (int64_t i = 0; i < t.size(1); ++i) row.push_back(t[b][i].item<int64_t>());
    rows.push_back(row);
  }
  return rows;
}

}  // namespace cocom::cli
