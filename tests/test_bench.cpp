// Plumbing of `cocom bench efficiency` and `bench runtime` (never their timings): options, one
// entry per rate, analytic FLOPs and storage figures against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include "bench/bench_efficiency.h"
#include "cocom/cocom.h"
#include "common/json_util.h"
#include "generate/cocom_generate.h"
#include "model/cocom.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace cocom;

namespace {

// `args` may redirect stderr itself: run_command appends 2>&1 after the subshell.
std::string run(const std::string& args, int* rc) {
  std::string out;
  *rc = test::run_command("(" + test::cocom_binary() + " " + args + ")", &out);
  return out;
}

model::DecoderConfig hand_config() {
  model::DecoderConfig c;
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  return c;
}

// An independent closed form of the generation FLOPs: N layers, q = heads * head_dim,
// lin = per-token linear FLOPs, P prompt tokens, T new tokens (T - 1 decode steps over
// P + 1 .. P + T - 1 keys), lm_head once per new token.
double closed_form_flops(double N, double lin, double q, double V, double H, double P, double T) {
  const double keys = (T - 1) * P + T * (T - 1) / 2;  // sum_{j=1}^{T-1} (P + j)
  return N * (lin * (P + T - 1) + 4 * q * (P * P + keys)) + T * 2 * V * H;
}

}  // namespace

TEST(BenchEfficiency, GenerationFlopsByHand) {
  // q = 8, kv = 4: linear per token = 2 (8*8 + 2*8*4 + 8*8 + 3*8*16) = 1152.
  // Prompt 3, 2 new tokens: prefill 2 (1152*3 + 4*9*8) + 2*10*8 = 7648;
  // one decode step over 4 keys: 2 (1152 + 4*4*8) + 160 = 2720.
  EXPECT_DOUBLE_EQ(bench::generation_flops(hand_config(), 3, 2), 10368.0);
  EXPECT_DOUBLE_EQ(bench::generation_flops(hand_config(), 3, 1), 7648.0);
  // Compressor forward over 5 tokens, no lm_head: 2 (1152*5 + 4*25*8) = 13120.
  EXPECT_DOUBLE_EQ(bench::decoder_compression_flops(hand_config(), 5), 13120.0);
  // BERT: hidden 4, intermediate 8, 1 layer, 6 tokens; projection of 2 vectors 12 -> 8.
  model::BertConfig b;
  b.hidden_size = 4;
  b.intermediate_size = 8;
  b.num_hidden_layers = 1;
  // 2*6*(4*16 + 2*4*8) + 4*36*4 = 1536 + 576 = 2112; projection 2*2*12*8 = 384.
  EXPECT_DOUBLE_EQ(bench::bert_compression_flops(b, 6, 2, 12, 8), 2496.0);
}

TEST(BenchEfficiency, TinyShapeRunPrintsOneEntryPerRate) {
  const std::string dir = test::make_temp_dir("bench_eff");
  const std::string cfg = dir + "/tiny.json";
  // A vocabulary wider than the tokenizer the synthetic text is read with (the default
  // model's, 4100 tokens): answers must still decode.
  const int64_t H = 32, V = 6000, I = 64, layers = 2, heads = 4, kv_heads = 2;
  write_json_file(cfg, {{"model_type", "mistral"},
                        {"vocab_size", V},
                        {"hidden_size", H},
                        {"intermediate_size", I},
                        {"num_hidden_layers", layers},
                        {"num_attention_heads", heads},
                        {"num_key_value_heads", kv_heads},
                        {"max_position_embeddings", 2048}});
  int rc = 0;
  const std::string out = run("bench efficiency --config " + cfg +
                                  " --repeat 1 --collection-size 1000 --json 2>" + dir + "/err.txt",
                              &rc);
  ASSERT_EQ(rc, 0) << out << read_text_file(dir + "/err.txt");
  const Json j = parse_json_text(out, "bench output");
  // Progress went to stderr, not into the JSON.
  EXPECT_NE(read_text_file(dir + "/err.txt").find("bench efficiency:"), std::string::npos);

  const Json& gen = j.at("generation");
  ASSERT_EQ(gen.size(), 4u);
  const int64_t rates[] = {0, 4, 16, 128};
  const double d = double(H) / heads, q = heads * d, kvw = kv_heads * d;
  const double lin = 2 * (H * q + 2 * H * kvw + q * H + 3.0 * H * I);
  // The shape's vocabulary plus the four COCOM tokens (it is wider than the tokenizer's).
  const int64_t Vd = j.at("model").at("decoder").at("vocab_size").get<int64_t>();
  EXPECT_EQ(Vd, V + 4);
  // The prompts are the engine's: '<s>' + 5 x (n <MEM> + <SEP>) + the question's part
  // ('[INST]' + 11 tokens of question + '\n[/INST]\n'), the same at every rate.
  const int64_t question_part = gen[1].at("prompt_tokens").get<int64_t>() - (1 + 5 * (32 + 1));
  EXPECT_GT(question_part, 11);
  for (size_t i = 0; i < 4; ++i) {
    const Json& e = gen[i];
    const int64_t r = rates[i];
    EXPECT_EQ(e.at("compression_rate").get<int64_t>(), r);
    EXPECT_EQ(e.at("new_tokens").get<int64_t>(), 6);
    const int64_t n = r == 0 ? 0 : (128 + r - 1) / r;
    const int64_t P = e.at("prompt_tokens").get<int64_t>();
    if (r == 0) {
      // 5 passages of 128 text tokens, the question and the baseline's instructions.
      EXPECT_GT(P, 1 + 5 * 128 + question_part) << "rate 0";
    } else {
      EXPECT_EQ(P, 1 + 5 * (n + 1) + question_part) << "rate " << r;
    }
    const double want = closed_form_flops(layers, lin, q, double(Vd), H, double(P), 6);
    EXPECT_NEAR(e.at("gflops").get<double>(), want / 1e9, want / 1e9 * 1e-12) << "rate " << r;
    EXPECT_EQ(e.at("latency_ms").at("runs").size(), 1u);
    EXPECT_GT(e.at("latency_ms").at("mean").get<double>(), 0.0);
    EXPECT_GT(e.at("peak_rss_bytes").get<int64_t>(), 0);
    ASSERT_FALSE(e.at("speedup_vs_uncompressed").is_null());
    if (r == 0) {
      EXPECT_TRUE(e.at("storage").is_null());
      EXPECT_DOUBLE_EQ(e.at("speedup_vs_uncompressed").get<double>(), 1.0);
      continue;
    }
    // fp16 store by default: ceil(128 / r) * H * 2 bytes per passage.
    const Json& st = e.at("storage");
    EXPECT_EQ(st.at("dtype").get<std::string>(), "fp16");
    EXPECT_EQ(st.at("vectors_per_passage").get<int64_t>(), n);
    EXPECT_EQ(st.at("bytes_per_passage").get<uint64_t>(), uint64_t(n * H * 2));
    EXPECT_EQ(st.at("collection_bytes").get<uint64_t>(), uint64_t(n * H * 2 * 1000));
    const Json& fx = e.at("dtype_effect");
    ASSERT_EQ(fx.size(), 4u);
    EXPECT_EQ(fx[0].at("dtype").get<std::string>(), "fp32");
    EXPECT_EQ(fx[0].at("bytes_per_passage").get<uint64_t>(), uint64_t(n * H * 4));
    EXPECT_DOUBLE_EQ(fx[0].at("token_agreement").get<double>(), 1.0);
    EXPECT_EQ(fx[0].at("max_logit_error").get<double>(), 0.0);
    EXPECT_EQ(fx[3].at("dtype").get<std::string>(), "int8");
    EXPECT_EQ(fx[3].at("bytes_per_passage").get<uint64_t>(), uint64_t(n * (H + 4)));
    for (const auto& a : fx) {
      const double agree = a.at("token_agreement").get<double>();
      EXPECT_GE(agree, 0.0);
      EXPECT_LE(agree, 1.0);
      EXPECT_TRUE(std::isfinite(a.at("max_logit_error").get<double>()));
    }
  }
  // Compression: one entry per non-zero rate, 5 passages, the decoder compressor's length
  // (128 text slots + n <MEM>), its FLOPs without lm_head.
  const Json& comp = j.at("compression");
  ASSERT_EQ(comp.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const int64_t r = rates[i + 1], n = (128 + r - 1) / r, Lc = 128 + n;
    EXPECT_EQ(comp[i].at("compression_rate").get<int64_t>(), r);
    EXPECT_EQ(comp[i].at("passages").get<int64_t>(), 5);
    EXPECT_EQ(comp[i].at("tokens_per_passage").get<int64_t>(), Lc);
    const double want = 5 * layers * (lin * Lc + 4.0 * Lc * Lc * q);
    EXPECT_NEAR(comp[i].at("gflops").get<double>(), want / 1e9, want / 1e9 * 1e-12);
  }
  EXPECT_EQ(j.at("settings").at("batch_size").get<int64_t>(), 1);
  EXPECT_EQ(j.at("settings").at("label_length").get<int64_t>(), 6);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(BenchEfficiency, OptionsAreChecked) {
  const std::string dir = test::make_temp_dir("bench_eff_opts");
  const std::string cfg = dir + "/tiny.json";
  write_json_file(cfg, {{"vocab_size", 32},
                        {"hidden_size", 16},
                        {"intermediate_size", 32},
                        {"num_hidden_layers", 1},
                        {"num_attention_heads", 2}});
  int rc = 0;
  std::string out = run("bench efficiency --config " + cfg + " --compression-rate 4,x 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--compression-rate x"), std::string::npos) << out;
  out = run("bench efficiency --config " + cfg + " --mode decode 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--mode decode"), std::string::npos) << out;
  out = run("bench efficiency --config " + cfg + " --weights int4 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("int4"), std::string::npos) << out;
  // Compression only, int8 store, batch 2 x top-k 2, bert-base-like tiny compressor.
  const std::string bert = dir + "/bert.json";
  write_json_file(bert, {{"model_type", "bert"},
                         {"vocab_size", 120},
                         {"hidden_size", 8},
                         {"intermediate_size", 16},
                         {"num_hidden_layers", 1},
                         {"num_attention_heads", 2}});
  out = run("bench efficiency --config " + cfg + " --compressor bert-base --compressor-config " +
                bert +
                " --mode compression --compression-rate 0,16 --batch-size 2 --top-k 2 "
                "--embedding-dtype int8 --repeat 1 --json 2>/dev/null",
            &rc);
  ASSERT_EQ(rc, 0) << out;
  const Json j = parse_json_text(out, "bench output");
  EXPECT_TRUE(j.at("generation").empty());
  ASSERT_EQ(j.at("compression").size(), 1u);
  const Json& c = j.at("compression")[0];
  EXPECT_EQ(c.at("passages").get<int64_t>(), 4);
  EXPECT_EQ(c.at("tokens_per_passage").get<int64_t>(), 128);
  EXPECT_EQ(c.at("storage").at("bytes_per_passage").get<uint64_t>(), uint64_t(8 * (16 + 4)));
  // BERT: 1 layer, 128 tokens, hidden 8, intermediate 16; projection of 8 vectors 16*8 -> 16.
  const double bert_flops = 2.0 * 128 * (4 * 64 + 2 * 8 * 16) + 4.0 * 128 * 128 * 8;
  const double want = 4 * (bert_flops + 2.0 * 8 * (16 * 8) * 16);
  EXPECT_NEAR(c.at("gflops").get<double>(), want / 1e9, want / 1e9 * 1e-12);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(BenchEfficiency, CheckpointRunsItsOwnRateThroughTheEnginePath) {
  // The golden fixtures' tiny COCOM (x4, hidden 64, 256 positions): short passages so the
  // uncompressed prompt fits; rate 16 is not the checkpoint's and is skipped.
  const std::string dir = test::make_temp_dir("bench_eff_ckpt");
  int rc = 0;
  const std::string out = run("bench efficiency --model " + test::fixtures_dir() +
                                  "/cocom --doc-length 32 --compression-rate 0,4,16 --repeat 1 "
                                  "--json 2>" +
                                  dir + "/err.txt",
                              &rc);
  ASSERT_EQ(rc, 0) << out << read_text_file(dir + "/err.txt");
  EXPECT_NE(read_text_file(dir + "/err.txt").find("skipping rate 16"), std::string::npos);
  const Json j = parse_json_text(out, "bench output");
  const Json& gen = j.at("generation");
  ASSERT_EQ(gen.size(), 2u);
  EXPECT_EQ(gen[0].at("compression_rate").get<int64_t>(), 0);
  EXPECT_EQ(gen[1].at("compression_rate").get<int64_t>(), 4);
  // '<s>' + 5 x (8 <MEM> + <SEP>) come before the question and the template.
  EXPECT_GT(gen[1].at("prompt_tokens").get<int64_t>(), 1 + 5 * 9);
  // The text prompt holds 5 passages of ~32 tokens.
  EXPECT_GT(gen[0].at("prompt_tokens").get<int64_t>(), 5 * 30);
  EXPECT_EQ(gen[1].at("new_tokens").get<int64_t>(), 6);
  EXPECT_EQ(gen[1].at("storage").at("bytes_per_passage").get<uint64_t>(), 8u * 64 * 2);
  EXPECT_EQ(gen[1].at("dtype_effect").size(), 4u);
  ASSERT_EQ(j.at("compression").size(), 1u);
  EXPECT_EQ(j.at("compression")[0].at("tokens_per_passage").get<int64_t>(), 32 + 8);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// The benchmark times the code users run: for the same passage and question, the decoder
// inputs of its compressed answer are byte for byte those of Engine::Ask (compression in the
// ingestion regime, the store's fp16 records, the prompt and the <MEM> replacement).
TEST(BenchEfficiency, DecoderInputsAreTheEnginesByteForByte) {
  const std::string model_dir = test::fixtures_dir() + "/cocom";
  const std::string dir = test::make_temp_dir("bench_eff_identity");
  std::vector<std::pair<at::Tensor, at::Tensor>> seen;
  generate::set_decoder_input_observer([&](const at::Tensor& e, const at::Tensor& m) {
    seen.push_back({e.clone(), m.clone()});
  });
  bench::EfficiencyBenchOptions o;
  o.model = model_dir;
  o.mode = "generation";
  o.rates = "4";
  o.batch_size = 1;
  o.top_k = 1;
  o.doc_length = 32;
  o.label_length = 3;
  o.repeat = 1;
  o.compare_dtypes = false;
  o.embedding_dtype = "fp16";
  bench::run_efficiency(o);
  ASSERT_EQ(seen.size(), 2u);  // warm-up and one timed run
  EXPECT_TRUE(at::equal(seen[0].first, seen[1].first));
  const auto bench_inputs = seen[0];

  // The engine, on a store holding the passage the benchmark compressed first.
  auto m = model::CocomModel::load(model_dir);
  const std::string passage = bench::efficiency_passage(m->decoder_tokenizer(), false, 32, 0);
  const std::string question = bench::efficiency_question(m->decoder_tokenizer(), 11, 0);
  cocom::Options opt;
  opt.db_path = dir + "/db";
  opt.model_dir = model_dir;
  opt.context_max_length = 32;
  opt.embedding_dtype = cocom::EmbeddingDType::kFp16;
  opt.top_k = 1;
  opt.generation.max_new_tokens = 3;
  std::unique_ptr<cocom::Engine> engine;
  ASSERT_TRUE(cocom::Engine::Open(opt, &engine).ok());
  auto st = engine->IngestDocuments({{"p0", "", passage, ""}});
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ASSERT_EQ(st->passages, 1);
  seen.clear();
  auto a = engine->Ask(question);
  generate::set_decoder_input_observer(nullptr);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_EQ(a->sources.size(), 1u);
  EXPECT_EQ(a->sources[0].text, passage);
  ASSERT_EQ(seen.size(), 1u);
  const at::Tensor& be = bench_inputs.first;
  const at::Tensor& ee = seen[0].first;
  ASSERT_EQ(be.sizes(), ee.sizes());
  EXPECT_EQ(be.scalar_type(), ee.scalar_type());
  EXPECT_EQ(std::memcmp(be.contiguous().data_ptr(), ee.contiguous().data_ptr(), be.nbytes()), 0);
  EXPECT_TRUE(at::equal(bench_inputs.second, seen[0].second));
  // One passage of 32 tokens at x4: '<s>' + 8 <MEM> + <SEP> before the question.
  EXPECT_GT(be.size(1), 1 + 8 + 1);
  engine.reset();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// `cocom bench runtime --kernels`: bad lists are refused before anything is measured; a list
// of variants gives one entry each, in order, with the first one's figures at the top level.
TEST(BenchRuntime, KernelVariantsAreCheckedAndEachMeasured) {
  const std::string cfg = test::fixtures_dir() + "/mistral/config.json";
  int rc = 0;
  std::string out = run("bench runtime --config " + cfg + " --kernels avx9 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--kernels avx9: expected auto, avx512, avx2 or generic"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("machine:"), std::string::npos) << "measured before checking: " << out;
  out = run("bench runtime --config " + cfg + " --kernels , 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("name at least one variant"), std::string::npos) << out;

  out =
      run("bench runtime --json --config " + cfg +
              " --weights int8 --kernels generic,auto --prompt-tokens 6 --new-tokens 3 --repeat 2",
          &rc);
  ASSERT_EQ(rc, 0) << out;
  Json j = Json::parse(out);
  ASSERT_EQ(j["variants"].size(), 2u);
  EXPECT_EQ(j["variants"][0]["kernels"], "generic");
  EXPECT_EQ(j["kernels"], "generic");
  EXPECT_EQ(j["weights"], "int8");
  for (const Json& v : j["variants"]) {
    ASSERT_EQ(v["prefill"].size(), 1u);
    EXPECT_EQ(v["prefill"][0]["prompt_tokens"], 6);
    EXPECT_GT(v["decode_tokens_per_s"].get<double>(), 0.0);
  }
  EXPECT_GT(j["read_bandwidth_gbs"].get<double>(), 0.0);
  EXPECT_GE(j["read_bandwidth_gbs"].get<double>(),
            j["huge_page_stream_bandwidth_gbs"].get<double>());
}
