// Shared tokenizer machinery: the sentencepiece shim loader, Unicode helpers, the added-token
// bookkeeping of Hugging Face's slow tokenizers (transformers 4.41 PreTrainedTokenizer),
// Tokenizer::encode_batch and load_tokenizer.
#include <dlfcn.h>
#include <unistd.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <type_traits>

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model {
namespace detail {

// ---------------------------------------------------------------------------------------------
// Loading libcocom_spm.so

namespace {

// The sanitizers' dlopen interceptor refuses RTLD_DEEPBIND (it would bypass their malloc), so
// sanitized builds load the shim into a link-map namespace of its own (dlmopen LM_ID_NEWLM):
// sentencepiece and its bundled protobuf then cannot meet libtorch's protobuf either. The shim
// is built without sanitizer instrumentation for this (model/CMakeLists.txt); every buffer it
// returns is freed by the shim itself, so the two namespaces' allocators never mix.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

constexpr const char* kShimName = "libcocom_spm.so";

std::string executable_dir() {
  std::string buf(4096, '\0');
  ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return "";
  buf.resize(static_cast<size_t>(n));
  size_t slash = buf.rfind('/');
  if (slash == std::string::npos) return "";
  return buf.substr(0, slash);
}

// Directory of the module this code was linked into: libcocom.so when the engine is used as
// the installed shared library (its shim lies beside it), else the executable itself.
std::string module_dir() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&module_dir), &info) == 0 || info.dli_fname == nullptr) {
    return "";
  }
  std::string path = info.dli_fname;  // the main program's is argv[0]: skip a relative one
  size_t slash = path.rfind('/');
  return path.empty() || path[0] != '/' || slash == std::string::npos ? ""
                                                                      : path.substr(0, slash);
}

template <typename Fn>
bool resolve(void* handle, const char* name, Fn* fn, std::string* why) {
  void* sym = ::dlsym(handle, name);
  if (sym == nullptr) {
    *why = std::string("missing symbol ") + name;
    return false;
  }
  *fn = reinterpret_cast<Fn>(sym);
  return true;
}

bool try_load_shim(const std::string& path, SpmApi* api, std::string* why) {
  if (path.find('/') != std::string::npos && !file_exists(path)) {
    *why = "not found";
    return false;
  }
  ::dlerror();
  constexpr int kBind = COCOM_SPM_DEEPBIND ? RTLD_DEEPBIND : 0;  // model/CMakeLists.txt
  void* handle = kSanitized ? ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL)
                            : ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | kBind);
  if (handle == nullptr) {
    const char* err = ::dlerror();
    *why = err != nullptr ? err : "dlopen failed";
    return false;
  }
  bool ok = resolve(handle, "cocom_spm_abi_version", &api->abi_version, why) &&
            resolve(handle, "cocom_spm_load", &api->load, why) &&
            resolve(handle, "cocom_spm_free", &api->free_model, why) &&
            resolve(handle, "cocom_spm_free_error", &api->free_error, why) &&
            resolve(handle, "cocom_spm_piece_size", &api->piece_size, why) &&
            resolve(handle, "cocom_spm_id_to_piece", &api->id_to_piece, why) &&
            resolve(handle, "cocom_spm_piece_to_id", &api->piece_to_id, why) &&
            resolve(handle, "cocom_spm_piece_flags", &api->piece_flags, why) &&
            resolve(handle, "cocom_spm_special_id", &api->special_id, why) &&
            resolve(handle, "cocom_spm_encode", &api->encode, why) &&
            resolve(handle, "cocom_spm_decode_pieces", &api->decode_pieces, why) &&
            resolve(handle, "cocom_spm_result_size", &api->result_size, why) &&
            resolve(handle, "cocom_spm_result_piece", &api->result_piece, why) &&
            resolve(handle, "cocom_spm_result_id", &api->result_id, why) &&
            resolve(handle, "cocom_spm_result_text", &api->result_text, why) &&
            resolve(handle, "cocom_spm_result_free", &api->result_free, why);
  if (ok && api->abi_version() != COCOM_SPM_ABI_VERSION) {
    *why = "ABI version " + std::to_string(api->abi_version()) + ", expected " +
           std::to_string(COCOM_SPM_ABI_VERSION);
    ok = false;
  }
  if (!ok) {
    ::dlclose(handle);
    return false;
  }
  api->path = path;
  return true;
}

std::mutex g_spm_mutex;
const SpmApi* g_spm_api = nullptr;  // loaded once, never unloaded

}  // namespace

const SpmApi& spm_api() {
  std::lock_guard<std::mutex> lock(g_spm_mutex);
  if (g_spm_api != nullptr) return *g_spm_api;

  std::vector<std::string> candidates;
  if (const char* env = std::getenv("COCOM_SPM_LIBRARY"); env != nullptr && *env != '\0') {
    candidates.emplace_back(env);
  }
  std::string exe_dir = executable_dir();
  if (std::string lib_dir = module_dir(); !lib_dir.empty() && lib_dir != exe_dir) {
    candidates.push_back(join_path(lib_dir, kShimName));
  }
  if (!exe_dir.empty()) {
    candidates.push_back(join_path(exe_dir, kShimName));
    candidates.push_back(join_path(exe_dir + "/../lib", kShimName));
#ifdef COCOM_SPM_INSTALL_LIBDIR
    // An installed binary: <prefix>/bin/cocom next to <prefix>/<libdir>/libcocom_spm.so.
    candidates.push_back(join_path(exe_dir + "/../" COCOM_SPM_INSTALL_LIBDIR, kShimName));
#endif
  }
#ifdef COCOM_SPM_BUILD_DIR
  candidates.push_back(join_path(COCOM_SPM_BUILD_DIR, kShimName));
#endif
#ifdef COCOM_SPM_INSTALL_DIR
  candidates.push_back(join_path(COCOM_SPM_INSTALL_DIR, kShimName));
#endif

  std::string tried;
  for (const auto& path : candidates) {
    auto api = std::make_unique<SpmApi>();
    std::string why;
    if (try_load_shim(path, api.get(), &why)) {
      g_spm_api = api.release();
      return *g_spm_api;
    }
    tried += "\n  " + path + " (" + why + ")";
  }
  fail("cannot load the sentencepiece shim ", kShimName,
       " (set COCOM_SPM_LIBRARY to its path); tried:", tried);
}

// ---------------------------------------------------------------------------------------------
// SpmModel

namespace {
std::string take_error(const SpmApi& api, char* err) {
  std::string msg = err != nullptr ? err : "unknown error";
  api.free_error(err);
  return msg;
}

struct ResultGuard {
  const SpmApi* api;
  cocom_spm_result* result;
  ~ResultGuard() {
    if (result != nullptr) api->result_free(result);
  }
};
}  // namespace

SpmModel::SpmModel(const std::string& path, int add_dummy_prefix) : path_(path) {
  try {
    api_ = &spm_api();
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  char* err = nullptr;
  model_ = api_->load(path.c_str(), add_dummy_prefix, &err);
  if (model_ == nullptr) fail(path, ": ", take_error(*api_, err));
  try {
    size_ = api_->piece_size(model_);
    if (size_ <= 0) fail(path, ": the sentencepiece model has no pieces");
    pieces_.reserve(static_cast<size_t>(size_));
    flags_.reserve(static_cast<size_t>(size_));
    for (int32_t id = 0; id < size_; ++id) {
      size_t len = 0;
      const char* p = api_->id_to_piece(model_, id, &len);
      if (p == nullptr) fail(path, ": cannot read piece ", id);
      pieces_.emplace_back(p, len);
      flags_.push_back(api_->piece_flags(model_, id));
      piece_ids_.emplace(pieces_.back(), id);
    }
    unk_id_ = api_->special_id(model_, 0);
  } catch (...) {
    api_->free_model(model_);
    throw;
  }
}

SpmModel::~SpmModel() {
  if (model_ != nullptr) api_->free_model(model_);
}

int32_t SpmModel::find_piece(const std::string& piece) const {
  auto it = piece_ids_.find(piece);
  return it == piece_ids_.end() ? -1 : it->second;
}

std::vector<std::pair<std::string, int64_t>> SpmModel::encode(const std::string& text) const {
  char* err = nullptr;
  ResultGuard r{api_, api_->encode(model_, text.data(), text.size(), &err)};
  if (r.result == nullptr) fail(path_, ": ", take_error(*api_, err));
  size_t n = api_->result_size(r.result);
  std::vector<std::pair<std::string, int64_t>> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    size_t len = 0;
    const char* p = api_->result_piece(r.result, i, &len);
    out.emplace_back(std::string(p == nullptr ? "" : p, p == nullptr ? 0 : len),
                     api_->result_id(r.result, i));
  }
  return out;
}

std::string SpmModel::decode_pieces(const std::vector<std::string>& pieces) const {
  if (pieces.empty()) return "";
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(pieces.size());
  lens.reserve(pieces.size());
  for (const auto& p : pieces) {
    ptrs.push_back(p.data());
    lens.push_back(p.size());
  }
  char* err = nullptr;
  ResultGuard r{api_, api_->decode_pieces(model_, ptrs.data(), lens.data(), pieces.size(), &err)};
  if (r.result == nullptr) fail(path_, ": ", take_error(*api_, err));
  size_t len = 0;
  const char* text = api_->result_text(r.result, &len);
  return std::string(text == nullptr ? "" : text, text == nullptr ? 0 : len);
}

// ---------------------------------------------------------------------------------------------
// Unicode helpers

std::vector<Utf8Unit> utf8_units(const std::string& s) {
  std::vector<Utf8Unit> units;
  units.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = utf8::decode(s.data(), s.size(), i, &cp, &bad);
    if (len == 0) {  // one unit per byte of an ill-formed sequence (byte fallback)
      units.push_back({kInvalidUnitBase + static_cast<unsigned char>(s[i]), i, 1});
      ++i;
      continue;
    }
    units.push_back({cp, i, len});
    i += len;
  }
  return units;
}

bool py_isspace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
  if (cp >= kInvalidUnitBase) return false;
  const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
  return p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
         p->bidi_class == UTF8PROC_BIDI_CLASS_B || p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

std::string py_strip(const std::string& s, bool left, bool right) {
  auto units = utf8_units(s);
  size_t first = 0;
  size_t last = units.size();
  if (left) {
    while (first < last && py_isspace(units[first].cp)) ++first;
  }
  if (right) {
    while (last > first && py_isspace(units[last - 1].cp)) --last;
  }
  if (first == last) return "";
  size_t begin = units[first].offset;
  size_t end = units[last - 1].offset + units[last - 1].length;
  return s.substr(begin, end - begin);
}

void py_lower_append(std::u32string* out, uint32_t cp) {
  if (cp == 0x130) {  // the one unconditional multi-character lowercase mapping
    out->push_back(U'i');
    out->push_back(0x307);
    return;
  }
  out->push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
}

namespace {
void replace_all(std::string* s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s->find(from, pos)) != std::string::npos) {
    s->replace(pos, from.size(), to);
    pos += to.size();
  }
}
}  // namespace

std::string clean_up_tokenization(const std::string& s) {
  std::string out = s;
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) replace_all(&out, from, to);
  return out;
}

// ---------------------------------------------------------------------------------------------
// AddedTokenTrie: Trie.split of transformers, on code points.

AddedTokenTrie::AddedTokenTrie() : nodes_(1) {}

int32_t AddedTokenTrie::child(int32_t node, uint32_t cp) const {
  const auto& next = nodes_[static_cast<size_t>(node)].next;
  auto it = next.find(cp);
  return it == next.end() ? -1 : it->second;
}

void AddedTokenTrie::add(const std::string& token) {
  if (token.empty()) return;
  int32_t node = 0;
  for (const auto& u : utf8_units(token)) {
    int32_t next = child(node, u.cp);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      nodes_[static_cast<size_t>(node)].next.emplace(u.cp, next);
    }
    node = next;
  }
  nodes_[static_cast<size_t>(node)].terminal = true;
}

std::vector<std::string> AddedTokenTrie::split(const std::string& text) const {
  const auto units = utf8_units(text);
  const size_t n = units.size();
  auto byte_at = [&](size_t unit) { return unit < n ? units[unit].offset : text.size(); };
  auto terminal = [&](int32_t node) { return nodes_[static_cast<size_t>(node)].terminal; };

  // Partial matches: (start unit, trie node), in increasing start order.
  std::vector<std::pair<size_t, int32_t>> states;
  std::vector<size_t> offsets{0};
  size_t skip = 0;
  for (size_t current = 0; current < n; ++current) {
    if (skip != 0 && current < skip) continue;
    const uint32_t cp = units[current].cp;
    std::vector<size_t> to_remove;
    bool reset = false;
    for (size_t si = 0; si < states.size(); ++si) {
      size_t start = states[si].first;
      const int32_t node = states[si].second;
      if (terminal(node)) {
        // A match ended: look ahead for the longest one, also from earlier partial matches.
        size_t end = 0;
        for (size_t li = 0; li < states.size(); ++li) {
          const size_t lookstart = states[li].first;
          int32_t lnode = states[li].second;
          size_t look = 0;
          if (lookstart > start) break;
          if (lookstart < start) {
            look = current + 1;  // this state already consumed the current character
            end = current + 1;
          } else {
            look = current;
            end = current;
          }
          if (terminal(lnode)) {
            start = lookstart;
            end = look;
            skip = look;
          }
          while (look < n) {
            const int32_t next = child(lnode, units[look].cp);
            if (next < 0) break;
            lnode = next;
            ++look;
            if (terminal(lnode)) {
              start = lookstart;
              end = look;
              skip = look;
            }
          }
        }
        offsets.push_back(start);
        offsets.push_back(end);
        reset = true;
        break;
      }
      const int32_t next = child(node, cp);
      if (next >= 0) {
        states[si].second = next;
      } else {
        to_remove.push_back(si);
      }
    }
    if (reset) {
      states.clear();
    } else if (!to_remove.empty()) {
      std::vector<std::pair<size_t, int32_t>> kept;
      size_t r = 0;
      for (size_t si = 0; si < states.size(); ++si) {
        if (r < to_remove.size() && to_remove[r] == si) {
          ++r;
        } else {
          kept.push_back(states[si]);
        }
      }
      states.swap(kept);
    }
    if (current >= skip) {
      const int32_t first = child(0, cp);
      if (first >= 0) states.emplace_back(current, first);
    }
  }
  for (const auto& [start, node] : states) {
    if (terminal(node)) {
      offsets.push_back(start);
      offsets.push_back(n);
      break;
    }
  }

  // cut_text
  offsets.push_back(n);
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t end : offsets) {
    if (start >= end) continue;  // zero-width cut, or (never expected) a backwards one
    parts.push_back(text.substr(byte_at(start), byte_at(end) - byte_at(start)));
    start = end;
  }
  return parts;
}

// ---------------------------------------------------------------------------------------------
// Special tokens and the JSON files

std::vector<std::string> SpecialTokens::all() const {
  std::vector<std::string> out;
  auto seen = [&](const std::string& t) {
    return std::find(out.begin(), out.end(), t) != out.end();
  };
  for (const auto* t : {&bos, &eos, &unk, &sep, &pad, &cls, &mask}) {
    if (t->has_value() && !seen(**t)) out.push_back(**t);
  }
  // The additional list is filtered against the tokens before it only (a token listed twice
  // stays twice, as in all_special_tokens_extended).
  std::vector<std::string> extra;
  for (const auto& t : additional) {
    if (!seen(t)) extra.push_back(t);
  }
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

std::optional<bool> json_opt_bool(const Json& j, const std::string& key,
                                  const std::string& origin) {
  if (!j.is_object()) fail(origin, ": expected a JSON object at the top level");
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) {
    fail(origin, ": field '", key, "' must be true, false or null (got ", it->type_name(), ")");
  }
  return it->get<bool>();
}

namespace {

const char* kSpecialKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                              "pad_token", "cls_token", "mask_token"};

std::optional<std::string>* special_slot(SpecialTokens* s, const std::string& key) {
  if (key == "bos_token") return &s->bos;
  if (key == "eos_token") return &s->eos;
  if (key == "unk_token") return &s->unk;
  if (key == "sep_token") return &s->sep;
  if (key == "pad_token") return &s->pad;
  if (key == "cls_token") return &s->cls;
  if (key == "mask_token") return &s->mask;
  return nullptr;
}

Json read_json_object(const std::string& path) {
  Json j = read_json_file(path);
  if (!j.is_object()) {
    fail(path, ": expected a JSON object at the top level (got ", j.type_name(), ")");
  }
  return j;
}

bool flag_or(const Json& obj, const char* key, bool dflt, const std::string& origin,
             const std::string& field) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) {
    fail(origin, ": field '", field, ".", key, "' must be true or false (got ", it->type_name(),
         ")");
  }
  return it->get<bool>();
}

// A token value: "text" or {"content": "text", ...}. `special` is the default of the special
// flag for objects that do not carry one.
AddedToken parse_token(const Json& v, const std::string& origin, const std::string& field,
                       bool special) {
  AddedToken t;
  if (v.is_string()) {
    t.content = v.get<std::string>();
    t.special = special;
    t.normalized = !special;
  } else if (v.is_object()) {
    auto it = v.find("content");
    if (it == v.end() || !it->is_string()) {
      fail(origin, ": field '", field, ".content' must be a string");
    }
    t.content = it->get<std::string>();
    t.special = flag_or(v, "special", special, origin, field);
    t.lstrip = flag_or(v, "lstrip", false, origin, field);
    t.rstrip = flag_or(v, "rstrip", false, origin, field);
    t.single_word = flag_or(v, "single_word", false, origin, field);
    t.normalized = flag_or(v, "normalized", !t.special, origin, field);
  } else {
    fail(origin, ": field '", field, "' must be a string or an object with \"content\" (got ",
         v.type_name(), ")");
  }
  if (t.content.empty()) fail(origin, ": field '", field, "' is an empty token");
  return t;
}

int64_t parse_id_key(const std::string& key, const std::string& origin, const std::string& field) {
  if (key.empty() || key.size() > 12 ||
      !std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    fail(origin, ": field '", field, "' has key \"", key.substr(0, 40),
         "\", which is not a token id (a non-negative integer)");
  }
  int64_t id = std::stoll(key);
  if (id > INT32_MAX) fail(origin, ": field '", field, "': token id ", key, " is too large");
  return id;
}

// Reads bos_token ... mask_token and additional_special_tokens of a config object.
void read_special_fields(const Json& j, const std::string& origin, SpecialTokens* special,
                         std::map<std::string, AddedToken>* extended) {
  for (const char* key : kSpecialKeys) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    auto* slot = special_slot(special, key);
    if (it->is_null()) {
      slot->reset();
      continue;
    }
    AddedToken t = parse_token(*it, origin, key, true);
    *slot = t.content;
    if (it->is_object()) (*extended)[t.content] = t;
  }
  auto it = j.find("additional_special_tokens");
  if (it != j.end()) {
    special->additional.clear();
    if (it->is_null()) return;
    if (!it->is_array()) {
      fail(origin, ": field 'additional_special_tokens' must be a list (got ", it->type_name(),
           ")");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& v = (*it)[i];
      AddedToken t =
          parse_token(v, origin, "additional_special_tokens[" + std::to_string(i) + "]", true);
      special->additional.push_back(t.content);
      if (v.is_object()) (*extended)[t.content] = t;
    }
  }
}

}  // namespace

TokenizerFiles read_tokenizer_files(const std::string& dir, const SpecialTokens& defaults) {
  TokenizerFiles f;
  f.dir = dir;
  f.special = defaults;
  std::map<std::string, AddedToken> extended;

  // tokenizer_config.json
  std::string config_path = join_path(dir, "tokenizer_config.json");
  if (file_exists(config_path)) {
    f.config_path = config_path;
    f.config = read_json_object(config_path);
    read_special_fields(f.config, config_path, &f.special, &extended);
    auto it = f.config.find("added_tokens_decoder");
    if (it != f.config.end() && !it->is_null()) {
      if (!it->is_object()) {
        fail(config_path, ": field 'added_tokens_decoder' must be an object of id -> token (got ",
             it->type_name(), ")");
      }
      std::map<std::string, int64_t> seen;
      for (auto entry = it->begin(); entry != it->end(); ++entry) {
        std::string field = "added_tokens_decoder." + entry.key().substr(0, 40);
        int64_t id = parse_id_key(entry.key(), config_path, "added_tokens_decoder");
        if (!entry.value().is_object()) {
          fail(config_path, ": field '", field, "' must be an object with \"content\" (got ",
               entry.value().type_name(), ")");
        }
        AddedToken t = parse_token(entry.value(), config_path, field, false);
        if (f.added.count(id) != 0) {
          fail(config_path, ": field 'added_tokens_decoder' lists token id ", id, " twice");
        }
        auto [pos, inserted] = seen.emplace(t.content, id);
        if (!inserted) {
          fail(config_path, ": field 'added_tokens_decoder' gives the token \"", t.content,
               "\" two ids (", pos->second, " and ", id, ")");
        }
        f.added[id] = t;
        f.added_origin[id] = config_path;
      }
    }
  }

  // special_tokens_map.json overrides the special tokens of tokenizer_config.json, as
  // from_pretrained does.
  std::string map_path = join_path(dir, "special_tokens_map.json");
  if (file_exists(map_path)) {
    f.special_map_path = map_path;
    Json j = read_json_object(map_path);
    read_special_fields(j, map_path, &f.special, &extended);
  }

  // added_tokens.json: content -> id.
  std::string added_path = join_path(dir, "added_tokens.json");
  if (file_exists(added_path)) {
    f.added_tokens_path = added_path;
    Json j = read_json_object(added_path);
    std::map<std::string, int64_t> by_content;
    for (const auto& [id, t] : f.added) by_content.emplace(t.content, id);
    for (auto entry = j.begin(); entry != j.end(); ++entry) {
      const std::string& content = entry.key();
      const Json& v = entry.value();
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
        fail(added_path, ": token \"", content.substr(0, 80),
             "\" must map to a non-negative integer id (got ",
             v.is_number() ? v.dump() : std::string(v.type_name()), ")");
      }
      if (content.empty()) fail(added_path, ": the empty string is not a valid added token");
      const int64_t id = v.get<int64_t>();
      auto same_id = f.added.find(id);
      if (same_id != f.added.end()) {
        if (same_id->second.content != content) {
          fail(added_path, ": token \"", content, "\" has id ", id, ", but ", f.added_origin[id],
               " gives id ", id, " to \"", same_id->second.content, "\"");
        }
        continue;
      }
      auto same_content = by_content.find(content);
      if (same_content != by_content.end()) {
        fail(added_path, ": token \"", content, "\" has id ", id, ", but ",
             f.added_origin[same_content->second], " gives it id ", same_content->second);
      }
      AddedToken t;
      t.content = content;
      t.special = std::find(f.special.additional.begin(), f.special.additional.end(), content) !=
                  f.special.additional.end();
      t.normalized = !t.special;
      f.added[id] = t;
      f.added_origin[id] = added_path;
      by_content.emplace(content, id);
    }
  }

  f.special_extended = std::move(extended);
  return f;
}

// ---------------------------------------------------------------------------------------------
// TokenizerBase

void TokenizerBase::init_vocab(const TokenizerFiles& files, int64_t base_size) {
  dir_ = files.dir;
  base_size_ = base_size;
  size_ = base_size;
  special_ = files.special;

  for (const auto& [id, t] : files.added) {
    const std::string& origin = files.added_origin.at(id);
    if (id < base_size_) {
      std::string base = base_token(id);
      if (base != t.content) {
        fail(origin, ": added token \"", t.content, "\" has id ", id,
             ", which the base vocabulary (size ", base_size_, ") holds as \"", base, "\"");
      }
    }
    auto [pos, inserted] = added_encoder_.emplace(t.content, id);
    if (!inserted) {
      fail(origin, ": token \"", t.content, "\" has two ids (", pos->second, " and ", id, ")");
    }
    added_decoder_[id] = t;
    size_ = std::max(size_, id + 1);
  }

  // PreTrainedTokenizer.__init__ adds the special tokens that are not added tokens yet: at
  // their base id when the base vocabulary has them, else at the end.
  for (const auto& token : special_.all()) {
    if (added_encoder_.count(token) != 0) continue;
    AddedToken t;
    auto ext = files.special_extended.find(token);
    if (ext != files.special_extended.end()) t = ext->second;
    t.content = token;
    t.special = true;
    if (ext == files.special_extended.end()) t.normalized = false;
    int64_t id = base_id(token);
    if (id < 0) id = size_++;
    added_encoder_[token] = id;
    added_decoder_[id] = t;
  }

  for (const auto& [id, t] : added_decoder_) trie_.add(t.content);
  refresh_special();

  const std::string origin = files.config_path.empty() ? dir_ : files.config_path;
  clean_up_ = json_opt_bool(files.config, "clean_up_tokenization_spaces", origin)
                  .value_or(default_clean_up());
}

int64_t TokenizerBase::added_id(const std::string& token) const {
  auto it = added_encoder_.find(token);
  return it == added_encoder_.end() ? -1 : it->second;
}

int64_t TokenizerBase::convert_token(const std::string& token) const {
  int64_t id = added_id(token);
  if (id >= 0) return id;
  id = base_id(token);
  if (id >= 0) return id;
  return special_.unk.has_value() ? base_id(*special_.unk) : -1;
}

int64_t TokenizerBase::special_id(const std::optional<std::string>& token) const {
  if (!token.has_value()) return -1;
  return convert_token(*token);
}

void TokenizerBase::refresh_special() {
  all_special_tokens_ = special_.all();
  all_special_set_.clear();
  all_special_set_.insert(all_special_tokens_.begin(), all_special_tokens_.end());
  // all_special_ids = convert_tokens_to_ids(all_special_tokens). Every special token is in the
  // vocabulary (init_vocab adds the missing ones, set_pad_token checks), so convert_token never
  // falls back to unk here.
  all_special_ids_.clear();
  for (const auto& token : all_special_tokens_) {
    const int64_t id = convert_token(token);
    if (id >= 0) all_special_ids_.insert(id);
  }

  // _decode's "legacy added tokens": added tokens that are not special tokens, plus the
  // additional special tokens beyond the base vocabulary. They are decoded on their own and
  // joined to their neighbours with a space.
  legacy_added_.clear();
  for (const auto& [content, id] : added_encoder_) {
    if (all_special_set_.count(content) == 0) legacy_added_.insert(content);
  }
  for (const auto& token : special_.additional) {
    if (convert_token(token) >= base_size_) legacy_added_.insert(token);
  }
  special_tokens_changed();
}

// PreTrainedTokenizerBase.add_special_tokens({"additional_special_tokens": tokens}) with
// replace_additional_special_tokens=True, then _add_tokens(special_tokens=True), as in 4.41.
int64_t TokenizerBase::add_special_tokens(const std::vector<std::string>& tokens) {
  // Validate everything first so that a failure leaves the tokenizer unchanged.
  int64_t n_new = 0;
  std::unordered_set<std::string> fresh;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].empty()) {
      fail("tokenizer ", dir_, ": add_special_tokens: token ", i,
           " is the empty string, which cannot be a token");
    }
    if (!token_to_id(tokens[i]).has_value() && fresh.insert(tokens[i]).second) ++n_new;
  }
  if (size_ + n_new > int64_t{INT32_MAX}) {
    fail("tokenizer ", dir_, ": add_special_tokens: ", n_new,
         " new tokens would make the vocabulary larger than ", INT32_MAX);
  }
  // An empty list leaves additional_special_tokens as it is (4.41 replaces it only with a
  // non-empty one).
  if (tokens.empty()) return 0;

  special_.additional = tokens;
  int64_t created = 0;
  for (const auto& token : tokens) {
    // get_vocab() lookup: an added token or a base token keeps its id; a new one gets the next.
    std::optional<int64_t> found = token_to_id(token);
    int64_t id = 0;
    if (found.has_value()) {
      id = *found;
    } else {
      id = size_++;
      ++created;
    }
    // The token (re)becomes an added token with the flags of a string passed to
    // add_special_tokens: special, not normalized, no stripping.
    AddedToken t;
    t.content = token;
    t.special = true;
    t.normalized = false;
    added_decoder_[id] = t;
    added_encoder_[token] = id;
    trie_.add(token);
  }
  refresh_special();
  return created;
}

void TokenizerBase::set_pad_token(const std::string& token) {
  if (!token_to_id(token).has_value()) {
    fail("tokenizer ", dir_, ": cannot make \"", token,
         "\" the pad token: it is not in the vocabulary (neither a base token nor an added token)");
  }
  special_.pad = token;
  refresh_special();
}

void TokenizerBase::fail_id(int64_t id) const {
  fail("tokenizer ", dir_, ": token id ", id, " is out of range for the vocabulary of size ",
       size_);
}

std::optional<int64_t> TokenizerBase::token_to_id(const std::string& token) const {
  int64_t id = added_id(token);
  if (id < 0) id = base_id(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::string TokenizerBase::id_to_token(int64_t id) const {
  if (id < 0 || id >= size_) fail_id(id);
  auto it = added_decoder_.find(id);
  if (it != added_decoder_.end()) return it->second.content;
  if (id < base_size_) return base_token(id);
  fail("tokenizer ", dir_, ": token id ", id, " has no token (the added tokens leave a gap before ",
       size_, ")");
}

size_t TokenizerBase::num_special_tokens_to_add() const {
  std::vector<int64_t> prefix, suffix;
  special_affixes(&prefix, &suffix);
  return prefix.size() + suffix.size();
}

std::vector<int64_t> TokenizerBase::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<int64_t> prefix, suffix;
  if (add_special_tokens) special_affixes(&prefix, &suffix);
  std::vector<int64_t> ids = prefix;
  for (const auto& [token, id] : tokenize_body(text)) ids.push_back(id);
  ids.insert(ids.end(), suffix.begin(), suffix.end());
  return ids;
}

std::vector<std::string> TokenizerBase::tokenize(const std::string& text,
                                                 bool add_special_tokens) const {
  std::vector<int64_t> prefix, suffix;
  if (add_special_tokens) special_affixes(&prefix, &suffix);
  std::vector<std::string> tokens;
  for (int64_t id : prefix) tokens.push_back(id_to_token(id));
  for (auto& [token, id] : tokenize_body(text)) tokens.push_back(std::move(token));
  for (int64_t id : suffix) tokens.push_back(id_to_token(id));
  return tokens;
}

std::string TokenizerBase::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> sub_texts;
  std::vector<std::string> current;
  for (int64_t id : ids) {
    if (id < 0 || id >= size_) fail_id(id);
    if (skip_special_tokens && all_special_ids_.count(id) != 0) continue;
    std::string token = id_to_token(id);
    if (legacy_added_.count(token) != 0) {
      if (!current.empty()) {
        std::string s = tokens_to_string(std::move(current));
        if (!s.empty()) sub_texts.push_back(std::move(s));
        current.clear();
      }
      sub_texts.push_back(std::move(token));
    } else {
      current.push_back(std::move(token));
    }
  }
  if (!current.empty()) sub_texts.push_back(tokens_to_string(std::move(current)));
  // spaces_between_special_tokens: the slow tokenizers' _decode default (True) applies; the
  // value saved in tokenizer_config.json is not read by decode().
  std::string text;
  for (size_t i = 0; i < sub_texts.size(); ++i) {
    if (i != 0) text += ' ';
    text += sub_texts[i];
  }
  return clean_up_ ? clean_up_tokenization(text) : text;
}

std::vector<TokenizerBase::Chunk> TokenizerBase::split_added(const std::string& text) const {
  std::vector<std::string> parts = trie_.split(text);
  for (size_t i = 0; i < parts.size(); ++i) {
    auto it = added_encoder_.find(parts[i]);
    if (it == added_encoder_.end()) continue;
    const AddedToken& tok = added_decoder_.at(it->second);
    const bool has_left = i > 0 && !parts[i - 1].empty();
    const bool has_right = i + 1 < parts.size() && !parts[i + 1].empty();
    const std::string left = has_left ? parts[i - 1] : std::string();
    const std::string right = has_right ? parts[i + 1] : std::string();
    if (tok.rstrip && has_right) parts[i + 1] = py_strip(right, true, false);
    if (tok.lstrip && has_left) parts[i - 1] = py_strip(left, false, true);
    if (tok.single_word && has_left && left.back() != ' ') {
      parts[i - 1] += parts[i];
      parts[i].clear();
    } else if (tok.single_word && has_right && right.front() != ' ') {
      parts[i] += right;
      parts[i + 1].clear();
    }
  }
  std::vector<Chunk> chunks;
  for (auto& p : parts) {
    if (p.empty()) continue;
    bool added = added_encoder_.count(p) != 0;
    chunks.push_back({std::move(p), added});
  }
  return chunks;
}

}  // namespace detail

// -------------------------------------------------------------------------------------------
// Tokenizer::encode_batch

BatchEncoding Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                      const BatchEncodeOptions& opt) const {
  if (opt.max_length < 0) fail("encode_batch: max_length must be >= 0 (got ", opt.max_length, ")");
  if (opt.pad_to_multiple_of < 0) {
    fail("encode_batch: pad_to_multiple_of must be >= 0 (got ", opt.pad_to_multiple_of, ")");
  }
  const bool truncate = opt.truncation && opt.max_length > 0;
  const auto* base = dynamic_cast<const detail::TokenizerBase*>(this);

  BatchEncoding out;
  out.input_ids.reserve(texts.size());
  for (const auto& text : texts) {
    std::vector<int64_t> ids;
    if (base != nullptr) {
      // prepare_for_model: truncation counts the special tokens, then removes tokens from the
      // right of the text's own tokens. When there are not enough of them to remove,
      // transformers logs an error and leaves the sequence as it is; so does this.
      std::vector<int64_t> prefix, suffix;
      if (opt.add_special_tokens) base->special_affixes(&prefix, &suffix);
      std::vector<int64_t> body;
      for (const auto& [token, id] : base->tokenize_body(text)) body.push_back(id);
      if (truncate) {
        const size_t total = body.size() + prefix.size() + suffix.size();
        const auto max_len = static_cast<size_t>(opt.max_length);
        if (total > max_len && body.size() > total - max_len) {
          body.resize(body.size() - (total - max_len));
        }
      }
      ids = std::move(prefix);
      ids.insert(ids.end(), body.begin(), body.end());
      ids.insert(ids.end(), suffix.begin(), suffix.end());
    } else {
      ids = encode(text, opt.add_special_tokens);
      if (truncate && ids.size() > static_cast<size_t>(opt.max_length)) {
        ids.resize(static_cast<size_t>(opt.max_length));
      }
    }
    out.input_ids.push_back(std::move(ids));
  }

  size_t target = 0;
  if (opt.pad_to_longest) {
    for (const auto& ids : out.input_ids) target = std::max(target, ids.size());
    const auto m = static_cast<size_t>(opt.pad_to_multiple_of);
    if (m > 0 && target % m != 0) target = (target / m + 1) * m;
  }
  const int64_t pad = pad_id();
  for (auto& ids : out.input_ids) {
    const size_t real = ids.size();
    const size_t n_pad = target > real ? target - real : 0;
    if (n_pad > 0 && pad < 0) {
      fail("encode_batch: padding is needed but the ", kind(),
           " tokenizer has no pad token (pad_token is null)");
    }
    std::vector<int64_t> mask(real, 1);
    if (n_pad > 0) {
      if (opt.padding_side == PaddingSide::Left) {
        ids.insert(ids.begin(), n_pad, pad);
        mask.insert(mask.begin(), n_pad, 0);
      } else {
        ids.insert(ids.end(), n_pad, pad);
        mask.insert(mask.end(), n_pad, 0);
      }
    }
    out.token_type_ids.emplace_back(ids.size(), 0);
    out.attention_mask.push_back(std::move(mask));
  }
  return out;
}

// -------------------------------------------------------------------------------------------
// load_tokenizer

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  if (!dir_exists(dir)) {
    fail(dir,
         ": not a directory (expected a tokenizer directory with tokenizer.model or "
         "vocab.txt)");
  }
  const std::string model = join_path(dir, "tokenizer.model");
  const std::string vocab = join_path(dir, "vocab.txt");
  if (file_exists(model)) return detail::load_llama_tokenizer(dir);
  if (file_exists(vocab)) return detail::load_bert_tokenizer(dir);
  fail(dir, ": no tokenizer found; looked for ", model, " (sentencepiece, LlamaTokenizer) and ",
       vocab, " (WordPiece, BertTokenizer)");
}

}  // namespace cocom::model
