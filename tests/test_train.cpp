// COCOM training: batch format and label masking (by hand), the trainable forward against the
// inference runtime, loss going down for each objective, exact resumption, saving in the
// layout the loader reads, the frozen-decoder ablation, skipped non-finite steps, held-out
// evaluation, the device and bf16 autocast options, the CLI.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "compress/compressor.h"
#include "generate/cocom_generate.h"
#include "model/checkpoint_io.h"
#include "model/cocom.h"
#include "model/weights.h"
#include "test_util.h"
#include "train/examples.h"
#include "train/trainable_cocom.h"
#include "train/trainer.h"

using namespace cocom;
namespace fs = std::filesystem;

namespace {

std::vector<int64_t> row(const at::Tensor& t, int64_t i) {
  at::Tensor r = t[i].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

constexpr int64_t X = train::kIgnoreIndex;

struct HandFormat {
  std::unique_ptr<model::Tokenizer> tok;
  train::ExampleFormat f;
  HandFormat() {
    tok = model::load_tokenizer(test::fixtures_dir() + "/tokenizer/llama_cocom");
    f.tokens.tokenizer = tok.get();
    f.tokens.mem = 1000;
    f.tokens.ae = 1001;
    f.tokens.enc = 1002;
    f.tokens.sep = 1003;
    f.tokens.use_sep = true;
    f.compr_rate = 4;
    f.context_max_length = 8;  // n = 2 <MEM> slots
  }
};

// Ids of the fixture tokenizer, written out by hand (checked with `cocom tokenize`):
// "Paris is big." = 331 287 270 330 296 537 948; "The cat sat on the mat" =
// 560 271 284 283 284 372 265 285 284; <s> 1, </s> 2, <MEM> 1000, <AE> 1001, <ENC> 1002.
const std::vector<int64_t> kParis = {331, 287, 270, 330, 296, 537, 948};
const std::vector<int64_t> kCat = {560, 271, 284, 283, 284, 372, 265, 285, 284};

std::vector<int64_t> cat(std::initializer_list<std::vector<int64_t>> parts) {
  std::vector<int64_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(TrainExamples, AutoEncodingByHand) {
  HandFormat h;
  ASSERT_EQ(h.tok->pad_id(), 1);
  train::TrainBatch b =
      train::make_autoencoding_batch(h.f, {"Paris is big.", "The cat sat on the mat"});
  EXPECT_EQ(b.mem_per_passage, 2);
  // Encoder: <ENC><s> text </s>, left-padded with <s> to 8 + 3, then two <MEM>.
  EXPECT_EQ(row(b.enc_input_ids, 0), cat({{1, 1002, 1}, kParis, {2, 1000, 1000}}));
  EXPECT_EQ(row(b.enc_attention_mask, 0),
            std::vector<int64_t>({0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
  // The longer passage loses its </s> to truncation at 11.
  EXPECT_EQ(row(b.enc_input_ids, 1), cat({{1002, 1}, kCat, {1000, 1000}}));
  // Decoder: <AE><s><MEM><MEM> text </s>, left-padded to 3 + 2 + 8 = 13.
  EXPECT_EQ(row(b.dec_input_ids, 0), cat({{1, 1001, 1, 1000, 1000}, kParis, {2}}));
  EXPECT_EQ(row(b.dec_attention_mask, 0),
            std::vector<int64_t>({0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(row(b.labels, 0), cat({{X, X, X, X, X}, kParis, {2}}));
  EXPECT_EQ(row(b.dec_input_ids, 1), cat({{1001, 1, 1000, 1000}, kCat}));
  EXPECT_EQ(row(b.labels, 1), cat({{X, X, X, X}, kCat}));
  EXPECT_EQ(b.labelled(), 8 + 9);
}

TEST(TrainExamples, ContinuationByHand) {
  HandFormat h;
  train::TrainBatch b =
      train::make_continuation_batch(h.f, {"Paris is big."}, {"The cat sat on the mat"});
  EXPECT_EQ(row(b.enc_input_ids, 0), cat({{1, 1002, 1}, kParis, {2, 1000, 1000}}));
  // Tokenized with special tokens (<s><s>...), truncated to 13 on the right: </s> is cut.
  EXPECT_EQ(row(b.dec_input_ids, 0), cat({{1, 1, 1000, 1000}, kCat}));
  EXPECT_EQ(row(b.labels, 0), cat({{X, X, X, X}, kCat}));
}

TEST(TrainExamples, QAByHand) {
  HandFormat h;
  h.f.context_max_length = 8;
  train::QAExample e1{"Where is it?", "Paris", {"Paris is big."}};
  train::QAExample e2{"Where is it?", "Paris is big.", {"The cat sat on the mat"}};
  train::TrainBatch b = train::make_qa_batch(h.f, {e1, e2}, 1);
  // '<s><MEM><MEM><SEP>[INST]Where is it?\n[/INST]\n'
  const std::vector<int64_t> prompt = {1,   1000, 1000, 1003, 925, 94,  548, 953, 951, 96, 974, 636,
                                       330, 344,  66,   13,   94,  985, 548, 953, 951, 96, 13};
  // The answer after '\n' has no leading '▁': 'P' 'ar' 'is' ...
  const std::vector<int64_t> paris = {960, 287, 270};
  const std::vector<int64_t> paris_big = {960, 287, 270, 330, 296, 537, 948};
  EXPECT_EQ(row(b.dec_input_ids, 0), cat({{1, 1, 1, 1}, prompt, paris, {2}}));
  EXPECT_EQ(row(b.dec_attention_mask, 0),
            cat({{0, 0, 0, 0}, std::vector<int64_t>(prompt.size() + 4, 1)}));
  EXPECT_EQ(row(b.labels, 0), cat({std::vector<int64_t>(4 + prompt.size(), X), paris, {2}}));
  EXPECT_EQ(row(b.dec_input_ids, 1), cat({prompt, paris_big, {2}}));
  EXPECT_EQ(row(b.labels, 1), cat({std::vector<int64_t>(prompt.size(), X), paris_big, {2}}));
  EXPECT_EQ(b.enc_input_ids.size(0), 2);
  // Too few contexts is an error naming the example.
  EXPECT_THROW(train::make_qa_batch(h.f, {e1}, 2), Error);
}

TEST(TrainExamples, ContinuationSplit) {
  HandFormat h;
  auto [a, b] = train::split_for_continuation(h.f, "The cat sat on the mat");  // 9 tokens > 8
  EXPECT_EQ(h.tok->encode(a, false), std::vector<int64_t>(kCat.begin(), kCat.begin() + 8));
  EXPECT_EQ(h.tok->encode(b, false).size(), 1u);
  auto [c, d] = train::split_for_continuation(h.f, "Paris is big.");  // 7 tokens: cut at 3
  EXPECT_EQ(h.tok->encode(c, false), std::vector<int64_t>(kParis.begin(), kParis.begin() + 3));
}

// ---------------------------------------------------------------------------------------------

std::string cocom_dir() { return test::fixtures_dir() + "/cocom"; }
std::string light_dir() { return test::fixtures_dir() + "/cocom-light"; }
std::string pisco_dir() { return test::fixtures_dir() + "/pisco-hub"; }

const std::vector<std::string> kPassages = {
    "The Eiffel Tower is in Paris, the capital of France.",
    "Water boils at one hundred degrees at sea level.",
    "The cat sat on the mat and looked at the door.",
    "Mount Everest is the highest mountain above sea level.",
};

std::string write_pretrain_data(const std::string& dir) {
  std::string p = dir + "/pretrain.jsonl";
  std::ofstream o(p);
  for (const auto& t : kPassages) o << Json{{"text", t}}.dump() << "\n";
  return p;
}

std::string write_qa_data(const std::string& dir) {
  std::string p = dir + "/qa.jsonl";
  std::ofstream o(p);
  o << Json{{"question", "Where is the Eiffel Tower?"},
            {"answers", {"Paris"}},
            {"contexts", {kPassages[0], kPassages[1]}}}
           .dump()
    << "\n";
  o << Json{{"question", "When does water boil?"},
            {"answers", {"at 100 degrees"}},
            {"contexts", {kPassages[1], kPassages[2]}}}
           .dump()
    << "\n";
  o << Json{{"question", "What is the highest mountain?"},
            {"answers", {"Everest"}},
            {"contexts", {kPassages[3], kPassages[0]}}}
           .dump()
    << "\n";
  return p;
}

train::TrainOptions tiny_options(const std::string& model, const std::string& data,
                                 const std::string& out) {
  train::TrainOptions o;
  o.model = model;
  o.data = data;
  o.out = out;
  o.lora_r = 4;
  o.lr = 5e-3;
  o.warmup_ratio = 0;
  o.max_steps = 8;
  o.batch_size = 4;
  o.context_max_length = 32;  // the fixtures' context length (BERT has 64 positions)
  o.passages_per_question = 2;
  o.seed = 7;
  return o;
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

// The trainable forward (adapters kept apart, eval mode) equals the inference runtime (LoRA
// merged at load).
void check_matches_runtime(const std::string& dir) {
  auto rt = model::CocomModel::load(dir);
  train::TrainableOptions to;
  to.lora_r = 4;  // the fixture's rank: its adapters are kept, not merged
  auto tm = train::TrainableCocom::load(dir, to);
  tm->set_training(false);
  ASSERT_TRUE(tm->has_lora());
  at::NoGradGuard ng;
  auto enc = compress::encoder_inputs(*rt, kPassages, 32, compress::Padding::MaxLength);
  at::Tensor want = compress::compress(*rt, enc);
  at::Tensor got = tm->compress(enc.input_ids, enc.attention_mask, enc.mem_per_passage);
  EXPECT_LT(max_rel_diff(got, want), 2e-5) << dir;

  auto dec = generate::decoder_prompts(*rt, {"Where is it?", "Why?"}, 2, enc.mem_per_passage);
  at::Tensor embeds = generate::embed_with_contexts(*rt, dec, want, 2);
  at::Tensor pos = model::MistralModel::arange_positions(dec.attention_mask);
  at::Tensor want_logits = rt->decoder().forward_embeds(embeds, dec.attention_mask, pos).logits;
  at::Tensor mine = tm->embed_with_memory(dec.input_ids, got);
  at::Tensor got_logits = tm->lm_logits(tm->decoder_hidden(mine, dec.attention_mask, pos));
  at::Tensor valid = dec.attention_mask.to(at::kBool);
  EXPECT_LT(max_rel_diff(got_logits.index({valid}), want_logits.index({valid})), 2e-5) << dir;
}

TEST(TrainableCocom, MatchesRuntimeDecoderCompressor) { check_matches_runtime(cocom_dir()); }
TEST(TrainableCocom, MatchesRuntimeLight) { check_matches_runtime(light_dir()); }
// PISCO: the runtime merges decoder_adapter and compresses with encoder_adapter on the fly (as
// a difference); the trainer applies each adapter alone on the unmerged base weights.
TEST(TrainableCocom, MatchesRuntimePisco) { check_matches_runtime(pisco_dir()); }
TEST(TrainableCocom, MatchesRuntimePiscoSingleAdapter) {
  check_matches_runtime(pisco_dir() + "/single_adapter");
}

// The trainer trains the inference model's own tensors (stacked q/k/v and gate/up matrices):
// saved with the adapters apart, the checkpoint holds exactly the tensors it was loaded from,
// under the same names (bf16 in the fixture, widened exactly to fp32 on both sides).
void check_round_trip(const std::string& dir) {
  train::TrainableOptions to;
  to.lora_r = 4;  // the fixture's rank: its adapters are kept
  auto tm = train::TrainableCocom::load(dir, to);
  const std::string out = test::make_temp_dir("train-roundtrip");
  tm->save(out, /*merge_lora=*/false);
  std::map<std::string, at::Tensor> want, got;
  for (auto& [n, t] : model::read_all_tensors(dir + "/model.safetensors")) {
    if (t.is_floating_point()) want[n] = t;  // BERT's integer position_ids buffer is not kept
  }
  for (auto& [n, t] : model::read_all_tensors(out + "/model.safetensors")) got[n] = t;
  ASSERT_EQ(got.size(), want.size()) << dir;
  for (const auto& [n, t] : want) {
    ASSERT_TRUE(got.count(n)) << dir << ": " << n << " not saved";
    EXPECT_TRUE(at::equal(got[n], t)) << dir << ": " << n;
  }
}

TEST(TrainableCocom, SavesExactlyWhatItLoadedDecoderCompressor) { check_round_trip(cocom_dir()); }
TEST(TrainableCocom, SavesExactlyWhatItLoadedLight) { check_round_trip(light_dir()); }

// Gradients through the shared forward: the autograd gradient of the loss with respect to a
// fresh adapter's B (zero at start, so only the adapter path can move the loss) matches a
// central finite difference along a random direction; with full-parameter training every
// stacked matrix gets a finite gradient in each of its parts.
TEST(TrainableCocom, GradientsFlowThroughTheInferenceForward) {
  train::TrainableOptions to;
  to.lora_r = 2;  // not the fixture's rank: its adapters are merged, fresh ones made
  to.seed = 3;
  auto tm = train::TrainableCocom::load(cocom_dir(), to);
  tm->set_training(false);  // no dropout: the loss is a function of the weights alone
  train::TrainBatch b =
      train::make_autoencoding_batch(tm->example_format(32), {kPassages[0], kPassages[1]});
  at::Tensor B;
  for (const auto& [n, t] : tm->trainable_parameters()) {
    if (n == "decoder.model.layers.0.self_attn.q_proj.lora_B") B = t;
  }
  ASSERT_TRUE(B.defined());
  ASSERT_EQ(B.abs().max().item<double>(), 0.0);
  at::Tensor loss = tm->loss(b).loss;
  loss.backward();
  ASSERT_TRUE(B.grad().defined());
  at::Tensor g = B.grad().clone();
  ASSERT_GT(g.abs().max().item<double>(), 0.0);
  at::Tensor dir = at::randn(B.sizes(), at::TensorOptions().dtype(at::kFloat));
  const double eps = 1e-2, analytic = (g * dir).sum().item<double>();
  double fd = 0;
  {
    at::NoGradGuard ng;
    B.add_(dir, eps);
    const double up = tm->loss(b).loss.item<double>();
    B.add_(dir, -2 * eps);
    const double down = tm->loss(b).loss.item<double>();
    B.add_(dir, eps);
    fd = (up - down) / (2 * eps);
  }
  EXPECT_NEAR(fd, analytic, 0.02 * std::abs(analytic) + 1e-4);

  to.lora_r = 0;  // full-parameter
  auto full = train::TrainableCocom::load(cocom_dir(), to);
  full->set_training(false);
  full->loss(b).loss.backward();
  int stacked = 0;
  for (const auto& [n, t] : full->trainable_parameters()) {
    ASSERT_TRUE(t.grad().defined()) << n;
    EXPECT_TRUE(at::isfinite(t.grad()).all().item<bool>()) << n;
    if (n.find("qkv_proj") != std::string::npos || n.find("gate_up_proj") != std::string::npos) {
      ++stacked;
      // Every part of the stack (q, k, v / gate, up) is used by the forward.
      const int64_t parts = n.find("qkv_proj") != std::string::npos ? 3 : 2;
      const int64_t rows = t.size(0);
      const int64_t nq =
          full->decoder_config().num_attention_heads * full->decoder_config().head_dim;
      for (int64_t p = 0; p < parts; ++p) {
        const int64_t from =
            parts == 2 ? p * rows / 2 : (p == 0 ? 0 : nq + (p - 1) * (rows - nq) / 2);
        const int64_t len = parts == 2 ? rows / 2 : (p == 0 ? nq : (rows - nq) / 2);
        EXPECT_GT(t.grad().narrow(0, from, len).abs().max().item<double>(), 0.0)
            << n << " part " << p;
      }
    }
  }
  EXPECT_EQ(stacked, 2 * full->decoder_config().num_hidden_layers);
}

double mean(const std::vector<double>& v, size_t from, size_t n) {
  double s = 0;
  for (size_t i = from; i < from + n; ++i) s += v[i];
  return s / double(n);
}

std::vector<double> losses_of(train::Trainer& t) {
  std::vector<double> out;
  while (!t.done()) out.push_back(t.train_step().loss);
  return out;
}

void expect_loss_decreases(train::TrainOptions o, const char* what) {
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  std::vector<double> l = losses_of(*t);
  ASSERT_EQ(l.size(), 8u);
  for (double v : l) ASSERT_TRUE(std::isfinite(v)) << what;
  EXPECT_LT(mean(l, 6, 2), 0.8 * mean(l, 0, 2))
      << what << ": first " << l.front() << " last " << l.back();
}

TEST(Trainer, LossDecreasesAutoEncoding) {
  std::string tmp = test::make_temp_dir("train_ae");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.tc_ratio = 0;
  expect_loss_decreases(o, "AE");
  fs::remove_all(tmp);
}

TEST(Trainer, LossDecreasesTextContinuation) {
  std::string tmp = test::make_temp_dir("train_tc");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.tc_ratio = 1;
  expect_loss_decreases(o, "TC");
  fs::remove_all(tmp);
}

TEST(Trainer, LossDecreasesQA) {
  std::string tmp = test::make_temp_dir("train_qa");
  auto o = tiny_options(cocom_dir(), write_qa_data(tmp), tmp + "/out");
  o.task = train::Task::Finetune;
  o.batch_size = 3;
  expect_loss_decreases(o, "QA");
  fs::remove_all(tmp);
}

TEST(Trainer, LossDecreasesLightFullParameter) {
  std::string tmp = test::make_temp_dir("train_light");
  auto o = tiny_options(light_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.lora_r = 0;  // full-parameter decoder + BERT + projection
  o.lr = 1e-3;
  expect_loss_decreases(o, "light full-parameter");
  fs::remove_all(tmp);
}

TEST(Trainer, WarmupAndLinearDecay) {
  std::string tmp = test::make_temp_dir("train_lr");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.max_steps = 10;
  o.warmup_ratio = 0.2;  // 2 warm-up steps
  o.lr = 1.0;
  auto t = train::Trainer::create(o);
  EXPECT_DOUBLE_EQ(t->lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(t->lr_at(1), 0.5);
  EXPECT_DOUBLE_EQ(t->lr_at(2), 1.0);
  EXPECT_DOUBLE_EQ(t->lr_at(6), 0.5);
  EXPECT_DOUBLE_EQ(t->lr_at(10), 0.0);
  fs::remove_all(tmp);
}

// N + M steps straight equal N steps, a checkpoint, a resume and M steps: same losses, same
// weights, bit for bit (dropout, AE/TC mix, accumulation and an epoch boundary included).
TEST(Trainer, ResumeIsBitIdentical) {
  std::string tmp = test::make_temp_dir("train_resume");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.batch_size = 3;
  o.grad_accum = 2;
  o.max_steps = 5;
  o.warmup_ratio = 0.4;
  auto straight = train::Trainer::create(o);
  straight->log = [](const std::string&) {};
  std::vector<double> a = losses_of(*straight);

  auto first = train::Trainer::create(o);
  first->log = [](const std::string&) {};
  std::vector<double> b;
  for (int i = 0; i < 2; ++i) b.push_back(first->train_step().loss);
  const std::string ck = tmp + "/ck";
  first->save_checkpoint(ck);
  first->save_checkpoint(ck);  // replacing an existing checkpoint works
  EXPECT_FALSE(fs::exists(ck + ".tmp"));
  first.reset();
  auto resumed = train::Trainer::resume(ck);
  resumed->log = [](const std::string&) {};
  EXPECT_EQ(resumed->step(), 2);
  for (double v : losses_of(*resumed)) b.push_back(v);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i;
  const auto& pa = straight->model().trainable_parameters();
  const auto& pb = resumed->model().trainable_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(at::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
  fs::remove_all(tmp);
}

// A trained model saved in the reference layout loads through CocomModel::load, computes what
// the trainer computes, and generates; merged LoRA gives the same numbers.
TEST(Trainer, SavedModelReloadsAndGenerates) {
  std::string tmp = test::make_temp_dir("train_save");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.max_steps = 2;
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  losses_of(*t);
  t->save_model(tmp + "/separate");
  o.merge_lora = true;
  auto& tm = t->model();
  tm.save(tmp + "/merged", /*merge_lora=*/true);
  tm.set_training(false);
  for (const std::string& dir : {tmp + "/separate", tmp + "/merged"}) {
    auto rt = model::CocomModel::load(dir);
    EXPECT_EQ(rt->config().lora, dir == tmp + "/separate");
    at::NoGradGuard ng;
    auto enc = compress::encoder_inputs(*rt, kPassages, 32, compress::Padding::MaxLength);
    at::Tensor want = compress::compress(*rt, enc);
    at::Tensor got = tm.compress(enc.input_ids, enc.attention_mask, enc.mem_per_passage);
    EXPECT_LT(max_rel_diff(got, want), 2e-5) << dir;
    auto dec =
        generate::decoder_prompts(*rt, {"Where is the tower?", "Why?"}, 2, enc.mem_per_passage);
    at::Tensor embeds = generate::embed_with_contexts(*rt, dec, want, 2);
    model::SamplingOptions so;
    so.max_new_tokens = 4;
    auto ans = generate::generate_answers(*rt, embeds, dec.attention_mask, so);
    EXPECT_EQ(ans.generation.tokens.size(0), 2);
    EXPECT_EQ(ans.texts.size(), 2u);
  }
  // The trained weights differ from the starting checkpoint's.
  auto start = model::CocomModel::load(cocom_dir());
  auto trained = model::CocomModel::load(tmp + "/separate");
  at::NoGradGuard ng;
  auto enc = compress::encoder_inputs(*start, kPassages, 32, compress::Padding::MaxLength);
  EXPECT_GT(max_rel_diff(compress::compress(*trained, enc), compress::compress(*start, enc)), 1e-4);
  fs::remove_all(tmp);
}

// PISCO fine-tuning trains both published adapters (decoding and compression), saves the
// published layout (adapters.pth, decoder_first_last_layers.pth, base_decoder/ unchanged),
// which the runtime loads and which computes what the trainer computes; resuming from a
// checkpoint is bit-identical.
TEST(Trainer, PiscoFinetunesBothAdaptersAndSavesThePublishedLayout) {
  std::string tmp = test::make_temp_dir("train_pisco");
  auto o = tiny_options(pisco_dir(), write_qa_data(tmp), tmp + "/out");
  o.task = train::Task::Finetune;
  o.batch_size = 3;
  expect_loss_decreases(o, "PISCO QA");

  o.max_steps = 4;
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  std::vector<double> straight;
  for (int i = 0; i < 2; ++i) straight.push_back(t->train_step().loss);
  t->save_checkpoint(tmp + "/ck");
  for (int i = 0; i < 2; ++i) straight.push_back(t->train_step().loss);
  auto resumed = train::Trainer::resume(tmp + "/ck");
  resumed->log = [](const std::string&) {};
  std::vector<double> again(straight.begin(), straight.begin() + 2);
  for (double v : losses_of(*resumed)) again.push_back(v);
  EXPECT_EQ(again, straight);

  t->save_model(tmp + "/saved");
  for (const char* f : {"config.json", "adapters.pth", "decoder_first_last_layers.pth",
                        "base_decoder/model.safetensors", "base_decoder/tokenizer.model"}) {
    EXPECT_TRUE(fs::exists(tmp + "/saved/" + f)) << f;
  }
  EXPECT_FALSE(fs::exists(tmp + "/saved/model.safetensors"));
  // Both adapters moved; the embedding and lm_head rows (frozen) did not.
  const auto before = model::read_torch_save(pisco_dir() + "/adapters.pth");
  const auto after = model::read_torch_save(tmp + "/saved/adapters.pth");
  ASSERT_EQ(before.size(), after.size());
  int moved_dec = 0, moved_enc = 0;
  for (const auto& [name, w] : before) {
    ASSERT_TRUE(after.count(name)) << name;
    ASSERT_EQ(after.at(name).sizes(), w.sizes()) << name;
    if (!at::equal(after.at(name), w))
      ++(name.rfind("decoder_adapter/", 0) == 0 ? moved_dec : moved_enc);
  }
  EXPECT_GT(moved_dec, 0);
  EXPECT_GT(moved_enc, 0);
  const auto fl0 = model::read_torch_save(pisco_dir() + "/decoder_first_last_layers.pth");
  const auto fl1 = model::read_torch_save(tmp + "/saved/decoder_first_last_layers.pth");
  for (const auto& [name, w] : fl0) EXPECT_TRUE(at::equal(fl1.at(name), w)) << name;

  auto& tm = t->model();
  tm.set_training(false);
  auto rt = model::CocomModel::load(tmp + "/saved");
  ASSERT_TRUE(rt->config().pisco);
  at::NoGradGuard ng;
  auto enc = compress::encoder_inputs(*rt, kPassages, 32, compress::Padding::MaxLength);
  at::Tensor want = compress::compress(*rt, enc);
  at::Tensor got = tm.compress(enc.input_ids, enc.attention_mask, enc.mem_per_passage);
  EXPECT_LT(max_rel_diff(got, want), 2e-5);
  auto start = model::CocomModel::load(pisco_dir());
  EXPECT_GT(max_rel_diff(want, compress::compress(*start, enc)), 1e-4);
  auto dec = generate::decoder_prompts(*rt, {"Where is the tower?"}, 2, enc.mem_per_passage);
  model::SamplingOptions so;
  so.max_new_tokens = 3;
  auto ans = generate::generate_answers(
      *rt, generate::embed_with_contexts(*rt, dec, want.narrow(0, 0, 2), 2), dec.attention_mask,
      so);
  EXPECT_EQ(ans.texts.size(), 1u);

  // Merging is refused by name; full-parameter training too.
  EXPECT_NE(
      test::error_of([&] { tm.save(tmp + "/merged", /*merge_lora=*/true); }).find("--merge-lora"),
      std::string::npos);
  train::TrainableOptions full;
  full.lora_r = 0;
  EXPECT_NE(
      test::error_of([&] { train::TrainableCocom::load(pisco_dir(), full); }).find("--lora-r 0"),
      std::string::npos);
  fs::remove_all(tmp);
}

// End to end: auto-encoding training on two passages, saved, reloaded by the inference runtime,
// which then decodes each passage back from its context embeddings through the <AE> prompt.
TEST(Trainer, AutoEncodingLearnsToReconstruct) {
  std::string tmp = test::make_temp_dir("train_recon");
  const std::vector<std::string> passages = {kPassages[0], kPassages[2]};
  {
    std::ofstream o(tmp + "/two.jsonl");
    for (const auto& t : passages) o << Json{{"text", t}}.dump() << "\n";
  }
  auto o = tiny_options(cocom_dir(), tmp + "/two.jsonl", tmp + "/out");
  o.tc_ratio = 0;
  o.lora_r = 0;  // full-parameter
  o.lora_dropout = 0;
  o.lr = 3e-3;
  o.warmup_ratio = 0.1;
  o.max_steps = 120;
  o.batch_size = 2;
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  std::vector<double> l = losses_of(*t);
  t->save_model(o.out);
  auto rt = model::CocomModel::load(o.out);
  at::NoGradGuard ng;
  train::ExampleFormat f = t->model().example_format(o.context_max_length);
  train::TrainBatch enc;
  train::encode_passages(f, passages, &enc);
  compress::EncoderInputs in;
  in.input_ids = enc.enc_input_ids;
  in.attention_mask = enc.enc_attention_mask;
  in.mem_per_passage = enc.mem_per_passage;
  at::Tensor ctx = compress::compress(*rt, in);
  const int64_t n = enc.mem_per_passage;
  std::vector<int64_t> prompt = {rt->ae_id(), rt->decoder_tokenizer().bos_id()};
  prompt.insert(prompt.end(), size_t(n), rt->mem_id());
  for (size_t i = 0; i < passages.size(); ++i) {
    at::Tensor ids = at::tensor(prompt, at::kLong).unsqueeze(0);
    at::Tensor mask = at::ones_like(ids);
    at::Tensor embeds = rt->decoder().embed(ids).clone();
    embeds[0].narrow(0, 2, n).copy_(ctx[int64_t(i)]);
    model::SamplingOptions so;
    so.max_new_tokens = 40;
    auto ans = generate::generate_answers(*rt, embeds, mask, so);
    EXPECT_EQ(ans.texts[0], passages[i]) << "final loss " << l.back();
  }
  fs::remove_all(tmp);
}

TEST(Trainer, CompressorFormLeavesDecoderUnchanged) {
  std::string tmp = test::make_temp_dir("train_form");
  auto o = tiny_options(light_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.training_form = "compressor";
  o.max_steps = 3;
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  std::vector<std::pair<std::string, at::Tensor>> before;
  for (const auto& [n, v] : t->model().decoder_tensors()) before.push_back({n, v.clone()});
  std::vector<at::Tensor> bert_before;
  for (const auto& [n, v] : t->model().trainable_parameters()) {
    EXPECT_EQ(n.rfind("compr.", 0), 0u) << n << " is trainable";
    bert_before.push_back(v.detach().clone());
  }
  losses_of(*t);
  auto after = t->model().decoder_tensors();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(at::equal(after[i].second, before[i].second)) << after[i].first;
  }
  bool changed = false;
  const auto& params = t->model().trainable_parameters();
  for (size_t i = 0; i < params.size(); ++i)
    changed |= !at::equal(params[i].second, bert_before[i]);
  EXPECT_TRUE(changed);
  // The decoder-compressor has no separate compressor to train.
  auto o2 = tiny_options(cocom_dir(), o.data, tmp + "/out2");
  o2.training_form = "compressor";
  EXPECT_THROW(train::Trainer::create(o2), Error);
  fs::remove_all(tmp);
}

TEST(Trainer, NonFiniteGradientIsSkipped) {
  std::string tmp = test::make_temp_dir("train_nan");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.max_steps = 3;
  auto t = train::Trainer::create(o);
  std::vector<std::string> lines;
  t->log = [&](const std::string& s) { lines.push_back(s); };
  int calls = 0;
  t->after_backward = [&](const train::NamedTensorList& ps) {
    if (++calls == 2) ps[0].second.grad()[0][0] = std::nan("");
  };
  auto snapshot = [&] {
    std::vector<at::Tensor> v;
    for (const auto& [n, p] : t->model().trainable_parameters()) v.push_back(p.detach().clone());
    return v;
  };
  train::StepResult r1 = t->train_step();
  EXPECT_FALSE(r1.skipped);
  auto before = snapshot();
  train::StepResult r2 = t->train_step();
  EXPECT_TRUE(r2.skipped);
  EXPECT_FALSE(std::isfinite(r2.grad_norm));
  auto after = snapshot();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(at::equal(before[i], after[i]));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("non-finite gradient"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("skipped"), std::string::npos);
  train::StepResult r3 = t->train_step();
  EXPECT_FALSE(r3.skipped);
  EXPECT_EQ(r3.step, 3);
  fs::remove_all(tmp);
}

// ---------------------------------------------------------------------------------------------
// Held-out evaluation, devices, bf16 autocast.

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The evaluation loss is the plain mean of the per-batch losses of fixed batches built from the
// first eval_examples lines (eval mode: no dropout), each passage once as AE and once as TC.
TEST(TrainEval, PretrainLossIsMeanOfFixedBatches) {
  std::string tmp = test::make_temp_dir("train_eval_hand");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.eval_data = o.data;
  o.eval_examples = 3;  // batches {0, 1} and {2}
  o.batch_size = 2;
  o.lora_dropout = 0.3;  // would change the numbers if evaluation ran in training mode
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  t->train_step();  // LoRA B != 0, so the adapters (and their dropout) matter
  train::EvalResult r = t->evaluate();
  EXPECT_EQ(r.step, 1);
  EXPECT_EQ(r.examples, 3);
  ASSERT_TRUE(r.ae_loss && r.tc_loss);
  EXPECT_FALSE(r.qa_loss);
  ASSERT_EQ(r.ae_batch_losses.size(), 2u);
  ASSERT_EQ(r.tc_batch_losses.size(), 2u);

  // By hand.
  auto& m = t->model();
  const train::ExampleFormat f = m.example_format(o.context_max_length);
  const std::vector<std::vector<std::string>> groups = {{kPassages[0], kPassages[1]},
                                                        {kPassages[2]}};
  double ae = 0, tc = 0;
  {
    at::NoGradGuard ng;
    m.set_training(false);
    for (size_t g = 0; g < groups.size(); ++g) {
      std::vector<std::string> heads, tails;
      for (const auto& text : groups[g]) {
        auto [h, tl] = train::split_for_continuation(f, text);
        heads.push_back(h);
        tails.push_back(tl);
      }
      const double a = m.loss(train::make_autoencoding_batch(f, groups[g])).loss.item<double>();
      const double c = m.loss(train::make_continuation_batch(f, heads, tails)).loss.item<double>();
      EXPECT_EQ(r.ae_batch_losses[g], a) << "batch " << g;
      EXPECT_EQ(r.tc_batch_losses[g], c) << "batch " << g;
      ae += a / 2;
      tc += c / 2;
    }
    m.set_training(true);
  }
  EXPECT_DOUBLE_EQ(*r.ae_loss, ae);
  EXPECT_DOUBLE_EQ(*r.tc_loss, tc);
  EXPECT_NE(*r.ae_loss, *r.tc_loss);
  // Deterministic: again, the same numbers bit for bit; the model is left in training mode.
  train::EvalResult again = t->evaluate();
  EXPECT_EQ(*again.ae_loss, *r.ae_loss);
  EXPECT_EQ(*again.tc_loss, *r.tc_loss);
  EXPECT_TRUE(t->model().training());
  Json j = r.to_json();
  EXPECT_EQ(j["step"], 1);
  EXPECT_DOUBLE_EQ(j["ae_ppl"].get<double>(), std::exp(*r.ae_loss));
  EXPECT_FALSE(j.contains("qa_loss"));
  // More examples than the file has: all of them.
  o.eval_examples = 100;
  auto t2 = train::Trainer::create(o);
  t2->log = [](const std::string&) {};
  EXPECT_EQ(t2->evaluate().examples, 4);
  fs::remove_all(tmp);
}

TEST(TrainEval, FinetuneReportsAnswerLoss) {
  std::string tmp = test::make_temp_dir("train_eval_qa");
  auto o = tiny_options(cocom_dir(), write_qa_data(tmp), tmp + "/out");
  o.task = train::Task::Finetune;
  o.eval_data = o.data;
  o.eval_examples = 2;
  o.batch_size = 2;
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  train::EvalResult r = t->evaluate();
  ASSERT_TRUE(r.qa_loss);
  EXPECT_FALSE(r.ae_loss || r.tc_loss);
  ASSERT_EQ(r.qa_batch_losses.size(), 1u);
  EXPECT_GT(*r.qa_loss, 0);
  // Without held-out data there is nothing to evaluate.
  o.eval_data.clear();
  auto t2 = train::Trainer::create(o);
  EXPECT_THROW(t2->evaluate(), Error);
  o.eval_every = 2;  // needs --eval-data
  EXPECT_THROW(train::Trainer::create(o), Error);
  fs::remove_all(tmp);
}

// Evaluating between steps changes nothing in training: the same losses and weights, bit for
// bit (dropout, the AE/TC draw, accumulation and an epoch boundary included).
TEST(TrainEval, DoesNotDisturbTraining) {
  std::string tmp = test::make_temp_dir("train_eval_same");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.batch_size = 3;
  o.grad_accum = 2;
  o.max_steps = 4;
  o.lora_dropout = 0.2;
  auto plain = train::Trainer::create(o);
  plain->log = [](const std::string&) {};
  std::vector<double> a = losses_of(*plain);
  o.eval_data = o.data;
  o.eval_examples = 3;
  auto with_eval = train::Trainer::create(o);
  with_eval->log = [](const std::string&) {};
  std::vector<double> b;
  with_eval->evaluate();
  while (!with_eval->done()) {
    b.push_back(with_eval->train_step().loss);
    with_eval->evaluate();
  }
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i;
  const auto& pa = plain->model().trainable_parameters();
  const auto& pb = with_eval->model().trainable_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(at::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
  fs::remove_all(tmp);
}

// run(): an evaluation every eval_every steps and after the last, logged and appended to
// OUT/eval-log.jsonl, the last one kept in the checkpoint; the options (and the last
// evaluation) come back on resume.
TEST(TrainEval, RunLogsAndCheckpointsEvaluations) {
  std::string tmp = test::make_temp_dir("train_eval_run");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.batch_size = 2;
  o.max_steps = 5;
  o.eval_data = o.data;
  o.eval_every = 2;
  o.eval_examples = 2;
  o.save_every = 2;
  auto t = train::Trainer::create(o);
  std::vector<std::string> lines;
  t->log = [&](const std::string& s) { lines.push_back(s); };
  t->run();
  std::vector<std::string> evals;
  for (const auto& l : lines) {
    if (l.rfind("eval ", 0) == 0) evals.push_back(l);
  }
  ASSERT_EQ(evals.size(), 3u);
  EXPECT_EQ(evals[0].rfind("eval step 2/5 | ae-loss ", 0), 0u) << evals[0];
  EXPECT_NE(evals[0].find(" | tc-loss "), std::string::npos) << evals[0];
  EXPECT_NE(evals[0].find(" s"), std::string::npos) << evals[0];
  EXPECT_EQ(evals[2].rfind("eval step 5/5", 0), 0u) << evals[2];
  std::vector<std::string> log = read_lines(o.out + "/eval-log.jsonl");
  ASSERT_EQ(log.size(), 3u);
  std::vector<int64_t> steps;
  for (const auto& l : log) {
    Json j = Json::parse(l);
    steps.push_back(j["step"].get<int64_t>());
    EXPECT_TRUE(j.contains("ae_loss") && j.contains("tc_loss") && j.contains("seconds")) << l;
    EXPECT_EQ(j["examples"], 2);
  }
  EXPECT_EQ(steps, std::vector<int64_t>({2, 4, 5}));
  ASSERT_TRUE(t->last_eval());
  EXPECT_EQ(t->last_eval()->step, 5);

  // The step-4 checkpoint: its evaluation and the options.
  const std::string ck = o.out + "/checkpoints/step-4";
  Json st = read_json_file(ck + "/trainer_state.json");
  EXPECT_EQ(st["last_eval"]["step"], 4);
  EXPECT_EQ(st["dropout_generator_device"], "cpu");
  auto r = train::Trainer::resume(ck, tmp + "/out2");
  EXPECT_EQ(r->options().eval_data, o.eval_data);
  EXPECT_EQ(r->options().eval_every, 2);
  EXPECT_EQ(r->options().eval_examples, 2);
  EXPECT_FALSE(r->options().bf16);
  ASSERT_TRUE(r->last_eval());
  EXPECT_EQ(r->last_eval()->step, 4);
  EXPECT_DOUBLE_EQ(*r->last_eval()->ae_loss, Json::parse(log[1])["ae_loss"].get<double>());
  // The resumed run evaluates the same model the same way.
  EXPECT_DOUBLE_EQ(*r->evaluate().tc_loss, Json::parse(log[1])["tc_loss"].get<double>());
  r->log = [](const std::string&) {};
  r->run();
  std::vector<std::string> log2 = read_lines(tmp + "/out2/eval-log.jsonl");
  ASSERT_EQ(log2.size(), 1u);
  EXPECT_EQ(Json::parse(log2[0])["step"], 5);
  EXPECT_DOUBLE_EQ(Json::parse(log2[0])["ae_loss"].get<double>(),
                   Json::parse(log[2])["ae_loss"].get<double>());

  // eval_every = 0: only after the last step.
  o.eval_every = 0;
  o.save_every = 0;
  o.out = tmp + "/out3";
  o.max_steps = 2;
  auto t3 = train::Trainer::create(o);
  t3->log = [](const std::string&) {};
  t3->run();
  std::vector<std::string> log3 = read_lines(o.out + "/eval-log.jsonl");
  ASSERT_EQ(log3.size(), 1u);
  EXPECT_EQ(Json::parse(log3[0])["step"], 2);
  fs::remove_all(tmp);
}

TEST(TrainEval, OptionsRoundTrip) {
  train::TrainOptions o;
  o.eval_data = "/x/held-out.jsonl";
  o.eval_every = 7;
  o.eval_examples = 9;
  o.bf16 = true;
  o.device = "cuda:1";
  train::TrainOptions back = train::TrainOptions::from_json(o.to_json(), "test");
  EXPECT_EQ(back.eval_data, o.eval_data);
  EXPECT_EQ(back.eval_every, 7);
  EXPECT_EQ(back.eval_examples, 9);
  EXPECT_TRUE(back.bf16);
  EXPECT_EQ(back.device, "cuda:1");
  // Older checkpoints (no such keys) get the defaults.
  train::TrainOptions old = train::TrainOptions::from_json(Json::object(), "test");
  EXPECT_FALSE(old.bf16);
  EXPECT_EQ(old.eval_every, 0);
  EXPECT_EQ(old.eval_examples, 64);
}

// bf16 on CPU: CPU autocast (slow in this libtorch, but it works): the loss goes down, the
// numbers differ from fp32 (so autocast really ran), the weights and gradients stay fp32, and
// the autocast state is restored after each forward.
TEST(TrainBf16, CpuAutocastTrains) {
  std::string tmp = test::make_temp_dir("train_bf16");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.tc_ratio = 0;
  o.max_steps = 8;
  auto fp32 = train::Trainer::create(o);
  fp32->log = [](const std::string&) {};
  const double fp32_first = fp32->train_step().loss;
  o.bf16 = true;
  o.eval_data = o.data;
  o.eval_examples = 2;
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  std::vector<double> l = losses_of(*t);
  ASSERT_EQ(l.size(), 8u);
  for (double v : l) ASSERT_TRUE(std::isfinite(v));
  EXPECT_NE(l[0], fp32_first);
  EXPECT_NEAR(l[0], fp32_first, 0.05 * fp32_first);
  EXPECT_LT(mean(l, 6, 2), 0.8 * mean(l, 0, 2)) << "first " << l.front() << " last " << l.back();
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  for (const auto& [name, p] : t->model().trainable_parameters()) {
    EXPECT_EQ(p.scalar_type(), at::kFloat) << name;
  }
  train::EvalResult r = t->evaluate();
  ASSERT_TRUE(r.ae_loss);
  EXPECT_TRUE(std::isfinite(*r.ae_loss));
  EXPECT_FALSE(at::autocast::is_cpu_enabled());
  // COCOM-light (BERT + projection) under autocast too.
  auto ol = tiny_options(light_dir(), o.data, tmp + "/out-light");
  ol.bf16 = true;
  ol.max_steps = 2;
  auto tl = train::Trainer::create(ol);
  tl->log = [](const std::string&) {};
  for (double v : losses_of(*tl)) EXPECT_TRUE(std::isfinite(v));
  fs::remove_all(tmp);
}

TEST(TrainDevice, CheckpointResumesOnRequestedDevice) {
  std::string tmp = test::make_temp_dir("train_device");
  auto o = tiny_options(cocom_dir(), write_pretrain_data(tmp), tmp + "/out");
  o.max_steps = 2;
  if (!at::hasCUDA()) {
    auto bad = o;
    bad.device = "cuda";
    try {
      train::Trainer::create(bad);
      ADD_FAILURE() << "a CPU-only libtorch accepted device cuda";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no CUDA support"), std::string::npos) << e.what();
    }
  }
  auto t = train::Trainer::create(o);
  t->log = [](const std::string&) {};
  t->train_step();
  t->save_checkpoint(tmp + "/ck");
  auto r = train::Trainer::resume(tmp + "/ck", "", "cpu");
  EXPECT_EQ(r->options().device, "cpu");
  EXPECT_TRUE(r->model().options().device.is_cpu());
  for (const auto& [name, p] : r->model().trainable_parameters()) {
    EXPECT_TRUE(p.device().is_cpu()) << name;
  }
  EXPECT_EQ(r->train_step().loss, t->train_step().loss);
  fs::remove_all(tmp);
}

TEST(TrainCli, EvalAndBf16Options) {
  std::string tmp = test::make_temp_dir("train_cli_eval");
  const std::string bin = test::cocom_binary();
  std::string out;
  std::string data = write_pretrain_data(tmp);
  int rc = test::run_command(bin + " --threads 1 train pretrain --model " + cocom_dir() +
                                 " --data " + data + " --eval-data " + data +
                                 " --eval-every 2 --eval-examples 2 --out " + tmp +
                                 "/pre --lora-r 4 --max-steps 2 --batch-size 2 "
                                 "--context-max-length 32 --bf16",
                             &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("eval step 2/2 | ae-loss"), std::string::npos) << out;
  EXPECT_NE(out.find("bf16 autocast"), std::string::npos) << out;
  EXPECT_EQ(read_lines(tmp + "/pre/eval-log.jsonl").size(), 1u);
  rc = test::run_command(bin + " train pretrain --model " + cocom_dir() + " --data " + data +
                             " --out " + tmp + "/bad --eval-every 2",
                         &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--eval-data"), std::string::npos) << out;
  fs::remove_all(tmp);
}

TEST(TrainCli, PretrainResumeFinetune) {
  std::string tmp = test::make_temp_dir("train_cli");
  const std::string bin = test::cocom_binary();
  std::string out;
  std::string data = write_pretrain_data(tmp);
  int rc = test::run_command(bin + " --threads 1 train pretrain --model " + cocom_dir() +
                                 " --data " + data + " --out " + tmp +
                                 "/pre --lora-r 4 --max-steps 4 --batch-size 2 "
                                 "--context-max-length 32 --save-every 2 --lr 1e-3",
                             &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("step 4/4 | loss"), std::string::npos) << out;
  EXPECT_NE(out.find("tok/s"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(tmp + "/pre/checkpoints/step-2/trainer_state.json"));
  EXPECT_NO_THROW(model::CocomModel::load(tmp + "/pre"));
  rc = test::run_command(bin + " --threads 1 train pretrain --resume " + tmp +
                             "/pre/checkpoints/step-2 --out " + tmp + "/pre2",
                         &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("resumed at step 2"), std::string::npos) << out;
  rc = test::run_command(bin + " --threads 1 train finetune --model " + tmp + "/pre --data " +
                             write_qa_data(tmp) + " --out " + tmp +
                             "/ft --lora-r 4 --k 2 --epochs 1 "
                             "--batch-size 3 --context-max-length 32 --merge-lora",
                         &out);
  ASSERT_EQ(rc, 0) << out;
  auto m = model::CocomModel::load(tmp + "/ft");
  EXPECT_FALSE(m->config().lora);
  rc = test::run_command(bin + " train pretrain --model " + cocom_dir() + " --data " + data +
                             " --out " + tmp + "/bad --training-form compressor",
                         &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("COCOM-light"), std::string::npos) << out;
  fs::remove_all(tmp);
}

}  // namespace
