#include "common/json_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace cocom {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_io(path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path, ": read error");
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail_io(path, ": cannot create temporary file ", tmp, " (", std::strerror(errno), ")");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      fail(path, ": write failed (", std::strerror(errno), ")");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    std::remove(tmp.c_str());
    fail(path, ": cannot rename temporary file into place (", std::strerror(e), ")");
  }
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool dir_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

Json parse_json_text(const std::string& text, const std::string& origin) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    fail(origin, ": invalid JSON at byte ", std::to_string(e.byte), ": ", e.what());
  } catch (const Json::exception& e) {
    // e.g. out_of_range 406: a number literal too large for a double ("1e400").
    fail(origin, ": invalid JSON: ", e.what());
  }
}

Json read_json_file(const std::string& path) { return parse_json_text(read_text_file(path), path); }

void write_json_file(const std::string& path, const Json& j, int indent) {
  write_file_atomic(path, j.dump(indent) + "\n");
}

namespace {
// A value quoted in an error message, cut short so a hostile file cannot flood the message.
std::string quote_value(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

const Json* find_field(const Json& j, const std::string& key, const std::string& origin) {
  if (!j.is_object()) fail(origin, ": expected a JSON object at the top level");
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t as_int(const Json& v, const std::string& key, const std::string& origin) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    // Range check first: converting an out-of-range double to int64 is undefined behaviour.
    if (d >= -9.2e18 && d <= 9.2e18 && d == static_cast<double>(static_cast<int64_t>(d))) {
      return static_cast<int64_t>(d);
    }
  }
  fail(origin, ": field '", key, "' must be an integer (got ", quote_value(v), ")");
}
}  // namespace

int64_t json_int(const Json& j, const std::string& key, const std::string& origin) {
  const Json* v = find_field(j, key, origin);
  if (!v) fail(origin, ": missing required field '", key, "'");
  return as_int(*v, key, origin);
}

int64_t json_int_or(const Json& j, const std::string& key, int64_t dflt,
                    const std::string& origin) {
  const Json* v = find_field(j, key, origin);
  return v ? as_int(*v, key, origin) : dflt;
}

std::optional<int64_t> json_opt_int(const Json& j, const std::string& key,
                                    const std::string& origin) {
  const Json* v = find_field(j, key, origin);
  if (!v) return std::nullopt;
  return as_int(*v, key, origin);
}

double json_number_or(const Json& j, const std::string& key, double dflt,
                      const std::string& origin) {
  const Json* v = find_field(j, key, origin);
  if (!v) return dflt;
  if (!v->is_number())
    fail(origin, ": field '", key, "' must be a number (got ", quote_value(*v), ")");
  return v->get<double>();
}

bool json_bool_or(const Json& j, const std::string& key, bool dflt, const std::string& origin) {
  const Json* v = find_field(j, key, origin);
  if (!v) return dflt;
  if (!v->is_boolean())
    fail(origin, ": field '", key, "' must be true or false (got ", quote_value(*v), ")");
  return v->get<bool>();
}

std::string json_string_or(const Json& j, const std::string& key, const std::string& dflt,
                           const std::string& origin) {
  const Json* v = find_field(j, key, origin);
  if (!v) return dflt;
  if (!v->is_string())
    fail(origin, ": field '", key, "' must be a string (got ", quote_value(*v), ")");
  return v->get<std::string>();
}

}  // namespace cocom
