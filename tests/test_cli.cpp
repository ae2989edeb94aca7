// The `cocom` binary driven the way a user or script drives it.
#include <gtest/gtest.h>

#include <ATen/Context.h>

#include <filesystem>
#include <map>

#include "common/json_util.h"
#include "model/checkpoint_io.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace cocom;
using namespace cocom::model;

namespace {

std::string run(const std::string& args, int* rc = nullptr) {
  std::string out;
  int status = test::run_command(test::cocom_binary() + " " + args, &out);
  if (rc) *rc = status;
  return out;
}

std::string fx() { return test::fixtures_dir(); }

std::map<std::string, at::Tensor> tensors(const std::string& path) {
  std::map<std::string, at::Tensor> m;
  for (auto& [n, t] : read_all_tensors(path)) m[n] = t;
  return m;
}

// Writes {"input_ids": ..., "attention_mask": ...} from golden tensors.
std::string write_ids_json(const std::string& dir, const std::map<std::string, at::Tensor>& g,
                           bool with_types) {
  auto rows = [](const at::Tensor& t) {
    Json r = Json::array();
    for (int64_t b = 0; b < t.size(0); ++b) {
      Json row = Json::array();
      for (int64_t i = 0; i < t.size(1); ++i) row.push_back(t[b][i].item<int64_t>());
      r.push_back(row);
    }
    return r;
  };
  Json j;
  j["input_ids"] = rows(g.at("input_ids"));
  j["attention_mask"] = rows(g.at("attention_mask"));
  if (with_types) j["token_type_ids"] = rows(g.at("token_type_ids"));
  std::string path = dir + "/in.json";
  write_json_file(path, j);
  return path;
}

std::string checker() { return std::string(COCOM_TEST_DATA_DIR) + "/check_fixtures.py"; }

}  // namespace

TEST(Cli, HelpListsTheCommands) {
  int rc = 0;
  std::string out = run("--help", &rc);
  EXPECT_EQ(rc, 0);
  for (const char* c :
       {"info", "tokenize", "forward", "complete", "model", "conformance", "bench"}) {
    EXPECT_NE(out.find(c), std::string::npos) << c;
  }
  run("frobnicate", &rc);
  EXPECT_NE(rc, 0);
}

TEST(Cli, InfoDescribesDecoderAndBert) {
  int rc = 0;
  std::string out = run("info --model " + fx() + "/mistral", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("MistralForCausalLM"), std::string::npos) << out;
  EXPECT_NE(out.find("load time"), std::string::npos);
  EXPECT_NE(out.find("<MEM>"), std::string::npos) << out;  // tokenizer/ sub-directory found
  Json j = parse_json_text(run("info --json --model " + fx() + "/bert", &rc), "info --json");
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(j["architecture"], "BertModel");
  EXPECT_EQ(j["config"]["hidden_size"], 32);
  EXPECT_EQ(j["dtypes"][0], "F32");
}

TEST(Cli, TokenizeGivesGoldenIds) {
  int rc = 0;
  std::string out =
      run("tokenize --json --tokenizer " + fx() + "/tokenizer/llama 'Hello world'", &rc);
  ASSERT_EQ(rc, 0) << out;
  Json j = parse_json_text(out, "tokenize");
  EXPECT_EQ(j["ids"], Json({1, 643, 926, 354, 928, 278, 272, 554}));
  out = run(
      "tokenize --json --no-special-tokens --tokenizer " + fx() + "/tokenizer/bert 'No warranty.'",
      &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(parse_json_text(out, "tokenize")["ids"], Json({202, 197, 14}));
}

TEST(Cli, ForwardWritesGoldenLogitsAndHiddenStates) {
  std::string dir = test::make_temp_dir("cli-forward");
  auto g = tensors(fx() + "/mistral/golden.safetensors");
  int rc = 0;
  std::string out = run("forward --model " + fx() + "/mistral --in " +
                            write_ids_json(dir, g, false) + " --out " + dir + "/o.safetensors",
                        &rc);
  ASSERT_EQ(rc, 0) << out;
  auto o = tensors(dir + "/o.safetensors");
  at::Tensor sel = g["attention_mask"].to(at::kBool);
  double err = (o["logits"].index({sel}) - g["logits"].index({sel})).abs().max().item<double>();
  EXPECT_LT(err, 2e-4 + 2e-4 * g["logits"].abs().max().item<double>());

  auto gb = tensors(fx() + "/bert/golden.safetensors");
  out = run("forward --model " + fx() + "/bert --in " + write_ids_json(dir, gb, true) + " --out " +
                dir + "/b.safetensors",
            &rc);
  ASSERT_EQ(rc, 0) << out;
  auto ob = tensors(dir + "/b.safetensors");
  err = (ob["last_hidden_state"] - gb["last_hidden_state"]).abs().max().item<double>();
  EXPECT_LT(err, 2e-4 + 2e-4 * gb["last_hidden_state"].abs().max().item<double>());
}

TEST(Cli, CompleteGivesGoldenGreedyIds) {
  std::string dir = test::make_temp_dir("cli-complete");
  auto g = tensors(fx() + "/mistral/golden.safetensors");
  int rc = 0;
  std::string out =
      run("complete --model " + fx() + "/mistral --in " + write_ids_json(dir, g, false) +
              " --max-new-tokens 8 --out " + dir + "/o.json",
          &rc);
  ASSERT_EQ(rc, 0) << out;
  Json j = read_json_file(dir + "/o.json");
  at::Tensor gold = g["generated_ids"];
  ASSERT_EQ(j["generated_ids"].size(), static_cast<size_t>(gold.size(0)));
  for (int64_t b = 0; b < gold.size(0); ++b) {
    for (int64_t t = 0; t < gold.size(1); ++t) {
      EXPECT_EQ(j["generated_ids"][b][t].get<int64_t>(), gold[b][t].item<int64_t>());
    }
  }
  // Text mode prints a continuation and the timing line; sampling flags are accepted.
  out = run("complete --model " + fx() +
                "/mistral --max-new-tokens 5 --temperature 0.8 --top-p 0.9 "
                "--top-k 50 --seed 3 'The license'",
            &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("prompt tokens"), std::string::npos) << out;
}

TEST(Cli, ModelInitWritesLoadableCheckpoints) {
  std::string dir = test::make_temp_dir("cli-init");
  test::write_bytes(dir + "/cfg.json",
                    R"({"vocab_size": 50, "hidden_size": 16, "intermediate_size": 24,
                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})");
  int rc = 0;
  std::string out = run("model init --arch mistral --config " + dir + "/cfg.json --out " + dir +
                            "/m --dtype fp16 --seed 1",
                        &rc);
  ASSERT_EQ(rc, 0) << out;
  Json j = parse_json_text(run("info --json --model " + dir + "/m", &rc), "info");
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(j["dtypes"][0], "F16");
  EXPECT_EQ(j["config"]["num_key_value_heads"], 2);
  // Refuses to overwrite.
  run("model init --arch mistral --config " + dir + "/cfg.json --out " + dir + "/m", &rc);
  EXPECT_NE(rc, 0);
  test::write_bytes(dir + "/bcfg.json",
                    R"({"vocab_size": 50, "hidden_size": 16, "intermediate_size": 24,
                        "num_hidden_layers": 1, "num_attention_heads": 2})");
  out = run("model init --arch bert --config " + dir + "/bcfg.json --out " + dir + "/b", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(parse_json_text(run("info --json --model " + dir + "/b", &rc), "info")["architecture"],
            "BertModel");
}

TEST(Cli, ConformancePassesTheChecker) {
  std::string out_dir = test::make_temp_dir("cli-conf");
  int rc = 0;
  std::string out = run("conformance --fixtures " + fx() + " --out " + out_dir, &rc);
  ASSERT_EQ(rc, 0) << out;
  std::string verdict;
  // Every required part: tokenizer, mistral, bert, cocom, cocom-light.
  rc = test::run_command(
      "/usr/bin/python3 " + checker() + " --golden " + fx() + " --engine " + out_dir, &verdict);
  EXPECT_EQ(rc, 0) << verdict;
  EXPECT_NE(verdict.find("VERDICT: PASS (34 checks"), std::string::npos) << verdict;
}

// `cocom conformance` on the two PISCO parts of `fixtures`, graded against the goldens in
// fx(): the checker's output (empty when the engine failed, with its output in *engine).
static std::string pisco_verdict(const std::string& fixtures, const std::string& out_dir,
                                 std::string* engine) {
  const std::string parts = " --parts pisco-hub,pisco-hub/single_adapter";
  int rc = 0;
  *engine = run("conformance --fixtures " + fixtures + parts + " --out " + out_dir, &rc);
  if (rc != 0) return "";
  std::string verdict;
  test::run_command(
      "/usr/bin/python3 " + checker() + " --golden " + fx() + " --engine " + out_dir + parts,
      &verdict);
  return verdict;
}

// PISCO as published (naver/pisco-*): both adapter layouts pass the checker.
TEST(Cli, PiscoHubConformancePassesTheChecker) {
  std::string out_dir = test::make_temp_dir("cli-pisco");
  int rc = 0;
  std::string out;
  const std::string verdict = pisco_verdict(fx(), out_dir, &out);
  EXPECT_NE(verdict.find("VERDICT: PASS"), std::string::npos) << out << verdict;
  EXPECT_NE(verdict.find("pisco-hub/single_adapter"), std::string::npos) << verdict;

  // The same checkpoint through the store: ingest, then ask from the stored embeddings.
  const std::string pisco = fx() + "/pisco-hub";
  Json info = parse_json_text(run("info --json --model " + pisco, &rc), "info");
  EXPECT_EQ(info["architecture"], "PISCO");
  EXPECT_EQ(info["embeddings_per_128_token_passage"], 8);
  EXPECT_EQ(info["special_ids"]["<MEM7>"], 1007);
  const std::string db = out_dir + "/kb";
  out = run("ingest --db " + db + " --model " + pisco + " " + std::string(COCOM_TEST_DATA_DIR) +
                "/../../examples/docs",
            &rc);
  ASSERT_EQ(rc, 0) << out;
  out = run("ask --db " + db + " --json --max-new-tokens 4 'What is a knowledge store?'", &rc);
  ASSERT_EQ(rc, 0) << out;
  Json ans = parse_json_text(out, "ask");
  EXPECT_EQ(ans["sources"].size(), 5u) << out;
  // 5 x (8 slots + <SEP>) and PISCO's system prompt around them.
  EXPECT_GT(ans["timings"]["prompt_tokens"].get<int64_t>(), 5 * 9 + 20) << out;
}

// The published files are torch.save pickles (adapters.pth, decoder_first_last_layers.pth);
// without the safetensors copies, and with every expected output removed, the verdict holds.
TEST(Cli, PiscoHubReadsThePublishedTorchSaveFiles) {
  std::string copy = test::make_temp_dir("cli-pisco-pth") + "/fx";
  fs::create_directories(copy);
  fs::copy(fx() + "/pisco-hub", copy + "/pisco-hub", fs::copy_options::recursive);
  for (const char* part : {"pisco-hub", "pisco-hub/single_adapter"}) {
    std::string d = copy + "/" + part;
    fs::permissions(d, fs::perms::owner_all, fs::perm_options::add);
    fs::remove(d + "/adapters.safetensors");
    fs::remove(d + "/decoder_first_last_layers.safetensors");
    fs::remove(d + "/golden.safetensors");
    Json g = read_json_file(d + "/golden.json");
    Json only = {{"documents", g["documents"]},
                 {"questions", g["questions"]},
                 {"max_new_tokens", g["max_new_tokens"]},
                 {"doc_max_length", g["doc_max_length"]},
                 {"generation_pad_token_id", g["generation_pad_token_id"]}};
    fs::permissions(d + "/golden.json", fs::perms::owner_write, fs::perm_options::add);
    write_json_file(d + "/golden.json", only);
  }
  std::string out_dir = test::make_temp_dir("cli-pisco-pth-out");
  int rc = 0;
  std::string out;
  const std::string verdict = pisco_verdict(copy, out_dir, &out);
  EXPECT_NE(verdict.find("VERDICT: PASS"), std::string::npos) << out << verdict;

  // Hostile published files: errors name the file.
  const std::string d = copy + "/pisco-hub";
  fs::permissions(d + "/adapters.pth", fs::perms::owner_write, fs::perm_options::add);
  test::write_bytes(d + "/adapters.pth", std::string("PK\x03\x04 not a real zip"));
  out = run("conformance --fixtures " + copy + " --parts pisco-hub --out " + out_dir, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("adapters.pth"), std::string::npos) << out;
  fs::remove(d + "/adapters.pth");
  out = run("conformance --fixtures " + copy + " --parts pisco-hub --out " + out_dir, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("no adapters.pth"), std::string::npos) << out;
}

// model init --arch pisco writes the published layout (torch.save files, base_decoder/), which
// loads and answers; without an encoder adapter, compression uses the decoding one.
TEST(Cli, ModelInitPiscoWritesThePublishedLayout) {
  const std::string dir = test::make_temp_dir("cli-pisco-init");
  test::write_bytes(dir + "/spec.json", R"({"compr_rate": 16, "doc_max_length": 128, "lora_r": 2,
      "decoder": {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 48,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "max_position_embeddings": 512},
      "decoder_tokenizer": ")" + fx() + R"(/tokenizer/llama"})");
  test::write_bytes(dir + "/one.json", R"({"compr_rate": 32, "lora_r": 2, "encoder_adapter": false,
      "decoder": {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 48,
                  "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2},
      "decoder_tokenizer": ")" + fx() + R"(/tokenizer/llama"})");
  int rc = 0;
  std::string out =
      run("model init --arch pisco --config " + dir + "/spec.json --out " + dir + "/p", &rc);
  ASSERT_EQ(rc, 0) << out;
  for (const char* f : {"config.json", "adapters.pth", "decoder_first_last_layers.pth",
                        "base_decoder/model.safetensors", "base_decoder/tokenizer.model"}) {
    EXPECT_TRUE(fs::exists(dir + "/p/" + f)) << f;
  }
  EXPECT_FALSE(fs::exists(dir + "/p/adapters.safetensors"));
  Json info = parse_json_text(run("info --json --model " + dir + "/p", &rc), "info");
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(info["architecture"], "PISCO");
  EXPECT_EQ(info["special_ids"]["<MEM0>"], 1000);
  EXPECT_EQ(info["special_ids"]["<SEP>"], 1010);
  EXPECT_EQ(info["decoder"]["vocab_size"], 1011);
  EXPECT_EQ(info["compression_adapter"], "encoder_adapter (on the fly)");
  test::write_bytes(
      dir + "/qa.jsonl",
      R"({"question": "Which license is free?", "contexts": ["GPL is free.", "Sky."]})"
      "\n");
  out = run("generate --model " + dir + "/p --in " + dir + "/qa.jsonl --out " + dir +
                "/a.jsonl --max-new-tokens 3",
            &rc);
  ASSERT_EQ(rc, 0) << out;
  Json a = parse_json_text(read_text_file(dir + "/a.jsonl"), "answers");
  EXPECT_EQ(a["token_ids"].size(), 3u) << a.dump();

  out = run("model init --arch pisco --config " + dir + "/one.json --out " + dir + "/q", &rc);
  ASSERT_EQ(rc, 0) << out;
  info = parse_json_text(run("info --json --model " + dir + "/q", &rc), "info");
  EXPECT_EQ(info["compression_adapter"], "decoder_adapter");
  EXPECT_EQ(info["embeddings_per_128_token_passage"], 4);  // 128 / 32
}

TEST(Cli, ConformanceReadsOnlyInputs) {
  // A copy of the fixtures with every expected output removed gives the same verdict.
  std::string copy = test::make_temp_dir("cli-stripped") + "/fx";
  fs::copy(fx(), copy, fs::copy_options::recursive);
  for (const char* part : {"mistral", "bert"}) {
    std::string p = copy + "/" + part + "/golden.safetensors";
    NamedTensors keep;
    for (auto& [n, t] : read_all_tensors(p)) {
      if (n == "input_ids" || n == "attention_mask" || n == "token_type_ids")
        keep.push_back({n, t});
    }
    fs::permissions(p, fs::perms::owner_write, fs::perm_options::add);
    write_tensors(p, keep);
  }
  Json tok = read_json_file(copy + "/tokenizer/golden.json");
  for (auto& c : tok["cases"]) {
    Json only = {{"tokenizer", c["tokenizer"]},
                 {"text", c["text"]},
                 {"add_special_tokens", c["add_special_tokens"]}};
    c = only;
  }
  fs::permissions(copy + "/tokenizer/golden.json", fs::perms::owner_write, fs::perm_options::add);
  write_json_file(copy + "/tokenizer/golden.json", tok);
  for (const char* part : {"cocom", "cocom-light"}) {
    std::string d = copy + "/" + part;
    Json g = read_json_file(d + "/golden.json");
    Json only = {{"contexts", g["contexts"]},
                 {"questions", g["questions"]},
                 {"max_new_tokens", g["max_new_tokens"]},
                 {"context_max_length", g["context_max_length"]}};
    fs::permissions(d, fs::perms::owner_all, fs::perm_options::add);
    fs::permissions(d + "/golden.json", fs::perms::owner_write, fs::perm_options::add);
    write_json_file(d + "/golden.json", only);
    fs::remove(d + "/golden.safetensors");
    fs::permissions(d + "/hf_literal", fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(d + "/hf_literal");
  }
  Json mj = read_json_file(copy + "/mistral/golden.json");
  Json mini = {{"max_new_tokens", mj["max_new_tokens"]}};
  fs::permissions(copy + "/mistral/golden.json", fs::perms::owner_write, fs::perm_options::add);
  write_json_file(copy + "/mistral/golden.json", mini);

  std::string out_dir = test::make_temp_dir("cli-conf2");
  int rc = 0;
  std::string out = run("conformance --fixtures " + copy + " --out " + out_dir, &rc);
  ASSERT_EQ(rc, 0) << out;
  std::string verdict;
  rc = test::run_command(
      "/usr/bin/python3 " + checker() + " --golden " + fx() + " --engine " + out_dir, &verdict);
  EXPECT_EQ(rc, 0) << verdict;
}

namespace {
// QA.jsonl from the COCOM golden contexts and questions.
std::string write_qa(const std::string& dir, const Json& g) {
  std::string lines;
  for (size_t q = 0; q < g["questions"].size(); ++q) {
    Json l = {{"question", g["questions"][q]}, {"contexts", g["contexts"][q]}};
    lines += l.dump() + "\n";
  }
  test::write_bytes(dir + "/qa.jsonl", lines);
  return dir + "/qa.jsonl";
}
std::vector<Json> read_lines(const std::string& path) {
  std::vector<Json> out;
  std::string text = read_text_file(path);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t e = text.find('\n', pos);
    if (e == std::string::npos) e = text.size();
    if (e > pos) out.push_back(parse_json_text(text.substr(pos, e - pos), path));
    pos = e + 1;
  }
  return out;
}
}  // namespace

TEST(CliCocom, GenerateAnswersLikeTheReference) {
  for (const std::string part : {"cocom", "cocom-light"}) {
    SCOPED_TRACE(part);
    std::string dir = test::make_temp_dir("cli-gen");
    Json g = read_json_file(fx() + "/" + part + "/golden.json");
    auto gt = tensors(fx() + "/" + part + "/golden.safetensors");
    int rc = 0;
    std::string out = run("generate --model " + fx() + "/" + part + " --in " + write_qa(dir, g) +
                              " --out " + dir +
                              "/answers.jsonl --batch-size 2 --max-new-tokens 8 "
                              "--context-max-length 32 --dump-dir " +
                              dir + "/dump",
                          &rc);
    ASSERT_EQ(rc, 0) << out;
    std::vector<Json> lines = read_lines(dir + "/answers.jsonl");
    ASSERT_EQ(lines.size(), 2u);
    for (size_t q = 0; q < 2; ++q) {
      EXPECT_EQ(lines[q]["answer"], g["decoded"][q]);
      at::Tensor row = gt["generated_ids"][int64_t(q)];
      Json ids = Json::array();
      for (int64_t t = 0; t < row.size(0) && row[t].item<int64_t>() != 2; ++t) {
        ids.push_back(row[t].item<int64_t>());
      }
      EXPECT_EQ(lines[q]["token_ids"], ids);
    }
    auto dump = tensors(dir + "/dump/batch_00000.safetensors");
    EXPECT_TRUE(dump["enc_input_ids"].equal(gt["enc_input_ids"]));
    EXPECT_TRUE(dump["dec_input_ids"].equal(gt["dec_input_ids"]));
    EXPECT_LT((dump["compressed_embeddings"] - gt["compressed_embs"]).abs().max().item<double>(),
              1e-3);
    // The uncompressed baseline answers from the text with the same decoder.
    out = run("generate --no-compress --model " + fx() + "/" + part + " --in " + dir +
                  "/qa.jsonl --out " + dir + "/plain.jsonl --max-new-tokens 4",
              &rc);
    ASSERT_EQ(rc, 0) << out;
    EXPECT_EQ(read_lines(dir + "/plain.jsonl").size(), 2u);
  }
}

TEST(CliCocom, InfoDescribesCocomCheckpoints) {
  int rc = 0;
  std::string out = run("info --model " + fx() + "/cocom-light", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("COCOM-light (compression rate x4, 32 embeddings"), std::string::npos) << out;
  EXPECT_NE(out.find("<MEM> 1000"), std::string::npos) << out;
  Json j = parse_json_text(run("info --json --model " + fx() + "/cocom", &rc), "info");
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(j["architecture"], "COCOM");
  EXPECT_EQ(j["decoder"]["vocab_size"], 1004);
}

TEST(CliCocom, CompressIsBatchIndependent) {
  std::string dir = test::make_temp_dir("cli-compress");
  Json g = read_json_file(fx() + "/cocom/golden.json");
  std::string all, one;
  for (const auto& c : g["contexts"][0]) all += Json({{"text", c}}).dump() + "\n";
  one = Json({{"text", g["contexts"][0][2]}}).dump() + "\n";
  test::write_bytes(dir + "/all.jsonl", all);
  test::write_bytes(dir + "/one.jsonl", one);
  int rc = 0;
  std::string out = run("compress --model " + fx() + "/cocom --in " + dir + "/all.jsonl --out " +
                            dir + "/all.safetensors --context-max-length 32 --batch-size 5",
                        &rc);
  ASSERT_EQ(rc, 0) << out;
  out = run("compress --model " + fx() + "/cocom --in " + dir + "/one.jsonl --out " + dir +
                "/one.safetensors --context-max-length 32",
            &rc);
  ASSERT_EQ(rc, 0) << out;
  at::Tensor a = tensors(dir + "/all.safetensors")["embeddings"];
  at::Tensor b = tensors(dir + "/one.safetensors")["embeddings"];
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{5, 8, 64}));
  EXPECT_LT((a[2] - b[0]).abs().max().item<double>(), 1e-5);
}

TEST(CliCocom, RandomCheckpointsWorkWithEveryCommand) {
  std::string dir = test::make_temp_dir("cli-cocom-init");
  Json spec = {{"compr_rate", 16},
               {"sep", false},
               {"lora_r", 2},
               {"generation_top_k", 5},
               {"decoder",
                {{"vocab_size", 1000},
                 {"hidden_size", 32},
                 {"intermediate_size", 48},
                 {"num_hidden_layers", 2},
                 {"num_attention_heads", 4},
                 {"num_key_value_heads", 1},
                 {"max_position_embeddings", 512}}},
               {"decoder_tokenizer", fx() + "/tokenizer/llama"}};
  write_json_file(dir + "/cocom.json", spec);
  spec["compressor"] = {{"vocab_size", 1000},       {"hidden_size", 16},
                        {"intermediate_size", 32},  {"num_hidden_layers", 1},
                        {"num_attention_heads", 2}, {"max_position_embeddings", 128}};
  spec["compressor_tokenizer"] = fx() + "/tokenizer/bert";
  spec["compr_linear_type"] = "mean";
  write_json_file(dir + "/light.json", spec);
  Json g = read_json_file(fx() + "/cocom/golden.json");
  std::string qa = write_qa(dir, g);
  for (const std::string arch : {"cocom", "cocom-light"}) {
    SCOPED_TRACE(arch);
    int rc = 0;
    std::string cfg = dir + (arch == "cocom" ? "/cocom.json" : "/light.json");
    std::string out =
        run("model init --arch " + arch + " --config " + cfg + " --out " + dir + "/" + arch, &rc);
    ASSERT_EQ(rc, 0) << out;
    out = run("generate --model " + dir + "/" + arch + " --in " + qa + " --out " + dir + "/" +
                  arch + ".jsonl --max-new-tokens 3",
              &rc);
    ASSERT_EQ(rc, 0) << out;
    EXPECT_EQ(read_lines(dir + "/" + arch + ".jsonl").size(), 2u);
  }
}

TEST(CliHostile, CocomInputs) {
  std::string dir = test::make_temp_dir("cli-cocom-hostile");
  int rc = 0;
  test::write_bytes(dir + "/bad.jsonl", "{\"question\": \"q\", \"contexts\": [\"a\"]}\n{oops\n");
  std::string out = run("generate --model " + fx() + "/cocom --in " + dir + "/bad.jsonl", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("bad.jsonl:2"), std::string::npos) << out;
  test::write_bytes(dir + "/nocontexts.jsonl", "{\"question\": \"q\"}\n");
  out = run("generate --model " + fx() + "/cocom --in " + dir + "/nocontexts.jsonl", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("contexts"), std::string::npos) << out;
  test::write_bytes(dir + "/ids.json", "{\"input_ids\": [[1, 2]]}");
  out = run("forward --model " + fx() + "/cocom --in " + dir + "/ids.json --out " + dir + "/y.st",
            &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("COCOM checkpoint"), std::string::npos) << out;
}

TEST(CliHostile, BadInputsAreClearErrors) {
  std::string dir = test::make_temp_dir("cli-hostile");
  int rc = 0;
  auto expect_err = [&](const std::string& args, const std::string& needle) {
    std::string out = run(args, &rc);
    EXPECT_EQ(rc, 1) << args << "\n" << out;
    EXPECT_NE(out.find(needle), std::string::npos) << args << "\n" << out;
  };
  test::write_bytes(dir + "/bad.json", "{\"input_ids\": [[1, 2], [3]]}");
  expect_err(
      "forward --model " + fx() + "/mistral --in " + dir + "/bad.json --out " + dir + "/o.st",
      "row 1 has 1 values");
  test::write_bytes(dir + "/bad2.json", "{\"input_ids\": [[1, 2]");
  expect_err(
      "forward --model " + fx() + "/mistral --in " + dir + "/bad2.json --out " + dir + "/o.st",
      "invalid JSON");
  test::write_bytes(dir + "/bad3.json", "{\"input_ids\": [[1, 99999]]}");
  expect_err(
      "forward --model " + fx() + "/mistral --in " + dir + "/bad3.json --out " + dir + "/o.st",
      "outside the vocabulary");
  test::write_bytes(dir + "/bad4.json", "{\"input_ids\": [[1, 2]], \"attention_mask\": [[1, 7]]}");
  expect_err(
      "forward --model " + fx() + "/mistral --in " + dir + "/bad4.json --out " + dir + "/o.st",
      "only 0 and 1");
  expect_err("info --model " + dir + "/nowhere", "no such directory");
  expect_err("complete --model " + fx() + "/mistral --max-new-tokens -3 'x'", "max-new-tokens");
  expect_err("conformance --fixtures " + fx() + " --out " + dir + "/c --parts nonsense",
             "nonsense");
  if (!at::hasCUDA()) expect_err("--device cuda info --model " + fx() + "/mistral", "cuda");
  EXPECT_FALSE(fs::exists(dir + "/o.st"));
}
