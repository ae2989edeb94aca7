// Reading JSON files with errors that name the file and the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace cocom {

using Json = nlohmann::json;

// Reads and parses a JSON file; throws cocom::Error naming the file (and the byte offset of a
// syntax error).
Json read_json_file(const std::string& path);
// Parses JSON text; `origin` names where it came from in error messages.
Json parse_json_text(const std::string& text, const std::string& origin);
// Writes JSON atomically (temporary file + rename).
void write_json_file(const std::string& path, const Json& j, int indent = 2);

// Field accessors for config objects. `origin` is the file path, used in messages like
// "config.json: field 'hidden_size' must be a positive integer (got "abc")".
int64_t json_int(const Json& j, const std::string& key, const std::string& origin);
int64_t json_int_or(const Json& j, const std::string& key, int64_t dflt, const std::string& origin);
std::optional<int64_t> json_opt_int(const Json& j, const std::string& key,
                                    const std::string& origin);
double json_number_or(const Json& j, const std::string& key, double dflt,
                      const std::string& origin);
bool json_bool_or(const Json& j, const std::string& key, bool dflt, const std::string& origin);
std::string json_string_or(const Json& j, const std::string& key, const std::string& dflt,
                           const std::string& origin);

// Reads a whole file into a string; throws naming the file.
std::string read_text_file(const std::string& path);
// Writes a file atomically (temporary file in the same directory + rename).
void write_file_atomic(const std::string& path, const std::string& bytes);
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
std::string join_path(const std::string& a, const std::string& b);

}  // namespace cocom
