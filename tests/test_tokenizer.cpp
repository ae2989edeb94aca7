// Tokenizers: goldens from the slow Hugging Face tokenizers (transformers 4.41), batch
// encoding, hostile files and the loading of the sentencepiece shim.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "tests/test_util.h"

namespace cocom::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Ids = std::vector<int64_t>;

std::string tok_dir(const std::string& name) {
  return cocom::test::fixtures_dir() + "/tokenizer/" + name;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const std::string& path) { return json::parse(read_file(path)); }

// The fixture tokenizers, loaded once.
const Tokenizer& fixture(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, load_tokenizer(tok_dir(name))).first;
  return *it->second;
}

// Runs `fn`, expects a cocom::Error whose message contains every one of `needles`.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected a cocom::Error containing '" << needles.front() << "'";
  } catch (const cocom::Error& e) {
    std::string msg = e.what();
    for (const auto& n : needles) {
      EXPECT_NE(msg.find(n), std::string::npos) << "message: " << msg << "\nmissing: " << n;
    }
  }
}

// A temporary copy of a fixture tokenizer directory, removed at the end.
class TempTokenizerDir {
 public:
  explicit TempTokenizerDir(const std::string& fixture_name) {
    path_ = cocom::test::make_temp_dir("tok");
    if (!fixture_name.empty()) {
      for (const auto& entry : fs::directory_iterator(tok_dir(fixture_name))) {
        fs::copy_file(entry.path(), fs::path(path_) / entry.path().filename());
      }
    }
  }
  ~TempTokenizerDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void write(const std::string& name, const std::string& bytes) const {
    cocom::test::write_bytes(file(name), bytes);
  }
  void remove(const std::string& name) const { fs::remove(file(name)); }

 private:
  std::string path_;
};

// Minimal safetensors reader for the I64 tensors of the goldens.
std::vector<Ids> read_i64_matrix(const std::string& path, const std::string& name) {
  std::string bytes = read_file(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  json header = json::parse(bytes.substr(8, header_len));
  const json& t = header.at(name);
  EXPECT_EQ(t.at("dtype"), "I64");
  auto shape = t.at("shape").get<std::vector<size_t>>();
  auto offsets = t.at("data_offsets").get<std::vector<size_t>>();
  const char* data = bytes.data() + 8 + header_len + offsets[0];
  std::vector<Ids> rows(shape[0], Ids(shape[1]));
  for (size_t r = 0; r < shape[0]; ++r) {
    std::memcpy(rows[r].data(), data + r * shape[1] * 8, shape[1] * 8);
  }
  return rows;
}

// ------------------------------------------------------------------------------------------
// Goldens

TEST(TokenizerGolden, EveryCaseMatches) {
  json golden = read_json(tok_dir("golden.json"));
  const auto& cases = golden.at("cases");
  ASSERT_EQ(cases.size(), 36u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    const std::string text = c.at("text");
    const bool add = c.at("add_special_tokens");
    SCOPED_TRACE("case " + std::to_string(i) + " [" + c.at("tokenizer").get<std::string>() +
                 "] add_special_tokens=" + (add ? "true" : "false") + " text: " + text);
    const Tokenizer& tok = fixture(c.at("tokenizer"));
    const Ids ids = c.at("ids").get<Ids>();
    EXPECT_EQ(tok.encode(text, add), ids);
    EXPECT_EQ(tok.tokenize(text, add), c.at("tokens").get<std::vector<std::string>>());
    EXPECT_EQ(tok.decode(ids, false), c.at("decoded").get<std::string>());
    EXPECT_EQ(tok.decode(ids, true), c.at("decoded_skip_special").get<std::string>());
  }
}

TEST(TokenizerGolden, VocabularySizesAndSpecialIds) {
  json golden = read_json(tok_dir("golden.json"));
  const Tokenizer& llama = fixture("llama");
  const Tokenizer& cocom = fixture("llama_cocom");
  const Tokenizer& bert = fixture("bert");
  EXPECT_EQ(llama.kind(), "llama");
  EXPECT_EQ(bert.kind(), "bert");
  EXPECT_EQ(llama.size(), golden.at("spm_vocab_size").get<int64_t>());
  EXPECT_EQ(cocom.size(), golden.at("llama_cocom_len").get<int64_t>());
  EXPECT_EQ(bert.size(), golden.at("bert_vocab_size").get<int64_t>());
  for (const auto& [token, id] : golden.at("cocom_special_token_ids").items()) {
    EXPECT_EQ(cocom.token_to_id(token), id.get<int64_t>()) << token;
    EXPECT_EQ(cocom.id_to_token(id.get<int64_t>()), token);
    EXPECT_TRUE(cocom.is_special(id.get<int64_t>())) << token;
    EXPECT_EQ(llama.token_to_id(token), std::nullopt) << token;
  }
  EXPECT_EQ(llama.bos_id(), 1);
  EXPECT_EQ(llama.eos_id(), 2);
  EXPECT_EQ(llama.unk_id(), 0);
  EXPECT_EQ(llama.pad_id(), -1);
  EXPECT_EQ(cocom.pad_id(), 1);
  EXPECT_EQ(bert.pad_id(), 0);
  EXPECT_EQ(bert.unk_id(), 1);
  EXPECT_EQ(bert.bos_id(), -1);
  EXPECT_EQ(bert.eos_id(), -1);
  EXPECT_EQ(llama.special_tokens(), (std::vector<std::string>{"<s>", "</s>", "<unk>"}));
  EXPECT_EQ(cocom.special_tokens(),
            (std::vector<std::string>{"<s>", "</s>", "<unk>", "<SEP>", "<MEM>", "<AE>", "<ENC>"}));
  EXPECT_EQ(bert.special_tokens(),
            (std::vector<std::string>{"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"}));
  EXPECT_TRUE(llama.is_special(0));
  EXPECT_FALSE(llama.is_special(3));
  EXPECT_EQ(llama.id_to_token(925), "\xE2\x96\x81");
  EXPECT_EQ(llama.token_to_id("\xE2\x96\x81"), 925);
  EXPECT_EQ(bert.token_to_id("world"), 919);
  EXPECT_EQ(bert.token_to_id("no-such-token"), std::nullopt);
}

TEST(TokenizerGolden, OtherFixtureDirectoriesLoad) {
  const std::string root = cocom::test::fixtures_dir();
  struct Expect {
    std::string dir, kind;
    int64_t size, pad;
  };
  for (const auto& e : {Expect{"mistral/tokenizer", "llama", 1004, 1},
                        Expect{"cocom/base_decoder", "llama", 1000, -1},
                        Expect{"cocom-light/base_decoder", "llama", 1000, -1},
                        Expect{"cocom-light/base_compressor", "bert", 1000, 0},
                        Expect{"bert/tokenizer", "bert", 1000, 0}}) {
    SCOPED_TRACE(e.dir);
    auto tok = load_tokenizer(root + "/" + e.dir);
    EXPECT_EQ(tok->kind(), e.kind);
    EXPECT_EQ(tok->size(), e.size);
    EXPECT_EQ(tok->pad_id(), e.pad);
  }
}

// The padded batches of the model goldens were made by the same tokenizers' __call__.
TEST(TokenizerGolden, MistralBatchIsLeftPadded) {
  const std::string root = cocom::test::fixtures_dir() + "/mistral";
  auto tok = load_tokenizer(root + "/tokenizer");
  json g = read_json(root + "/golden.json");
  BatchEncodeOptions opt;
  opt.padding_side = PaddingSide::Left;
  BatchEncoding enc = tok->encode_batch(g.at("texts").get<std::vector<std::string>>(), opt);
  EXPECT_EQ(enc.input_ids, read_i64_matrix(root + "/golden.safetensors", "input_ids"));
  EXPECT_EQ(enc.attention_mask, read_i64_matrix(root + "/golden.safetensors", "attention_mask"));
}

TEST(TokenizerGolden, BertBatchIsRightPadded) {
  const std::string root = cocom::test::fixtures_dir() + "/bert";
  auto tok = load_tokenizer(root + "/tokenizer");
  json g = read_json(root + "/golden.json");
  BatchEncoding enc = tok->encode_batch(g.at("texts").get<std::vector<std::string>>(), {});
  const std::string st = root + "/golden.safetensors";
  EXPECT_EQ(enc.input_ids, read_i64_matrix(st, "input_ids"));
  EXPECT_EQ(enc.attention_mask, read_i64_matrix(st, "attention_mask"));
  EXPECT_EQ(enc.token_type_ids, read_i64_matrix(st, "token_type_ids"));
}

std::vector<std::string> flat_contexts(const json& g) {
  std::vector<std::string> out;
  for (const auto& q : g.at("contexts")) {
    for (const auto& c : q) out.push_back(c.get<std::string>());
  }
  return out;
}

TEST(TokenizerGolden, CocomEncoderAndDecoderBatches) {
  const std::string root = cocom::test::fixtures_dir() + "/cocom";
  json g = read_json(root + "/golden.json");
  const Tokenizer& tok = fixture("llama_cocom");  // the base decoder tokenizer + COCOM tokens
  const std::string st = root + "/golden.safetensors";

  // Encoder: '<ENC><s>' + ctx + '</s>', left padded, truncated to context_max_length,
  // pad_to_multiple_of = compr_rate; then n <MEM> appended (not the tokenizer's business).
  std::vector<std::string> texts;
  for (const auto& c : flat_contexts(g)) texts.push_back("<ENC><s>" + c + "</s>");
  BatchEncodeOptions opt;
  opt.add_special_tokens = false;
  opt.padding_side = PaddingSide::Left;
  opt.truncation = true;
  opt.max_length = g.at("context_max_length");
  opt.pad_to_multiple_of = g.at("compr_rate");
  BatchEncoding enc = tok.encode_batch(texts, opt);
  auto golden_ids = read_i64_matrix(st, "enc_input_ids");
  auto golden_mask = read_i64_matrix(st, "enc_attention_mask");
  const size_t n_mem = g.at("num_mem_tokens_per_doc");
  ASSERT_EQ(golden_ids.size(), enc.input_ids.size());
  for (size_t r = 0; r < golden_ids.size(); ++r) {
    Ids ids(golden_ids[r].begin(), golden_ids[r].end() - static_cast<std::ptrdiff_t>(n_mem));
    Ids mask(golden_mask[r].begin(), golden_mask[r].end() - static_cast<std::ptrdiff_t>(n_mem));
    EXPECT_EQ(enc.input_ids[r], ids) << "row " << r;
    EXPECT_EQ(enc.attention_mask[r], mask) << "row " << r;
  }

  // Decoder prompts, left padded without special tokens.
  BatchEncodeOptions dopt;
  dopt.add_special_tokens = false;
  dopt.padding_side = PaddingSide::Left;
  BatchEncoding dec =
      tok.encode_batch(g.at("decoder_prompts").get<std::vector<std::string>>(), dopt);
  EXPECT_EQ(dec.input_ids, read_i64_matrix(st, "dec_input_ids"));
  EXPECT_EQ(dec.attention_mask, read_i64_matrix(st, "dec_attention_mask"));
}

TEST(TokenizerGolden, CocomLightEncoderBatch) {
  const std::string root = cocom::test::fixtures_dir() + "/cocom-light";
  json g = read_json(root + "/golden.json");
  auto tok = load_tokenizer(root + "/base_compressor");
  BatchEncodeOptions opt;
  opt.truncation = true;
  opt.max_length = g.at("context_max_length");
  opt.pad_to_multiple_of = g.at("compr_rate");
  BatchEncoding enc = tok->encode_batch(flat_contexts(g), opt);
  const std::string st = root + "/golden.safetensors";
  EXPECT_EQ(enc.input_ids, read_i64_matrix(st, "enc_input_ids"));
  EXPECT_EQ(enc.attention_mask, read_i64_matrix(st, "enc_attention_mask"));
}

// ------------------------------------------------------------------------------------------
// Special tokens added at run time (COCOM: the base decoder's tokenizer has no COCOM tokens)

const std::vector<std::string> kCocomTokens = {"<MEM>", "<AE>", "<ENC>", "<SEP>"};

// What the reference does to the base decoder's tokenizer:
//   add_special_tokens({'additional_special_tokens': ['<MEM>', '<AE>', '<ENC>', '<SEP>']})
//   pad_token = bos_token
std::unique_ptr<Tokenizer> load_with_cocom_tokens(const std::string& dir) {
  auto tok = load_tokenizer(dir);
  EXPECT_EQ(tok->add_special_tokens(kCocomTokens), 4) << dir;
  tok->set_pad_token(tok->id_to_token(tok->bos_id()));
  return tok;
}

Ids concat(const std::vector<Ids>& parts) {
  Ids out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// `a` and `b` behave the same on `texts` and on every id.
void expect_same_behaviour(const Tokenizer& a, const Tokenizer& b,
                           const std::vector<std::string>& texts) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a.bos_id(), b.bos_id());
  EXPECT_EQ(a.eos_id(), b.eos_id());
  EXPECT_EQ(a.unk_id(), b.unk_id());
  EXPECT_EQ(a.pad_id(), b.pad_id());
  EXPECT_EQ(sorted(a.special_tokens()), sorted(b.special_tokens()));
  Ids all_ids;
  for (int64_t id = 0; id < a.size(); ++id) {
    all_ids.push_back(id);
    const std::string token = a.id_to_token(id);
    ASSERT_EQ(token, b.id_to_token(id)) << id;
    EXPECT_EQ(a.token_to_id(token), b.token_to_id(token)) << token;
    EXPECT_EQ(a.is_special(id), b.is_special(id)) << id;
    for (bool skip : {false, true}) EXPECT_EQ(a.decode({id}, skip), b.decode({id}, skip)) << id;
  }
  for (bool skip : {false, true}) EXPECT_EQ(a.decode(all_ids, skip), b.decode(all_ids, skip));
  for (const auto& text : texts) {
    SCOPED_TRACE("text: " + text);
    for (bool add : {false, true}) {
      const Ids ids = b.encode(text, add);
      EXPECT_EQ(a.encode(text, add), ids);
      EXPECT_EQ(a.tokenize(text, add), b.tokenize(text, add));
      EXPECT_EQ(a.decode(ids, false), b.decode(ids, false));
      EXPECT_EQ(a.decode(ids, true), b.decode(ids, true));
    }
  }
}

const std::vector<std::string> kCocomTexts = {
    "",
    "<MEM><AE><ENC><SEP>",
    "Hello<MEM>world <SEP> x",
    "<s></s><unk><MEM>",
    " leading space<ENC>",
    "<MEM",
    "<<SEP>>",
    "<MEM><MEM>",
    "\xC3\xA9[?]<AE>\n\t 12 3.5",
    "<ENC><s>Source code is text, and the license is free.</s>",
    "<s><MEM><MEM><SEP><MEM><MEM><SEP>[INST]Which license?\n[/INST]\n",
    "\xE2\x96\x81<SEP>\xE2\x96\x81 tokens </s>x",
};

TEST(RuntimeSpecialTokens, LlamaPlusCocomTokensMatchesGolden) {
  auto tok = load_with_cocom_tokens(tok_dir("llama"));
  json golden = read_json(tok_dir("golden.json"));
  EXPECT_EQ(tok->size(), 1004);
  EXPECT_EQ(tok->size(), golden.at("llama_cocom_len").get<int64_t>());
  for (const auto& [token, id] : golden.at("cocom_special_token_ids").items()) {
    EXPECT_EQ(tok->token_to_id(token), id.get<int64_t>()) << token;
    EXPECT_EQ(tok->id_to_token(id.get<int64_t>()), token);
    EXPECT_TRUE(tok->is_special(id.get<int64_t>())) << token;
  }
  for (size_t i = 0; i < kCocomTokens.size(); ++i) {
    EXPECT_EQ(tok->token_to_id(kCocomTokens[i]), 1000 + static_cast<int64_t>(i));
  }
  EXPECT_EQ(tok->pad_id(), 1);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);
  // all_special_tokens order: bos, eos, unk, pad (= bos, left out), additional.
  EXPECT_EQ(tok->special_tokens(),
            (std::vector<std::string>{"<s>", "</s>", "<unk>", "<MEM>", "<AE>", "<ENC>", "<SEP>"}));

  size_t n_cases = 0;
  for (const auto& c : golden.at("cases")) {
    if (c.at("tokenizer") != "llama_cocom") continue;
    ++n_cases;
    const std::string text = c.at("text");
    const bool add = c.at("add_special_tokens");
    SCOPED_TRACE(std::string("add_special_tokens=") + (add ? "true" : "false") + " text: " + text);
    const Ids ids = c.at("ids").get<Ids>();
    EXPECT_EQ(tok->encode(text, add), ids);
    EXPECT_EQ(tok->tokenize(text, add), c.at("tokens").get<std::vector<std::string>>());
    EXPECT_EQ(tok->decode(ids, false), c.at("decoded").get<std::string>());
    EXPECT_EQ(tok->decode(ids, true), c.at("decoded_skip_special").get<std::string>());
  }
  EXPECT_EQ(n_cases, 10u);
}

TEST(RuntimeSpecialTokens, LlamaPlusCocomTokensBehavesAsSavedLlamaCocom) {
  auto tok = load_with_cocom_tokens(tok_dir("llama"));
  // The saved llama_cocom also has sep_token = <SEP> (the reference sets it before adding), so
  // its special_tokens() lists the same tokens in another order; nothing else differs.
  expect_same_behaviour(*tok, fixture("llama_cocom"), kCocomTexts);
}

TEST(RuntimeSpecialTokens, BaseDecoderBatchesMatchCocomGoldens) {
  for (const std::string variant : {"cocom", "cocom-light"}) {
    SCOPED_TRACE(variant);
    const std::string root = cocom::test::fixtures_dir() + "/" + variant;
    auto tok = load_with_cocom_tokens(root + "/base_decoder");
    json g = read_json(root + "/golden.json");
    const std::string st = root + "/golden.safetensors";
    EXPECT_EQ(tok->size(), 1004);
    EXPECT_EQ(tok->token_to_id("<MEM>"), g.at("mem_token_id").get<int64_t>());
    EXPECT_EQ(tok->token_to_id("<SEP>"), g.at("sep_token_id").get<int64_t>());
    EXPECT_EQ(tok->token_to_id("<ENC>"), g.at("enc_token_id").get<int64_t>());
    EXPECT_EQ(tok->token_to_id("<AE>"), g.at("ae_token_id").get<int64_t>());
    EXPECT_EQ(tok->pad_id(), g.at("pad_token_id").get<int64_t>());

    BatchEncodeOptions dopt;
    dopt.add_special_tokens = false;
    dopt.padding_side = PaddingSide::Left;
    BatchEncoding dec =
        tok->encode_batch(g.at("decoder_prompts").get<std::vector<std::string>>(), dopt);
    EXPECT_EQ(dec.input_ids, read_i64_matrix(st, "dec_input_ids"));
    EXPECT_EQ(dec.attention_mask, read_i64_matrix(st, "dec_attention_mask"));
    EXPECT_EQ(tok->decode(dec.input_ids[0], true),
              fixture("llama_cocom").decode(dec.input_ids[0], true));

    if (variant == "cocom") {
      // The decoder-compressor's input, as in CocomEncoderAndDecoderBatches.
      std::vector<std::string> texts;
      for (const auto& c : flat_contexts(g)) texts.push_back("<ENC><s>" + c + "</s>");
      BatchEncodeOptions opt;
      opt.add_special_tokens = false;
      opt.padding_side = PaddingSide::Left;
      opt.truncation = true;
      opt.max_length = g.at("context_max_length");
      opt.pad_to_multiple_of = g.at("compr_rate");
      BatchEncoding enc = tok->encode_batch(texts, opt);
      auto golden_ids = read_i64_matrix(st, "enc_input_ids");
      auto golden_mask = read_i64_matrix(st, "enc_attention_mask");
      const size_t n_mem = g.at("num_mem_tokens_per_doc");
      ASSERT_EQ(golden_ids.size(), enc.input_ids.size());
      for (size_t r = 0; r < golden_ids.size(); ++r) {
        const auto cut = static_cast<std::ptrdiff_t>(n_mem);
        EXPECT_EQ(enc.input_ids[r], Ids(golden_ids[r].begin(), golden_ids[r].end() - cut)) << r;
        EXPECT_EQ(enc.attention_mask[r], Ids(golden_mask[r].begin(), golden_mask[r].end() - cut))
            << r;
      }
    }
  }
}

TEST(RuntimeSpecialTokens, AddingTwiceAddsNothing) {
  auto tok = load_with_cocom_tokens(tok_dir("llama"));
  EXPECT_EQ(tok->add_special_tokens(kCocomTokens), 0);
  EXPECT_EQ(tok->size(), 1004);
  expect_same_behaviour(*tok, fixture("llama_cocom"), kCocomTexts);
  // On a tokenizer saved with them, too.
  auto saved = load_tokenizer(tok_dir("llama_cocom"));
  EXPECT_EQ(saved->add_special_tokens(kCocomTokens), 0);
  expect_same_behaviour(*saved, fixture("llama_cocom"), kCocomTexts);
  // An empty list changes nothing (transformers replaces the list only with a non-empty one).
  EXPECT_EQ(tok->add_special_tokens({}), 0);
  expect_same_behaviour(*tok, fixture("llama_cocom"), kCocomTexts);
}

TEST(RuntimeSpecialTokens, TokensAlreadyInTheVocabularyKeepTheirIds) {
  const std::string license = "\xE2\x96\x81license";  // an ordinary piece, id 425
  auto tok = load_tokenizer(tok_dir("llama"));
  ASSERT_EQ(tok->token_to_id(license), 425);
  EXPECT_EQ(tok->add_special_tokens({"<s>", license, "<NEW>", "<NEW>", "</s>"}), 1);
  EXPECT_EQ(tok->size(), 1001);
  EXPECT_EQ(tok->token_to_id("<s>"), 1);
  EXPECT_EQ(tok->token_to_id("</s>"), 2);
  EXPECT_EQ(tok->token_to_id(license), 425);
  EXPECT_EQ(tok->token_to_id("<NEW>"), 1000);
  EXPECT_EQ(tok->id_to_token(1000), "<NEW>");
  EXPECT_TRUE(tok->is_special(425));
  EXPECT_TRUE(tok->is_special(1000));
  EXPECT_FALSE(tok->is_special(426));
  // all_special_tokens keeps duplicates inside the additional list, as transformers does.
  EXPECT_EQ(tok->special_tokens(),
            (std::vector<std::string>{"<s>", "</s>", "<unk>", license, "<NEW>", "<NEW>"}));

  // Ordinary text still encodes as before ("license" after a space is not the literal "▁").
  const Ids free_ids = {560, 425, 330, 538, 948};
  EXPECT_EQ(tok->encode("The license is free.", false), free_ids);
  // The piece is now an added token: a literal "▁license" is split out of the text (the other
  // chunks go through sentencepiece on their own).
  const Tokenizer& base = fixture("llama");
  EXPECT_EQ(tok->encode("a" + license + "b", false),
            concat({base.encode("a", false), {425}, base.encode("b", false)}));
  // decode skips it as a special token; without skipping, LlamaTokenizer.convert_tokens_to_string
  // writes the special token raw with a space before it (legacy) and sentencepiece drops the
  // leading space of the next run: " The" + "▁license" + "is free.".
  EXPECT_EQ(tok->decode(free_ids, true), "The is free.");
  EXPECT_EQ(tok->decode(free_ids, false), " The\xE2\x96\x81licenseis free.");
  // <NEW> is beyond the base vocabulary: decoded on its own, joined with spaces.
  EXPECT_EQ(tok->decode({643, 1000, 926}, false), "H <NEW> e");
  EXPECT_EQ(tok->decode({643, 1000, 926}, true), "He");
  EXPECT_EQ(tok->encode("x<NEW>y", true),
            concat({{1}, base.encode("x", false), {1000}, base.encode("y", false)}));
}

TEST(RuntimeSpecialTokens, ReplacingTheAdditionalListKeepsTheOldTokensAsPlainAddedTokens) {
  auto tok = load_with_cocom_tokens(tok_dir("llama"));
  const Tokenizer& base = fixture("llama");
  EXPECT_EQ(tok->add_special_tokens({"<X>"}), 1);
  EXPECT_EQ(tok->size(), 1005);
  EXPECT_EQ(tok->token_to_id("<X>"), 1004);
  EXPECT_EQ(tok->special_tokens(), (std::vector<std::string>{"<s>", "</s>", "<unk>", "<X>"}));
  EXPECT_TRUE(tok->is_special(1004));
  EXPECT_TRUE(tok->is_special(1));  // pad = bos is still set
  EXPECT_EQ(tok->pad_id(), 1);
  for (int64_t id = 1000; id < 1004; ++id) {
    // Still in the vocabulary and still split out of text, but no longer special (4.41 skips
    // by all_special_ids).
    EXPECT_EQ(tok->token_to_id(kCocomTokens[static_cast<size_t>(id - 1000)]), id);
    EXPECT_FALSE(tok->is_special(id)) << id;
    EXPECT_EQ(tok->decode({id}, true), kCocomTokens[static_cast<size_t>(id - 1000)]);
  }
  EXPECT_EQ(tok->encode("a<MEM>b", false),
            concat({base.encode("a", false), {1000}, base.encode("b", false)}));
  // Non-special added tokens are decoded on their own and joined with spaces.
  EXPECT_EQ(tok->decode({643, 1000, 926}, true), "H <MEM> e");
  EXPECT_EQ(tok->decode({643, 1004, 926}, true), "He");
  EXPECT_EQ(tok->decode({643, 1004, 926}, false), "H <X> e");
  EXPECT_EQ(tok->decode({1, 1000, 1004, 643}, true), "<MEM> H");

  // Adding the COCOM list again makes them special again, and <X> drops out.
  EXPECT_EQ(tok->add_special_tokens(kCocomTokens), 0);
  EXPECT_EQ(tok->size(), 1005);
  EXPECT_FALSE(tok->is_special(1004));
  EXPECT_EQ(tok->decode({643, 1000, 926}, true), "He");
  EXPECT_EQ(tok->decode({643, 1004, 926}, true), "H <X> e");
}

TEST(RuntimeSpecialTokens, ReAddingAnAddedTokenResetsItsFlags) {
  // Flags of a saved added token are replaced by those of add_special_tokens (no stripping).
  TempTokenizerDir dir("llama_cocom");
  json cfg = read_json(dir.file("tokenizer_config.json"));
  cfg["added_tokens_decoder"]["1003"]["lstrip"] = true;
  cfg["added_tokens_decoder"]["1003"]["rstrip"] = true;
  dir.write("tokenizer_config.json", cfg.dump());
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->encode("ab  <SEP>  cd", false), tok->encode("ab<SEP>cd", false));
  EXPECT_EQ(tok->add_special_tokens(kCocomTokens), 0);
  EXPECT_EQ(tok->encode("ab  <SEP>  cd", false),
            fixture("llama_cocom").encode("ab  <SEP>  cd", false));
  EXPECT_NE(tok->encode("ab  <SEP>  cd", false), tok->encode("ab<SEP>cd", false));
}

TEST(RuntimeSpecialTokens, BertAddsAfterTheVocabulary) {
  const Tokenizer& base = fixture("bert");
  auto tok = load_tokenizer(tok_dir("bert"));
  ASSERT_EQ(tok->size(), 1000);
  EXPECT_EQ(tok->add_special_tokens({"<MEM>", "<SEP>"}), 2);
  EXPECT_EQ(tok->size(), 1002);
  EXPECT_EQ(tok->token_to_id("<MEM>"), 1000);
  EXPECT_EQ(tok->token_to_id("<SEP>"), 1001);
  EXPECT_TRUE(tok->is_special(1000));
  EXPECT_EQ(tok->special_tokens(), (std::vector<std::string>{"[UNK]", "[SEP]", "[PAD]", "[CLS]",
                                                             "[MASK]", "<MEM>", "<SEP>"}));
  EXPECT_EQ(tok->pad_id(), 0);
  // The lower-casing pass leaves the special tokens alone, so they are found in the text.
  const Ids hello = base.encode("Hello", false);
  const Ids world = base.encode("world", false);
  const Ids ids = tok->encode("Hello <MEM> world<SEP>", true);
  EXPECT_EQ(ids, concat({{2}, hello, {1000}, world, {1001, 3}}));
  EXPECT_EQ(tok->tokenize("Hello<MEM>", false).back(), "<MEM>");
  EXPECT_EQ(tok->decode(ids, true), "hello world");
  EXPECT_EQ(tok->decode(ids, false), "[CLS] hello <MEM> world <SEP> [SEP]");
  BatchEncoding enc = tok->encode_batch({"<MEM>", "Hello <MEM> world<SEP>"}, {});
  EXPECT_EQ(enc.input_ids[0], concat({{2, 1000, 3}, Ids(ids.size() - 3, 0)}));
  EXPECT_EQ(enc.input_ids[1], ids);
  EXPECT_EQ(tok->add_special_tokens({"<MEM>", "<SEP>"}), 0);

  // A base token keeps its id and becomes special (and split out of words).
  auto tok2 = load_tokenizer(tok_dir("bert"));
  ASSERT_EQ(tok2->token_to_id("world"), 919);
  EXPECT_EQ(tok2->add_special_tokens({"world"}), 0);
  EXPECT_EQ(tok2->size(), 1000);
  EXPECT_TRUE(tok2->is_special(919));
  EXPECT_EQ(tok2->encode("Hello world", false), concat({hello, {919}}));
  EXPECT_EQ(tok2->decode(concat({hello, {919}}), true), "hello");

  // A dropped uppercase token is lower-cased again by the tokenize() pass of 4.41 (its
  // AddedToken is special, so the non-special-normalized rule does not keep it either), so it
  // no longer matches.
  EXPECT_EQ(tok->add_special_tokens({"<X>"}), 1);
  EXPECT_EQ(tok->token_to_id("<MEM>"), 1000);
  EXPECT_EQ(tok->encode("<MEM>", false), base.encode("<MEM>", false));
}

TEST(RuntimeSpecialTokens, Errors) {
  auto tok = load_tokenizer(tok_dir("llama"));
  expect_error([&] { tok->add_special_tokens({"<A>", ""}); }, {"empty", "token 1"});
  // Nothing was changed by the failed call.
  EXPECT_EQ(tok->size(), 1000);
  EXPECT_EQ(tok->token_to_id("<A>"), std::nullopt);
  EXPECT_EQ(tok->special_tokens(), (std::vector<std::string>{"<s>", "</s>", "<unk>"}));

  expect_error([&] { tok->set_pad_token("<nope>"); }, {"\"<nope>\"", "pad", "vocabulary"});
  expect_error([&] { tok->set_pad_token(""); }, {"\"\"", "pad"});
  EXPECT_EQ(tok->pad_id(), -1);
  // <MEM> is unknown until it is added.
  expect_error([&] { tok->set_pad_token("<MEM>"); }, {"<MEM>"});
  tok->add_special_tokens(kCocomTokens);
  tok->set_pad_token("<MEM>");
  EXPECT_EQ(tok->pad_id(), 1000);

  auto bert = load_tokenizer(tok_dir("bert"));
  expect_error([&] { bert->add_special_tokens({""}); }, {"empty"});
  expect_error([&] { bert->set_pad_token("[NOPE]"); }, {"[NOPE]"});
  EXPECT_EQ(bert->pad_id(), 0);
}

TEST(RuntimeSpecialTokens, PadTokenFromTheBaseVocabulary) {
  // pad_token = an ordinary piece: it becomes special (skipped by decode) without becoming an
  // added token, and padding uses its id.
  const std::string license = "\xE2\x96\x81license";
  auto tok = load_tokenizer(tok_dir("llama"));
  tok->set_pad_token(license);
  EXPECT_EQ(tok->pad_id(), 425);
  EXPECT_EQ(tok->size(), 1000);
  EXPECT_TRUE(tok->is_special(425));
  EXPECT_EQ(tok->special_tokens(), (std::vector<std::string>{"<s>", "</s>", "<unk>", license}));
  EXPECT_EQ(tok->decode({560, 425, 330, 538, 948}, true), "The is free.");
  BatchEncodeOptions opt;
  opt.add_special_tokens = false;
  opt.padding_side = PaddingSide::Left;
  BatchEncoding enc = tok->encode_batch({"Hello world", "The license is free."}, opt);
  EXPECT_EQ(enc.input_ids[1], (Ids{425, 425, 560, 425, 330, 538, 948}));
  // Replacing the pad token: the old one is no longer special.
  tok->set_pad_token("<s>");
  EXPECT_EQ(tok->pad_id(), 1);
  EXPECT_FALSE(tok->is_special(425));
}

// ------------------------------------------------------------------------------------------
// encode_batch, hand-computed

// BERT fixture: "no warranty." -> [CLS] no warranty . [SEP] = 2 202 197 14 3
//               "the program is free software." -> 2 117 155 130 158 150 14 3
const std::vector<std::string> kTexts = {"No warranty.", "The Program is free software."};

TEST(EncodeBatch, RightPadding) {
  BatchEncoding enc = fixture("bert").encode_batch(kTexts, {});
  EXPECT_EQ(enc.input_ids,
            (std::vector<Ids>{{2, 202, 197, 14, 3, 0, 0, 0}, {2, 117, 155, 130, 158, 150, 14, 3}}));
  EXPECT_EQ(enc.attention_mask,
            (std::vector<Ids>{{1, 1, 1, 1, 1, 0, 0, 0}, {1, 1, 1, 1, 1, 1, 1, 1}}));
  EXPECT_EQ(enc.token_type_ids, (std::vector<Ids>{Ids(8, 0), Ids(8, 0)}));
}

TEST(EncodeBatch, LeftPadding) {
  BatchEncodeOptions opt;
  opt.padding_side = PaddingSide::Left;
  BatchEncoding enc = fixture("bert").encode_batch(kTexts, opt);
  EXPECT_EQ(enc.input_ids,
            (std::vector<Ids>{{0, 0, 0, 2, 202, 197, 14, 3}, {2, 117, 155, 130, 158, 150, 14, 3}}));
  EXPECT_EQ(enc.attention_mask,
            (std::vector<Ids>{{0, 0, 0, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1}}));
}

TEST(EncodeBatch, TruncationKeepsSpecialTokens) {
  BatchEncodeOptions opt;
  opt.truncation = true;
  opt.max_length = 4;
  BatchEncoding enc = fixture("bert").encode_batch(kTexts, opt);
  EXPECT_EQ(enc.input_ids, (std::vector<Ids>{{2, 202, 197, 3}, {2, 117, 155, 3}}));
  EXPECT_EQ(enc.attention_mask, (std::vector<Ids>{{1, 1, 1, 1}, {1, 1, 1, 1}}));

  // Without special tokens the text tokens themselves are cut.
  opt.add_special_tokens = false;
  opt.max_length = 2;
  enc = fixture("bert").encode_batch(kTexts, opt);
  EXPECT_EQ(enc.input_ids, (std::vector<Ids>{{202, 197}, {117, 155}}));

  // max_length without truncation does nothing (padding="longest").
  opt.truncation = false;
  enc = fixture("bert").encode_batch(kTexts, opt);
  EXPECT_EQ(enc.input_ids,
            (std::vector<Ids>{{202, 197, 14, 0, 0, 0}, {117, 155, 130, 158, 150, 14}}));
}

TEST(EncodeBatch, TruncationShorterThanSpecialTokensLeavesRowAsTransformersDoes) {
  // transformers logs an error and returns the row untruncated when the text has fewer tokens
  // than must be removed.
  BatchEncodeOptions opt;
  opt.truncation = true;
  opt.max_length = 1;
  BatchEncoding enc = fixture("bert").encode_batch({"No warranty."}, opt);
  EXPECT_EQ(enc.input_ids, (std::vector<Ids>{{2, 202, 197, 14, 3}}));
}

TEST(EncodeBatch, PadToMultipleOf) {
  BatchEncodeOptions opt;
  opt.pad_to_multiple_of = 3;
  BatchEncoding enc = fixture("bert").encode_batch(kTexts, opt);
  EXPECT_EQ(enc.input_ids, (std::vector<Ids>{{2, 202, 197, 14, 3, 0, 0, 0, 0},
                                             {2, 117, 155, 130, 158, 150, 14, 3, 0}}));
  EXPECT_EQ(enc.attention_mask[1], (Ids{1, 1, 1, 1, 1, 1, 1, 1, 0}));
  // Already a multiple: unchanged.
  opt.pad_to_multiple_of = 4;
  enc = fixture("bert").encode_batch(kTexts, opt);
  EXPECT_EQ(enc.input_ids[0].size(), 8u);
  // Truncation then rounding up, on the left.
  opt.padding_side = PaddingSide::Left;
  opt.truncation = true;
  opt.max_length = 5;
  opt.pad_to_multiple_of = 4;
  enc = fixture("bert").encode_batch(kTexts, opt);
  EXPECT_EQ(enc.input_ids,
            (std::vector<Ids>{{0, 0, 0, 2, 202, 197, 14, 3}, {0, 0, 0, 2, 117, 155, 130, 3}}));
}

TEST(EncodeBatch, LlamaLeftPaddingWithBos) {
  // llama_cocom: pad = <s> = 1. "Hello world" -> 1 643 926 354 928 278 272 554;
  // "The license is free." -> 1 560 425 330 538 948.
  BatchEncodeOptions opt;
  opt.padding_side = PaddingSide::Left;
  BatchEncoding enc =
      fixture("llama_cocom").encode_batch({"Hello world", "The license is free.", ""}, opt);
  EXPECT_EQ(enc.input_ids, (std::vector<Ids>{{1, 643, 926, 354, 928, 278, 272, 554},
                                             {1, 1, 1, 560, 425, 330, 538, 948},
                                             {1, 1, 1, 1, 1, 1, 1, 1}}));
  EXPECT_EQ(enc.attention_mask,
            (std::vector<Ids>{
                {1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 1, 1, 1, 1, 1, 1}, {0, 0, 0, 0, 0, 0, 0, 1}}));
  opt.truncation = true;
  opt.max_length = 3;
  enc = fixture("llama_cocom").encode_batch({"Hello world", "The license is free."}, opt);
  EXPECT_EQ(enc.input_ids, (std::vector<Ids>{{1, 643, 926}, {1, 560, 425}}));
}

TEST(EncodeBatch, NoPaddingAndErrors) {
  BatchEncodeOptions opt;
  opt.pad_to_longest = false;
  opt.pad_to_multiple_of = 16;
  BatchEncoding enc = fixture("llama").encode_batch({"Hello world", "The license is free."}, opt);
  EXPECT_EQ(enc.input_ids[0].size(), 8u);
  EXPECT_EQ(enc.input_ids[1].size(), 6u);
  EXPECT_EQ(enc.attention_mask[1], Ids(6, 1));

  // The base llama tokenizer has no pad token: padding that is needed fails, padding that is
  // not needed does not.
  expect_error(
      [] {
        fixture("llama").encode_batch({"Hello world", "The license is free."}, {});
      },
      {"pad"});
  EXPECT_NO_THROW(fixture("llama").encode_batch({"Hello world", "Hello world"}, {}));
  EXPECT_TRUE(fixture("llama").encode_batch({}, {}).input_ids.empty());

  BatchEncodeOptions bad;
  bad.max_length = -1;
  expect_error([&] { fixture("bert").encode_batch(kTexts, bad); }, {"max_length"});
  bad.max_length = 0;
  bad.pad_to_multiple_of = -2;
  expect_error([&] { fixture("bert").encode_batch(kTexts, bad); }, {"pad_to_multiple_of"});
}

// ------------------------------------------------------------------------------------------
// The added-token trie (cases of transformers' own Trie tests)

std::vector<std::string> trie_split(const std::vector<std::string>& tokens,
                                    const std::string& text) {
  detail::AddedTokenTrie trie;
  for (const auto& t : tokens) trie.add(t);
  return trie.split(text);
}

TEST(AddedTokenTrie, SplitsLikeTransformers) {
  using V = std::vector<std::string>;
  EXPECT_EQ(trie_split({}, "[CLS] This is a extra_id_100"), V{"[CLS] This is a extra_id_100"});
  EXPECT_EQ(trie_split({"[CLS]", "extra_id_1", "extra_id_100"}, "[CLS] This is a extra_id_100"),
            (V{"[CLS]", " This is a ", "extra_id_100"}));
  EXPECT_EQ(trie_split({"A"}, "ABC"), (V{"A", "BC"}));
  EXPECT_EQ(trie_split({"A"}, "BCA"), (V{"BC", "A"}));
  EXPECT_EQ(trie_split({"TOKEN]", "[SPECIAL_TOKEN]"}, "This is something [SPECIAL_TOKEN]"),
            (V{"This is something ", "[SPECIAL_TOKEN]"}));
  EXPECT_EQ(trie_split({"A", "P", "[SPECIAL_TOKEN]"}, "This is something [SPECIAL_TOKEN]"),
            (V{"This is something ", "[SPECIAL_TOKEN]"}));
  EXPECT_EQ(trie_split({"AB", "B", "C"}, "ABC"), (V{"AB", "C"}));
  EXPECT_EQ(trie_split({"ABC", "B", "CD"}, "ABCD"), (V{"ABC", "D"}));
  EXPECT_EQ(trie_split({"blowing", "lower"}, "blower"), (V{"b", "lower"}));
  EXPECT_EQ(trie_split({"<MEM>"}, "<MEM><MEM>x<MEM"), (V{"<MEM>", "<MEM>", "x<MEM"}));
  // Code points, not bytes.
  EXPECT_EQ(trie_split({"\u53cb\u9054"}, "Hello \u53cb\u9054!"),
            (V{"Hello ", "\u53cb\u9054", "!"}));
  // Ill-formed bytes never match and are kept.
  EXPECT_EQ(trie_split({"<s>"}, "\xFF<s>\xC3"), (V{"\xFF", "<s>", "\xC3"}));
}

// ------------------------------------------------------------------------------------------
// Further semantics

TEST(LlamaSemantics, AddedTokensSplitLongestFirst) {
  const Tokenizer& tok = fixture("llama_cocom");
  // Special tokens glued to text and to each other.
  EXPECT_EQ(tok.encode("<SEP><SEP>", false), (Ids{1003, 1003}));
  EXPECT_EQ(tok.encode("<MEM", false), fixture("llama").encode("<MEM", false));
  // An id round trip through decode.
  EXPECT_EQ(tok.decode(tok.encode("<ENC>Source code", false), false), "<ENC> Source code");
}

TEST(LlamaSemantics, ByteFallbackAndInvalidUtf8) {
  const Tokenizer& tok = fixture("llama");
  // Ill-formed UTF-8 goes to sentencepiece as it is; nothing crashes and the ids are valid.
  const std::string bad = "abc \xFF\xFE def \xC3";
  Ids ids = tok.encode(bad, true);
  ASSERT_FALSE(ids.empty());
  for (int64_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, tok.size());
  }
  EXPECT_NO_THROW(tok.decode(ids, false));
  // A lone byte piece decodes to U+FFFD (sentencepiece behaviour).
  auto c3 = tok.token_to_id("<0xC3>");
  ASSERT_TRUE(c3.has_value());
  EXPECT_EQ(tok.decode({*c3}, false), "\xEF\xBF\xBD");
  EXPECT_EQ(tok.decode({*c3, *tok.token_to_id("<0xA9>")}, false), "\xC3\xA9");
}

TEST(LlamaSemantics, CleanUpAndAddEosFromConfig) {
  TempTokenizerDir dir("llama");
  json cfg = read_json(dir.file("tokenizer_config.json"));
  cfg["clean_up_tokenization_spaces"] = true;
  cfg["add_eos_token"] = true;
  cfg["add_bos_token"] = false;
  dir.write("tokenizer_config.json", cfg.dump());
  auto tok = load_tokenizer(dir.path());
  Ids ids = tok->encode("free .", true);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_NE(ids.front(), 1);
  EXPECT_EQ(tok->decode(ids, true), "free.");
  EXPECT_EQ(fixture("llama").decode(fixture("llama").encode("free .", false), true), "free .");
}

TEST(LlamaSemantics, NonLegacyMode) {
  TempTokenizerDir dir("llama");
  json cfg = read_json(dir.file("tokenizer_config.json"));
  cfg["legacy"] = false;
  dir.write("tokenizer_config.json", cfg.dump());
  auto tok = load_tokenizer(dir.path());
  const Tokenizer& legacy = fixture("llama");
  // Plain text: same as legacy (the "▁" is added by tokenize() instead of sentencepiece).
  EXPECT_EQ(tok->encode("Hello world", true), legacy.encode("Hello world", true));
  EXPECT_EQ(tok->decode(tok->encode("Hello world", true), true), "Hello world");
  // After a special token no "▁" is added, unlike legacy mode.
  auto t = tok->tokenize("<s>Hello", false);
  ASSERT_GE(t.size(), 2u);
  EXPECT_EQ(t[0], "<s>");
  EXPECT_NE(t[1].rfind("\xE2\x96\x81", 0), 0u);
  auto l = legacy.tokenize("<s>Hello", false);
  EXPECT_EQ(l[1], "\xE2\x96\x81H");
  EXPECT_EQ(tok->decode(tok->encode("<s>Hello", false), true), "Hello");
}

TEST(LlamaSemantics, SpecialTokenMissingFromVocabularyIsAdded) {
  TempTokenizerDir dir("llama");
  json cfg = read_json(dir.file("tokenizer_config.json"));
  cfg["pad_token"] = "<pad>";
  dir.write("tokenizer_config.json", cfg.dump());
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->size(), 1001);
  EXPECT_EQ(tok->pad_id(), 1000);
  EXPECT_EQ(tok->encode("a<pad>", false).back(), 1000);
  EXPECT_EQ(tok->decode({1000, 643}, true), "H");
}

TEST(LlamaSemantics, AddedTokenStripFlags) {
  TempTokenizerDir dir("llama_cocom");
  json cfg = read_json(dir.file("tokenizer_config.json"));
  cfg["added_tokens_decoder"]["1003"]["lstrip"] = true;
  cfg["added_tokens_decoder"]["1003"]["rstrip"] = true;
  dir.write("tokenizer_config.json", cfg.dump());
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->encode("ab  <SEP>  cd", false), tok->encode("ab<SEP>cd", false));
  EXPECT_NE(fixture("llama_cocom").encode("ab  <SEP>  cd", false),
            fixture("llama_cocom").encode("ab<SEP>cd", false));
}

TEST(BertSemantics, BasicTokenizerRules) {
  const Tokenizer& tok = fixture("bert");
  // Special tokens in the text are kept whole (and not lower-cased); lower-case ones are not
  // special.
  EXPECT_EQ(tok.tokenize("[CLS] no [MASK]", false),
            (std::vector<std::string>{"[CLS]", "no", "[MASK]"}));
  auto lower = tok.tokenize("[mask]", false);
  ASSERT_GE(lower.size(), 3u);
  EXPECT_EQ(lower.front(), "[");
  EXPECT_EQ(lower.back(), "]");
  // Control characters and U+FFFD are dropped, other whitespace separates words.
  EXPECT_EQ(tok.encode("no\x01 warr\xEF\xBF\xBD"
                       "anty\u00A0.",
                       false),
            (Ids{202, 197, 14}));
  // Ill-formed UTF-8 is dropped like U+FFFD.
  EXPECT_EQ(tok.encode("no warr\xFF\xC3"
                       "anty",
                       false),
            (Ids{202, 197}));
  // CJK characters become words of their own; accents are stripped after lower-casing.
  EXPECT_EQ(tok.tokenize("a中b", false), (std::vector<std::string>{"a", "[UNK]", "b"}));
  EXPECT_EQ(tok.tokenize("NO WÄRRÂNTY", false), (std::vector<std::string>{"no", "warranty"}));
  // Punctuation (including ASCII symbols and Unicode P*) splits words.
  EXPECT_EQ(tok.tokenize("no$warranty\u2014no", false),
            (std::vector<std::string>{"no", "[UNK]", "warranty", "[UNK]", "no"}));
  // Words longer than 100 characters are [UNK].
  EXPECT_EQ(tok.tokenize(std::string(101, 'a'), false), (std::vector<std::string>{"[UNK]"}));
  EXPECT_EQ(tok.tokenize(std::string(100, 'a'), false).size(), 100u);
  // decode: [UNK] is special and is skipped.
  EXPECT_EQ(tok.decode(tok.encode("a $ b", true), true), "a b");
}

TEST(BertSemantics, CasedConfigAndNeverSplit) {
  TempTokenizerDir dir("bert");
  json cfg = read_json(dir.file("tokenizer_config.json"));
  cfg["do_lower_case"] = false;
  cfg["never_split"] = json::array({"no$warranty"});
  dir.write("tokenizer_config.json", cfg.dump());
  {
    std::ofstream out(dir.file("vocab.txt"), std::ios::app);
    out << "No\nno$warranty\n";
  }
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->tokenize("No no", false), (std::vector<std::string>{"No", "no"}));
  EXPECT_EQ(tok->tokenize("no$warranty", false), (std::vector<std::string>{"no$warranty"}));
  EXPECT_EQ(tok->tokenize("Ñ", false), (std::vector<std::string>{"[UNK]"}));
  cfg["strip_accents"] = true;
  dir.write("tokenizer_config.json", cfg.dump());
  tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->tokenize("Ño", false), (std::vector<std::string>{"No"}));
  EXPECT_EQ(tok->tokenize("Nö", false), (std::vector<std::string>{"No"}));
}

TEST(BertSemantics, VocabularyLineEndings) {
  TempTokenizerDir dir("");
  dir.write("vocab.txt", "[PAD]\r\n[UNK]\r[CLS]\n[SEP]\n[MASK]\nab\n##c");
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->size(), 7);
  EXPECT_EQ(tok->encode("abc", true), (Ids{2, 5, 6, 3}));
  EXPECT_EQ(tok->decode({2, 5, 6, 3}, false), "[CLS] abc [SEP]");
}

// ------------------------------------------------------------------------------------------
// Hostile input

TEST(TokenizerHostile, MissingDirectoryOrFiles) {
  expect_error([] { load_tokenizer("/nonexistent/cocom-tokenizer"); },
               {"/nonexistent/cocom-tokenizer", "not a directory"});
  TempTokenizerDir dir("");
  expect_error([&] { load_tokenizer(dir.path()); }, {dir.path(), "tokenizer.model", "vocab.txt"});
}

TEST(TokenizerHostile, CorruptSentencepieceModel) {
  const std::string good = read_file(tok_dir("llama") + "/tokenizer.model");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"not a protobuf", "this is not a sentencepiece model"},
      {"binary garbage", std::string("\xFF\xFF\xFF\xFF\x0F\x08\x01\x12", 8)},
      {"truncated", good.substr(0, good.size() / 2)},
      {"truncated header", good.substr(0, 7)},
  };
  for (const auto& [what, bytes] : cases) {
    SCOPED_TRACE(what);
    TempTokenizerDir dir("llama");
    dir.write("tokenizer.model", bytes);
    expect_error([&] { load_tokenizer(dir.path()); }, {dir.file("tokenizer.model")});
  }
  // A directory named tokenizer.model is not a file.
  TempTokenizerDir dir("llama");
  dir.remove("tokenizer.model");
  fs::create_directory(dir.file("tokenizer.model"));
  expect_error([&] { load_tokenizer(dir.path()); }, {"tokenizer.model"});
}

TEST(TokenizerHostile, InvalidJsonInEveryConfigFile) {
  for (const std::string fixture_name : {"llama_cocom", "bert"}) {
    for (const std::string file :
         {"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"}) {
      SCOPED_TRACE(fixture_name + "/" + file);
      TempTokenizerDir dir(fixture_name);
      dir.write(file, "{\"bos_token\": \"<s>\",");
      expect_error([&] { load_tokenizer(dir.path()); }, {dir.file(file), "invalid JSON"});
      dir.write(file, "[1, 2, 3]");
      expect_error([&] { load_tokenizer(dir.path()); }, {dir.file(file), "object"});
      dir.write(file, "");
      expect_error([&] { load_tokenizer(dir.path()); }, {dir.file(file)});
    }
  }
}

TEST(TokenizerHostile, WrongTypesInConfigs) {
  struct Case {
    std::string fixture, file, json, needle;
  };
  const std::vector<Case> cases = {
      {"llama_cocom", "added_tokens.json", R"({"<MEM>": "1000"})", "<MEM>"},
      {"llama_cocom", "added_tokens.json", R"({"<MEM>": 1000.5})", "<MEM>"},
      {"llama_cocom", "added_tokens.json", R"({"<MEM>": -3})", "<MEM>"},
      {"llama_cocom", "added_tokens.json", R"({"<MEM>": null})", "<MEM>"},
      {"llama_cocom", "added_tokens.json", R"({"": 1004})", "empty"},
      // Collides with the base vocabulary (id 5 is an ordinary piece).
      {"llama_cocom", "added_tokens.json", R"({"<XYZ>": 5})", "base vocabulary"},
      // Disagrees with tokenizer_config.json's added_tokens_decoder.
      {"llama_cocom", "added_tokens.json", R"({"<MEM>": 1001})", "<AE>"},
      {"llama_cocom", "added_tokens.json", R"({"<MEM>": 1000, "<NEW>": 1000})", "1000"},
      {"llama_cocom", "special_tokens_map.json", R"({"bos_token": 7})", "bos_token"},
      {"llama_cocom", "special_tokens_map.json", R"({"eos_token": {"text": "</s>"}})",
       "eos_token.content"},
      {"llama_cocom", "special_tokens_map.json", R"({"additional_special_tokens": "<MEM>"})",
       "additional_special_tokens"},
      {"llama_cocom", "special_tokens_map.json", R"({"additional_special_tokens": [1]})",
       "additional_special_tokens[0]"},
      {"llama", "tokenizer_config.json", R"({"add_bos_token": "yes"})", "add_bos_token"},
      {"llama", "tokenizer_config.json", R"({"legacy": 1})", "legacy"},
      {"llama", "tokenizer_config.json", R"({"added_tokens_decoder": []})", "added_tokens_decoder"},
      {"llama", "tokenizer_config.json", R"({"added_tokens_decoder": {"x1": {"content": "a"}}})",
       "x1"},
      {"llama", "tokenizer_config.json", R"({"added_tokens_decoder": {"1000": "<MEM>"}})",
       "added_tokens_decoder.1000"},
      {"llama", "tokenizer_config.json", R"({"added_tokens_decoder": {"1000": {"content": 5}}})",
       "added_tokens_decoder.1000"},
      {"llama", "tokenizer_config.json",
       R"({"added_tokens_decoder": {"1000": {"content": "<M>", "special": "no"}}})", "special"},
      {"llama", "tokenizer_config.json", R"({"added_tokens_decoder": {"7": {"content": "<M>"}}})",
       "base vocabulary"},
      {"llama", "tokenizer_config.json",
       R"({"added_tokens_decoder": {"1000": {"content": "<M>"}, "1001": {"content": "<M>"}}})",
       "two ids"},
      {"llama", "tokenizer_config.json",
       R"({"added_tokens_decoder": {"99999999999999": {"content": "<M>"}}})", "99999999999999"},
      {"llama", "tokenizer_config.json", R"({"clean_up_tokenization_spaces": "no"})",
       "clean_up_tokenization_spaces"},
      {"bert", "tokenizer_config.json", R"({"do_lower_case": "true"})", "do_lower_case"},
      {"bert", "tokenizer_config.json", R"({"strip_accents": 0})", "strip_accents"},
      {"bert", "tokenizer_config.json", R"({"never_split": "abc"})", "never_split"},
      {"bert", "tokenizer_config.json", R"({"never_split": ["a", 3]})", "never_split[1]"},
      {"bert", "tokenizer_config.json", R"({"unk_token": null})", "unk_token"},
      {"bert", "tokenizer_config.json", R"({"unk_token": "[NOPE]"})", "[NOPE]"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.fixture + "/" + c.file + ": " + c.json);
    TempTokenizerDir dir(c.fixture);
    if (c.file == "tokenizer_config.json" && c.fixture == "bert")
      dir.remove("special_tokens_map.json");
    dir.write(c.file, c.json);
    expect_error([&] { load_tokenizer(dir.path()); }, {dir.file(c.file), c.needle});
  }
}

TEST(TokenizerHostile, BadVocabularyFiles) {
  {
    TempTokenizerDir dir("bert");
    dir.write("vocab.txt", "");
    expect_error([&] { load_tokenizer(dir.path()); }, {dir.file("vocab.txt"), "empty"});
  }
  {
    TempTokenizerDir dir("bert");
    dir.write("vocab.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
    expect_error([&] { load_tokenizer(dir.path()); }, {dir.file("vocab.txt"), "[UNK]"});
  }
  {
    TempTokenizerDir dir("bert");
    dir.write("vocab.txt", "[PAD]\n[UNK]\nab\xFF\n");
    expect_error([&] { load_tokenizer(dir.path()); }, {dir.file("vocab.txt"), "line 3"});
  }
  {
    // The config's added tokens must agree with vocab.txt.
    TempTokenizerDir dir("bert");
    dir.write("vocab.txt", "[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\n");
    expect_error([&] { load_tokenizer(dir.path()); },
                 {dir.file("tokenizer_config.json"), "[PAD]", "base vocabulary"});
  }
  {
    // Minimal but valid: only [UNK]; the other special tokens are appended.
    TempTokenizerDir dir("");
    dir.write("vocab.txt", "[UNK]\nhello\n");
    auto tok = load_tokenizer(dir.path());
    EXPECT_EQ(tok->size(), 6);
    // all_special_tokens order: [UNK] (base id 0), then [SEP] 2, [PAD] 3, [CLS] 4, [MASK] 5.
    EXPECT_EQ(tok->encode("hello world", true), (Ids{4, 1, 0, 2}));
  }
}

TEST(TokenizerHostile, DecodeOutOfRangeIds) {
  for (const std::string name : {"llama", "llama_cocom", "bert"}) {
    SCOPED_TRACE(name);
    const Tokenizer& tok = fixture(name);
    const std::string size = std::to_string(tok.size());
    const std::string big = std::to_string(tok.size());
    expect_error([&] { tok.decode({1, tok.size()}, false); }, {big, size, "out of range"});
    expect_error([&] { tok.decode({-1}, true); }, {"-1", size});
    expect_error([&] { tok.decode({int64_t{1} << 40}, true); }, {"1099511627776"});
    expect_error([&] { tok.id_to_token(tok.size() + 5); }, {std::to_string(tok.size() + 5)});
  }
}

TEST(TokenizerHostile, ArbitraryTextNeverCrashes) {
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes += static_cast<char>(i);
  const std::vector<std::string> texts = {all_bytes,
                                          std::string(3, '\0'),
                                          "<s",
                                          "<MEM><",
                                          "<<MEM>>",
                                          "[CLS",
                                          "\xF0\x9F\x98",
                                          "\xED\xA0\x80",
                                          std::string(5000, 'x'),
                                          "\xE2\x96\x81\xE2\x96\x81<SEP>\xE2\x96\x81"};
  for (const std::string name : {"llama", "llama_cocom", "bert"}) {
    const Tokenizer& tok = fixture(name);
    for (const auto& text : texts) {
      for (bool add : {false, true}) {
        Ids ids;
        ASSERT_NO_THROW(ids = tok.encode(text, add)) << name;
        for (int64_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.size()) << name;
        EXPECT_EQ(tok.tokenize(text, add).size(), ids.size());
        EXPECT_NO_THROW(tok.decode(ids, false));
        EXPECT_NO_THROW(tok.decode(ids, true));
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// The sentencepiece shim

TEST(SpmShim, LoadsOnceAndFromTwoThreads) {
  const detail::SpmApi* a = nullptr;
  const detail::SpmApi* b = nullptr;
  std::thread t1([&] { a = &detail::spm_api(); });
  std::thread t2([&] { b = &detail::spm_api(); });
  t1.join();
  t2.join();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, b);
  EXPECT_EQ(&detail::spm_api(), a);  // and a second call in this thread
  EXPECT_EQ(a->abi_version(), COCOM_SPM_ABI_VERSION);
  EXPECT_NE(a->path.find("libcocom_spm.so"), std::string::npos);
}

TEST(SpmShim, TokenizersLoadAndEncodeConcurrently) {
  const std::string text = "<s><MEM><SEP>[INST]Which license?\n[/INST]\n";
  const Ids expected = fixture("llama_cocom").encode(text, true);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto tok = load_tokenizer(tok_dir("llama_cocom"));
      for (int i = 0; i < 50; ++i) {
        if (tok->encode(text, true) != expected) ++failures;
        if (fixture("llama_cocom").decode(expected, true) != "[INST]Which license?\n[/INST]\n") {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

// $COCOM_SPM_LIBRARY is tried first; one that cannot be loaded falls through to the next
// places. Each runs in a fresh process (the shim is loaded once per process).
TEST(SpmShimDeathTest, ExplicitLibraryPath) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Not detail::spm_api().path: the child process re-runs this body and must not load the
  // shim before the statement under test.
  const std::string built = std::string(COCOM_BIN_DIR) + "/../lib/libcocom_spm.so";
  ASSERT_TRUE(fs::exists(built)) << built;
  TempTokenizerDir dir("");
  const std::string copy = dir.file("libcocom_spm.so");
  fs::copy_file(built, copy);
  EXPECT_EXIT(
      {
        setenv("COCOM_SPM_LIBRARY", copy.c_str(), 1);
        bool ok = detail::spm_api().path == copy &&
                  load_tokenizer(tok_dir("llama"))->encode("Hello", false).size() == 4;
        fs::remove_all(dir.path());
        std::exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
  const std::string bogus = dir.file("bogus.so");
  cocom::test::write_bytes(bogus, "not an ELF file");
  EXPECT_EXIT(
      {
        setenv("COCOM_SPM_LIBRARY", bogus.c_str(), 1);
        bool ok = detail::spm_api().path != bogus;
        fs::remove_all(dir.path());
        std::exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace cocom::model
