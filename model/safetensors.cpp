// safetensors reader/writer. Format (https://huggingface.co/docs/safetensors):
//   [u64 little-endian N][N bytes of UTF-8 JSON header][data section]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} with offsets
// relative to the start of the data section, plus an optional "__metadata__" string->string map.
//
// Validation policy (stricter than the reference reader where a file is clearly corrupt,
// lenient where real checkpoints differ):
//  - duplicate keys anywhere in the header are rejected (a JSON DOM would silently keep one);
//  - tensors may leave gaps and the data section may have trailing bytes (the reference reader
//    requires a contiguous, exactly-sized data section; we only require no overlaps and that
//    every tensor lies inside the file);
//  - unknown fields inside a tensor entry are ignored, as in the reference reader;
//  - "__metadata__": null is accepted as "no metadata".
#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/utf8.h"
#include "common/json_util.h"

namespace cocom::model {

namespace {

using Json = nlohmann::json;

// Headers above this size are refused before anything is allocated (same limit as the reference
// implementation).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A safetensors header nests at most 3 levels (object -> tensor object -> shape array); the
// limit keeps hostile inputs from building deep DOMs.
constexpr size_t kMaxHeaderDepth = 8;
// Index files may carry arbitrary metadata; still bound the nesting.
constexpr size_t kMaxIndexDepth = 64;

// Tensor names and JSON snippets are user data: bound what goes into messages.
std::string clip(const std::string& s, size_t max = 200) {
  if (s.size() <= max) return s;
  return s.substr(0, max) + "...(" + std::to_string(s.size()) + " bytes)";
}

std::string quoted(const std::string& name) { return "'" + clip(name) + "'"; }

// Short description of a JSON value for error messages (never dumps a whole container, which
// could be huge or deeply nested).
std::string describe(const Json& v) {
  switch (v.type()) {
    case Json::value_t::object:
      return "an object";
    case Json::value_t::array:
      return "an array of " + std::to_string(v.size());
    case Json::value_t::string:
      return "the string \"" + clip(v.get_ref<const std::string&>(), 60) + "\"";
    case Json::value_t::null:
      return "null";
    default:
      return clip(v.dump(), 60);
  }
}

bool valid_utf8(const std::string& s) { return utf8::is_valid(s); }

// SAX handler that builds a DOM like nlohmann's own, but (a) reports the first duplicate key
// of any object (a plain DOM parse keeps the last one silently), (b) bounds the nesting depth.
// nlohmann's callback parser is not used: it rescans the parent container at every object end,
// which is quadratic in the number of tensors.
class StrictDomBuilder : public nlohmann::json_sax<Json> {
 public:
  struct Duplicate {
    std::vector<std::string> parents;  // keys/indices leading to the object holding `key`
    std::string key;
  };

  explicit StrictDomBuilder(size_t max_depth) : max_depth_(max_depth) {}

  Json root;
  std::optional<Duplicate> duplicate;  // the first one found
  bool too_deep = false;
  bool syntax_error = false;
  size_t error_byte = 0;
  std::string error_text;

  bool null() override { return put(Json(nullptr)); }
  bool boolean(bool v) override { return put(Json(v)); }
  bool number_integer(number_integer_t v) override { return put(Json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(Json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return put(Json(v)); }
  bool string(string_t& v) override { return put(Json(std::move(v))); }
  bool binary(binary_t&) override { return false; }  // not produced by the JSON parser

  bool start_object(std::size_t) override { return open(Json::object()); }
  bool start_array(std::size_t) override { return open(Json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    Frame& f = stack_.back();
    if (!duplicate && f.value->contains(k)) {
      Duplicate d;
      for (const Frame& p : stack_) {
        if (&p != &stack_.front()) d.parents.push_back(p.label);
      }
      d.key = k;
      duplicate = std::move(d);
    }
    f.key = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    syntax_error = true;
    error_byte = position;
    error_text = clip(ex.what(), 300);
    return false;
  }

 private:
  struct Frame {
    Json* value;
    std::string key;    // pending key when `value` is an object
    std::string label;  // how the parent refers to this container
  };

  // Inserts `v` into the current container (or as the root); returns where it landed.
  Json* insert(Json&& v, std::string* label) {
    if (stack_.empty()) {
      root = std::move(v);
      if (label) *label = "";
      return &root;
    }
    Frame& f = stack_.back();
    if (f.value->is_object()) {
      if (label) *label = f.key;
      Json& slot = (*f.value)[f.key];
      slot = std::move(v);
      return &slot;
    }
    if (label) *label = "[" + std::to_string(f.value->size()) + "]";
    f.value->push_back(std::move(v));
    return &f.value->back();  // stable until this array grows, i.e. until the child closes
  }

  bool put(Json&& v) {
    insert(std::move(v), nullptr);
    return true;
  }

  bool open(Json&& container) {
    if (stack_.size() >= max_depth_) {
      too_deep = true;
      return false;
    }
    std::string label;
    Json* p = insert(std::move(container), &label);
    stack_.push_back(Frame{p, std::string(), std::move(label)});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  size_t max_depth_;
  std::vector<Frame> stack_;
};

// Parses `text` (already checked to be UTF-8) with duplicate detection. `what` names the JSON
// document in messages ("header", "index").
StrictDomBuilder parse_strict(const char* begin, const char* end, size_t max_depth,
                              const std::string& path, const char* what) {
  // nlohmann's lexer stops at a NUL byte as if the input ended there, which would silently
  // ignore whatever follows; raw NULs are never valid JSON.
  if (const void* nul = std::memchr(begin, '\0', static_cast<size_t>(end - begin))) {
    fail(path, ": ", what, " is not valid JSON (NUL byte at byte ",
         static_cast<const char*>(nul) - begin, " of the ", what, ")");
  }
  StrictDomBuilder b(max_depth);
  bool ok = Json::sax_parse(begin, end, &b, nlohmann::detail::input_format_t::json,
                            /*strict=*/true, /*ignore_comments=*/false);
  if (b.too_deep) {
    fail(path, ": ", what, " JSON is nested deeper than ", max_depth,
         " levels; this is not a safetensors ", what);
  }
  if (b.syntax_error || !ok) {
    fail(path, ": ", what, " is not valid JSON (at byte ", b.error_byte, " of the ", what,
         "): ", b.error_text);
  }
  return b;
}

bool mul_overflow_u64(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Product of dimensions, or nullopt on int64 overflow. Dimensions must be non-negative.
std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

uint64_t read_le_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_le_u64(uint64_t v, uint8_t* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Reads one tensor entry; `data_size` is the size of the data section in the file.
TensorInfo parse_tensor_entry(const std::string& name, const Json& e, uint64_t data_start,
                              uint64_t data_size, uint64_t file_size, const std::string& path) {
  const std::string where = path + ": tensor " + quoted(name);
  if (!e.is_object()) fail(where, ": entry must be a JSON object (got ", describe(e), ")");
  TensorInfo t;
  t.name = name;

  auto it = e.find("dtype");
  if (it == e.end()) fail(where, ": missing 'dtype'");
  if (!it->is_string()) fail(where, ": 'dtype' must be a string (got ", describe(*it), ")");
  const std::string& ds = it->get_ref<const std::string&>();
  auto dt = parse_dtype(ds);
  if (!dt) {
    fail(where, ": unknown dtype '", clip(ds, 40),
         "' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
  }
  t.dtype = *dt;

  it = e.find("shape");
  if (it == e.end()) fail(where, ": missing 'shape'");
  if (!it->is_array()) fail(where, ": 'shape' must be an array (got ", describe(*it), ")");
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& d = (*it)[i];
    if (d.is_number_unsigned()) {
      uint64_t u = d.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(where, ": shape dimension ", i, " (", u, ") is too large");
      }
      t.shape.push_back(static_cast<int64_t>(u));
    } else if (d.is_number_integer()) {
      fail(where, ": shape dimension ", i, " is negative (", d.get<int64_t>(), ")");
    } else {
      fail(where, ": shape dimension ", i, " must be a non-negative integer (got ", describe(d),
           ")");
    }
  }
  auto numel = checked_numel(t.shape);
  uint64_t need = 0;
  if (!numel || mul_overflow_u64(static_cast<uint64_t>(*numel), dtype_size(t.dtype), &need)) {
    fail(where, ": shape ", shape_str(t.shape), " overflows (element or byte count too large)");
  }

  it = e.find("data_offsets");
  if (it == e.end()) fail(where, ": missing 'data_offsets'");
  const Json& off = *it;
  bool good = off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
              off[1].is_number_unsigned() && off[0].get<uint64_t>() <= off[1].get<uint64_t>();
  if (!good) {
    std::string got = describe(off);
    if (off.is_array() && off.size() == 2 && off[0].is_primitive() && off[1].is_primitive()) {
      got = "[" + describe(off[0]) + ", " + describe(off[1]) + "]";
    }
    fail(where,
         ": 'data_offsets' must be two non-negative integers [begin, end] with begin <= end"
         " (got ",
         got, ")");
  }
  t.begin = off[0].get<uint64_t>();
  t.end = off[1].get<uint64_t>();

  if (t.end - t.begin != need) {
    fail(where, ": data_offsets [", t.begin, ", ", t.end, "] span ", t.end - t.begin,
         " bytes but shape ", shape_str(t.shape), " x ", dtype_name(t.dtype), " (",
         dtype_size(t.dtype), " bytes) needs ", need, " bytes");
  }
  if (t.end > data_size) {
    // data_start + end cannot overflow: end <= need fits and data_start <= file_size, but be
    // careful anyway when reporting.
    uint64_t expected = 0;
    std::string exp_s = __builtin_add_overflow(data_start, t.end, &expected)
                            ? std::string("more than 2^64")
                            : std::to_string(expected);
    fail(where, ": data_offsets [", t.begin, ", ", t.end, "] extend beyond the data section (",
         data_size, " bytes); the file is truncated or the header is wrong: expected at least ",
         exp_s, " bytes, the file has ", file_size);
  }
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// dtypes

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F64:
      return "F64";
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::BOOL:
      return "BOOL";
  }
  return "?";
}

std::optional<DType> parse_dtype(const std::string& s) {
  // Case-sensitive, like the reference implementation.
  static const std::pair<const char*, DType> kNames[] = {
      {"F64", DType::F64}, {"F32", DType::F32},  {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32},  {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  for (const auto& [n, t] : kNames) {
    if (s == n) return t;
  }
  return std::nullopt;
}

bool dtype_is_float(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

int64_t TensorInfo::numel() const {
  auto n = checked_numel(shape);
  if (!n) fail("tensor ", quoted(name), ": shape ", shape_str(shape), " is invalid or overflows");
  return *n;
}

// ---------------------------------------------------------------------------------------------
// header

ParsedHeader parse_safetensors_header(const uint8_t* bytes, size_t size, uint64_t file_size,
                                      const std::string& path) {
  if (file_size < 8 || size < 8) {
    fail(path, ": file is too short (", std::min<uint64_t>(file_size, size),
         " bytes) to hold the 8-byte header length; not a safetensors file");
  }
  const uint64_t n = read_le_u64(bytes);
  if (n > file_size - 8) {
    fail(path, ": header length ", n, " goes beyond the end of the file (the file has ", file_size,
         " bytes, the header would need ",
         n > UINT64_MAX - 8 ? std::string("more than 2^64") : std::to_string(n + 8),
         "); truncated or not a safetensors file");
  }
  if (n > kMaxHeaderBytes) {
    fail(path, ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes,
         " bytes; refusing to parse");
  }
  if (n + 8 > size) {
    fail(path, ": only ", size, " bytes were provided but the header needs ", n + 8);
  }
  ParsedHeader out;
  out.data_start = 8 + n;
  const uint64_t data_size = file_size - out.data_start;
  const uint8_t* h = bytes + 8;

  size_t bad = utf8::first_invalid(reinterpret_cast<const char*>(h), n);
  if (bad != std::string::npos) {
    fail(path, ": header is not valid UTF-8 (byte ", bad, " of the header)");
  }
  StrictDomBuilder b =
      parse_strict(reinterpret_cast<const char*>(h), reinterpret_cast<const char*>(h + n),
                   kMaxHeaderDepth, path, "header");
  const Json& root = b.root;
  if (!root.is_object()) fail(path, ": header must be a JSON object (got ", describe(root), ")");
  if (b.duplicate) {
    const auto& d = *b.duplicate;
    if (d.parents.empty()) {
      fail(path, ": tensor ", quoted(d.key), " appears more than once in the header");
    }
    std::string inner;
    for (size_t i = 1; i < d.parents.size(); ++i) inner += clip(d.parents[i], 40) + ".";
    if (d.parents[0] == "__metadata__") {
      fail(path, ": '__metadata__' key '", inner, clip(d.key, 40),
           "' appears more than once in the header");
    }
    fail(path, ": tensor ", quoted(d.parents[0]), ": key '", inner, clip(d.key, 40),
         "' appears more than once in the header");
  }

  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;
      if (!entry.is_object()) {
        fail(path, ": '__metadata__' must be an object of strings (got ", describe(entry), ")");
      }
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          fail(path, ": '__metadata__' value for key ", quoted(k), " must be a string (got ",
               describe(v), ")");
        }
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (name.empty()) fail(path, ": a tensor has an empty name");
    out.tensors.push_back(
        parse_tensor_entry(name, entry, out.data_start, data_size, file_size, path));
  }

  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Sorted by begin: it suffices to compare each tensor with the furthest-reaching one before.
  const TensorInfo* reach = nullptr;
  for (const TensorInfo& t : out.tensors) {
    if (reach && t.begin < reach->end && t.begin != t.end) {
      fail(path, ": tensors ", quoted(reach->name), " (data_offsets [", reach->begin, ", ",
           reach->end, "]) and ", quoted(t.name), " (data_offsets [", t.begin, ", ", t.end,
           "]) overlap");
    }
    if (!reach || t.end > reach->end) reach = &t;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_io(path, ": cannot open (", std::strerror(errno), ")");
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, ": cannot stat (", std::strerror(errno), ")");
  if (!S_ISREG(st.st_mode)) fail(path, ": not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  if (file_size < 8) {
    // Too short to map usefully (mmap of 0 bytes fails); let the parser produce the message.
    uint8_t buf[8] = {};
    ssize_t got = ::pread(fd, buf, sizeof buf, 0);
    parse_safetensors_header(buf, got > 0 ? static_cast<size_t>(got) : 0, file_size, path);
    fail(path, ": file is too short");  // not reached
  }
  void* m = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) fail(path, ": mmap failed (", std::strerror(errno), ")");
  // From here the destructor unmaps, also when the header turns out to be invalid.
  f->map_ = m;
  f->map_size_ = file_size;
  // Callers copy tensors mostly in file order; a hint only, failure is harmless.
  ::madvise(m, file_size, MADV_SEQUENTIAL);

  f->header_ = parse_safetensors_header(static_cast<const uint8_t*>(m), file_size, file_size, path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) {
    f->by_name_.emplace(f->header_.tensors[i].name, i);
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

const uint8_t* SafetensorsFile::data(const TensorInfo& t) const {
  // Bounds were checked when the header was parsed; re-check in case a TensorInfo from another
  // file is passed in.
  if (t.end < t.begin || header_.data_start + t.end > map_size_) {
    fail(path_, ": tensor ", quoted(t.name), ": data_offsets [", t.begin, ", ", t.end,
         "] are outside this file");
  }
  return static_cast<const uint8_t*>(map_) + header_.data_start + t.begin;
}

void SafetensorsFile::release(const TensorInfo& t) const {
  if (!map_ || t.end <= t.begin || header_.data_start + t.end > map_size_) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t b = (header_.data_start + t.begin) / page * page;
  const uint64_t e = header_.data_start + t.end;
  // A read-only private mapping: dropping pages loses nothing (a hint; failure is harmless).
  ::madvise(static_cast<uint8_t*>(map_) + b, static_cast<size_t>(e - b), MADV_DONTNEED);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

void SafetensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const void* data, size_t nbytes) {
  const std::string where = "SafetensorsWriter: tensor " + quoted(name);
  if (name.empty()) fail("SafetensorsWriter: tensor name must not be empty");
  if (name == "__metadata__") fail(where, ": the name is reserved for metadata");
  if (!valid_utf8(name)) fail(where, ": the name is not valid UTF-8");
  for (const Entry& e : entries_) {
    if (e.name == name) fail(where, ": added twice");
  }
  for (int64_t d : shape) {
    if (d < 0) fail(where, ": shape ", shape_str(shape), " has a negative dimension");
  }
  auto numel = checked_numel(shape);
  uint64_t need = 0;
  if (!numel || mul_overflow_u64(static_cast<uint64_t>(*numel), dtype_size(dtype), &need)) {
    fail(where, ": shape ", shape_str(shape), " overflows");
  }
  if (need != nbytes) {
    fail(where, ": got ", nbytes, " bytes but shape ", shape_str(shape), " x ", dtype_name(dtype),
         " needs ", need);
  }
  if (nbytes > 0 && data == nullptr) fail(where, ": data is null");
  Entry e{name, dtype, shape, {}};
  if (nbytes > 0) {
    const auto* p = static_cast<const uint8_t*>(data);
    e.bytes.assign(p, p + nbytes);
  }
  entries_.push_back(std::move(e));
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  if (!valid_utf8(key) || !valid_utf8(value)) {
    fail("SafetensorsWriter: metadata key ", quoted(key), ": key and value must be valid UTF-8");
  }
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path) const {
  // Header: "__metadata__" first (when any), then tensors in insertion order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    t["dtype"] = dtype_name(e.dtype);
    t["shape"] = e.shape;
    t["data_offsets"] = {offset, offset + e.bytes.size()};
    offset += e.bytes.size();
    header[e.name] = std::move(t);
  }
  std::string text = header.dump();
  // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned.
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  uint8_t len[8];
  put_le_u64(text.size(), len);

  std::string tmp = path + ".tmp.XXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0)
    fail_io(path, ": cannot create a temporary file next to it (", std::strerror(errno), ")");
  auto abort_with = [&](const std::string& what) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(path, ": ", what, " (", std::strerror(err), ")");
  };
  auto write_all = [&](const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd, c, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        abort_with("write failed");
      }
      c += w;
      n -= static_cast<size_t>(w);
    }
  };
  if (::fchmod(fd, 0644) != 0) abort_with("cannot set permissions on the temporary file");
  write_all(len, sizeof len);
  write_all(text.data(), text.size());
  for (const Entry& e : entries_) write_all(e.bytes.data(), e.bytes.size());
  if (::fsync(fd) != 0) abort_with("fsync failed");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": close failed (", std::strerror(err), ")");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot rename the temporary file into place (", std::strerror(err), ")");
  }
}

// ---------------------------------------------------------------------------------------------
// SafetensorsStreamWriter

namespace {
// quoted() for names reached through non-const members (std::quoted would win by ADL).
std::string const_quoted(const std::string& name) { return quoted(name); }
}  // namespace

SafetensorsStreamWriter::SafetensorsStreamWriter(const std::string& path,
                                                 const std::vector<Spec>& specs,
                                                 const std::map<std::string, std::string>& meta)
    : path_(path), specs_(specs) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!meta.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : meta) {
      if (!valid_utf8(k) || !valid_utf8(v)) {
        fail(path, ": metadata key ", const_quoted(k), ": key and value must be valid UTF-8");
      }
      m[k] = v;
    }
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const Spec& sp : specs_) {
    const std::string where = path + ": tensor " + const_quoted(sp.name);
    if (sp.name.empty() || sp.name == "__metadata__" || !valid_utf8(sp.name)) {
      fail(where, ": invalid tensor name");
    }
    if (header.contains(sp.name)) fail(where, ": listed twice");
    for (int64_t d : sp.shape) {
      if (d < 0) fail(where, ": shape ", shape_str(sp.shape), " has a negative dimension");
    }
    auto numel = checked_numel(sp.shape);
    uint64_t need = 0;
    if (!numel || mul_overflow_u64(static_cast<uint64_t>(*numel), dtype_size(sp.dtype), &need)) {
      fail(where, ": shape ", shape_str(sp.shape), " overflows");
    }
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    t["dtype"] = dtype_name(sp.dtype);
    t["shape"] = sp.shape;
    t["data_offsets"] = {offset, offset + need};
    offset += need;
    sizes_.push_back(need);
    header[sp.name] = std::move(t);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  uint8_t len[8];
  put_le_u64(text.size(), len);
  tmp_ = path + ".tmp.XXXXXX";
  fd_ = ::mkstemp(tmp_.data());
  if (fd_ < 0) {
    fail_io(path, ": cannot create a temporary file next to it (", std::strerror(errno), ")");
  }
  if (::fchmod(fd_, 0644) != 0) {
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
    fail(path, ": cannot set permissions on the temporary file (", std::strerror(err), ")");
  }
  write_all(len, sizeof len);
  write_all(text.data(), text.size());
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void SafetensorsStreamWriter::write_all(const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd_, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd_);
      fd_ = -1;
      ::unlink(tmp_.c_str());
      fail(path_, ": write failed (", std::strerror(err), ")");
    }
    c += w;
    n -= static_cast<size_t>(w);
  }
}

void SafetensorsStreamWriter::write_next(const std::string& name, const void* data, size_t nbytes) {
  if (fd_ < 0) fail(path_, ": writer is closed");
  if (next_ >= specs_.size()) fail(path_, ": tensor ", const_quoted(name), " was not listed");
  if (specs_[next_].name != name) {
    fail(path_, ": expected tensor ", const_quoted(specs_[next_].name), " next, got ",
         const_quoted(name));
  }
  if (nbytes != sizes_[next_]) {
    fail(path_, ": tensor ", const_quoted(name), ": got ", nbytes, " bytes, expected ",
         sizes_[next_]);
  }
  if (nbytes > 0 && data == nullptr) fail(path_, ": tensor ", const_quoted(name), ": data is null");
  write_all(data, nbytes);
  ++next_;
}

void SafetensorsStreamWriter::finish() {
  if (fd_ < 0) fail(path_, ": writer is closed");
  if (next_ != specs_.size()) {
    fail(path_, ": only ", next_, " of ", specs_.size(), " tensors were written");
  }
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    int err = errno;
    fd_ = -1;
    ::unlink(tmp_.c_str());
    fail(path_, ": cannot flush the file (", std::strerror(err), ")");
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp_.c_str());
    fail(path_, ": cannot rename the temporary file into place (", std::strerror(err), ")");
  }
}

// ---------------------------------------------------------------------------------------------
// CheckpointFiles

std::unique_ptr<CheckpointFiles> CheckpointFiles::open(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!dir_exists(dir)) fail(dir, ": not a directory (expected a checkpoint directory)");
  std::unique_ptr<CheckpointFiles> c(new CheckpointFiles());
  c->dir_ = dir;

  // Registers every tensor of files_[i]; a name in two files is an error.
  auto add_file = [&](std::unique_ptr<SafetensorsFile> f, const char* kind) {
    size_t idx = c->files_.size();
    c->files_.push_back(std::move(f));
    const SafetensorsFile& sf = *c->files_.back();
    for (const TensorInfo& t : sf.tensors()) {
      auto [it, inserted] = c->where_.emplace(t.name, std::make_pair(idx, &t));
      if (!inserted) {
        fail(dir, ": tensor ", quoted(t.name), " appears in two ", kind, ": ",
             c->files_[it->second.first]->path(), " and ", sf.path());
      }
    }
  };

  const std::string index_path = join_path(dir, "model.safetensors.index.json");
  const std::string single_path = join_path(dir, "model.safetensors");
  if (file_exists(index_path)) {
    std::string text = read_text_file(index_path);
    if (!valid_utf8(text)) fail(index_path, ": not valid UTF-8");
    StrictDomBuilder b =
        parse_strict(text.data(), text.data() + text.size(), kMaxIndexDepth, index_path, "index");
    const Json& root = b.root;
    if (!root.is_object()) fail(index_path, ": must be a JSON object (got ", describe(root), ")");
    if (b.duplicate) {
      const auto& d = *b.duplicate;
      if (d.parents.empty() && d.key == "weight_map") {
        fail(index_path, ": 'weight_map' appears more than once");
      }
      if (d.parents.size() == 1 && d.parents[0] == "weight_map") {
        fail(index_path, ": tensor ", quoted(d.key), " appears more than once in 'weight_map'");
      }
    }
    auto wm = root.find("weight_map");
    if (wm == root.end()) fail(index_path, ": missing 'weight_map'");
    if (!wm->is_object()) {
      fail(index_path, ": 'weight_map' must be an object (got ", describe(*wm), ")");
    }
    if (wm->empty()) fail(index_path, ": 'weight_map' lists no tensors");
    // shard file name -> tensors it should hold
    std::map<std::string, std::vector<std::string>> shards;
    for (const auto& [name, shard] : wm->items()) {
      if (!shard.is_string()) {
        fail(index_path, ": tensor ", quoted(name), ": shard must be a file name (got ",
             describe(shard), ")");
      }
      const std::string& s = shard.get_ref<const std::string&>();
      fs::path sp(s);
      bool escapes = s.empty() || sp.is_absolute();
      for (const auto& part : sp) escapes = escapes || part == "..";
      if (escapes) {
        fail(index_path, ": tensor ", quoted(name), ": shard ", quoted(s),
             " must be a file name inside the checkpoint directory");
      }
      shards[s].push_back(name);
    }
    for (const auto& [shard, names] : shards) {
      const std::string sp = join_path(dir, shard);
      if (!file_exists(sp)) {
        fail(index_path, ": shard ", quoted(shard), " (listed for tensor ", quoted(names.front()),
             ") not found: ", sp);
      }
      auto f = SafetensorsFile::open(sp);
      for (const std::string& n : names) {
        if (!f->find(n)) {
          fail(index_path, ": tensor ", quoted(n), " is listed in shard ", quoted(shard), " but ",
               sp, " does not contain it");
        }
      }
      add_file(std::move(f), "shards");
    }
  } else if (file_exists(single_path)) {
    add_file(SafetensorsFile::open(single_path), "files");
  } else {
    std::vector<std::string> found;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path& p = it->path();
      if (p.extension() == ".safetensors" && file_exists(p.string())) found.push_back(p.string());
    }
    if (ec) fail(dir, ": cannot list the directory (", ec.message(), ")");
    if (found.empty()) {
      fail(dir,
           ": no safetensors checkpoint found (looked for model.safetensors.index.json, "
           "model.safetensors, and any *.safetensors file)");
    }
    std::sort(found.begin(), found.end());
    for (const std::string& p : found) add_file(SafetensorsFile::open(p), "files");
  }
  return c;
}

std::vector<std::string> CheckpointFiles::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;  // std::map keeps them sorted
}

const TensorInfo& CheckpointFiles::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_not_found(dir_, ": tensor ", quoted(name), " not found in the checkpoint");
  return *it->second.second;
}

const uint8_t* CheckpointFiles::data(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_not_found(dir_, ": tensor ", quoted(name), " not found in the checkpoint");
  return files_[it->second.first]->data(*it->second.second);
}

void CheckpointFiles::release(const std::string& name) const {
  auto it = where_.find(name);
  if (it != where_.end()) files_[it->second.first]->release(*it->second.second);
}

const std::string& CheckpointFiles::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_not_found(dir_, ": tensor ", quoted(name), " not found in the checkpoint");
  return files_[it->second.first]->path();
}

uint64_t CheckpointFiles::total_bytes() const {
  uint64_t n = 0;
  for (const auto& kv : where_) n += kv.second.second->nbytes();
  return n;
}

}  // namespace cocom::model
