// cocom info / forward / complete / model init
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <set>

#include "common/error.h"
#include "model/checkpoint_io.h"
#include "model/cocom.h"
#include "model/generation.h"
#include "model/safetensors.h"
#include "tools/commands.h"

namespace cocom::cli {

model::WeightFormat weight_format_option(const std::string& value) {
  auto f = model::parse_weight_format(value);
  if (!f) fail("--weights ", value, ": expected fp32, bf16, int8 or int8g");
  return *f;
}

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  return buf;
}

}  // namespace

namespace {
int cocom_info(const GlobalOptions& g, const InfoArgs& a, c10::Device dev) {
  model::CocomLoadOptions o;
  o.device = dev;
  o.decoder_tokenizer = a.decoder_tokenizer;
  o.compressor_tokenizer = a.compressor_tokenizer;
  auto m = model::CocomModel::load(a.model, o);
  const auto& c = m->config();
  const auto& d = m->decoder().config();
  Json out;
  out["model"] = a.model;
  out["architecture"] = c.pisco ? "PISCO" : c.light() ? "COCOM-light" : "COCOM";
  out["cocom"] = c.to_json();
  out["decoder"] = d.to_json();
  out["decoder_source"] = m->decoder_source();
  if (c.light()) {
    out["compressor"] = m->bert()->config().to_json();
    out["compressor_source"] = m->compressor_source();
  }
  out["embeddings_per_128_token_passage"] = m->slots_per_passage(128);
  const format::Tokens& t = m->tokens();
  // PISCO: one memory token per slot, <MEM0> .. <MEM{n-1}> (consecutive ids).
  const std::string mem_name = c.pisco ? "<MEM0>" : "<MEM>";
  out["special_ids"] = {{mem_name, t.mem}, {"<AE>", t.ae}, {"<ENC>", t.enc}, {"<SEP>", t.sep}};
  if (c.pisco) {
    out["special_ids"]["<MEM" + std::to_string(t.mem_count - 1) + ">"] = t.mem + t.mem_count - 1;
    out["compression_adapter"] =
        m->compressor_hooks() ? "encoder_adapter (on the fly)" : "decoder_adapter";
  }
  out["load_seconds"] = m->load_seconds();
  out["device"] = g.device;
  if (a.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << "model:        " << a.model << "\n"
            << "architecture: " << out["architecture"].get<std::string>() << " (compression rate x"
            << c.compr_rate << ", " << out["embeddings_per_128_token_passage"]
            << " embeddings per 128-token passage, sep " << (c.sep ? "on" : "off") << ", top-k "
            << c.generation_top_k << ")\n"
            << "decoder:      " << d.num_hidden_layers << " layers, hidden " << d.hidden_size
            << ", heads " << d.num_attention_heads << "/" << d.num_key_value_heads
            << ", vocabulary " << d.vocab_size
            << (c.lora ? ", LoRA r " + std::to_string(c.lora_r) + " merged" : "")
            << (c.pisco ? " (decoder_adapter)" : "") << "\n"
            << "              base model and tokenizer from " << m->decoder_source() << "\n";
  if (c.light()) {
    const auto& b = m->bert()->config();
    std::cout << "compressor:   BERT, " << b.num_hidden_layers << " layers, hidden "
              << b.hidden_size << ", projection " << c.compr_linear_type << "\n"
              << "              from " << m->compressor_source() << "\n";
  } else if (c.pisco) {
    std::cout << "compressor:   the decoder itself with "
              << out["compression_adapter"].get<std::string>() << " (<MEM0>..<MEM"
              << t.mem_count - 1 << "> tokens, 131-token rows)\n";
  } else {
    std::cout << "compressor:   the decoder itself (<MEM> tokens)\n";
  }
  if (c.pisco) {
    std::cout << "tokens:       <MEM0>..<MEM" << t.mem_count - 1 << "> " << t.mem << ".."
              << t.mem + t.mem_count - 1;
  } else {
    std::cout << "tokens:       <MEM> " << t.mem;
  }
  std::cout << "  <AE> " << t.ae << "  <ENC> " << t.enc << "  <SEP> " << t.sep << "\n";
  std::printf("load time:    %.3f s\n", m->load_seconds());
  return 0;
}
}  // namespace

int cmd_info(const GlobalOptions& g, const InfoArgs& a) {
  c10::Device dev = setup_runtime(g);
  if (model::is_cocom_checkpoint(a.model)) return cocom_info(g, a, dev);
  AnyModel m = load_any_model(a.model, dev);
  auto files = model::CheckpointFiles::open(a.model);
  std::set<std::string> dtypes;
  int64_t stored = 0;
  for (const auto& n : files->names()) {
    const auto& ti = files->info(n);
    dtypes.insert(model::dtype_name(ti.dtype));
    stored += ti.numel();
  }
  Json out;
  out["model"] = a.model;
  out["load_seconds"] = m.load_seconds;
  out["stored_parameters"] = stored;
  out["checkpoint_bytes"] = files->total_bytes();
  out["dtypes"] = std::vector<std::string>(dtypes.begin(), dtypes.end());
  out["compute_dtype"] = "float32";
  out["device"] = g.device;
  if (m.arch == model::Arch::Decoder) {
    const auto& c = m.decoder->config();
    out["architecture"] = c.model_type == "llama" ? "LlamaForCausalLM" : "MistralForCausalLM";
    out["config"] = c.to_json();
    out["parameters"] = c.parameter_count();
  } else {
    const auto& c = m.bert->config();
    out["architecture"] = "BertModel";
    out["config"] = c.to_json();
    out["parameters"] =
        c.parameter_count() - (m.bert->has_pooler() ? 0 : c.hidden_size * (c.hidden_size + 1));
  }
  std::string tok_dir;
  try {
    tok_dir = find_tokenizer_dir(a.model);
  } catch (const Error&) {
  }
  if (!tok_dir.empty()) {
    auto tok = model::load_tokenizer(tok_dir);
    Json t;
    t["dir"] = tok_dir;
    t["kind"] = tok->kind();
    t["size"] = tok->size();
    t["special_tokens"] = tok->special_tokens();
    t["bos_id"] = tok->bos_id();
    t["eos_id"] = tok->eos_id();
    t["pad_id"] = tok->pad_id();
    t["unk_id"] = tok->unk_id();
    out["tokenizer"] = t;
  }
  if (a.json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  const Json& c = out["config"];
  std::cout << "model:        " << a.model << "\n"
            << "architecture: " << out["architecture"].get<std::string>() << "\n";
  if (m.arch == model::Arch::Decoder) {
    std::cout << "layers:       " << c["num_hidden_layers"] << "  hidden " << c["hidden_size"]
              << "  intermediate " << c["intermediate_size"] << "\n"
              << "heads:        " << c["num_attention_heads"] << " query, "
              << c["num_key_value_heads"] << " key/value (head_dim " << m.decoder->config().head_dim
              << ")\n"
              << "rope_theta:   " << c["rope_theta"] << "  sliding_window " << c["sliding_window"]
              << "  tied lm_head " << c["tie_word_embeddings"] << "\n";
  } else {
    std::cout << "layers:       " << c["num_hidden_layers"] << "  hidden " << c["hidden_size"]
              << "  intermediate " << c["intermediate_size"] << "  heads "
              << c["num_attention_heads"] << "\n"
              << "positions:    " << c["max_position_embeddings"] << "  token types "
              << c["type_vocab_size"] << "  pooler " << (m.bert->has_pooler() ? "yes" : "no")
              << "\n";
  }
  std::cout << "vocabulary:   " << c["vocab_size"] << "\n"
            << "parameters:   " << out["parameters"] << " (stored " << stored << ")\n"
            << "checkpoint:   " << human_bytes(static_cast<double>(files->total_bytes()))
            << ", dtypes";
  for (const auto& d : dtypes) std::cout << " " << d;
  std::cout << " (computed in float32 on " << g.device << ")\n";
  if (out.contains("tokenizer")) {
    const Json& t = out["tokenizer"];
    std::cout << "tokenizer:    " << t["kind"].get<std::string>() << ", " << t["size"]
              << " tokens, bos " << t["bos_id"] << " eos " << t["eos_id"] << " pad " << t["pad_id"]
              << " unk " << t["unk_id"] << "\n"
              << "special:     ";
    for (const auto& s : t["special_tokens"]) std::cout << " " << s.get<std::string>();
    std::cout << "\n";
  } else {
    std::cout << "tokenizer:    none found in the model directory\n";
  }
  std::printf("load time:    %.3f s\n", m.load_seconds);
  return 0;
}

int cmd_forward(const GlobalOptions& g, const ForwardArgs& a) {
  c10::Device dev = setup_runtime(g);
  IdBatch in = read_id_batch(a.in);
  AnyModel m = load_any_model(a.model, dev);
  model::NamedTensors outs;
  if (m.arch == model::Arch::Decoder) {
    if (in.token_type_ids.defined()) fail(a.in, ": token_type_ids is only valid for BERT models");
    // A plain forward call counts positions 0..T-1 including left padding, as Hugging Face's
    // forward() without position_ids does; pass position_ids to override.
    at::Tensor pos = in.position_ids.defined()
                         ? in.position_ids
                         : model::MistralModel::arange_positions(in.attention_mask);
    model::DecoderForwardOptions fo;
    fo.output_hidden_states = a.hidden_states;
    model::DecoderOutput o = m.decoder->forward(in.input_ids, in.attention_mask, pos, nullptr, fo);
    outs.push_back({"logits", o.logits});
    if (a.hidden_states) outs.push_back({"hidden_states", at::stack(o.hidden_states, 0)});
  } else {
    if (in.position_ids.defined()) fail(a.in, ": position_ids is not accepted for BERT models");
    model::BertOutput o =
        m.bert->forward(in.input_ids, in.attention_mask, in.token_type_ids, a.hidden_states);
    outs.push_back({"last_hidden_state", o.last_hidden_state});
    if (o.pooler_output.defined()) outs.push_back({"pooler_output", o.pooler_output});
    if (a.hidden_states) outs.push_back({"hidden_states", at::stack(o.hidden_states, 0)});
  }
  outs.push_back({"input_ids", in.input_ids});
  outs.push_back({"attention_mask", in.attention_mask});
  model::write_tensors(a.out, outs);
  std::fprintf(stderr, "wrote %s (%lld x %lld tokens)\n", a.out.c_str(),
               static_cast<long long>(in.input_ids.size(0)),
               static_cast<long long>(in.input_ids.size(1)));
  return 0;
}

int cmd_complete(const GlobalOptions& g, const CompleteArgs& a) {
  c10::Device dev = setup_runtime(g);
  if (a.in.empty() == a.prompt.empty()) {
    fail("complete: give either --in FILE.json or a prompt text (not both)");
  }
  if (!a.in.empty() && a.out.empty()) fail("complete: --in needs --out FILE.json");
  model::SamplingOptions so;
  so.max_new_tokens = a.max_new_tokens;
  so.temperature = a.temperature;
  so.top_p = a.top_p;
  so.top_k = a.top_k;
  so.seed = a.seed;
  if (a.in.empty()) {
    // Text mode: tokenize, stream the continuation to stdout, timings to stderr.
    auto tok =
        model::load_tokenizer(a.tokenizer.empty() ? find_tokenizer_dir(a.model) : a.tokenizer);
    AnyModel m = load_any_model(a.model, dev, weight_format_option(a.weights));
    if (!m.decoder) fail(a.model, ": complete needs a decoder model, this is a BERT encoder");
    std::vector<int64_t> ids = tok->encode(a.prompt, /*add_special_tokens=*/true);
    if (ids.empty()) fail("complete: the prompt encodes to no tokens");
    if (tok->eos_id() >= 0) so.eos_id = tok->eos_id();
    at::Tensor input = at::tensor(ids, at::kLong).view({1, -1});
    std::vector<int64_t> generated;
    std::string printed;
    auto on_token = [&](int64_t, const at::Tensor& next) {
      int64_t id = next[0].item<int64_t>();
      if (id == so.eos_id.value_or(m.decoder->config().eos_token_id)) return true;
      generated.push_back(id);
      std::string text = tok->decode(generated, /*skip_special_tokens=*/true);
      // Print only what is new; an incomplete UTF-8 sequence decodes as U+FFFD and is held back.
      if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0 &&
          text.find("\xEF\xBF\xBD", printed.size()) == std::string::npos) {
        std::cout << text.substr(printed.size()) << std::flush;
        printed = text;
      }
      return true;
    };
    model::GenerationResult r =
        model::generate_from_ids(*m.decoder, input, at::ones_like(input), so, on_token);
    std::string final_text = tok->decode(generated, true);
    if (final_text.size() > printed.size() && final_text.compare(0, printed.size(), printed) == 0) {
      std::cout << final_text.substr(printed.size());
    }
    std::cout << std::endl;
    const int64_t n = r.tokens.size(1);
    std::fprintf(
        stderr,
        "[%lld prompt tokens, %lld new; %s weights %s, load %.2f s, prefill %.1f tok/s, decode "
        "%.1f tok/s]\n",
        static_cast<long long>(r.prompt_tokens), static_cast<long long>(n),
        model::weight_format_name(m.decoder->weight_format()),
        human_bytes(static_cast<double>(m.decoder->resident_weight_bytes())).c_str(),
        m.load_seconds, r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0.0,
        n > 1 && r.decode_seconds > 0 ? (n - 1) / r.decode_seconds : 0.0);
    return 0;
  }
  IdBatch in = read_id_batch(a.in);
  AnyModel m = load_any_model(a.model, dev, weight_format_option(a.weights));
  if (!m.decoder) fail(a.model, ": complete needs a decoder model, this is a BERT encoder");
  model::GenerationResult r =
      model::generate_from_ids(*m.decoder, in.input_ids, in.attention_mask, so);
  Json out;
  out["generated_ids"] = tensor_to_json(r.tokens);
  out["prompt_tokens"] = r.prompt_tokens;
  out["prefill_seconds"] = r.prefill_seconds;
  out["decode_seconds"] = r.decode_seconds;
  write_json_file(a.out, out);
  std::fprintf(stderr, "wrote %s (%lld rows, %lld new tokens each at most)\n", a.out.c_str(),
               static_cast<long long>(r.tokens.size(0)), static_cast<long long>(r.tokens.size(1)));
  return 0;
}

namespace {

namespace fs = std::filesystem;

// scripts/train-tokenizer.sh: $COCOM_TRAIN_TOKENIZER, the source tree beside a build
// directory (build*/bin/cocom), or an installed copy under share/cocom.
std::string train_tokenizer_script() {
  std::vector<std::string> tried;
  if (const char* e = std::getenv("COCOM_TRAIN_TOKENIZER")) {
    if (file_exists(e)) return e;
    tried.push_back(std::string(e) + " ($COCOM_TRAIN_TOKENIZER)");
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path bin = exe.parent_path();
    for (const fs::path& p :
         {bin / "../../scripts/train-tokenizer.sh", bin / "../scripts/train-tokenizer.sh",
          bin / "../share/cocom/train-tokenizer.sh"}) {
      fs::path n = p.lexically_normal();
      if (file_exists(n.string())) return n.string();
      tried.push_back(n.string());
    }
  }
  std::string list;
  for (const auto& t : tried) list += "\n  - " + t;
  fail("no tokenizer given and scripts/train-tokenizer.sh not found; looked at:", list,
       "\nPass --tokenizer DIR (and --compressor-tokenizer DIR for BERT), or set "
       "COCOM_TRAIN_TOKENIZER to the script");
}

// Trains a tokenizer of `vocab` entries into `dir` (sentencepiece tokenizer.model, or a BERT
// vocab.txt) on text found on this machine. Returns `dir`.
std::string train_tokenizer(const std::string& dir, int64_t vocab, bool wordpiece) {
  const std::string script = train_tokenizer_script();
  for (const std::string& p : {script, dir}) {
    if (p.find('\'') != std::string::npos) fail(p, ": paths with a single quote are not supported");
  }
  std::fprintf(stderr,
               "no %s given: training a %s of %lld entries on text found on this machine (%s); "
               "this takes a few minutes\n",
               wordpiece ? "--compressor-tokenizer" : "--tokenizer",
               wordpiece ? "WordPiece vocabulary" : "sentencepiece model",
               static_cast<long long>(vocab), script.c_str());
  const std::string cmd = "'" + script + "' --vocab-size " + std::to_string(vocab) + " --out '" +
                          dir + "' --format " + (wordpiece ? "wordpiece" : "spm");
  int rc = std::system(cmd.c_str());
  if (rc != 0) fail(script, " failed (exit status ", rc, "); pass --tokenizer DIR instead");
  return dir;
}

// The tokenizer directory to use: `given`, or one trained into `train_dir`. Checks the size
// against --vocab-size when both are known.
std::string tokenizer_for(const std::string& given, const std::string& train_dir,
                          int64_t vocab_flag, int64_t default_vocab, bool wordpiece,
                          const char* flag) {
  if (given.empty()) {
    return train_tokenizer(train_dir, vocab_flag > 0 ? vocab_flag : default_vocab, wordpiece);
  }
  auto tok = model::load_tokenizer(given);
  if (vocab_flag > 0 && tok->size() != vocab_flag) {
    fail("--vocab-size ", vocab_flag, ": the tokenizer in ", given, " (", flag, ") has ",
         tok->size(), " entries");
  }
  return given;
}

void copy_tokenizer_files(const std::string& from, const std::string& to) {
  if (fs::equivalent(fs::path(from), fs::path(to))) return;
  for (const char* f : {"tokenizer.model", "vocab.txt", "tokenizer_config.json",
                        "special_tokens_map.json", "added_tokens.json"}) {
    if (file_exists(join_path(from, f))) {
      fs::copy_file(join_path(from, f), join_path(to, f), fs::copy_options::overwrite_existing);
    }
  }
}

int64_t init_from_shape(const InitArgs& a, model::DType dt) {
  const bool bert_shape = a.shape == "bert-base";
  if (!bert_shape && a.shape != "tinyllama" && a.shape != "mistral-7b") {
    fail("--shape ", a.shape, ": expected tinyllama, mistral-7b or bert-base");
  }
  if (a.arch == "bert" && !bert_shape) fail("--arch bert needs --shape bert-base");
  if (a.arch != "bert" && bert_shape) {
    fail("--shape bert-base is an encoder; --arch ", a.arch,
         " needs a decoder shape (tinyllama "
         "or mistral-7b; COCOM-light's compressor is BERT-base)");
  }
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec) fail("--out ", a.out, ": cannot create directory (", ec.message(), ")");
  if (a.arch == "bert") {
    model::BertConfig c = model::bert_base_config();
    const std::string tok =
        tokenizer_for(a.tokenizer, a.out, a.vocab_size, c.vocab_size, true, "--tokenizer");
    copy_tokenizer_files(tok, a.out);
    c.vocab_size = model::load_tokenizer(a.out)->size();
    return model::write_random_bert(c, a.out, a.seed, dt);
  }
  model::DecoderConfig c = model::named_decoder_shape(a.shape);
  if (a.arch == "mistral") {
    const std::string tok =
        tokenizer_for(a.tokenizer, a.out, a.vocab_size, c.vocab_size, false, "--tokenizer");
    copy_tokenizer_files(tok, a.out);
    c.vocab_size = model::load_tokenizer(a.out)->size();
    return model::write_random_decoder(c, a.out, a.seed, dt);
  }
  // COCOM / COCOM-light: tokenizers are trained into scratch directories that
  // write_random_cocom copies into base_decoder/ and base_compressor/.
  std::vector<std::string> scratch;
  const std::string dec_tok =
      tokenizer_for(a.tokenizer, join_path(a.out, ".train-decoder-tokenizer"), a.vocab_size,
                    c.vocab_size, false, "--tokenizer");
  if (a.tokenizer.empty()) scratch.push_back(dec_tok);
  c.vocab_size = model::load_tokenizer(dec_tok)->size();
  Json spec;
  spec["compr_rate"] = a.compr_rate;
  if (a.arch == "pisco") {
    spec["lora_r"] = 16;
    spec["doc_max_length"] = 128;
    spec["decoder"] = c.to_json();
    spec["decoder_tokenizer"] = dec_tok;
    int64_t params = model::write_random_pisco(spec, "--shape " + a.shape, a.out, a.seed, dt);
    for (const auto& d : scratch) fs::remove_all(d, ec);
    return params;
  }
  spec["sep"] = a.sep;
  spec["lora"] = true;
  spec["lora_r"] = 16;
  spec["compr_linear_type"] = "concat";
  spec["generation_top_k"] = 5;
  spec["decoder"] = c.to_json();
  spec["decoder_tokenizer"] = dec_tok;
  const bool light = a.arch == "cocom-light";
  if (light) {
    model::BertConfig b = model::bert_base_config();
    const std::string comp_tok =
        tokenizer_for(a.compressor_tokenizer, join_path(a.out, ".train-compressor-tokenizer"), 0,
                      b.vocab_size, true, "--compressor-tokenizer");
    if (a.compressor_tokenizer.empty()) scratch.push_back(comp_tok);
    b.vocab_size = model::load_tokenizer(comp_tok)->size();
    spec["compressor"] = b.to_json();
    spec["compressor_tokenizer"] = comp_tok;
  }
  int64_t params = model::write_random_cocom(spec, "--shape " + a.shape, light, a.out, a.seed, dt);
  for (const auto& d : scratch) fs::remove_all(d, ec);
  return params;
}

}  // namespace

int cmd_model_init(const GlobalOptions& g, const InitArgs& a) {
  setup_runtime(g);
  model::DType dt;
  if (a.dtype == "bf16")
    dt = model::DType::BF16;
  else if (a.dtype == "fp16")
    dt = model::DType::F16;
  else if (a.dtype == "fp32")
    dt = model::DType::F32;
  else
    fail("--dtype ", a.dtype, ": expected bf16, fp16 or fp32");
  if (file_exists(join_path(a.out, "model.safetensors")) ||
      file_exists(join_path(a.out, "config.json"))) {
    fail("--out ", a.out, ": already holds a checkpoint; choose an empty directory");
  }
  if (a.shape.empty() == a.config.empty()) {
    fail("model init: give exactly one of --config CONFIG.json or --shape NAME");
  }
  if (a.compr_rate < 1) fail("--compr-rate ", a.compr_rate, ": must be at least 1");
  Stopwatch sw;
  int64_t params = 0;
  if (!a.shape.empty()) {
    params = init_from_shape(a, dt);
    std::fprintf(stderr, "wrote %s: %s %s, %lld parameters (%s, seed %llu) in %.1f s\n",
                 a.out.c_str(), a.arch.c_str(), a.shape.c_str(), static_cast<long long>(params),
                 a.dtype.c_str(), static_cast<unsigned long long>(a.seed), sw.seconds());
    return 0;
  }
  Json j = read_json_file(a.config);
  if (a.arch == "mistral") {
    if (!j.contains("model_type")) j["model_type"] = "mistral";
    params = model::write_random_decoder(model::DecoderConfig::from_json(j, a.config), a.out,
                                         a.seed, dt);
  } else if (a.arch == "bert") {
    if (!j.contains("model_type")) j["model_type"] = "bert";
    params = model::write_random_bert(model::BertConfig::from_json(j, a.config), a.out, a.seed, dt);
  } else if (a.arch == "cocom" || a.arch == "cocom-light") {
    params = model::write_random_cocom(j, a.config, a.arch == "cocom-light", a.out, a.seed, dt);
  } else if (a.arch == "pisco") {
    params = model::write_random_pisco(j, a.config, a.out, a.seed, dt);
  } else {
    fail("--arch ", a.arch, ": expected mistral, bert, cocom, cocom-light or pisco");
  }
  std::fprintf(stderr, "wrote %s: %lld parameters (%s, seed %llu) in %.1f s\n", a.out.c_str(),
               static_cast<long long>(params), a.dtype.c_str(),
               static_cast<unsigned long long>(a.seed), sw.seconds());
  return 0;
}

}  // namespace cocom::cli
