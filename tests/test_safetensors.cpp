// Tests for the safetensors reader/writer (model/safetensors.h): the fixture checkpoints, the
// writer's round trip and layout, sharded checkpoints, and one test per hostile-input error.
#include "model/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/json_util.h"
#include "model/config.h"
#include "tests/test_util.h"

namespace cocom::model {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& rel) { return test::fixtures_dir() + "/" + rel; }

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// A file with the given header text (not padded) and data bytes.
std::string st_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string slurp(const std::string& path) { return read_text_file(path); }

// Runs `fn`, expects a cocom::Error and returns its message ("" + a test failure otherwise).
using test::error_of;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("st"); }
  void TearDown() override {
    if (!HasFailure()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  // Writes `bytes` to a new file in the temp dir and returns the error opening it gives.
  std::string open_error(const std::string& bytes, const std::string& name = "bad.safetensors") {
    std::string path = dir_ + "/" + name;
    test::write_bytes(path, bytes);
    last_path_ = path;
    return error_of([&] { SafetensorsFile::open(path); });
  }
  // Header with one tensor entry (raw JSON text of the entry).
  std::string open_error_entry(const std::string& name, const std::string& entry,
                               const std::string& data) {
    return open_error(st_bytes("{\"" + name + "\":" + entry + "}", data));
  }
  std::string dir_;
  std::string last_path_;
};

#define EXPECT_HAS(msg, piece) \
  EXPECT_NE(std::string(msg).find(piece), std::string::npos) << "message: " << (msg)

// ---------------------------------------------------------------------------------------------
// dtypes

TEST(SafetensorsDType, SizesNamesAndParsing) {
  const DType all[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                       DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};
  const size_t sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1};
  for (size_t i = 0; i < std::size(all); ++i) {
    EXPECT_EQ(dtype_size(all[i]), sizes[i]) << dtype_name(all[i]);
    auto back = parse_dtype(dtype_name(all[i]));
    ASSERT_TRUE(back.has_value()) << dtype_name(all[i]);
    EXPECT_EQ(*back, all[i]);
  }
  EXPECT_STREQ(dtype_name(DType::BF16), "BF16");
  EXPECT_FALSE(parse_dtype("bf16").has_value());  // case-sensitive like the reference
  EXPECT_FALSE(parse_dtype("F8_E4M3").has_value());
  EXPECT_FALSE(parse_dtype("").has_value());
  EXPECT_TRUE(dtype_is_float(DType::BF16));
  EXPECT_TRUE(dtype_is_float(DType::F64));
  EXPECT_FALSE(dtype_is_float(DType::I64));
  EXPECT_FALSE(dtype_is_float(DType::BOOL));
}

TEST(SafetensorsDType, Numel) {
  TensorInfo t;
  t.shape = {};
  EXPECT_EQ(t.numel(), 1);
  t.shape = {3, 0, 5};
  EXPECT_EQ(t.numel(), 0);
  t.shape = {1004, 64};
  EXPECT_EQ(t.numel(), 1004 * 64);
}

// ---------------------------------------------------------------------------------------------
// fixtures

TEST(SafetensorsFixture, MistralMatchesConfig) {
  auto cfg = DecoderConfig::load(fixture("mistral/config.json"));
  auto f = SafetensorsFile::open(fixture("mistral/model.safetensors"));
  EXPECT_EQ(f->path(), fixture("mistral/model.safetensors"));
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->tensors().size(), 3u + 9u * cfg.num_hidden_layers);
  const int64_t kv = cfg.num_key_value_heads * cfg.head_dim;
  struct Want {
    std::string name;
    std::vector<int64_t> shape;
  };
  std::vector<Want> want = {
      {"model.embed_tokens.weight", {cfg.vocab_size, cfg.hidden_size}},
      {"lm_head.weight", {cfg.vocab_size, cfg.hidden_size}},
      {"model.norm.weight", {cfg.hidden_size}},
  };
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    want.push_back({p + "self_attn.q_proj.weight", {cfg.hidden_size, cfg.hidden_size}});
    want.push_back({p + "self_attn.k_proj.weight", {kv, cfg.hidden_size}});
    want.push_back({p + "self_attn.v_proj.weight", {kv, cfg.hidden_size}});
    want.push_back({p + "self_attn.o_proj.weight", {cfg.hidden_size, cfg.hidden_size}});
    want.push_back({p + "mlp.gate_proj.weight", {cfg.intermediate_size, cfg.hidden_size}});
    want.push_back({p + "mlp.up_proj.weight", {cfg.intermediate_size, cfg.hidden_size}});
    want.push_back({p + "mlp.down_proj.weight", {cfg.hidden_size, cfg.intermediate_size}});
    want.push_back({p + "input_layernorm.weight", {cfg.hidden_size}});
    want.push_back({p + "post_attention_layernorm.weight", {cfg.hidden_size}});
  }
  for (const auto& w : want) {
    const TensorInfo* t = f->find(w.name);
    ASSERT_NE(t, nullptr) << w.name;
    EXPECT_EQ(t->dtype, DType::BF16) << w.name;
    EXPECT_EQ(t->shape, w.shape) << w.name;
    EXPECT_EQ(t->nbytes(), static_cast<uint64_t>(t->numel()) * 2) << w.name;
  }
  EXPECT_EQ(f->find("embed_tokens.weight"), nullptr);
  EXPECT_EQ(f->find("model.embed_tokens.weight")->shape, (std::vector<int64_t>{1004, 64}));
  // Tensors come in file order and tile the data section; data() points inside the file.
  uint64_t pos = 0;
  for (const TensorInfo& t : f->tensors()) {
    EXPECT_EQ(t.begin, pos) << t.name;
    pos = t.end;
  }
  const uint64_t file_size = fs::file_size(fixture("mistral/model.safetensors"));
  const auto& first = f->tensors().front();
  const auto& last = f->tensors().back();
  EXPECT_EQ(f->data(last) - f->data(first), static_cast<ptrdiff_t>(last.begin));
  EXPECT_EQ(pos + 2176, file_size);  // header length 2168 + 8
}

TEST(SafetensorsFixture, BertMatchesConfig) {
  auto cfg = BertConfig::load(fixture("bert/config.json"));
  auto f = SafetensorsFile::open(fixture("bert/model.safetensors"));
  // 5 embedding tensors, 16 per layer, pooler weight + bias.
  EXPECT_EQ(f->tensors().size(), 5u + 16u * cfg.num_hidden_layers + 2u);
  const int64_t h = cfg.hidden_size;
  std::map<std::string, std::vector<int64_t>> want = {
      {"embeddings.word_embeddings.weight", {cfg.vocab_size, h}},
      {"embeddings.position_embeddings.weight", {cfg.max_position_embeddings, h}},
      {"embeddings.token_type_embeddings.weight", {cfg.type_vocab_size, h}},
      {"embeddings.LayerNorm.weight", {h}},
      {"embeddings.LayerNorm.bias", {h}},
      {"encoder.layer.1.attention.self.query.weight", {h, h}},
      {"encoder.layer.1.intermediate.dense.weight", {cfg.intermediate_size, h}},
      {"encoder.layer.1.output.dense.weight", {h, cfg.intermediate_size}},
      {"pooler.dense.weight", {h, h}},
      {"pooler.dense.bias", {h}},
  };
  for (const auto& [name, shape] : want) {
    const TensorInfo* t = f->find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, DType::F32) << name;
    EXPECT_EQ(t->shape, shape) << name;
  }
  // data() points at the bytes the header describes, in the raw file.
  std::string raw = read_text_file(fixture("bert/model.safetensors"));
  const TensorInfo* ln = f->find("embeddings.LayerNorm.weight");
  ASSERT_NE(ln, nullptr);
  EXPECT_EQ(std::memcmp(f->data(*ln), raw.data() + 8 + 4024 + ln->begin, ln->nbytes()), 0);
}

// Reads every tensor of `path` into name -> (info, bytes).
std::map<std::string, std::pair<TensorInfo, std::string>> read_all(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  std::map<std::string, std::pair<TensorInfo, std::string>> out;
  for (const auto& t : f->tensors()) {
    out[t.name] = {t, std::string(reinterpret_cast<const char*>(f->data(t)), t.nbytes())};
  }
  return out;
}

TEST_F(SafetensorsTest, RoundTripFixturesByteIdentical) {
  for (const char* rel : {"mistral/model.safetensors", "bert/model.safetensors",
                          "cocom/model.safetensors", "mistral/golden.safetensors"}) {
    SCOPED_TRACE(rel);
    auto src = SafetensorsFile::open(fixture(rel));
    SafetensorsWriter w;
    for (const auto& [k, v] : src->metadata()) w.set_metadata(k, v);
    for (const auto& t : src->tensors()) w.add(t.name, t.dtype, t.shape, src->data(t), t.nbytes());
    std::string out = dir_ + "/copy.safetensors";
    w.write(out);

    auto a = read_all(fixture(rel));
    auto b = read_all(out);
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [name, ab] : a) {
      ASSERT_TRUE(b.count(name)) << name;
      const auto& bb = b.at(name);
      EXPECT_EQ(ab.first.dtype, bb.first.dtype) << name;
      EXPECT_EQ(ab.first.shape, bb.first.shape) << name;
      EXPECT_TRUE(ab.second == bb.second) << name << ": bytes differ";
    }
    auto re = SafetensorsFile::open(out);
    EXPECT_EQ(re->metadata(), src->metadata());
    // Written in file order with the same metadata, the header is the reference writer's
    // compact JSON, so the whole file is identical to what Python's safetensors wrote.
    if (std::string(rel) != "mistral/golden.safetensors") {
      EXPECT_TRUE(slurp(out) == slurp(fixture(rel))) << "file bytes differ from the fixture";
    }
  }
}

TEST_F(SafetensorsTest, WriterAlignsDataSectionAndKeepsInsertionOrder) {
  // Names of every length mod 8 so that each padding amount occurs.
  for (int extra = 0; extra < 8; ++extra) {
    SCOPED_TRACE(extra);
    SafetensorsWriter w;
    const uint8_t odd[3] = {1, 2, 3};
    const float f4[2] = {1.5f, -2.0f};
    std::string zname = "z" + std::string(extra, 'x');
    w.add(zname, DType::U8, {3}, odd, 3);
    w.add("a", DType::F32, {2}, f4, sizeof f4);
    w.add("empty", DType::F32, {0, 4}, nullptr, 0);
    w.add("scalar", DType::F32, {}, f4, 4);
    std::string path = dir_ + "/aligned.safetensors";
    w.write(path);
    std::string bytes = slurp(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
    EXPECT_EQ((8 + n) % 8, 0u);
    std::string header = bytes.substr(8, n);
    // Padding is trailing spaces only; insertion order is kept (z... before a).
    size_t close = header.find_last_of('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
    EXPECT_LT(header.find("\"" + zname + "\""), header.find("\"a\""));
    EXPECT_EQ(bytes.size(), 8 + n + 3 + 8 + 0 + 4);
    auto f = SafetensorsFile::open(path);
    ASSERT_EQ(f->tensors().size(), 4u);
    EXPECT_EQ(f->tensors()[0].name, zname);  // offset 0
    const TensorInfo* a = f->find("a");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->begin, 3u);
    float back[2];
    std::memcpy(back, f->data(*a), 8);
    EXPECT_EQ(back[0], 1.5f);
    EXPECT_EQ(back[1], -2.0f);
    EXPECT_EQ(f->find("empty")->nbytes(), 0u);
    EXPECT_EQ(f->find("scalar")->shape.size(), 0u);
  }
}

TEST_F(SafetensorsTest, WriterIsAtomicAndOverwrites) {
  std::string path = dir_ + "/out.safetensors";
  test::write_bytes(path, "old contents");
  SafetensorsWriter w;
  const int64_t v[2] = {7, -7};
  w.add("v", DType::I64, {2}, v, sizeof v);
  w.write(path);
  EXPECT_EQ(SafetensorsFile::open(path)->tensors().size(), 1u);
  // No temporary file is left behind.
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "out.safetensors");
  }
  EXPECT_EQ(files, 1u);
  // Writing into a missing directory fails naming the path, and leaves nothing.
  std::string bad = dir_ + "/missing/out.safetensors";
  std::string msg = error_of([&] { w.write(bad); });
  EXPECT_EQ(msg.rfind(bad, 0), 0u) << msg;
}

TEST_F(SafetensorsTest, WriterRejectsBadTensors) {
  SafetensorsWriter w;
  const float x[4] = {};
  std::string m = error_of([&] { w.add("w.bad_size", DType::F32, {2, 2}, x, 12); });
  EXPECT_HAS(m, "'w.bad_size'");
  EXPECT_HAS(m, "16");
  m = error_of([&] { w.add("", DType::F32, {1}, x, 4); });
  EXPECT_HAS(m, "empty");
  m = error_of([&] { w.add("w.neg", DType::F32, {-1, 4}, x, 4); });
  EXPECT_HAS(m, "'w.neg'");
  EXPECT_HAS(m, "negative");
  m = error_of([&] { w.add("__metadata__", DType::F32, {1}, x, 4); });
  EXPECT_HAS(m, "reserved");
  m = error_of([&] { w.add("w.null", DType::F32, {1}, nullptr, 4); });
  EXPECT_HAS(m, "'w.null'");
  m = error_of([&] { w.add("bad\xff", DType::F32, {1}, x, 4); });
  EXPECT_HAS(m, "UTF-8");
  m = error_of([&] { w.add("w.huge", DType::F32, {int64_t{1} << 40, int64_t{1} << 40}, x, 4); });
  EXPECT_HAS(m, "overflow");
  w.add("w.ok", DType::F32, {4}, x, 16);
  m = error_of([&] { w.add("w.ok", DType::F32, {4}, x, 16); });
  EXPECT_HAS(m, "'w.ok'");
  EXPECT_HAS(m, "twice");
}

// ---------------------------------------------------------------------------------------------
// Python interoperability: the reference reader of the fixtures reads what we write.

std::string python_reader_path() {
  if (const char* env = std::getenv("COCOM_CHECK_FIXTURES_PY")) return env;
  // The project's copy of the fixtures' checker, else /work/shared/tools next to the checkout.
  std::string in_tree = std::string(COCOM_TEST_DATA_DIR) + "/check_fixtures.py";
  if (fs::exists(in_tree)) return in_tree;
  return std::string(COCOM_TEST_DATA_DIR) + "/../../../shared/tools/check_fixtures.py";
}

TEST_F(SafetensorsTest, PythonReaderReadsWrittenFile) {
  std::string out;
  if (test::run_command("/usr/bin/python3 -c 'import numpy'", &out) != 0) {
    GTEST_SKIP() << "/usr/bin/python3 lacks numpy; cannot run the Python cross-check";
  }
  SafetensorsWriter w;
  const float a[6] = {0.0f, 0.5f, 1.0f, 1.5f, -2.0f, 3.25f};
  const uint16_t b[4] = {0x3F80, 0xC000, 0x3F00, 0x4040};  // bf16 1, -2, 0.5, 3
  const int64_t c[3] = {-1, int64_t{1} << 40, 7};
  const int32_t d[4] = {1, -2, 3, -4};
  const uint8_t e[5] = {0, 1, 2, 254, 255};
  w.add("a.f32", DType::F32, {2, 3}, a, sizeof a);
  w.add("b.bf16", DType::BF16, {4}, b, sizeof b);
  w.add("c.i64", DType::I64, {3}, c, sizeof c);
  w.add("d.i32", DType::I32, {2, 2}, d, sizeof d);
  w.add("e.u8", DType::U8, {5}, e, sizeof e);
  w.add("f.empty", DType::F32, {0, 3}, nullptr, 0);
  w.set_metadata("format", "pt");
  std::string path = dir_ + "/py.safetensors";
  w.write(path);

  std::string reader = python_reader_path();
  std::string load;
  if (fs::exists(reader)) {
    load = "import sys; sys.path.insert(0, '" + fs::path(reader).parent_path().string() +
           "'); from check_fixtures import read_safetensors as rd; t = rd(sys.argv[1]); ";
  } else {
    // Same minimal reader, inline (the shared tools are not next to this checkout).
    load =
        "import sys, json, struct, numpy as np\n"
        "def rd(p):\n"
        "  f = open(p, 'rb'); n = struct.unpack('<Q', f.read(8))[0]\n"
        "  h = json.loads(f.read(n).decode('utf-8')); data = f.read(); h.pop('__metadata__')\n"
        "  dt = {'F32': '<f4', 'I64': '<i8', 'I32': '<i4', 'U8': 'u1'}\n"
        "  out = {}\n"
        "  for k, v in h.items():\n"
        "    b, e = v['data_offsets']; raw = data[b:e]\n"
        "    if v['dtype'] == 'BF16':\n"
        "      arr = (np.frombuffer(raw, '<u2').astype(np.uint32) << 16).view(np.float32)\n"
        "    else:\n"
        "      arr = np.frombuffer(raw, dt[v['dtype']])\n"
        "    out[k] = arr.reshape(v['shape'])\n"
        "  return out\n"
        "t = rd(sys.argv[1])\n";
  }
  std::string script = load +
                       "\nfor k in sorted(t): print(k, str(t[k].dtype), list(t[k].shape), "
                       "[float(x) for x in t[k].ravel()])\n";
  std::string script_path = dir_ + "/check.py";
  test::write_bytes(script_path, script);
  int rc = test::run_command(
      "PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 " + script_path + " " + path, &out);
  ASSERT_EQ(rc, 0) << out;
  const std::string want =
      "a.f32 float32 [2, 3] [0.0, 0.5, 1.0, 1.5, -2.0, 3.25]\n"
      "b.bf16 float32 [4] [1.0, -2.0, 0.5, 3.0]\n"
      "c.i64 int64 [3] [-1.0, 1099511627776.0, 7.0]\n"
      "d.i32 int32 [2, 2] [1.0, -2.0, 3.0, -4.0]\n"
      "e.u8 uint8 [5] [0.0, 1.0, 2.0, 254.0, 255.0]\n"
      "f.empty float32 [0, 3] []\n";
  EXPECT_EQ(out, want);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint directories

TEST_F(SafetensorsTest, CheckpointSingleFile) {
  auto c = CheckpointFiles::open(fixture("mistral"));
  auto f = SafetensorsFile::open(fixture("mistral/model.safetensors"));
  EXPECT_EQ(c->names().size(), f->tensors().size());  // golden.safetensors is not included
  EXPECT_TRUE(c->has("lm_head.weight"));
  EXPECT_FALSE(c->has("logits"));
  EXPECT_EQ(c->file_of("lm_head.weight"), fixture("mistral/model.safetensors"));
  uint64_t total = 0;
  for (const auto& t : f->tensors()) total += t.nbytes();
  EXPECT_EQ(c->total_bytes(), total);
  std::string m = error_of([&] { c->info("model.no_such.weight"); });
  EXPECT_EQ(m.rfind(fixture("mistral"), 0), 0u) << m;
  EXPECT_HAS(m, "'model.no_such.weight'");
  m = error_of([&] { c->data("model.no_such.weight"); });
  EXPECT_HAS(m, "'model.no_such.weight'");
}

// Splits the Mistral fixture over two shards + an index in `dir`.
void write_sharded(const std::string& dir, const std::string& index_override = "") {
  auto src = SafetensorsFile::open(fixture("mistral/model.safetensors"));
  SafetensorsWriter w1, w2;
  Json wm = Json::object();
  size_t i = 0;
  for (const auto& t : src->tensors()) {
    bool first = i++ < src->tensors().size() / 2;
    (first ? w1 : w2).add(t.name, t.dtype, t.shape, src->data(t), t.nbytes());
    wm[t.name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  w1.set_metadata("format", "pt");
  w2.set_metadata("format", "pt");
  w1.write(dir + "/model-00001-of-00002.safetensors");
  w2.write(dir + "/model-00002-of-00002.safetensors");
  Json index = {{"metadata", {{"total_size", 405120}}}, {"weight_map", wm}};
  test::write_bytes(dir + "/model.safetensors.index.json",
                    index_override.empty() ? index.dump(2) : index_override);
}

TEST_F(SafetensorsTest, CheckpointSharded) {
  write_sharded(dir_);
  // A stray model.safetensors must not be preferred over the index.
  auto c = CheckpointFiles::open(dir_);
  auto src = SafetensorsFile::open(fixture("mistral/model.safetensors"));
  std::vector<std::string> want;
  for (const auto& t : src->tensors()) want.push_back(t.name);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(c->names(), want);
  EXPECT_EQ(c->dir(), dir_);
  uint64_t total = 0;
  for (const auto& t : src->tensors()) {
    const TensorInfo& i = c->info(t.name);
    EXPECT_EQ(i.dtype, t.dtype) << t.name;
    EXPECT_EQ(i.shape, t.shape) << t.name;
    EXPECT_EQ(std::memcmp(c->data(t.name), src->data(t), t.nbytes()), 0) << t.name;
    total += t.nbytes();
  }
  EXPECT_EQ(c->total_bytes(), total);
  EXPECT_EQ(c->file_of(src->tensors().front().name), dir_ + "/model-00001-of-00002.safetensors");
  EXPECT_EQ(c->file_of(src->tensors().back().name), dir_ + "/model-00002-of-00002.safetensors");
}

TEST_F(SafetensorsTest, CheckpointIndexPreferredOverSingleFile) {
  write_sharded(dir_);
  SafetensorsWriter w;
  const float x = 1.0f;
  w.add("only.in.single", DType::F32, {}, &x, 4);
  w.write(dir_ + "/model.safetensors");
  auto c = CheckpointFiles::open(dir_);
  EXPECT_FALSE(c->has("only.in.single"));
  EXPECT_TRUE(c->has("lm_head.weight"));
}

TEST_F(SafetensorsTest, CheckpointIndexNamesMissingShard) {
  write_sharded(dir_);
  fs::remove(dir_ + "/model-00002-of-00002.safetensors");
  std::string m = error_of([&] { CheckpointFiles::open(dir_); });
  EXPECT_EQ(m.rfind(dir_ + "/model.safetensors.index.json", 0), 0u) << m;
  EXPECT_HAS(m, "model-00002-of-00002.safetensors");
  EXPECT_HAS(m, "not found");
  EXPECT_HAS(m, "tensor '");
}

TEST_F(SafetensorsTest, CheckpointIndexTensorMissingFromShard) {
  auto src = SafetensorsFile::open(fixture("mistral/model.safetensors"));
  Json wm = Json::object();
  for (const auto& t : src->tensors()) wm[t.name] = "model.safetensors";
  wm["model.extra.weight"] = "model.safetensors";
  fs::copy_file(fixture("mistral/model.safetensors"), dir_ + "/model.safetensors");
  test::write_bytes(dir_ + "/model.safetensors.index.json", Json{{"weight_map", wm}}.dump());
  std::string m = error_of([&] { CheckpointFiles::open(dir_); });
  EXPECT_EQ(m.rfind(dir_ + "/model.safetensors.index.json", 0), 0u) << m;
  EXPECT_HAS(m, "'model.extra.weight'");
  EXPECT_HAS(m, "does not contain it");
}

TEST_F(SafetensorsTest, CheckpointTensorInTwoShards) {
  write_sharded(dir_);
  // Shard 2 also carries a tensor that the index assigns to shard 1.
  auto src = SafetensorsFile::open(fixture("mistral/model.safetensors"));
  const TensorInfo& t0 = src->tensors().front();
  SafetensorsWriter w2;
  for (size_t i = src->tensors().size() / 2; i < src->tensors().size(); ++i) {
    const auto& t = src->tensors()[i];
    w2.add(t.name, t.dtype, t.shape, src->data(t), t.nbytes());
  }
  w2.add(t0.name, t0.dtype, t0.shape, src->data(t0), t0.nbytes());
  w2.write(dir_ + "/model-00002-of-00002.safetensors");
  std::string m = error_of([&] { CheckpointFiles::open(dir_); });
  EXPECT_EQ(m.rfind(dir_, 0), 0u) << m;
  EXPECT_HAS(m, "'" + t0.name + "'");
  EXPECT_HAS(m, "two shards");
  EXPECT_HAS(m, "model-00001-of-00002.safetensors");
  EXPECT_HAS(m, "model-00002-of-00002.safetensors");
}

TEST_F(SafetensorsTest, CheckpointIndexDuplicateEntry) {
  std::string idx =
      "{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00002.safetensors\", "
      "\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}";
  write_sharded(dir_, idx);
  std::string m = error_of([&] { CheckpointFiles::open(dir_); });
  EXPECT_HAS(m, "model.safetensors.index.json");
  EXPECT_HAS(m, "'lm_head.weight'");
  EXPECT_HAS(m, "more than once");
}

TEST_F(SafetensorsTest, CheckpointIndexMalformed) {
  struct Case {
    std::string index, piece;
  };
  const Case cases[] = {
      {"{not json", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {"{\"metadata\": {}}", "missing 'weight_map'"},
      {"{\"weight_map\": []}", "'weight_map' must be an object"},
      {"{\"weight_map\": {}}", "lists no tensors"},
      {"{\"weight_map\": {\"w\": 3}}", "'w'"},
      {"{\"weight_map\": {\"w\": \"../model.safetensors\"}}", "inside the checkpoint directory"},
      {"{\"weight_map\": {\"w\": \"/etc/passwd\"}}", "inside the checkpoint directory"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.index);
    test::write_bytes(dir_ + "/model.safetensors.index.json", c.index);
    std::string m = error_of([&] { CheckpointFiles::open(dir_); });
    EXPECT_EQ(m.rfind(dir_ + "/model.safetensors.index.json", 0), 0u) << m;
    EXPECT_HAS(m, c.piece);
  }
}

TEST_F(SafetensorsTest, CheckpointGlobFallback) {
  SafetensorsWriter a, b;
  const float x[2] = {1, 2};
  a.add("enc.w", DType::F32, {2}, x, 8);
  b.add("dec.w", DType::F32, {1}, x, 4);
  a.write(dir_ + "/b-encoder.safetensors");
  b.write(dir_ + "/a-decoder.safetensors");
  test::write_bytes(dir_ + "/notes.txt", "not a checkpoint");
  auto c = CheckpointFiles::open(dir_);
  EXPECT_EQ(c->names(), (std::vector<std::string>{"dec.w", "enc.w"}));
  EXPECT_EQ(c->file_of("enc.w"), dir_ + "/b-encoder.safetensors");
  EXPECT_EQ(c->total_bytes(), 12u);

  // The same tensor name in two files is an error naming both.
  SafetensorsWriter dup;
  dup.add("enc.w", DType::F32, {2}, x, 8);
  dup.write(dir_ + "/c-extra.safetensors");
  std::string m = error_of([&] { CheckpointFiles::open(dir_); });
  EXPECT_EQ(m.rfind(dir_, 0), 0u) << m;
  EXPECT_HAS(m, "'enc.w'");
  EXPECT_HAS(m, "b-encoder.safetensors");
  EXPECT_HAS(m, "c-extra.safetensors");
}

TEST_F(SafetensorsTest, CheckpointNothingFound) {
  test::write_bytes(dir_ + "/config.json", "{}");
  std::string m = error_of([&] { CheckpointFiles::open(dir_); });
  EXPECT_EQ(m.rfind(dir_, 0), 0u) << m;
  EXPECT_HAS(m, "model.safetensors.index.json");
  EXPECT_HAS(m, "model.safetensors,");
  EXPECT_HAS(m, "*.safetensors");
  m = error_of([&] { CheckpointFiles::open(dir_ + "/nope"); });
  EXPECT_HAS(m, dir_ + "/nope");
  EXPECT_HAS(m, "not a directory");
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs: one test per error.

TEST_F(SafetensorsTest, MissingFileAndDirectory) {
  std::string p = dir_ + "/absent.safetensors";
  std::string m = error_of([&] { SafetensorsFile::open(p); });
  EXPECT_EQ(m.rfind(p, 0), 0u) << m;
  EXPECT_HAS(m, "cannot open");
  m = error_of([&] { SafetensorsFile::open(dir_); });
  EXPECT_HAS(m, "not a regular file");
}

TEST_F(SafetensorsTest, FileTooShortForLength) {
  for (size_t n : {0, 1, 7}) {
    std::string m = open_error(std::string(n, '\x01'));
    EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
    EXPECT_HAS(m, "too short");
    EXPECT_HAS(m, "(" + std::to_string(n) + " bytes)");
  }
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  std::string m = open_error(le64(1000) + "{}");  // 10-byte file
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "header length 1000");
  EXPECT_HAS(m, "the file has 10 bytes");
  m = open_error(le64(~uint64_t{0}) + "{}");
  EXPECT_HAS(m, "header length 18446744073709551615");
  EXPECT_HAS(m, "beyond the end of the file");
}

TEST_F(SafetensorsTest, AbsurdHeaderLengthRefusedBeforeAllocating) {
  // The file claims 200 MB; only the length prefix is passed in. Nothing may be read past it.
  std::string bytes = le64(150'000'000);
  std::string m = error_of([&] {
    parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                             200'000'000, "big.safetensors");
  });
  EXPECT_EQ(m.rfind("big.safetensors", 0), 0u) << m;
  EXPECT_HAS(m, "150000000");
  EXPECT_HAS(m, "limit");
}

TEST_F(SafetensorsTest, HeaderNotProvidedInBuffer) {
  std::string bytes = le64(100) + "{";
  std::string m = error_of([&] {
    parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), 4096,
                             "part.safetensors");
  });
  EXPECT_EQ(m.rfind("part.safetensors", 0), 0u) << m;
  EXPECT_HAS(m, "108");
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  std::string m = open_error(st_bytes("{\"w\": {\"dtype\": ", ""));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "header is not valid JSON");
  m = open_error(st_bytes("", ""));
  EXPECT_HAS(m, "header is not valid JSON");
  m = open_error(st_bytes("{} {}", ""));  // trailing garbage
  EXPECT_HAS(m, "header is not valid JSON");
  m = open_error(st_bytes(std::string("{}\0\0\0\0\0\0", 8), ""));  // NUL padding is not JSON
  EXPECT_HAS(m, "header is not valid JSON");
  EXPECT_HAS(m, "NUL byte at byte 2");
  // A number beyond double range is reported like any other syntax error.
  m = open_error_entry("t.huge", R"({"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]})",
                       std::string(4, '\0'));
  EXPECT_HAS(m, "header is not valid JSON");
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  for (const char* h : {"[]", "42", "\"str\"", "null"}) {
    std::string m = open_error(st_bytes(h, ""));
    EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
    EXPECT_HAS(m, "header must be a JSON object");
  }
}

TEST_F(SafetensorsTest, HeaderNotUtf8) {
  std::string m = open_error(st_bytes("{\"w\xff\": {}}", ""));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "not valid UTF-8");
  EXPECT_HAS(m, "byte 3");
  // Overlong encoding of '/' and an encoded surrogate are rejected too.
  EXPECT_HAS(open_error(st_bytes("{\"\xc0\xaf\": {}}", "")), "UTF-8");
  EXPECT_HAS(open_error(st_bytes("{\"\xed\xa0\x80\": {}}", "")), "UTF-8");
}

TEST_F(SafetensorsTest, HeaderTooDeep) {
  std::string deep = "{\"w\": " + std::string(1000, '[') + std::string(1000, ']') + "}";
  std::string m = open_error(st_bytes(deep, ""));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "nested deeper");
}

TEST_F(SafetensorsTest, TensorEntryNotObject) {
  std::string m = open_error_entry("layers.0.w", "[1, 2]", "");
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "tensor 'layers.0.w'");
  EXPECT_HAS(m, "must be a JSON object");
}

TEST_F(SafetensorsTest, TensorMissingDtype) {
  std::string m = open_error_entry("t.nodtype", R"({"shape": [1], "data_offsets": [0, 4]})",
                                   std::string(4, '\0'));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.nodtype'");
  EXPECT_HAS(m, "missing 'dtype'");
  m = open_error_entry("t.dtype_num", R"({"dtype": 4, "shape": [1], "data_offsets": [0, 4]})",
                       std::string(4, '\0'));
  EXPECT_HAS(m, "'t.dtype_num'");
  EXPECT_HAS(m, "'dtype' must be a string");
}

TEST_F(SafetensorsTest, TensorMissingShape) {
  std::string m = open_error_entry("t.noshape", R"({"dtype": "F32", "data_offsets": [0, 4]})",
                                   std::string(4, '\0'));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.noshape'");
  EXPECT_HAS(m, "missing 'shape'");
  m = open_error_entry("t.shape_obj", R"({"dtype": "F32", "shape": {}, "data_offsets": [0, 4]})",
                       std::string(4, '\0'));
  EXPECT_HAS(m, "'t.shape_obj'");
  EXPECT_HAS(m, "'shape' must be an array");
}

TEST_F(SafetensorsTest, TensorMissingOffsets) {
  std::string m =
      open_error_entry("t.nooffsets", R"({"dtype": "F32", "shape": [1]})", std::string(4, '\0'));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.nooffsets'");
  EXPECT_HAS(m, "missing 'data_offsets'");
}

TEST_F(SafetensorsTest, TensorUnknownDtype) {
  std::string m =
      open_error_entry("t.fp8", R"({"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]})",
                       std::string(4, '\0'));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.fp8'");
  EXPECT_HAS(m, "unknown dtype 'F8_E4M3'");
}

TEST_F(SafetensorsTest, TensorNegativeShape) {
  std::string m = open_error_entry(
      "t.neg", R"({"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 0]})", "");
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.neg'");
  EXPECT_HAS(m, "dimension 1 is negative (-1)");
}

TEST_F(SafetensorsTest, TensorNonIntegerShape) {
  for (const char* dim : {"2.5", "2.0", "\"2\"", "null", "[2]", "1e3"}) {
    SCOPED_TRACE(dim);
    std::string m = open_error_entry(
        "t.frac",
        std::string(R"({"dtype": "F32", "shape": [)") + dim + R"(], "data_offsets": [0, 8]})",
        std::string(8, '\0'));
    EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
    EXPECT_HAS(m, "'t.frac'");
    EXPECT_HAS(m, "must be a non-negative integer");
  }
  // Beyond int64.
  std::string m = open_error_entry(
      "t.big", R"({"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 0]})", "");
  EXPECT_HAS(m, "'t.big'");
  EXPECT_HAS(m, "too large");
}

TEST_F(SafetensorsTest, TensorShapeOverflow) {
  std::string m = open_error_entry(
      "t.overflow",
      R"({"dtype": "F32", "shape": [4294967296, 4294967296, 4], "data_offsets": [0, 0]})", "");
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.overflow'");
  EXPECT_HAS(m, "overflows");
  // Element count fits in int64 but the byte count does not.
  m = open_error_entry(
      "t.bytes_overflow",
      R"({"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 0]})", "");
  EXPECT_HAS(m, "'t.bytes_overflow'");
  EXPECT_HAS(m, "overflows");
}

TEST_F(SafetensorsTest, TensorOffsetsNotTwoIncreasingIntegers) {
  for (const char* off : {"[0]", "[0, 4, 8]", "[8, 4]", "[0, 4.0]", "[-4, 4]", "\"0-4\"",
                          "{\"begin\": 0}", "[0, \"4\"]", "[]"}) {
    SCOPED_TRACE(off);
    std::string m = open_error_entry(
        "t.off", std::string(R"({"dtype": "F32", "shape": [1], "data_offsets": )") + off + "}",
        std::string(16, '\0'));
    EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
    EXPECT_HAS(m, "'t.off'");
    EXPECT_HAS(m, "'data_offsets' must be two non-negative integers");
  }
}

TEST_F(SafetensorsTest, TensorOffsetsBeyondDataSectionTruncatedFile) {
  std::string header = R"({"t.trunc": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})";
  std::string m = open_error(st_bytes(header, std::string(10, '\0')));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.trunc'");
  EXPECT_HAS(m, "beyond the data section (10 bytes)");
  const size_t actual = 8 + header.size() + 10, expected = 8 + header.size() + 16;
  EXPECT_HAS(m, "expected at least " + std::to_string(expected) + " bytes");
  EXPECT_HAS(m, "the file has " + std::to_string(actual));
}

TEST_F(SafetensorsTest, TensorByteCountMismatch) {
  std::string m =
      open_error_entry("t.count", R"({"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 24]})",
                       std::string(24, '\0'));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.count'");
  EXPECT_HAS(m, "span 24 bytes");
  EXPECT_HAS(m, "needs 12 bytes");
}

TEST_F(SafetensorsTest, TensorsOverlap) {
  std::string header = R"({"t.first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                       R"( "t.second": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
  std::string m = open_error(st_bytes(header, std::string(12, '\0')));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.first'");
  EXPECT_HAS(m, "'t.second'");
  EXPECT_HAS(m, "overlap");
  // A tensor inside a much longer one is caught even with an empty one in between.
  header = R"({"t.long": {"dtype": "U8", "shape": [100], "data_offsets": [0, 100]},)"
           R"( "t.empty": {"dtype": "U8", "shape": [0], "data_offsets": [5, 5]},)"
           R"( "t.inner": {"dtype": "U8", "shape": [10], "data_offsets": [50, 60]}})";
  m = open_error(st_bytes(header, std::string(100, '\0')));
  EXPECT_HAS(m, "overlap");
  EXPECT_HAS(m, "'t.long'");
  EXPECT_HAS(m, "'t.inner'");
}

TEST_F(SafetensorsTest, DuplicateTensorName) {
  std::string header = R"({"t.dup": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                       R"( "t.dup": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
  std::string m = open_error(st_bytes(header, std::string(8, '\0')));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.dup'");
  EXPECT_HAS(m, "more than once");
}

TEST_F(SafetensorsTest, DuplicateFieldInTensorEntry) {
  std::string m = open_error_entry(
      "t.twodtypes", R"({"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]})",
      std::string(4, '\0'));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'t.twodtypes'");
  EXPECT_HAS(m, "'dtype' appears more than once");
}

TEST_F(SafetensorsTest, MetadataNotStringMap) {
  std::string m = open_error(st_bytes(R"({"__metadata__": {"format": 1}})", ""));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "'__metadata__'");
  EXPECT_HAS(m, "'format'");
  EXPECT_HAS(m, "must be a string");
  m = open_error(st_bytes(R"({"__metadata__": ["pt"]})", ""));
  EXPECT_HAS(m, "'__metadata__' must be an object of strings");
  m = open_error(st_bytes(R"({"__metadata__": {"a": "x", "a": "y"}})", ""));
  EXPECT_HAS(m, "'__metadata__' key 'a' appears more than once");
}

TEST_F(SafetensorsTest, EmptyTensorName) {
  std::string m = open_error_entry("", R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})",
                                   std::string(4, '\0'));
  EXPECT_EQ(m.rfind(last_path_, 0), 0u) << m;
  EXPECT_HAS(m, "empty name");
}

TEST_F(SafetensorsTest, AcceptedEdgeCases) {
  // Unpadded header, gaps between tensors, trailing bytes, null metadata, zero-size and scalar
  // tensors, unknown extra fields: all readable.
  std::string header =
      R"({"__metadata__": null, "s": {"dtype": "I32", "shape": [], "data_offsets": [8, 12],)"
      R"( "extra": [1]}, "z": {"dtype": "F32", "shape": [0, 5], "data_offsets": [12, 12]},)"
      R"( "b": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}})";
  std::string data = std::string("\x01\x00\x01", 3) + std::string(5, 'x') + le64(42).substr(0, 4) +
                     std::string(6, 'y');
  std::string path = dir_ + "/edge.safetensors";
  test::write_bytes(path, st_bytes(header, data));
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->tensors()[0].name, "b");
  EXPECT_EQ(f->tensors()[1].name, "s");
  EXPECT_EQ(f->tensors()[2].name, "z");
  EXPECT_TRUE(f->metadata().empty());
  int32_t s = 0;
  std::memcpy(&s, f->data(*f->find("s")), 4);
  EXPECT_EQ(s, 42);
  EXPECT_EQ(f->find("z")->numel(), 0);
  // An empty header (no tensors) is a valid file as well.
  test::write_bytes(path, st_bytes("{}      ", ""));
  EXPECT_TRUE(SafetensorsFile::open(path)->tensors().empty());
}

TEST_F(SafetensorsTest, ParseHeaderDirectlyMatchesOpen) {
  std::string bytes = slurp(fixture("bert/model.safetensors"));
  ParsedHeader h = parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            bytes.size(), bytes.size(), "bert");
  EXPECT_EQ(h.data_start, 8u + 4024u);
  EXPECT_EQ(h.tensors.size(), 39u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  // Only the header needs to be present when file_size gives the true size.
  ParsedHeader h2 = parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()),
                                             h.data_start, bytes.size(), "bert");
  EXPECT_EQ(h2.tensors.size(), 39u);
}

}  // namespace
}  // namespace cocom::model
