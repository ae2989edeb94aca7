// Tests for model configs (model/config.h): the fixture configs parse with the right values,
// and hostile config.json files give a cocom::Error naming the file and the field.
#include "model/config.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "common/json_util.h"
#include "tests/test_util.h"

namespace cocom::model {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& rel) { return test::fixtures_dir() + "/" + rel; }

using test::error_of;

#define EXPECT_HAS(msg, piece) \
  EXPECT_NE(std::string(msg).find(piece), std::string::npos) << "message: " << (msg)

// ---------------------------------------------------------------------------------------------
// fixtures

TEST(ConfigFixture, Mistral) {
  const std::string path = fixture("mistral/config.json");
  DecoderConfig c = DecoderConfig::load(path);
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.vocab_size, 1004);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  ASSERT_TRUE(c.sliding_window.has_value());
  EXPECT_EQ(*c.sliding_window, 8);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(detect_arch(read_json_file(path), path), Arch::Decoder);
  // embed + lm_head + 2 layers x (q,k,v,o, 3 mlp, 2 norms) + final norm.
  const int64_t per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128 + 2 * 64;
  EXPECT_EQ(c.parameter_count(), 2 * 1004 * 64 + 2 * per_layer + 64);
}

TEST(ConfigFixture, CocomBaseDecoderHasNoSlidingWindow) {
  for (const char* rel :
       {"cocom/base_decoder/config.json", "cocom-light/base_decoder/config.json"}) {
    SCOPED_TRACE(rel);
    const std::string path = fixture(rel);
    DecoderConfig c = DecoderConfig::load(path);
    EXPECT_EQ(c.vocab_size, 1000);  // before COCOM's +4 resize
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.num_key_value_heads, 2);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_FALSE(c.sliding_window.has_value());
    EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
    EXPECT_EQ(detect_arch(read_json_file(path), path), Arch::Decoder);
  }
}

TEST(ConfigFixture, Bert) {
  for (const char* rel : {"bert/config.json", "cocom-light/base_compressor/config.json"}) {
    SCOPED_TRACE(rel);
    const std::string path = fixture(rel);
    BertConfig c = BertConfig::load(path);
    EXPECT_EQ(c.vocab_size, 1000);
    EXPECT_EQ(c.hidden_size, 32);
    EXPECT_EQ(c.intermediate_size, 64);
    EXPECT_EQ(c.num_hidden_layers, 2);
    EXPECT_EQ(c.num_attention_heads, 4);
    EXPECT_EQ(c.max_position_embeddings, 64);
    EXPECT_EQ(c.type_vocab_size, 2);
    EXPECT_DOUBLE_EQ(c.layer_norm_eps, 1e-12);
    EXPECT_EQ(c.pad_token_id, 0);
    EXPECT_EQ(c.hidden_act, "gelu");
    EXPECT_EQ(detect_arch(read_json_file(path), path), Arch::Bert);
  }
}

TEST(ConfigFixture, CocomTopLevelConfigIsNotAModel) {
  const std::string path = fixture("cocom/config.json");
  std::string m = error_of([&] { detect_arch(read_json_file(path), path); });
  EXPECT_EQ(m.rfind(path, 0), 0u) << m;
  EXPECT_HAS(m, "model_type");
  EXPECT_HAS(m, "cocom");
  m = error_of([&] { DecoderConfig::load(path); });
  EXPECT_EQ(m.rfind(path, 0), 0u) << m;
}

TEST(ConfigFixture, ToJsonRoundTrips) {
  DecoderConfig d = DecoderConfig::load(fixture("mistral/config.json"));
  DecoderConfig d2 = DecoderConfig::from_json(d.to_json(), "roundtrip");
  EXPECT_EQ(d2.vocab_size, d.vocab_size);
  EXPECT_EQ(d2.head_dim, d.head_dim);
  EXPECT_EQ(d2.num_key_value_heads, d.num_key_value_heads);
  EXPECT_EQ(d2.sliding_window, d.sliding_window);
  EXPECT_DOUBLE_EQ(d2.rope_theta, d.rope_theta);
  EXPECT_DOUBLE_EQ(d2.rms_norm_eps, d.rms_norm_eps);
  EXPECT_EQ(d2.parameter_count(), d.parameter_count());
  BertConfig b = BertConfig::load(fixture("bert/config.json"));
  BertConfig b2 = BertConfig::from_json(b.to_json(), "roundtrip");
  EXPECT_EQ(b2.vocab_size, b.vocab_size);
  EXPECT_EQ(b2.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(b2.parameter_count(), b.parameter_count());
}

// ---------------------------------------------------------------------------------------------
// hostile configs

class ConfigHostile : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("cfg"); }
  void TearDown() override {
    if (!HasFailure()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  // The Mistral fixture config with `patch` merged in (null values remove keys).
  std::string decoder_with(const Json& patch) {
    Json j = read_json_file(fixture("mistral/config.json"));
    j.merge_patch(patch);
    return write(j.dump());
  }
  std::string bert_with(const Json& patch) {
    Json j = read_json_file(fixture("bert/config.json"));
    j.merge_patch(patch);
    return write(j.dump());
  }
  std::string write(const std::string& text) {
    path_ = dir_ + "/config" + std::to_string(counter_++) + ".json";
    test::write_bytes(path_, text);
    return path_;
  }
  // Loading `path` as a decoder fails with a message starting with the path and containing
  // every piece.
  void expect_decoder_error(const std::string& path, std::initializer_list<std::string> pieces) {
    std::string m = error_of([&] { DecoderConfig::load(path); });
    EXPECT_EQ(m.rfind(path, 0), 0u) << m;
    for (const auto& p : pieces) EXPECT_HAS(m, p);
  }
  void expect_bert_error(const std::string& path, std::initializer_list<std::string> pieces) {
    std::string m = error_of([&] { BertConfig::load(path); });
    EXPECT_EQ(m.rfind(path, 0), 0u) << m;
    for (const auto& p : pieces) EXPECT_HAS(m, p);
  }
  std::string dir_, path_;
  int counter_ = 0;
};

TEST_F(ConfigHostile, InvalidJson) {
  for (const char* text :
       {"{\"vocab_size\": 10,", "", "{'a': 1}", "{\"a\": 1} trailing", "{\"a\": \"\xff\"}"}) {
    SCOPED_TRACE(text);
    std::string p = write(text);
    expect_decoder_error(p, {"invalid JSON"});
    expect_bert_error(p, {"invalid JSON"});
  }
}

TEST_F(ConfigHostile, NumberBeyondDouble) {
  // nlohmann reports this as out_of_range, not parse_error (found by fuzz_config).
  std::string p = write(R"({"model_type": "mistral", "max_position_embeddings": 1e400})");
  expect_decoder_error(p, {"invalid JSON", "1e400"});
  expect_bert_error(write(R"({"vocab_size": -1e999})"), {"invalid JSON"});
}

TEST_F(ConfigHostile, SpecialTokenIdsOutsideTheVocabulary) {
  expect_decoder_error(decoder_with({{"eos_token_id", 1004}}), {"eos_token_id", "1004"});
  expect_decoder_error(decoder_with({{"bos_token_id", -1}}), {"bos_token_id"});
  expect_bert_error(bert_with({{"pad_token_id", 5000}}), {"pad_token_id"});
}

TEST_F(ConfigHostile, HugeValuesAreQuotedShort) {
  std::string big(5000, 'x');
  std::string m = error_of([&] { DecoderConfig::load(decoder_with({{"hidden_size", big}})); });
  EXPECT_HAS(m, "hidden_size");
  EXPECT_LT(m.size(), 400u) << m;
}

TEST_F(ConfigHostile, AttentionBiasSurvivesToJson) {
  DecoderConfig c = DecoderConfig::load(decoder_with({{"attention_bias", true}}));
  EXPECT_TRUE(DecoderConfig::from_json(c.to_json(), "round trip").attention_bias);
}

TEST_F(ConfigHostile, NotAnObject) {
  std::string p = write("[1, 2, 3]");
  expect_decoder_error(p, {"JSON object"});
  expect_bert_error(p, {"JSON object"});
  std::string m = error_of([&] { detect_arch(read_json_file(p), p); });
  EXPECT_EQ(m.rfind(p, 0), 0u) << m;
}

TEST_F(ConfigHostile, MissingFile) {
  std::string p = dir_ + "/absent.json";
  expect_decoder_error(p, {"cannot open"});
}

TEST_F(ConfigHostile, MissingVocabSize) {
  expect_decoder_error(decoder_with({{"vocab_size", nullptr}}), {"'vocab_size'", "missing"});
  expect_bert_error(bert_with({{"vocab_size", nullptr}}), {"'vocab_size'", "missing"});
}

TEST_F(ConfigHostile, MissingOtherRequiredFields) {
  for (const char* f :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    SCOPED_TRACE(f);
    expect_decoder_error(decoder_with({{f, nullptr}}), {std::string("'") + f + "'", "missing"});
    expect_bert_error(bert_with({{f, nullptr}}), {std::string("'") + f + "'", "missing"});
  }
}

TEST_F(ConfigHostile, WrongTypes) {
  expect_decoder_error(decoder_with({{"vocab_size", "1004"}}), {"'vocab_size'", "integer"});
  expect_decoder_error(decoder_with({{"hidden_size", 64.5}}), {"'hidden_size'", "integer"});
  expect_decoder_error(decoder_with({{"num_hidden_layers", true}}), {"'num_hidden_layers'"});
  expect_decoder_error(decoder_with({{"num_attention_heads", Json::array({4})}}),
                       {"'num_attention_heads'"});
  expect_decoder_error(decoder_with({{"rms_norm_eps", "small"}}), {"'rms_norm_eps'", "number"});
  expect_decoder_error(decoder_with({{"rope_theta", Json::object()}}), {"'rope_theta'"});
  expect_decoder_error(decoder_with({{"tie_word_embeddings", "yes"}}),
                       {"'tie_word_embeddings'", "true or false"});
  expect_decoder_error(decoder_with({{"sliding_window", "8"}}), {"'sliding_window'"});
  expect_decoder_error(decoder_with({{"model_type", 7}}), {"'model_type'", "string"});
  expect_decoder_error(decoder_with({{"torch_dtype", 16}}), {"'torch_dtype'"});
  expect_decoder_error(decoder_with({{"eos_token_id", Json::array({"x"})}}), {"'eos_token_id'"});
  expect_bert_error(bert_with({{"layer_norm_eps", "tiny"}}), {"'layer_norm_eps'"});
  expect_bert_error(bert_with({{"type_vocab_size", "2"}}), {"'type_vocab_size'"});
  expect_bert_error(bert_with({{"hidden_act", 1}}), {"'hidden_act'"});
}

TEST_F(ConfigHostile, IntegralFloatsAndEosListAccepted) {
  // HF configs sometimes carry 64.0 or a list of stop tokens; both are fine.
  DecoderConfig c = DecoderConfig::load(
      decoder_with({{"hidden_size", 64.0}, {"eos_token_id", Json::array({2, 1003})}}));
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.eos_token_id, 2);
}

TEST_F(ConfigHostile, NegativeOrZeroSizes) {
  for (const char* f : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "num_key_value_heads", "max_position_embeddings"}) {
    for (int v : {0, -4}) {
      SCOPED_TRACE(std::string(f) + "=" + std::to_string(v));
      expect_decoder_error(decoder_with({{f, v}}), {std::string("'") + f + "'", "positive"});
    }
  }
  expect_decoder_error(decoder_with({{"head_dim", -16}}), {"'head_dim'", "positive"});
  expect_decoder_error(decoder_with({{"sliding_window", 0}}), {"'sliding_window'"});
  expect_decoder_error(decoder_with({{"rms_norm_eps", 0}}), {"'rms_norm_eps'"});
  expect_decoder_error(decoder_with({{"rope_theta", -1.0}}), {"'rope_theta'"});
  for (const char* f : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "max_position_embeddings", "type_vocab_size"}) {
    SCOPED_TRACE(f);
    expect_bert_error(bert_with({{f, 0}}), {std::string("'") + f + "'", "positive"});
    expect_bert_error(bert_with({{f, -1}}), {std::string("'") + f + "'", "positive"});
  }
  expect_bert_error(bert_with({{"layer_norm_eps", -1e-12}}), {"'layer_norm_eps'"});
}

TEST_F(ConfigHostile, HeadsNotDividing) {
  // 4 query heads cannot share 3 key/value heads.
  expect_decoder_error(decoder_with({{"num_key_value_heads", 3}}),
                       {"num_attention_heads", "num_key_value_heads"});
  // More kv heads than query heads.
  expect_decoder_error(decoder_with({{"num_key_value_heads", 8}}), {"num_key_value_heads"});
  // Odd head_dim cannot be rotated by RoPE.
  expect_decoder_error(decoder_with({{"head_dim", 15}}), {"head_dim"});
  // BERT: hidden 30 over 4 heads.
  expect_bert_error(bert_with({{"hidden_size", 30}}), {"hidden_size", "num_attention_heads"});
}

TEST_F(ConfigHostile, DecoderHiddenSizeNotDivisibleByHeads) {
  // hidden 66 over 4 heads with no explicit head_dim: head_dim would silently truncate to 16
  // and q_proj [64, 66] would not match a real checkpoint. The config must be refused.
  expect_decoder_error(decoder_with({{"hidden_size", 66}}), {"hidden_size", "num_attention_heads"});
  // Fewer features than heads would give head_dim 0.
  expect_decoder_error(decoder_with({{"hidden_size", 2}}), {"hidden_size"});
}

TEST_F(ConfigHostile, UnsupportedModelType) {
  std::string p = decoder_with({{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}});
  expect_decoder_error(p, {"model_type", "gpt2"});
  std::string m = error_of([&] { detect_arch(read_json_file(p), p); });
  EXPECT_EQ(m.rfind(p, 0), 0u) << m;
  EXPECT_HAS(m, "gpt2");
  expect_bert_error(bert_with({{"model_type", "roberta"}}), {"model_type", "roberta"});
  // A BERT config is not a decoder and vice versa.
  expect_decoder_error(bert_with(Json::object()), {"model_type", "bert"});
  expect_bert_error(decoder_with(Json::object()), {"model_type", "mistral"});
  // Architectures alone are enough when model_type is absent.
  Json j = {{"architectures", {"LlamaForCausalLM"}}};
  EXPECT_EQ(detect_arch(j, "x"), Arch::Decoder);
  j = {{"architectures", {"BertModel"}}};
  EXPECT_EQ(detect_arch(j, "x"), Arch::Bert);
  m = error_of([&] { detect_arch(Json::object(), "empty.json"); });
  EXPECT_EQ(m.rfind("empty.json", 0), 0u) << m;
}

TEST_F(ConfigHostile, UnsupportedFeatures) {
  expect_decoder_error(decoder_with({{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}}),
                       {"'rope_scaling'"});
  expect_decoder_error(decoder_with({{"hidden_act", "gelu"}}), {"'hidden_act'", "gelu"});
  expect_bert_error(bert_with({{"hidden_act", "relu"}}), {"'hidden_act'", "relu"});
  expect_bert_error(bert_with({{"position_embedding_type", "relative_key"}}),
                    {"position_embedding_type", "relative_key"});
  // rope_scaling: null is the HF default and is fine.
  EXPECT_NO_THROW(DecoderConfig::load(decoder_with({{"rope_scaling", nullptr}})));
  EXPECT_NO_THROW(DecoderConfig::load(write(R"({"model_type": "mistral", "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "rope_scaling": null})")));
}

TEST_F(ConfigHostile, HugeValues) {
  expect_decoder_error(decoder_with({{"vocab_size", int64_t{1} << 40}}),
                       {"'vocab_size'", "implausibly large"});
  expect_decoder_error(decoder_with({{"hidden_size", int64_t{1} << 40}}), {"'hidden_size'"});
  expect_decoder_error(decoder_with({{"num_hidden_layers", 1000000}}), {"'num_hidden_layers'"});
  expect_decoder_error(decoder_with({{"intermediate_size", 9223372036854775807LL}}),
                       {"'intermediate_size'"});
  expect_decoder_error(
      decoder_with({{"max_position_embeddings", uint64_t{18446744073709551615ULL}}}),
      {"'max_position_embeddings'"});
  expect_bert_error(bert_with({{"max_position_embeddings", int64_t{1} << 40}}),
                    {"'max_position_embeddings'"});
  // Number literals beyond every integer type.
  expect_decoder_error(write(R"({"model_type": "mistral", "vocab_size": 1e300, "hidden_size": 8,
      "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2})"),
                       {"'vocab_size'"});
  expect_decoder_error(
      write(R"({"model_type": "mistral", "vocab_size": 100000000000000000000000, "hidden_size": 8,
      "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2})"),
      {"'vocab_size'"});
}

}  // namespace
}  // namespace cocom::model

// The named shapes against parameter counts worked out independently. Mistral-7B-v0.1/v0.2:
// 7,241,732,096 (the published figure). The TinyLlama shape as the efficiency issue fixes it
// (hidden 2048, 16 layers, 32 query / 8 key-value heads of 64, intermediate 5632, untied
// 32000-entry embeddings): per layer q,o 2 * 2048^2 + k,v 2 * 2048 * 512 + MLP 3 * 2048 * 5632
// + 2 norms * 2048 = 45,092,864; plus 2 * 32000 * 2048 + the final norm 2048.
TEST(Config, NamedShapesHaveThePublishedParameterCounts) {
  using namespace cocom::model;
  EXPECT_EQ(named_decoder_shape("mistral-7b").parameter_count(), 7241732096);
  EXPECT_EQ(named_decoder_shape("tinyllama").parameter_count(),
            16 * 45092864 + 2 * 32000 * 2048 + 2048);
  EXPECT_EQ(named_decoder_shape("mistral-7b").rope_theta, 1e6);
  // bert-base-uncased: 109,482,240 parameters with its pooler.
  EXPECT_EQ(bert_base_config().parameter_count(), 109482240);
  EXPECT_THROW(named_decoder_shape("llama-70b"), cocom::Error);
}
