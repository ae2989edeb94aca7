// COCOM and COCOM-light against the reference goldens (tests/data/fixtures/cocom*), the engine
// regime, the sep=false prompt form, tokenizer resolution and hostile checkpoints.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <filesystem>
#include <map>

#include "common/error.h"
#include "common/json_util.h"
#include "generate/cocom_generate.h"
#include "model/checkpoint_io.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace cocom;
using namespace cocom::model;

namespace {

std::string fx(const std::string& part) { return test::fixtures_dir() + "/" + part; }

std::map<std::string, at::Tensor> golden(const std::string& part) {
  std::map<std::string, at::Tensor> g;
  for (auto& [n, t] : read_all_tensors(fx(part) + "/golden.safetensors")) g[n] = t;
  return g;
}

struct GoldenText {
  std::vector<std::vector<std::string>> contexts;
  std::vector<std::string> questions, decoded;
  int64_t max_new_tokens, context_max_length;
};

GoldenText golden_text(const std::string& part) {
  Json j = read_json_file(fx(part) + "/golden.json");
  GoldenText g;
  for (const auto& c : j["contexts"]) g.contexts.push_back(c.get<std::vector<std::string>>());
  g.questions = j["questions"].get<std::vector<std::string>>();
  g.decoded = j["decoded"].get<std::vector<std::string>>();
  g.max_new_tokens = j["max_new_tokens"];
  g.context_max_length = j["context_max_length"];
  return g;
}

void expect_close(const at::Tensor& e, const at::Tensor& g, const std::string& what) {
  ASSERT_EQ(e.sizes(), g.sizes()) << what;
  double err = (e.to(at::kDouble) - g.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(err, 2e-4 + 2e-4 * g.abs().max().item<double>()) << what;
}

// A writable copy of a fixture checkpoint (config + weights + base model directories).
std::string copy_checkpoint(const std::string& part, const std::string& tag) {
  std::string dir = test::make_temp_dir(tag) + "/ckpt";
  fs::copy(fx(part), dir, fs::copy_options::recursive);
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  }
  return dir;
}

using test::error_of;

class CocomGolden : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(CocomGolden, EveryStageMatchesTheReference) {
  const std::string part = GetParam();
  auto m = CocomModel::load(fx(part));
  auto g = golden(part);
  GoldenText t = golden_text(part);
  generate::TextGenerationOptions opt;
  opt.sampling.max_new_tokens = t.max_new_tokens;
  opt.sampling.keep_step_logits = true;
  opt.context_max_length = t.context_max_length;
  generate::TextGeneration r = generate::generate_from_text(*m, t.contexts, t.questions, opt);
  EXPECT_TRUE(r.encoder.input_ids.equal(g["enc_input_ids"]));
  EXPECT_TRUE(r.encoder.attention_mask.equal(g["enc_attention_mask"]));
  expect_close(r.compressed, g["compressed_embs"], "compressed_embs");
  EXPECT_TRUE(r.decoder.input_ids.equal(g["dec_input_ids"]));
  EXPECT_TRUE(r.decoder.attention_mask.equal(g["dec_attention_mask"]));
  expect_close(r.decoder_embeds, g["dec_inputs_embeds"], "dec_inputs_embeds");
  EXPECT_TRUE(r.answers.generation.tokens.equal(g["generated_ids"]))
      << r.answers.generation.tokens << "\n"
      << g["generated_ids"];
  expect_close(r.answers.generation.step_logits, g["gen_logits"], "gen_logits");
  EXPECT_EQ(r.answers.texts, t.decoded);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CocomGolden, ::testing::Values("cocom", "cocom-light"));

TEST(Cocom, CheckpointLayoutIsUnderstood) {
  auto m = CocomModel::load(fx("cocom"));
  EXPECT_FALSE(m->config().light());
  EXPECT_EQ(m->config().compr_rate, 4);
  EXPECT_EQ(m->config().lora_r, 4);
  EXPECT_EQ(m->mem_id(), 1000);
  EXPECT_EQ(m->ae_id(), 1001);
  EXPECT_EQ(m->enc_id(), 1002);
  EXPECT_EQ(m->sep_id(), 1003);
  EXPECT_EQ(m->decoder_tokenizer().pad_id(), 1);  // pad := bos
  EXPECT_EQ(m->decoder().config().vocab_size, 1004);
  EXPECT_EQ(m->decoder_source(), fx("cocom") + "/base_decoder");
  auto l = CocomModel::load(fx("cocom-light"));
  EXPECT_TRUE(l->config().light());
  ASSERT_NE(l->bert(), nullptr);
  EXPECT_EQ(l->projection_weight().size(1), 4 * l->bert()->config().hidden_size);
}

TEST(Cocom, LoraIsMergedWithScaleTwo) {
  // lora_alpha = 2 * lora_r in the reference: the golden embeddings need it; scale 1 misses.
  std::string dir = copy_checkpoint("cocom", "lora-scale");
  Json c = read_json_file(dir + "/config.json");
  c["lora"] = false;  // base weights only: the adapters become unexpected tensors
  write_json_file(dir + "/config.json", c);
  std::string m = error_of([&] { CocomModel::load(dir); });
  EXPECT_NE(m.find("lora_A"), std::string::npos) << m;
}

TEST(Cocom, EngineRegimeEmbeddingsDoNotDependOnTheBatch) {
  for (const std::string part : {"cocom", "cocom-light"}) {
    SCOPED_TRACE(part);
    auto m = CocomModel::load(fx(part));
    GoldenText t = golden_text(part);
    std::vector<std::string> all = t.contexts[0];
    all.insert(all.end(), t.contexts[1].begin(), t.contexts[1].end());
    at::Tensor batch = compress::compress_passages(*m, all, 32, 4);
    ASSERT_EQ(batch.size(0), 10);
    EXPECT_EQ(batch.size(1), 8);  // ceil(32 / 4), whatever the passage length
    for (size_t i : {size_t(0), size_t(7)}) {
      at::Tensor alone = compress::compress_passages(*m, {all[i]}, 32, 1);
      EXPECT_LT((alone[0] - batch[int64_t(i)]).abs().max().item<double>(), 1e-5);
    }
  }
}

TEST(Cocom, AnswerFromStoredEmbeddings) {
  auto m = CocomModel::load(fx("cocom"));
  GoldenText t = golden_text("cocom");
  at::Tensor emb = compress::compress_passages(*m, t.contexts[0], 32, 8);
  SamplingOptions so;
  so.max_new_tokens = 6;
  generate::AnswerResult a = generate::answer(*m, t.questions[0], emb, so);
  EXPECT_EQ(a.generation.tokens.size(0), 1);
  // The same embeddings through generate_answers by hand give the same tokens.
  generate::DecoderInputs in = generate::decoder_prompts(*m, {t.questions[0]}, 5, emb.size(1));
  EXPECT_EQ(in.input_ids.size(1), 1 + 5 * (8 + 1) + (in.input_ids.size(1) - 1 - 5 * 9));
  at::Tensor e = generate::embed_with_contexts(*m, in, emb, 5);
  // Slot layout: passage j's rows start after <s> at 1 + j * (n + 1).
  for (int64_t j = 0; j < 5; ++j) {
    EXPECT_TRUE(e[0].narrow(0, 1 + j * 9, 8).equal(emb[j]));
    EXPECT_EQ(in.input_ids[0][1 + j * 9 + 8].item<int64_t>(), m->sep_id());
  }
  generate::Answers b = generate::generate_answers(*m, e, in.attention_mask, so);
  EXPECT_TRUE(a.generation.tokens.equal(b.generation.tokens));
  // Another number of passages than generation_top_k works (with a warning).
  generate::AnswerResult c = generate::answer(*m, t.questions[0], emb.narrow(0, 0, 3), so);
  EXPECT_EQ(c.generation.tokens.size(0), 1);
}

TEST(Cocom, WithoutSepThePromptHasNoSeparators) {
  // The published x4 model has sep = false: slots of passage j start at 1 + j * n.
  std::string dir = copy_checkpoint("cocom", "nosep");
  Json c = read_json_file(dir + "/config.json");
  c["sep"] = false;
  write_json_file(dir + "/config.json", c);
  auto m = CocomModel::load(dir);
  GoldenText t = golden_text("cocom");
  generate::TextGenerationOptions opt;
  opt.sampling.max_new_tokens = 4;
  opt.context_max_length = t.context_max_length;
  generate::TextGeneration r = generate::generate_from_text(*m, t.contexts, t.questions, opt);
  const int64_t n = r.encoder.mem_per_passage;
  // Hand-built ids: <s>, 5 * n <MEM>, then the question part of the golden sep=true prompt.
  auto g = golden("cocom");
  at::Tensor gold = g["dec_input_ids"][0];
  const int64_t tail = gold.size(0) - (1 + 5 * (n + 1));
  std::vector<int64_t> expect = {1};
  for (int64_t i = 0; i < 5 * n; ++i) expect.push_back(1000);
  for (int64_t i = 0; i < tail; ++i) expect.push_back(gold[1 + 5 * (n + 1) + i].item<int64_t>());
  at::Tensor row = r.decoder.input_ids[0];
  const int64_t pad = row.size(0) - int64_t(expect.size());
  ASSERT_GE(pad, 0);
  for (size_t i = 0; i < expect.size(); ++i) {
    EXPECT_EQ(row[pad + int64_t(i)].item<int64_t>(), expect[i]) << i;
  }
  EXPECT_EQ((row == 1003).sum().item<int64_t>(), 0);
  for (int64_t j = 0; j < 5; ++j) {
    EXPECT_TRUE(r.decoder_embeds[0].narrow(0, pad + 1 + j * n, n).equal(r.compressed[j]));
  }
}

TEST(Cocom, LongPassagesAreTruncated) {
  auto m = CocomModel::load(fx("cocom"));
  std::string longp;
  for (int i = 0; i < 200; ++i) longp += "The license is free. ";
  compress::EncoderInputs in =
      compress::encoder_inputs(*m, {longp, "short"}, 32, compress::Padding::MaxLength);
  EXPECT_EQ(in.truncated, 1);
  EXPECT_EQ(in.mem_per_passage, 8);
  EXPECT_EQ(in.input_ids.size(1), 32 + 8);
  // Right truncation cuts the closing </s>, as the reference does.
  EXPECT_NE(in.input_ids[0][31].item<int64_t>(), 2);
}

TEST(Cocom, ShardedCheckpointGivesTheSameEmbeddings) {
  std::string dir = copy_checkpoint("cocom", "sharded");
  NamedTensors t = read_all_tensors(dir + "/model.safetensors");
  fs::remove(dir + "/model.safetensors");
  NamedTensors a(t.begin(), t.begin() + t.size() / 3), b(t.begin() + t.size() / 3, t.end());
  write_tensors(dir + "/model-00001-of-00002.safetensors", a, DType::BF16);
  write_tensors(dir + "/model-00002-of-00002.safetensors", b, DType::BF16);
  Json idx;
  for (auto& [n, _] : a) idx["weight_map"][n] = "model-00001-of-00002.safetensors";
  for (auto& [n, _] : b) idx["weight_map"][n] = "model-00002-of-00002.safetensors";
  write_json_file(dir + "/model.safetensors.index.json", idx);
  GoldenText g = golden_text("cocom");
  auto x = compress::compress_passages(*CocomModel::load(dir), g.contexts[0], 32);
  auto y = compress::compress_passages(*CocomModel::load(fx("cocom")), g.contexts[0], 32);
  EXPECT_TRUE(x.equal(y));
}

TEST(CocomTokenizers, ResolvedFromFlagAndHuggingFaceCache) {
  std::string dir = copy_checkpoint("cocom", "resolve");
  const std::string base = dir + "/base_decoder";
  // Rename the base model so only the flag or the cache can find it.
  Json c = read_json_file(dir + "/config.json");
  c["decoder_model_name"] = "someorg/some-decoder";
  write_json_file(dir + "/config.json", c);
  std::string moved = test::make_temp_dir("resolve-flag") + "/dec";
  fs::rename(base, moved);
  std::string hf = test::make_temp_dir("hfhome");
  setenv("HF_HOME", hf.c_str(), 1);
  unsetenv("HF_HUB_CACHE");
  std::string msg = error_of([&] { CocomModel::load(dir); });
  EXPECT_NE(msg.find("someorg/some-decoder"), std::string::npos) << msg;
  EXPECT_NE(msg.find(hf + "/hub/models--someorg--some-decoder/snapshots"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("--decoder-tokenizer"), std::string::npos) << msg;
  CocomLoadOptions o;
  o.decoder_tokenizer = moved;
  EXPECT_EQ(CocomModel::load(dir, o)->decoder_source(), moved);
  std::string snap = hf + "/hub/models--someorg--some-decoder/snapshots/0123abcd";
  fs::create_directories(snap);
  fs::copy(moved, snap, fs::copy_options::recursive);
  EXPECT_EQ(CocomModel::load(dir)->decoder_source(), snap);
  unsetenv("HF_HOME");
}

TEST(CocomHostile, BadCheckpointsAndInputs) {
  {  // a projection whose shape disagrees with compr_rate
    std::string dir = copy_checkpoint("cocom-light", "proj");
    Json c = read_json_file(dir + "/config.json");
    c["compr_rate"] = 8;
    write_json_file(dir + "/config.json", c);
    std::string m = error_of([&] { CocomModel::load(dir); });
    EXPECT_NE(m.find("compr.linear.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("compr_rate 8"), std::string::npos) << m;
  }
  {  // a missing LoRA half
    std::string dir = copy_checkpoint("cocom", "halflora");
    NamedTensors t = read_all_tensors(dir + "/model.safetensors");
    NamedTensors keep;
    for (auto& p : t) {
      if (p.first != "decoder.base_model.model.model.layers.1.mlp.up_proj.lora_B.default.weight")
        keep.push_back(p);
    }
    write_tensors(dir + "/model.safetensors", keep, DType::BF16);
    std::string m = error_of([&] { CocomModel::load(dir); });
    EXPECT_NE(m.find("layers.1.mlp.up_proj.lora_B.default.weight' is missing"), std::string::npos)
        << m;
  }
  {  // a tokenizer that does not belong to the checkpoint (BERT vocabulary for the decoder)
    CocomLoadOptions o;
    o.decoder_tokenizer = fx("bert/tokenizer");
    std::string m = error_of([&] { CocomModel::load(fx("cocom"), o); });
    EXPECT_NE(m.find("--decoder-tokenizer"), std::string::npos) << m;
  }
  auto m = CocomModel::load(fx("cocom"));
  generate::TextGenerationOptions opt;
  opt.sampling.max_new_tokens = 2;
  opt.context_max_length = 32;
  std::string e = error_of([&] {
    generate::generate_from_text(*m, {{"a", "b"}, {"c"}}, {"q1", "q2"}, opt);
  });
  EXPECT_NE(e.find("question 1 has 1 contexts"), std::string::npos) << e;
  e = error_of([&] { generate::generate_from_text(*m, {{"a"}}, {"  "}, opt); });
  EXPECT_NE(e.find("question 0 is empty"), std::string::npos) << e;
  e = error_of([&] { generate::generate_from_text(*m, {{"a"}}, {"q", "r"}, opt); });
  EXPECT_NE(e.find("context lists"), std::string::npos) << e;
  EXPECT_THROW(generate::answer(*m, "q", at::zeros({2, 3, 7}), opt.sampling), Error);
  // COCOM-light with passages longer than BERT's positions is a clear error, not a crash.
  auto l = CocomModel::load(fx("cocom-light"));
  e = error_of([&] { compress::compress_passages(*l, {"x"}, 128); });
  EXPECT_NE(e.find("max_position_embeddings"), std::string::npos) << e;
}

// read_torch_save on hand-assembled files: a stored zip of data.pkl and data/<key> records, the
// pickle written opcode by opcode as torch.save writes it (protocol 2).
namespace torch_save_test {

std::string le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

// A zip of stored records under "archive/"; `method` is written into every header.
std::string zip(const std::vector<std::pair<std::string, std::string>>& records, int method = 0) {
  std::string out, dir;
  for (const auto& [name, data] : records) {
    const std::string full = "archive/" + name;
    const size_t at = out.size();
    out += le(0x04034b50, 4) + le(20, 2) + le(0, 2) + le(method, 2) + le(0, 4) + le(0, 4) +
           le(data.size(), 4) + le(data.size(), 4) + le(full.size(), 2) + le(0, 2) + full + data;
    dir += le(0x02014b50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + le(method, 2) + le(0, 4) +
           le(0, 4) + le(data.size(), 4) + le(data.size(), 4) + le(full.size(), 2) + le(0, 2) +
           le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(at, 4) + full;
  }
  const size_t cd_at = out.size();
  out += dir + le(0x06054b50, 4) + le(0, 2) + le(0, 2) + le(records.size(), 2) +
         le(records.size(), 2) + le(dir.size(), 4) + le(cd_at, 4) + le(0, 2);
  return out;
}

std::string str(const std::string& s) { return "X" + le(s.size(), 4) + s; }
std::string global(const std::string& m, const std::string& n) { return "c" + m + "\n" + n + "\n"; }
std::string i1(int v) { return "K" + le(uint64_t(v), 1); }
// _rebuild_tensor_v2(storage(type, key, numel), offset, sizes, strides, False, OrderedDict())
std::string tensor(const std::string& type, const std::string& key, int numel, int offset,
                   const std::vector<int>& sizes, const std::vector<int>& strides) {
  std::string s = global("torch._utils", "_rebuild_tensor_v2") + "((" + str("storage") +
                  global("torch", type) + str(key) + str("cpu") + i1(numel) + "tQ" + i1(offset);
  s += "(";
  for (int v : sizes) s += i1(v);
  s += "t(";
  for (int v : strides) s += i1(v);
  s += "t\x89" + global("collections", "OrderedDict") + ")RtR";
  return s;
}
std::string pickle(const std::string& body) { return std::string("\x80\x02", 2) + body + "."; }

std::string write(const std::string& name, const std::string& bytes) {
  const std::string path = test::make_temp_dir("torch-save") + "/" + name;
  test::write_bytes(path, bytes);
  return path;
}

}  // namespace torch_save_test

TEST(TorchSave, ReadsStateDictsAsTorchSaveWritesThem) {
  using namespace torch_save_test;
  // bf16 0x3f80 = 1.0, 0x4000 = 2.0, 0xc040 = -3.0, 0x3f00 = 0.5, 0x4080 = 4.0, 0x0000 = 0.
  const std::string bf16 =
      le(0x3f80, 2) + le(0x4000, 2) + le(0xc040, 2) + le(0x3f00, 2) + le(0x4080, 2) + le(0x0000, 2);
  // {'outer': {'w': [2,3] tensor, 'wt': its transpose (strides 1,3 of the same storage),
  //            'tail': 2 values from offset 4}}, 'n': int64 [7, -1]} with SETITEM (a
  // one-entry dict, which libtorch's own unpickler refuses) and SETITEMS, memo puts and gets.
  const std::string inner = "}q\x01(" + str("w") + "q\x02" +
                            tensor("BFloat16Storage", "0", 6, 0, {2, 3}, {3, 1}) + str("wt") +
                            tensor("BFloat16Storage", "0", 6, 0, {3, 2}, {1, 3}) + str("tail") +
                            tensor("BFloat16Storage", "0", 6, 4, {2}, {1}) + "u";
  const std::string body = std::string("}q\0(", 4) + str("outer") + inner + str("n") +
                           tensor("LongStorage", "1", 2, 0, {2}, {1}) + "u";
  const std::string path = write("sd.pth", zip({{"data.pkl", pickle(body)},
                                                {"data/0", bf16},
                                                {"data/1", le(7, 8) + le(uint64_t(-1), 8)},
                                                {"version", "3\n"}}));
  const auto sd = model::read_torch_save(path);
  ASSERT_EQ(sd.size(), 4u);
  const at::Tensor w = sd.at("outer/w"), wt = sd.at("outer/wt"), tail = sd.at("outer/tail");
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_EQ(w.sizes(), at::IntArrayRef({2, 3}));
  const std::vector<float> wv(w.data_ptr<float>(), w.data_ptr<float>() + 6);
  EXPECT_EQ(wv, (std::vector<float>{1, 2, -3, 0.5, 4, 0}));
  EXPECT_TRUE(wt.equal(w.t()));
  EXPECT_EQ(tail[0].item<float>(), 4.0f);
  EXPECT_EQ(tail[1].item<float>(), 0.0f);
  const at::Tensor n = sd.at("n");
  EXPECT_EQ(n.scalar_type(), at::kLong);
  EXPECT_EQ(n[0].item<int64_t>(), 7);
  EXPECT_EQ(n[1].item<int64_t>(), -1);

  // One entry through SETITEM, and the TorchScript pickler's restore_type_tag wrapper.
  const std::string one = global("torch.jit._pickle", "restore_type_tag") + std::string("q\0}", 3) +
                          str("x") + tensor("FloatStorage", "0", 1, 0, {}, {}) + "s" +
                          str("Dict[str, Tensor]") + "\x86R";
  const auto sd1 = model::read_torch_save(
      write("one.pth", zip({{"data.pkl", pickle(one)}, {"data/0", le(0x40490fdb, 4)}})));
  ASSERT_EQ(sd1.count("x"), 1u);
  EXPECT_FLOAT_EQ(sd1.at("x").item<float>(), 3.14159274f);
}

TEST(TorchSave, HostileFilesAreRefusedByName) {
  using namespace torch_save_test;
  const std::string w = tensor("FloatStorage", "0", 2, 0, {2}, {1});
  const std::string good_pickle = pickle("}" + str("w") + w + "s");
  const std::string data = le(0, 4) + le(0, 4);
  auto error_for = [&](const std::string& bytes) {
    return error_of([&] { model::read_torch_save(write("bad.pth", bytes)); });
  };
  const std::string good = zip({{"data.pkl", good_pickle}, {"data/0", data}});
  EXPECT_EQ(model::read_torch_save(write("good.pth", good)).size(), 1u);
  std::string deep;
  for (int i = 0; i < 40; ++i) deep += "]";
  for (int i = 0; i < 39; ++i) deep += "a";
  std::string marks((size_t{1} << 20) + 1, '(');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {good.substr(0, good.size() / 2), "not a readable torch.save file"},
      {"", "too short"},
      {zip({{"data.pkl", good_pickle}, {"data/0", data}}, 8), "is compressed"},
      {zip({{"data/0", data}}), "no data.pkl"},
      {zip({{"data.pkl", good_pickle}}), "no record data/0"},
      {zip({{"data.pkl", good_pickle}, {"data/0", le(0, 4)}}), "reaches past its stored data"},
      {zip({{"data.pkl",
             pickle("}" + str("w") + tensor("FloatStorage", "0", 2, 1, {2}, {1}) + "s")},
            {"data/0", data}}),
       "reaches past its stored data"},
      {zip({{"data.pkl", pickle(global("os", "system") + "(" + str("true") + "tR")}}),
       "unsupported global 'os system'"},
      {zip({{"data.pkl", pickle("}" + str("w") + w + "s")}, {"data/0", data}, {"data/0", data}}),
       "appears twice"},
      {zip({{"data.pkl", pickle(deep)}}), "nested more than"},
      {zip({{"data.pkl", pickle("h\x05")}}), "memo entry 5 was never stored"},
      {zip({{"data.pkl", pickle("}" + i1(1) + i1(2) + "s")}}), "not a string"},
      {zip({{"data.pkl", pickle("\xff")}}), "unsupported pickle opcode 0xff"},
      {zip({{"data.pkl", std::string("\x80\x02}", 3)}}), "truncated pickle"},
      {zip({{"data.pkl", pickle(marks)}}), "more than 1048576"},
      {zip({{"data.pkl", pickle(str("w"))}}), "entry '' is a str"},
      {zip({{"data.pkl", pickle("}" + str("w") + global("torch", "SecretStorage") + "s")}}),
       "entry 'w' is a global"},
  };
  for (const auto& [bytes, expected] : cases) {
    const std::string e = error_for(bytes);
    EXPECT_NE(e.find(expected), std::string::npos) << "expected '" << expected << "', got: " << e;
  }
}
