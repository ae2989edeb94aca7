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
  rc = test::run_command("/usr/bin/python3 " + checker() + " --golden " + fx() + " --engine " +
                             out_dir + " --parts tokenizer,mistral,bert",
                         &verdict);
  EXPECT_EQ(rc, 0) << verdict;
  EXPECT_NE(verdict.find("VERDICT: PASS"), std::string::npos) << verdict;
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
  Json mj = read_json_file(copy + "/mistral/golden.json");
  Json mini = {{"max_new_tokens", mj["max_new_tokens"]}};
  fs::permissions(copy + "/mistral/golden.json", fs::perms::owner_write, fs::perm_options::add);
  write_json_file(copy + "/mistral/golden.json", mini);

  std::string out_dir = test::make_temp_dir("cli-conf2");
  int rc = 0;
  std::string out = run("conformance --fixtures " + copy + " --out " + out_dir, &rc);
  ASSERT_EQ(rc, 0) << out;
  std::string verdict;
  rc = test::run_command("/usr/bin/python3 " + checker() + " --golden " + fx() + " --engine " +
                             out_dir + " --parts tokenizer,mistral,bert",
                         &verdict);
  EXPECT_EQ(rc, 0) << verdict;
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
