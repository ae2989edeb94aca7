// The JSON files of a tokenizer directory (tokenizer_config.json, special_tokens_map.json,
// added_tokens.json): special tokens and added tokens, as from_pretrained reads them.
#include <algorithm>

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model::detail {

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

}  // namespace cocom::model::detail
