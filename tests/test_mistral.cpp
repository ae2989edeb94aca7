// Mistral decoder against the Hugging Face goldens (tests/data/fixtures/mistral), plus
// invariants of the KV cache, batching, sampling, LoRA merge and checkpoint handling.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>

#include "common/error.h"
#include "common/json_util.h"
#include "model/checkpoint_io.h"
#include "model/decode_attention.h"
#include "model/generation.h"
#include "model/mistral.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace cocom;
using namespace cocom::model;

namespace {

std::string mistral_dir() { return test::fixtures_dir() + "/mistral"; }

std::map<std::string, at::Tensor> golden() {
  std::map<std::string, at::Tensor> g;
  for (auto& [n, t] : read_all_tensors(mistral_dir() + "/golden.safetensors")) g[n] = t;
  return g;
}

// The checker's rule: max |e - g| <= atol + rtol * max |g| over the selected positions.
void expect_close(const at::Tensor& engine, const at::Tensor& gold, const at::Tensor& sel,
                  const std::string& what, double atol = 2e-4, double rtol = 2e-4) {
  ASSERT_EQ(engine.sizes(), gold.sizes()) << what;
  at::Tensor e = engine.to(at::kDouble), g = gold.to(at::kDouble);
  if (sel.defined()) {
    e = e.index({sel});
    g = g.index({sel});
  }
  double max_abs = (e - g).abs().max().item<double>();
  double tol = atol + rtol * g.abs().max().item<double>();
  EXPECT_LE(max_abs, tol) << what << ": max_abs " << max_abs << " tol " << tol;
}

at::Tensor valid(const at::Tensor& mask) { return mask.to(at::kBool); }

// Copies the fixture model into a temp dir with transformed tensors.
std::string rewrite_checkpoint(const std::string& tag,
                               const std::function<void(NamedTensors&)>& edit) {
  std::string dir = test::make_temp_dir(tag);
  fs::copy_file(mistral_dir() + "/config.json", dir + "/config.json");
  NamedTensors t = read_all_tensors(mistral_dir() + "/model.safetensors");
  edit(t);
  write_tensors(dir + "/model.safetensors", t, DType::F32);
  return dir;
}

}  // namespace

TEST(Mistral, LogitsAndHiddenStatesMatchGolden) {
  auto g = golden();
  auto m = MistralModel::load(mistral_dir());
  at::Tensor mask = g["attention_mask"];
  at::Tensor pos = MistralModel::cumsum_positions(mask);
  EXPECT_TRUE(pos.equal(g["position_ids"]));
  DecoderForwardOptions fo;
  fo.output_hidden_states = true;
  DecoderOutput o = m->forward(g["input_ids"], mask, pos, nullptr, fo);
  expect_close(o.logits, g["logits"], valid(mask), "logits");
  at::Tensor hs = at::stack(o.hidden_states, 0);
  at::Tensor sel = valid(mask).unsqueeze(0).expand({hs.size(0), mask.size(0), mask.size(1)});
  expect_close(hs, g["hidden_states"], sel, "hidden_states");
}

TEST(Mistral, PlainForwardPositionsDifferOnlyAtRoundingLevel) {
  // HF's forward() without position_ids counts pads (arange); RoPE is relative, so valid
  // logits move only by rounding (the fixture records <= 1e-5).
  auto g = golden();
  auto m = MistralModel::load(mistral_dir());
  at::Tensor mask = g["attention_mask"];
  DecoderOutput o = m->forward(g["input_ids"], mask, MistralModel::arange_positions(mask));
  expect_close(o.logits, g["logits"], valid(mask), "logits (arange positions)", 5e-5, 0);
}

TEST(Mistral, SlidingWindowIsApplied) {
  // Without the window the logits move far outside the tolerance (fixture: 7.6 max).
  auto g = golden();
  DecoderConfig cfg = DecoderConfig::load(mistral_dir() + "/config.json");
  ASSERT_TRUE(cfg.sliding_window.has_value());
  cfg.sliding_window.reset();
  auto files = CheckpointFiles::open(mistral_dir());
  WeightSource src(*files, "");
  auto m = MistralModel::from_weights(cfg, src);
  at::Tensor mask = g["attention_mask"];
  DecoderOutput o = m->forward(g["input_ids"], mask, MistralModel::cumsum_positions(mask));
  at::Tensor sel = valid(mask);
  double diff = (o.logits.index({sel}) - g["logits"].index({sel})).abs().max().item<double>();
  EXPECT_GT(diff, 1.0);
}

TEST(Mistral, GreedyGenerationMatchesGolden) {
  auto g = golden();
  auto m = MistralModel::load(mistral_dir());
  SamplingOptions so;
  so.max_new_tokens = 8;
  so.keep_step_logits = true;
  GenerationResult r = generate_from_ids(*m, g["input_ids"], g["attention_mask"], so);
  ASSERT_EQ(r.tokens.sizes(), g["generated_ids"].sizes());
  EXPECT_TRUE(r.tokens.equal(g["generated_ids"])) << r.tokens << "\nvs\n" << g["generated_ids"];
  // Compare step logits where the row had not finished yet.
  at::Tensor gen = g["generated_ids"];
  at::Tensor alive = at::ones(gen.sizes(), at::kBool);
  for (int64_t b = 0; b < gen.size(0); ++b) {
    bool done = false;
    for (int64_t t = 0; t < gen.size(1); ++t) {
      alive[b][t] = !done;
      if (gen[b][t].item<int64_t>() == 2) done = true;
    }
  }
  expect_close(r.step_logits, g["gen_logits"], alive, "gen_logits");
  // One row stops at EOS on purpose: everything after it is pad (= eos).
  bool saw_eos = false;
  for (int64_t b = 0; b < gen.size(0); ++b) {
    for (int64_t t = 0; t + 1 < gen.size(1); ++t) {
      if (r.tokens[b][t].item<int64_t>() == 2) {
        saw_eos = true;
        EXPECT_EQ(r.tokens[b][t + 1].item<int64_t>(), 2);
      }
    }
  }
  EXPECT_TRUE(saw_eos);
}

TEST(Mistral, KvCacheStepsEqualFullRecompute) {
  auto g = golden();
  auto m = MistralModel::load(mistral_dir());
  // Row 2 is the longest (no padding): generate, then recompute every step from scratch.
  at::Tensor ids = g["input_ids"].narrow(0, 2, 1);
  at::Tensor mask = g["attention_mask"].narrow(0, 2, 1);
  SamplingOptions so;
  so.max_new_tokens = 6;
  so.keep_step_logits = true;
  so.eos_id = 1003;  // <SEP>: keeps the row running for all steps
  GenerationResult r = generate_from_ids(*m, ids, mask, so);
  for (int64_t t = 0; t < r.tokens.size(1); ++t) {
    at::Tensor prefix = at::cat({ids, r.tokens.narrow(1, 0, t)}, 1);
    at::Tensor pm = at::ones_like(prefix);
    DecoderOutput o = m->forward(prefix, pm, MistralModel::cumsum_positions(pm));
    at::Tensor full = o.logits.select(1, prefix.size(1) - 1);
    double d = (full - r.step_logits.select(1, t)).abs().max().item<double>();
    EXPECT_LT(d, 1e-4) << "step " << t;
  }
}

// The decode-step attention against softmax(q k^T / sqrt(d)) v written out in double: two
// sequences, grouped query heads (8 query heads on 2 kv heads), hidden keys in the middle, a
// sequence that sees no key at all (uniform weights over every slot, as the reference path
// gives), head sizes that are and are not multiples of the 16-float vectors, every kernel variant.
TEST(DecodeAttention, EqualsTheFormulaWithGroupedHeadsAndHiddenKeys) {
  for (int64_t d : {int64_t{64}, int64_t{20}}) {
    const int64_t B = 2, H = 8, KV = 2, cap = 37, S = 29, G = H / KV;
    at::Tensor q = at::randn({B, H, 1, d}, at::kDouble).to(at::kFloat);
    at::Tensor kc = at::randn({B, KV, cap, d}).mul_(2.0);
    at::Tensor vc = at::randn({B, KV, cap, d});
    at::Tensor allowed = at::ones({B, S}, at::kBool);
    allowed[0].narrow(0, 3, 5).fill_(false);
    allowed[1].fill_(false);
    const double scale = 1.0 / std::sqrt(double(d));
    for (KernelIsa isa : available_kernel_isas()) {
      force_kernel_isa(isa);
      ASSERT_TRUE(decode_attention_applies(q, kc, vc));
      at::Tensor out = decode_attention(q, kc, vc, S, allowed, scale);
      force_kernel_isa(KernelIsa::automatic);
      ASSERT_EQ(out.sizes(), (std::vector<int64_t>{B, 1, H * d}));
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t h = 0; h < H; ++h) {
          at::Tensor keys = kc[b][h / G].narrow(0, 0, S).to(at::kDouble);
          at::Tensor vals = vc[b][h / G].narrow(0, 0, S).to(at::kDouble);
          at::Tensor sc = at::mv(keys, q[b][h][0].to(at::kDouble)) * scale;
          at::Tensor w = allowed[b].any().item<bool>()
                             ? at::softmax(sc.masked_fill(allowed[b].logical_not(), -1e300), 0)
                             : at::full({S}, 1.0 / double(S), at::kDouble);
          at::Tensor ref = at::mv(vals.t(), w);
          at::Tensor got = out[b][0].narrow(0, h * d, d).to(at::kDouble);
          EXPECT_LT((got - ref).abs().max().item<double>(), 1e-5)
              << kernel_isa_name(isa) << " d=" << d << " b=" << b << " h=" << h;
        }
      }
    }
  }
  // What it does not take: several query positions, a strided cache, a bad mask.
  at::Tensor q = at::randn({1, 4, 1, 16}), kc = at::randn({1, 2, 8, 16});
  EXPECT_FALSE(decode_attention_applies(at::randn({1, 4, 2, 16}), kc, kc));
  EXPECT_FALSE(decode_attention_applies(q, kc.transpose(2, 3).contiguous().transpose(2, 3), kc));
  EXPECT_FALSE(decode_attention_applies(at::randn({1, 3, 1, 16}), kc, kc));
  EXPECT_THROW(decode_attention(q, kc, kc, 9, at::ones({1, 9}, at::kBool), 1.0), Error);
  EXPECT_THROW(decode_attention(q, kc, kc, 4, at::ones({1, 5}, at::kBool), 1.0), Error);
}

TEST(Mistral, RowAloneEqualsRowInLeftPaddedBatch) {
  auto g = golden();
  auto m = MistralModel::load(mistral_dir());
  at::Tensor ids = g["input_ids"], mask = g["attention_mask"];
  DecoderOutput batch = m->forward(ids, mask, MistralModel::cumsum_positions(mask));
  for (int64_t b = 0; b < ids.size(0); ++b) {
    int64_t n = mask[b].sum().item<int64_t>();
    int64_t L = ids.size(1);
    at::Tensor row = ids[b].narrow(0, L - n, n).unsqueeze(0);
    at::Tensor rm = at::ones_like(row);
    DecoderOutput alone = m->forward(row, rm, MistralModel::cumsum_positions(rm));
    double d = (alone.logits[0] - batch.logits[b].narrow(0, L - n, n)).abs().max().item<double>();
    EXPECT_LT(d, 1e-4) << "row " << b;
  }
}

TEST(Mistral, SamplingIsSeededAndFiltered) {
  auto g = golden();
  auto m = MistralModel::load(mistral_dir());
  at::Tensor ids = g["input_ids"], mask = g["attention_mask"];
  SamplingOptions so;
  so.max_new_tokens = 8;
  so.temperature = 1.0;
  so.seed = 7;
  so.eos_id = 1003;
  auto a = generate_from_ids(*m, ids, mask, so).tokens;
  auto b = generate_from_ids(*m, ids, mask, so).tokens;
  EXPECT_TRUE(a.equal(b));
  so.seed = 8;
  auto c = generate_from_ids(*m, ids, mask, so).tokens;
  EXPECT_FALSE(a.equal(c));
  // top_k = 1 is greedy whatever the temperature.
  so.top_k = 1;
  so.temperature = 5.0;
  SamplingOptions greedy;
  greedy.max_new_tokens = 8;
  greedy.eos_id = 1003;
  EXPECT_TRUE(generate_from_ids(*m, ids, mask, so)
                  .tokens.equal(generate_from_ids(*m, ids, mask, greedy).tokens));
}

TEST(Sampling, TopPAndTopKKeepOnlyTheHead) {
  // probs 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps {0, 1}; top_k 3 keeps {0, 1, 2}.
  at::Tensor logits =
      at::tensor({0.5, 0.3, 0.15, 0.05}, at::kDouble).log().to(at::kFloat).view({1, 4});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  SamplingOptions p;
  p.temperature = 1.0;
  p.top_p = 0.7;
  SamplingOptions k;
  k.temperature = 1.0;
  k.top_k = 3;
  std::map<int64_t, int> seen_p, seen_k;
  for (int i = 0; i < 400; ++i) {
    seen_p[select_next_tokens(logits, p, &gen).item<int64_t>()]++;
    seen_k[select_next_tokens(logits, k, &gen).item<int64_t>()]++;
  }
  EXPECT_EQ(seen_p.count(2) + seen_p.count(3), 0u);
  EXPECT_GT(seen_p[0], seen_p[1]);
  EXPECT_GT(seen_p[1], 0);
  EXPECT_EQ(seen_k.count(3), 0u);
  EXPECT_GT(seen_k[2], 0);
  // Greedy picks the argmax.
  SamplingOptions gr;
  EXPECT_EQ(select_next_tokens(logits, gr, &gen).item<int64_t>(), 0);
}

TEST(Mistral, LoraAdaptersAreMergedWithAlphaOverR) {
  // Split q_proj and down_proj of layer 0 into PEFT base_layer + lora_A/B; the merged model
  // must equal a plain checkpoint holding W + alpha/r * B @ A.
  const int64_t r = 4;
  const double alpha = 8;
  at::manual_seed(3);
  std::map<std::string, at::Tensor> merged_w;
  std::string peft = rewrite_checkpoint("peft", [&](NamedTensors& t) {
    NamedTensors extra;
    for (auto& [name, w] : t) {
      if (name == "model.layers.0.self_attn.q_proj.weight" ||
          name == "model.layers.0.mlp.down_proj.weight") {
        std::string stem = name.substr(0, name.size() - 7);
        at::Tensor A = at::randn({r, w.size(1)}) * 0.1, B = at::randn({w.size(0), r}) * 0.1;
        merged_w[name] = w + (alpha / r) * at::matmul(B, A);
        extra.push_back({stem + ".lora_A.default.weight", A});
        extra.push_back({stem + ".lora_B.default.weight", B});
        name = stem + ".base_layer.weight";
      }
    }
    for (auto& e : extra) t.push_back(e);
  });
  test::write_bytes(peft + "/adapter_config.json", "{\"r\": 4, \"lora_alpha\": 8}");
  std::string plain = rewrite_checkpoint("plain", [&](NamedTensors& t) {
    for (auto& [name, w] : t) {
      if (merged_w.count(name)) w = merged_w[name];
    }
  });
  auto g = golden();
  at::Tensor mask = g["attention_mask"], pos = MistralModel::cumsum_positions(mask);
  auto a = MistralModel::load(peft)->forward(g["input_ids"], mask, pos).logits;
  auto b = MistralModel::load(plain)->forward(g["input_ids"], mask, pos).logits;
  auto base = MistralModel::load(mistral_dir())->forward(g["input_ids"], mask, pos).logits;
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-4);
  EXPECT_GT((a - base).abs().max().item<double>(), 1e-2);  // the adapter did something
  // Without adapter_config.json and no alpha given, loading is a clear error.
  fs::remove(peft + "/adapter_config.json");
  try {
    MistralModel::load(peft);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lora_alpha"), std::string::npos) << e.what();
  }
  LoraSettings ls;
  ls.alpha = alpha;
  auto c = MistralModel::load(peft, c10::kCPU, ls)->forward(g["input_ids"], mask, pos).logits;
  EXPECT_LT((c - b).abs().max().item<double>(), 1e-4);
}

TEST(Mistral, ShardedCheckpointLoadsTheSame) {
  std::string dir = test::make_temp_dir("sharded");
  fs::copy_file(mistral_dir() + "/config.json", dir + "/config.json");
  NamedTensors t = read_all_tensors(mistral_dir() + "/model.safetensors");
  NamedTensors a(t.begin(), t.begin() + t.size() / 2), b(t.begin() + t.size() / 2, t.end());
  write_tensors(dir + "/model-00001-of-00002.safetensors", a, DType::BF16);
  write_tensors(dir + "/model-00002-of-00002.safetensors", b, DType::BF16);
  Json idx;
  idx["metadata"] = {{"total_size", 0}};
  for (auto& [n, _] : a) idx["weight_map"][n] = "model-00001-of-00002.safetensors";
  for (auto& [n, _] : b) idx["weight_map"][n] = "model-00002-of-00002.safetensors";
  write_json_file(dir + "/model.safetensors.index.json", idx);
  auto g = golden();
  at::Tensor mask = g["attention_mask"], pos = MistralModel::cumsum_positions(mask);
  auto x = MistralModel::load(dir)->forward(g["input_ids"], mask, pos).logits;
  auto y = MistralModel::load(mistral_dir())->forward(g["input_ids"], mask, pos).logits;
  EXPECT_TRUE(x.equal(y));  // bf16 weights re-stored as bf16: bit-identical
}

TEST(Mistral, RandomCheckpointRoundTripsThroughTheLoader) {
  DecoderConfig cfg = DecoderConfig::load(mistral_dir() + "/config.json");
  cfg.num_key_value_heads = 1;  // another GQA ratio
  cfg.tie_word_embeddings = true;
  std::string dir = test::make_temp_dir("rand") + "/m";
  write_random_decoder(cfg, dir, 5, DType::F16);
  auto m = MistralModel::load(dir);
  EXPECT_EQ(m->config().num_key_value_heads, 1);
  at::Tensor ids = at::randint(0, cfg.vocab_size, {2, 7}, at::kLong);
  auto o = m->forward(ids, at::ones_like(ids), MistralModel::arange_positions(ids));
  EXPECT_TRUE(at::isfinite(o.logits).all().item<bool>());
  EXPECT_GT(o.logits.abs().max().item<double>(), 0.0);
}

TEST(MistralHostile, BadCheckpointsGiveClearErrors) {
  auto expect_error = [](const std::string& dir, const std::string& needle) {
    try {
      MistralModel::load(dir);
      ADD_FAILURE() << "no error for " << dir;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(rewrite_checkpoint(
                   "missing",
                   [](NamedTensors& t) {
                     t.erase(std::remove_if(t.begin(), t.end(),
                                            [](auto& p) {
                                              return p.first == "model.layers.1.mlp.up_proj.weight";
                                            }),
                             t.end());
                   }),
               "model.layers.1.mlp.up_proj.weight");
  expect_error(rewrite_checkpoint("shape",
                                  [](NamedTensors& t) {
                                    for (auto& [n, w] : t)
                                      if (n == "model.norm.weight") w = at::ones({63});
                                  }),
               "model.norm.weight' has shape [63]");
  expect_error(
      rewrite_checkpoint("extra",
                         [](NamedTensors& t) {
                           t.push_back({"model.layers.7.mlp.up_proj.weight", at::ones({2, 2})});
                         }),
      "unexpected tensor");
  expect_error(
      rewrite_checkpoint("halflora",
                         [](NamedTensors& t) {
                           for (auto& [n, w] : t)
                             if (n == "model.layers.0.self_attn.k_proj.weight")
                               n = "model.layers.0.self_attn.k_proj.base_layer.weight";
                           t.push_back({"model.layers.0.self_attn.k_proj.lora_A.default.weight",
                                        at::ones({2, 64})});
                         }),
      "lora_B.default.weight' is missing");
  std::string noconf = test::make_temp_dir("noconf");
  expect_error(noconf, "no config.json");
  expect_error(test::fixtures_dir() + "/bert", "not a Mistral");
}

TEST(MistralHostile, BadInputsGiveClearErrors) {
  auto m = MistralModel::load(mistral_dir());
  at::Tensor ids = at::tensor({1, 5, 2000}, at::kLong).view({1, 3});
  at::Tensor mask = at::ones_like(ids);
  try {
    m->forward(ids, mask, MistralModel::arange_positions(mask));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 2000 at row 0, position 2"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(m->forward(ids.narrow(1, 0, 2), at::ones({1, 3}, at::kLong),
                          MistralModel::arange_positions(at::ones({1, 2}, at::kLong))),
               Error);
  SamplingOptions so;
  so.top_p = 0;
  EXPECT_THROW(generate_from_ids(*m, ids.narrow(1, 0, 2), at::ones({1, 2}, at::kLong), so), Error);
}

// Continuous batching's decoder step: sequences of different lengths, each prefilled into its
// own cache, advanced together, give the logits each gets advanced alone.
TEST(Mistral, DecodeStepOfSeveralSequencesEqualsEachAlone) {
  auto m = MistralModel::load(mistral_dir());
  const int64_t V = m->config().vocab_size;
  const std::vector<int64_t> lengths = {3, 7, 5};
  std::vector<KVCache> together, alone;
  std::vector<int64_t> next_tokens, positions;
  for (size_t i = 0; i < lengths.size(); ++i) {
    at::Tensor ids = at::randint(4, V, {1, lengths[i]}, at::kLong);
    at::Tensor mask = at::ones_like(ids);
    for (auto* caches : {&together, &alone}) {
      caches->push_back(m->make_cache(1, lengths[i] + 4));
      m->forward(ids, mask, MistralModel::cumsum_positions(mask), &caches->back());
    }
    next_tokens.push_back(int64_t(10 + i));
    positions.push_back(lengths[i]);
  }
  std::vector<KVCache*> ptrs;
  for (auto& c : together) ptrs.push_back(&c);
  for (int step = 0; step < 3; ++step) {
    at::Tensor logits = m->decode_step(at::tensor(next_tokens), at::tensor(positions), ptrs);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{3, V}));
    for (size_t i = 0; i < lengths.size(); ++i) {
      at::Tensor one = at::full({1, 1}, next_tokens[i], at::kLong);
      DecoderOutput o = m->forward(one, at::ones({1, 1}, at::kLong),
                                   at::full({1, 1}, positions[i], at::kLong), &alone[i]);
      const double d = (o.logits.select(1, 0)[0] - logits[int64_t(i)]).abs().max().item<double>();
      EXPECT_LT(d, 1e-4) << "sequence " << i << " step " << step;
      EXPECT_EQ(together[i].length, alone[i].length);
      next_tokens[i] = logits[int64_t(i)].argmax().item<int64_t>();
      positions[i] += 1;
    }
  }
  // A full cache and a mismatched batch are refused.
  KVCache tiny = m->make_cache(1, 2);
  m->forward(at::ones({1, 2}, at::kLong), at::ones({1, 2}, at::kLong),
             MistralModel::arange_positions(at::ones({1, 2}, at::kLong)), &tiny);
  EXPECT_THROW(m->decode_step(at::tensor(std::vector<int64_t>{5}), at::tensor(std::vector<int64_t>{2}), {&tiny}),
               std::exception);
  EXPECT_THROW(m->decode_step(at::tensor(next_tokens), at::tensor(positions), {ptrs[0]}),
               std::exception);
}
