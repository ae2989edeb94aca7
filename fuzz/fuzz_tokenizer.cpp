// libFuzzer target for the tokenizers. The first byte picks what the rest of the input is:
//   0-1  text for encode/tokenize/decode/encode_batch of the fixture tokenizers
//   2    a list of token ids (int16, little-endian) for decode
//   3-5  tokenizer_config.json / added_tokens.json / special_tokens_map.json of a Llama
//        tokenizer directory (the llama_cocom fixture with that one file replaced)
//   6-7  vocab.txt / tokenizer_config.json of a BERT tokenizer directory
// cocom::Error is the expected way to refuse input; any other exception, a crash, or an id out
// of range is a finding.
//
// The fixtures are found next to this source (tests/data/fixtures/tokenizer) or in
// $COCOM_FUZZ_FIXTURES.
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using cocom::model::BatchEncodeOptions;
using cocom::model::PaddingSide;
using cocom::model::Tokenizer;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_tokenizer: %s\n", what);
  std::abort();
}

std::string fixtures_root() {
  if (const char* env = std::getenv("COCOM_FUZZ_FIXTURES"); env != nullptr && *env != '\0') {
    return env;
  }
  std::string here = __FILE__;
  return here.substr(0, here.rfind('/')) + "/../tests/data/fixtures/tokenizer";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz_tokenizer: cannot read %s\n", path.c_str());
    std::abort();
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct State {
  std::unique_ptr<Tokenizer> llama, cocom, bert;
  std::string tmp, llama_dir, bert_dir;
  std::map<std::string, std::string> llama_files;  // the JSON files of llama_cocom
  std::map<std::string, std::string> bert_files;

  State() {
    const std::string root = fixtures_root();
    llama = cocom::model::load_tokenizer(root + "/llama");
    cocom = cocom::model::load_tokenizer(root + "/llama_cocom");
    bert = cocom::model::load_tokenizer(root + "/bert");

    std::string templ = (fs::temp_directory_path() / "cocom-fuzz-tok-XXXXXX").string();
    if (mkdtemp(templ.data()) == nullptr) finding("mkdtemp failed");
    tmp = templ;
    llama_dir = tmp + "/llama";
    bert_dir = tmp + "/bert";
    fs::create_directory(llama_dir);
    fs::create_directory(bert_dir);
    fs::copy_file(root + "/llama_cocom/tokenizer.model", llama_dir + "/tokenizer.model");
    for (const char* f :
         {"tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"}) {
      llama_files[f] = read_file(root + "/llama_cocom/" + f);
    }
    for (const char* f : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
      bert_files[f] = read_file(root + "/bert/" + f);
    }
  }
  ~State() {
    std::error_code ec;
    fs::remove_all(tmp, ec);
  }
};

State& state() {
  static State s;
  return s;
}

void check_ids(const Tokenizer& tok, const std::vector<int64_t>& ids) {
  for (int64_t id : ids) {
    if (id < 0 || id >= tok.size()) finding("encode produced an id out of range");
  }
}

// encode/tokenize/decode/encode_batch of `text`; a cocom::Error is an accepted answer.
void exercise_text(const Tokenizer& tok, const std::string& text, uint8_t flags) {
  for (bool add : {false, true}) {
    std::vector<int64_t> ids;
    try {
      ids = tok.encode(text, add);
    } catch (const cocom::Error&) {
      continue;
    }
    check_ids(tok, ids);
    try {
      if (tok.tokenize(text, add).size() != ids.size()) finding("tokenize/encode length differ");
      (void)tok.decode(ids, false);
      (void)tok.decode(ids, true);
    } catch (const cocom::Error&) {
    }
  }
  BatchEncodeOptions opt;
  opt.add_special_tokens = (flags & 1) != 0;
  opt.padding_side = (flags & 2) != 0 ? PaddingSide::Left : PaddingSide::Right;
  opt.truncation = (flags & 4) != 0;
  opt.max_length = (flags >> 3) & 7;
  opt.pad_to_multiple_of = (flags >> 6) & 3;
  try {
    const std::string half = text.substr(0, text.size() / 2);
    auto enc = tok.encode_batch({text, half, ""}, opt);
    size_t len = enc.input_ids.empty() ? 0 : enc.input_ids[0].size();
    for (size_t r = 0; r < enc.input_ids.size(); ++r) {
      if (enc.input_ids[r].size() != len || enc.attention_mask[r].size() != len ||
          enc.token_type_ids[r].size() != len) {
        finding("encode_batch rows of different lengths");
      }
      if (opt.pad_to_multiple_of > 0 && len % static_cast<size_t>(opt.pad_to_multiple_of) != 0) {
        finding("encode_batch ignored pad_to_multiple_of");
      }
    }
  } catch (const cocom::Error&) {
  }
}

void exercise_ids(const Tokenizer& tok, const uint8_t* data, size_t size) {
  std::vector<int64_t> ids;
  for (size_t i = 0; i + 1 < size; i += 2) {
    ids.push_back(static_cast<int16_t>(data[i] | (data[i + 1] << 8)));
  }
  for (bool skip : {false, true}) {
    try {
      (void)tok.decode(ids, skip);
    } catch (const cocom::Error&) {
    }
  }
  if (!ids.empty()) {
    try {
      (void)tok.id_to_token(ids[0]);
    } catch (const cocom::Error&) {
    }
  }
}

void exercise_dir(const std::string& dir, const std::string& payload) {
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = cocom::model::load_tokenizer(dir);
  } catch (const cocom::Error&) {
    return;
  }
  exercise_text(*tok, "Hello <MEM> world [CLS] x<SEP><s>", 0x3F);
  exercise_text(*tok, payload.substr(0, 256), 0x0D);
  for (const auto& t : tok->special_tokens()) {
    if (!tok->token_to_id(t).has_value()) finding("a special token has no id");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  State& s = state();
  if (size == 0) return 0;
  const uint8_t mode = data[0] & 7;
  const uint8_t flags = size > 1 ? data[1] : 0;
  const std::string payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (mode) {
    case 0:
    case 1:
      exercise_text(*s.llama, payload, flags);
      exercise_text(*s.cocom, payload, flags);
      exercise_text(*s.bert, payload, flags);
      break;
    case 2:
      exercise_ids(*s.llama, data + 1, size - 1);
      exercise_ids(*s.cocom, data + 1, size - 1);
      exercise_ids(*s.bert, data + 1, size - 1);
      break;
    case 3:
    case 4:
    case 5: {
      static const char* kFiles[] = {"tokenizer_config.json", "added_tokens.json",
                                     "special_tokens_map.json"};
      for (const auto& [name, bytes] : s.llama_files) write_file(s.llama_dir + "/" + name, bytes);
      write_file(s.llama_dir + "/" + kFiles[mode - 3], payload);
      exercise_dir(s.llama_dir, payload);
      break;
    }
    default: {
      for (const auto& [name, bytes] : s.bert_files) write_file(s.bert_dir + "/" + name, bytes);
      write_file(s.bert_dir + "/" + (mode == 6 ? "vocab.txt" : "tokenizer_config.json"), payload);
      exercise_dir(s.bert_dir, payload);
      break;
    }
  }
  return 0;
}
