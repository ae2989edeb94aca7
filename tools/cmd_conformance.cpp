// cocom conformance: runs the engine on a fixture set laid out like ../shared/fixtures and
// writes its outputs where tools/check_fixtures.py reads them. Reads inputs only: weights,
// configs and tokenizer files; from golden.json the input fields; from golden.safetensors
// only input_ids / attention_mask / token_type_ids.
#include <sys/stat.h>

#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "model/checkpoint_io.h"
#include "model/generation.h"
#include "tools/commands.h"

namespace cocom::cli {

namespace {

void ensure_dir(const std::string& d) {
  if (!dir_exists(d) && ::mkdir(d.c_str(), 0755) != 0) fail(d, ": cannot create directory");
}

at::Tensor input_tensor(const model::SafetensorsFile& f, const std::string& name, bool required) {
  if (!f.find(name)) {
    if (required) fail(f.path(), ": missing input tensor '", name, "'");
    return {};
  }
  return model::read_tensor(f, name, at::kLong);
}

void run_tokenizer(const std::string& fx, const std::string& out) {
  const std::string part = join_path(fx, "tokenizer");
  const std::string gpath = join_path(part, "golden.json");
  Json g = read_json_file(gpath);
  if (!g.contains("cases") || !g["cases"].is_array()) fail(gpath, ": missing 'cases' list");
  std::map<std::string, std::unique_ptr<model::Tokenizer>> toks;
  Json cases = Json::array();
  for (const auto& c : g["cases"]) {
    std::string name = json_string_or(c, "tokenizer", "", gpath);
    std::string text = json_string_or(c, "text", "", gpath);
    bool special = json_bool_or(c, "add_special_tokens", true, gpath);
    if (!toks.count(name)) toks[name] = model::load_tokenizer(join_path(part, name));
    const auto& tok = *toks[name];
    std::vector<int64_t> ids = tok.encode(text, special);
    Json e;
    e["ids"] = ids;
    e["tokens"] = tok.tokenize(text, special);
    e["decoded"] = tok.decode(ids, false);
    e["decoded_skip_special"] = tok.decode(ids, true);
    cases.push_back(e);
  }
  ensure_dir(join_path(out, "tokenizer"));
  Json o;
  o["cases"] = cases;
  write_file_atomic(join_path(out, "tokenizer/engine.json"),
                    o.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  std::fprintf(stderr, "tokenizer: %zu cases\n", cases.size());
}

void run_mistral(const std::string& fx, const std::string& out, c10::Device dev) {
  const std::string part = join_path(fx, "mistral");
  Json g = read_json_file(join_path(part, "golden.json"));
  const int64_t max_new = json_int_or(g, "max_new_tokens", 8, join_path(part, "golden.json"));
  auto gf = model::SafetensorsFile::open(join_path(part, "golden.safetensors"));
  at::Tensor ids = input_tensor(*gf, "input_ids", true);
  at::Tensor mask = input_tensor(*gf, "attention_mask", false);
  if (!mask.defined()) mask = at::ones_like(ids);
  auto m = model::MistralModel::load(part, dev);
  // The goldens' forward pass used generate()'s cumsum positions.
  at::Tensor pos = model::MistralModel::cumsum_positions(mask);
  model::DecoderForwardOptions fo;
  fo.output_hidden_states = true;
  model::DecoderOutput o = m->forward(ids, mask, pos, nullptr, fo);
  model::SamplingOptions so;
  so.max_new_tokens = max_new;
  so.keep_step_logits = true;
  if (g.contains("eos_token_id")) so.eos_id = json_int(g, "eos_token_id", "golden.json");
  model::GenerationResult r = model::generate_from_ids(*m, ids, mask, so);
  ensure_dir(join_path(out, "mistral"));
  model::write_tensors(join_path(out, "mistral/engine.safetensors"),
                       {{"logits", o.logits},
                        {"hidden_states", at::stack(o.hidden_states, 0)},
                        {"generated_ids", r.tokens},
                        {"gen_logits", r.step_logits},
                        {"input_ids", ids},
                        {"attention_mask", mask},
                        {"position_ids", pos}});
  std::fprintf(stderr, "mistral: %lld rows x %lld tokens, %lld new tokens\n",
               static_cast<long long>(ids.size(0)), static_cast<long long>(ids.size(1)),
               static_cast<long long>(r.tokens.size(1)));
}

void run_bert(const std::string& fx, const std::string& out, c10::Device dev) {
  const std::string part = join_path(fx, "bert");
  auto gf = model::SafetensorsFile::open(join_path(part, "golden.safetensors"));
  at::Tensor ids = input_tensor(*gf, "input_ids", true);
  at::Tensor mask = input_tensor(*gf, "attention_mask", false);
  at::Tensor types = input_tensor(*gf, "token_type_ids", false);
  if (!mask.defined()) mask = at::ones_like(ids);
  auto m = model::BertModel::load(part, dev);
  model::BertOutput o = m->forward(ids, mask, types, true);
  model::NamedTensors t = {{"last_hidden_state", o.last_hidden_state},
                           {"hidden_states", at::stack(o.hidden_states, 0)},
                           {"input_ids", ids},
                           {"attention_mask", mask}};
  if (o.pooler_output.defined()) t.push_back({"pooler_output", o.pooler_output});
  if (types.defined()) t.push_back({"token_type_ids", types});
  ensure_dir(join_path(out, "bert"));
  model::write_tensors(join_path(out, "bert/engine.safetensors"), t);
  std::fprintf(stderr, "bert: %lld rows x %lld tokens\n", static_cast<long long>(ids.size(0)),
               static_cast<long long>(ids.size(1)));
}

}  // namespace

int cmd_conformance(const GlobalOptions& g, const ConformanceArgs& a) {
  c10::Device dev = setup_runtime(g);
  if (!dir_exists(a.fixtures)) fail("--fixtures ", a.fixtures, ": no such directory");
  ensure_dir(a.out);
  std::vector<std::string> parts;
  std::stringstream ss(a.parts);
  for (std::string p; std::getline(ss, p, ',');) {
    if (!p.empty()) parts.push_back(p);
  }
  if (parts.empty()) fail("--parts: empty list");
  for (const auto& p : parts) {
    if (p != "tokenizer" && p != "mistral" && p != "bert" && p != "cocom" && p != "cocom-light" &&
        p != "pisco-hub" && p != "pisco-hub/single_adapter") {
      fail("--parts: unknown part '", p,
           "' (supported: tokenizer, mistral, bert, cocom, cocom-light, pisco-hub, "
           "pisco-hub/single_adapter; the hf_literal variants record an upstream bug and are "
           "deliberately not reproduced)");
    }
  }
  for (const auto& p : parts) {
    if (!dir_exists(join_path(a.fixtures, p))) {
      fail("--fixtures ", a.fixtures, ": no '", p, "' part in this fixture set");
    }
    if (p == "tokenizer") run_tokenizer(a.fixtures, a.out);
    if (p == "mistral") run_mistral(a.fixtures, a.out, dev);
    if (p == "bert") run_bert(a.fixtures, a.out, dev);
    if (p == "cocom" || p == "cocom-light" || p.rfind("pisco-hub", 0) == 0) {
      if (p.find('/') != std::string::npos) ensure_dir(join_path(a.out, p.substr(0, p.find('/'))));
      run_cocom_conformance(g, a.fixtures, p, a.out);
    }
  }
  return 0;
}

}  // namespace cocom::cli
