// cocom ask: one question against a knowledge store, through the public C++ API only.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "cocom/cocom.h"
#include "serve/api.h"
#include "tools/commands.h"

namespace cocom::cli {

namespace {

// The passage on one line: whitespace runs collapsed, cut at `max_bytes` on a UTF-8
// character boundary.
std::string excerpt(const std::string& text, size_t max_bytes) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  if (out.size() <= max_bytes) return out;
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
  return out.substr(0, cut) + "...";
}

SearchMode parse_mode(const std::string& m) {
  if (m.empty()) return SearchMode::kAuto;
  if (m == "dense") return SearchMode::kDense;
  if (m == "bm25") return SearchMode::kBm25;
  if (m == "hybrid") return SearchMode::kHybrid;
  throw std::invalid_argument("--mode " + m + ": expected dense, bm25 or hybrid");
}

int report(const Status& s) {
  std::fprintf(stderr, "cocom: error: %s\n", cli_terms(s.ToString()).c_str());
  return 1;
}

}  // namespace

int cmd_ask(const GlobalOptions& g, const AskArgs& a) {
  Options opt;
  opt.db_path = a.db;
  opt.model_dir = a.model;
  opt.retriever_dir = a.retriever;
  opt.decoder_tokenizer = a.decoder_tokenizer;
  opt.weights = weights_flag(a.weights);
  opt.compressor_tokenizer = a.compressor_tokenizer;
  if (!a.query_prefix.empty()) opt.query_prefix = a.query_prefix;
  opt.create_if_missing = false;  // asking never creates a store
  opt.device = g.device;
  opt.threads = g.threads;
  opt.prompt_memory_mb = a.prompt_memory_mb;
  opt.verbose = g.verbose;
  if (a.k < 1)
    return report(Status::InvalidArgument("--k " + std::to_string(a.k) + ": must be at least 1"));
  opt.top_k = static_cast<size_t>(a.k);
  try {
    opt.search_mode = parse_mode(a.mode);
  } catch (const std::invalid_argument& e) {
    return report(Status::InvalidArgument(e.what()));
  }
  opt.generation.max_new_tokens = static_cast<int>(a.max_new_tokens);
  opt.generation.temperature = a.temperature;
  opt.generation.top_p = a.top_p;
  opt.generation.top_k = static_cast<int>(a.top_k);
  opt.generation.seed = a.seed;
  opt.no_compress = a.no_compress;
  opt.read_only = a.read_only;

  std::unique_ptr<Engine> engine;
  Status s = open_for_reading(opt, &engine);
  if (!s.ok()) return report(s);

  const bool stream = !a.json && ::isatty(1);
  Result<Answer> r = Status::Internal("not asked");
  if (stream) {
    SigintScope sigint;
    r = engine->AskStreaming(a.question, [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return !SigintScope::interrupted();
    });
  } else {
    r = engine->Ask(a.question);
  }
  if (!r.ok()) {
    if (stream) std::printf("\n");
    return report(r.status());
  }
  const Answer& ans = *r;
  const Timings& t = ans.timings;

  if (a.json) {
    nlohmann::json src = nlohmann::json::array();
    int rank = 0;
    for (const auto& p : ans.sources) {
      nlohmann::json one = serve::passage_json(p, 0, /*excerpt=*/false);
      one["rank"] = ++rank;
      src.push_back(one);
    }
    nlohmann::json j = {{"question", a.question},
                        {"answer", ans.text},
                        {"compressed", ans.compressed},
                        {"sources", src},
                        {"timings", serve::timings_json(t)}};
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }

  if (stream) {
    std::printf("%s\n", ans.cancelled ? " [stopped]" : "");
  } else {
    std::printf("%s\n", ans.text.c_str());
  }
  std::printf("\nSources%s:\n", ans.compressed ? "" : " (read as text, --no-compress)");
  int rank = 0;
  for (const auto& p : ans.sources) {
    std::printf("  [%d] %s (%s, passage %lld)\n      %s\n", ++rank,
                p.title.empty() ? p.document_id.c_str() : p.title.c_str(),
                p.source.empty() ? p.document_id.c_str() : p.source.c_str(),
                static_cast<long long>(p.index), excerpt(p.text, 160).c_str());
  }
  std::fflush(stdout);
  std::fprintf(stderr,
               "retrieve %.1f ms, load %s %.1f ms, prefill %.1f ms (%lld prompt tokens), "
               "decode %lld tokens in %.1f ms (%.1f tokens/s)\n",
               t.retrieve_ms, ans.compressed ? "embeddings" : "passages", t.load_embeddings_ms,
               t.prefill_ms, static_cast<long long>(t.prompt_tokens),
               static_cast<long long>(t.generated_tokens), t.decode_ms, t.decode_tokens_per_second);
  return 0;
}

}  // namespace cocom::cli
