// BERT encoder against the Hugging Face goldens (tests/data/fixtures/bert), pooling helpers,
// legacy checkpoint naming and hostile inputs.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "common/error.h"
#include "common/json_util.h"
#include "model/bert.h"
#include "model/checkpoint_io.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace cocom;
using namespace cocom::model;

namespace {
std::string bert_dir() { return test::fixtures_dir() + "/bert"; }

std::map<std::string, at::Tensor> golden() {
  std::map<std::string, at::Tensor> g;
  for (auto& [n, t] : read_all_tensors(bert_dir() + "/golden.safetensors")) g[n] = t;
  return g;
}

double max_err_over_tol(const at::Tensor& e, const at::Tensor& g) {
  double max_abs = (e.to(at::kDouble) - g.to(at::kDouble)).abs().max().item<double>();
  return max_abs / (2e-4 + 2e-4 * g.abs().max().item<double>());
}
}  // namespace

TEST(Bert, MatchesGoldenAtEveryPosition) {
  auto g = golden();
  auto m = BertModel::load(bert_dir());
  BertOutput o = m->forward(g["input_ids"], g["attention_mask"], g["token_type_ids"], true);
  ASSERT_EQ(o.last_hidden_state.sizes(), g["last_hidden_state"].sizes());
  // Padded positions included: COCOM-light concatenates them.
  EXPECT_LE(max_err_over_tol(o.last_hidden_state, g["last_hidden_state"]), 1.0);
  EXPECT_LE(max_err_over_tol(at::stack(o.hidden_states, 0), g["hidden_states"]), 1.0);
  ASSERT_TRUE(o.pooler_output.defined());
  EXPECT_LE(max_err_over_tol(o.pooler_output, g["pooler_output"]), 1.0);
  // Omitting token_type_ids means zeros.
  BertOutput z = m->forward(g["input_ids"], g["attention_mask"]);
  EXPECT_TRUE(z.last_hidden_state.equal(
      m->forward(g["input_ids"], g["attention_mask"], at::zeros_like(g["input_ids"]))
          .last_hidden_state));
  // and token types matter.
  BertOutput one = m->forward(g["input_ids"], g["attention_mask"], at::ones_like(g["input_ids"]));
  EXPECT_GT((one.last_hidden_state - z.last_hidden_state).abs().max().item<double>(), 1e-3);
}

TEST(Bert, PoolingHelpers) {
  at::Tensor h = at::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}).view({1, 3, 2});
  at::Tensor mask = at::tensor({1, 1, 0}, at::kLong).view({1, 3});
  at::Tensor cls = BertModel::cls_pool(h);
  EXPECT_FLOAT_EQ(cls[0][0].item<float>(), 1.f);
  EXPECT_FLOAT_EQ(cls[0][1].item<float>(), 2.f);
  at::Tensor mean = BertModel::mean_pool(h, mask);  // mean of rows 0 and 1 only
  EXPECT_FLOAT_EQ(mean[0][0].item<float>(), 2.f);
  EXPECT_FLOAT_EQ(mean[0][1].item<float>(), 3.f);
}

TEST(Bert, LegacyNamesAndPrefixLoadTheSame) {
  // BertForMaskedLM-style files: "bert." prefix, LayerNorm gamma/beta, an MLM head beside.
  std::string dir = test::make_temp_dir("bert-legacy");
  fs::copy_file(bert_dir() + "/config.json", dir + "/config.json");
  NamedTensors t = read_all_tensors(bert_dir() + "/model.safetensors");
  for (auto& [n, w] : t) {
    std::string name = n;
    auto pos = name.find("LayerNorm.weight");
    if (pos != std::string::npos) name.replace(pos, 16, "LayerNorm.gamma");
    pos = name.find("LayerNorm.bias");
    if (pos != std::string::npos) name.replace(pos, 14, "LayerNorm.beta");
    n = "bert." + name;
  }
  t.push_back({"cls.predictions.bias", at::zeros({1000})});
  write_tensors(dir + "/model.safetensors", t);
  auto g = golden();
  auto a = BertModel::load(dir)->forward(g["input_ids"], g["attention_mask"]).last_hidden_state;
  auto b =
      BertModel::load(bert_dir())->forward(g["input_ids"], g["attention_mask"]).last_hidden_state;
  EXPECT_TRUE(a.equal(b));
}

TEST(BertHostile, ClearErrors) {
  auto m = BertModel::load(bert_dir());
  at::Tensor too_long = at::ones({1, 65}, at::kLong);
  try {
    m->forward(too_long, at::ones_like(too_long));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_position_embeddings"), std::string::npos);
  }
  at::Tensor ids = at::ones({1, 4}, at::kLong);
  EXPECT_THROW(m->forward(ids, at::ones_like(ids), at::full({1, 4}, 2, at::kLong)), Error);
  EXPECT_THROW(m->forward(ids * 1000, at::ones_like(ids)), Error);
  EXPECT_THROW(m->forward(ids, at::ones({1, 3}, at::kLong)), Error);
  EXPECT_THROW(BertModel::load(test::fixtures_dir() + "/mistral"), Error);
}

TEST(Bert, RandomCheckpointRoundTrips) {
  BertConfig cfg = BertConfig::load(bert_dir() + "/config.json");
  std::string dir = test::make_temp_dir("bert-rand") + "/m";
  write_random_bert(cfg, dir, 3, DType::BF16);
  auto m = BertModel::load(dir);
  at::Tensor ids = at::randint(0, cfg.vocab_size, {2, 9}, at::kLong);
  auto o = m->forward(ids, at::ones_like(ids));
  EXPECT_TRUE(at::isfinite(o.last_hidden_state).all().item<bool>());
}
