// read_torch_save: the torch.save zip format, read by a reader of our own that accepts only
// what a state dict needs and bounds every allocation by the file's size.
//
// A torch.save file is a zip archive of stored (uncompressed) records under one top-level
// folder: "<name>/data.pkl" (a protocol-2 pickle of the object), "<name>/data/<key>" (the raw
// bytes of each storage, little-endian) and small records such as "<name>/version". The pickle
// names storages by persistent ids ('storage', torch.<Type>Storage, key, location, numel) and
// rebuilds tensors with torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...).
// libtorch's own reader (miniz + the TorchScript unpickler) trusts the sizes it reads and was
// found allocating gigabytes on a few hundred hostile bytes; it also lacks the SETITEM opcode
// Python writes for a dict of one entry. This reader knows the opcodes and globals a state dict
// uses, refuses everything else by name, and reads no tensor data before its extent is checked.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "common/json_util.h"
#include "model/weights.h"

namespace cocom::model {

namespace {

// ---------------------------------------------------------------------------------------------
// The zip container: stored entries only, classic and zip64 directories.

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

class File {
 public:
  explicit File(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) fail_io(path, ": cannot open");
    in_.seekg(0, std::ios::end);
    size_ = uint64_t(in_.tellg());
  }
  uint64_t size() const { return size_; }
  // Reads [at, at + n) into out; the caller has checked the range against size().
  void read(uint64_t at, uint64_t n, void* out) {
    in_.clear();
    in_.seekg(std::streamoff(at));
    in_.read(static_cast<char*>(out), std::streamsize(n));
    if (uint64_t(in_.gcount()) != n) fail_io(path_, ": short read at byte ", at);
  }
  std::vector<uint8_t> bytes(uint64_t at, uint64_t n) {
    std::vector<uint8_t> b(n);
    if (n) read(at, n, b.data());
    return b;
  }

 private:
  std::string path_;
  std::ifstream in_;
  uint64_t size_ = 0;
};

struct Entry {
  uint64_t offset = 0;  // of the data
  uint64_t size = 0;
};

// Record name -> where its bytes lie. Names lose their top-level folder ("archive/data.pkl" ->
// "data.pkl"), which torch.save sets to the file's stem and readers ignore.
std::map<std::string, Entry> read_zip_directory(File& f, const std::string& path) {
  const uint64_t size = f.size();
  auto bad = [&](const auto&... what) {
    fail(path, ": not a readable torch.save file (", what..., ")");
  };
  if (size < 22) bad("too short for a zip archive");
  // The end-of-central-directory record is within the last 22 + 65535 bytes.
  const uint64_t tail_len = std::min<uint64_t>(size, 22 + 65535);
  const std::vector<uint8_t> tail = f.bytes(size - tail_len, tail_len);
  int64_t eocd = -1;
  for (int64_t i = int64_t(tail_len) - 22; i >= 0; --i) {
    if (le(&tail[size_t(i)], 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) bad("no zip end-of-directory record");
  const uint8_t* e = &tail[size_t(eocd)];
  uint64_t count = le(e + 10, 2), cd_size = le(e + 12, 4), cd_offset = le(e + 16, 4);
  const uint64_t eocd_at = size - tail_len + uint64_t(eocd);
  if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    // zip64: a locator just before the record points at the zip64 end-of-directory record.
    if (eocd_at < 20) bad("zip64 locator missing");
    const std::vector<uint8_t> loc = f.bytes(eocd_at - 20, 20);
    if (le(loc.data(), 4) != 0x07064b50) bad("zip64 locator missing");
    const uint64_t at = le(loc.data() + 8, 8);
    if (at > size || size - at < 56) bad("zip64 directory record out of range");
    const std::vector<uint8_t> z = f.bytes(at, 56);
    if (le(z.data(), 4) != 0x06064b50) bad("zip64 directory record missing");
    count = le(z.data() + 32, 8);
    cd_size = le(z.data() + 40, 8);
    cd_offset = le(z.data() + 48, 8);
  }
  if (cd_offset > size || cd_size > size - cd_offset) bad("central directory out of range");
  if (count > cd_size / 46) bad("central directory too small for ", count, " entries");
  const std::vector<uint8_t> cd = f.bytes(cd_offset, cd_size);
  std::map<std::string, Entry> out;
  size_t p = 0;
  for (uint64_t n = 0; n < count; ++n) {
    if (cd.size() - p < 46 || le(&cd[p], 4) != 0x02014b50) bad("broken central directory");
    const uint64_t method = le(&cd[p + 10], 2);
    uint64_t csize = le(&cd[p + 20], 4), usize = le(&cd[p + 24], 4);
    const size_t name_len = size_t(le(&cd[p + 28], 2)), extra_len = size_t(le(&cd[p + 30], 2)),
                 comment_len = size_t(le(&cd[p + 32], 2));
    uint64_t local = le(&cd[p + 42], 4);
    if (cd.size() - p - 46 < name_len + extra_len + comment_len) bad("broken central directory");
    std::string name(reinterpret_cast<const char*>(&cd[p + 46]), name_len);
    // zip64 sizes and offset, in this order, for the fields that hold 0xffffffff.
    const uint8_t* x = &cd[p + 46 + name_len];
    for (size_t q = 0; q + 4 <= extra_len;) {
      const uint64_t id = le(x + q, 2), len = le(x + q + 2, 2);
      if (q + 4 + len > extra_len) bad("broken extra field of '", name, "'");
      if (id == 1) {
        const uint8_t* v = x + q + 4;
        size_t left = size_t(len);
        for (uint64_t* field : {&usize, &csize, &local}) {
          if (*field != 0xffffffff) continue;
          if (left < 8) bad("broken zip64 field of '", name, "'");
          *field = le(v, 8);
          v += 8;
          left -= 8;
        }
      }
      q += 4 + size_t(len);
    }
    p += 46 + name_len + extra_len + comment_len;
    if (method != 0 || csize != usize) {
      bad("record '", name, "' is compressed (method ", method, "); torch.save stores records");
    }
    if (local > size || size - local < 30) bad("record '", name, "' out of range");
    const std::vector<uint8_t> lh = f.bytes(local, 30);
    if (le(lh.data(), 4) != 0x04034b50) bad("no local header for '", name, "'");
    const uint64_t data = local + 30 + le(lh.data() + 26, 2) + le(lh.data() + 28, 2);
    if (data > size || usize > size - data) bad("record '", name, "' reaches past the file");
    const size_t slash = name.find('/');
    if (slash != std::string::npos) name.erase(0, slash + 1);
    if (!out.emplace(name, Entry{data, usize}).second) bad("record '", name, "' appears twice");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The pickle: the values a state dict is made of.

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor };
  Kind kind = Kind::None;
  int64_t i = 0;                         // Int, Bool; Storage: numel; Tensor: storage offset
  double f = 0;                          // Float
  std::string s;                         // Str; Global: "module name"; Storage: record key
  at::ScalarType dtype = at::kFloat;     // Storage, Tensor
  std::vector<ValuePtr> items;           // Tuple, List; Tensor: {storage}
  std::map<std::string, ValuePtr> dict;  // Dict
  std::vector<int64_t> sizes, strides;   // Tensor
  int depth = 0;                         // nesting below this value
};

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::None:
      return "None";
    case Value::Kind::Bool:
      return "bool";
    case Value::Kind::Int:
      return "int";
    case Value::Kind::Float:
      return "float";
    case Value::Kind::Str:
      return "str";
    case Value::Kind::Tuple:
      return "tuple";
    case Value::Kind::List:
      return "list";
    case Value::Kind::Dict:
      return "dict";
    case Value::Kind::Global:
      return "global";
    case Value::Kind::Storage:
      return "storage";
    case Value::Kind::Tensor:
      return "tensor";
  }
  return "?";
}

// torch.<Type>Storage -> its element type; false for anything else.
bool storage_dtype(const std::string& global, at::ScalarType* out) {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch FloatStorage", at::kFloat}, {"torch DoubleStorage", at::kDouble},
      {"torch HalfStorage", at::kHalf},   {"torch BFloat16Storage", at::kBFloat16},
      {"torch LongStorage", at::kLong},   {"torch IntStorage", at::kInt},
      {"torch ShortStorage", at::kShort}, {"torch CharStorage", at::kChar},
      {"torch ByteStorage", at::kByte},   {"torch BoolStorage", at::kBool}};
  const auto it = types.find(global);
  if (it == types.end()) return false;
  *out = it->second;
  return true;
}

constexpr int kMaxDepth = 32;  // nesting of tuples, lists and dicts
constexpr int kMaxDims = 16;   // dimensions of a tensor
constexpr uint64_t kMaxPickleBytes = uint64_t{64} << 20;
constexpr size_t kMaxValues = size_t{1} << 20;  // values and MARKs; a 7B state dict needs ~10^4

class Unpickler {
 public:
  Unpickler(const std::vector<uint8_t>& bytes, const std::string& path) : in_(bytes), path_(path) {}

  ~Unpickler() {
    // Values may hold each other (memo references, even cycles): empty them all first, so
    // that nothing is freed recursively and no cycle is kept alive.
    for (auto& v : all_) {
      v->items.clear();
      v->dict.clear();
    }
  }

  ValuePtr run() {
    while (true) {
      const uint64_t op_at = pos_;
      const uint8_t op = byte();
      switch (op) {
        case 0x80:  // PROTO
          if (byte() > 5) bad(op_at, "pickle protocol above 5");
          break;
        case 0x95:  // FRAME (protocol 4): the length is only a hint
          take(8);
          break;
        case '.': {  // STOP
          if (stack_.size() != 1 || is_mark(stack_[0])) bad(op_at, "STOP without one result");
          return stack_[0];
        }
        case '(':
          if (stack_.size() >= kMaxValues) bad(op_at, "more than ", kMaxValues, " stack entries");
          stack_.push_back(nullptr);  // MARK
          break;
        case 'N':
          push(make(Value::Kind::None));
          break;
        case 0x88:
        case 0x89: {  // NEWTRUE NEWFALSE
          auto v = make(Value::Kind::Bool);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'K':
          push_int(int64_t(le(take(1), 1)));
          break;
        case 'M':
          push_int(int64_t(le(take(2), 2)));
          break;
        case 'J':
          push_int(int64_t(int32_t(uint32_t(le(take(4), 4)))));
          break;
        case 0x8a: {  // LONG1: little-endian two's complement of n bytes
          const size_t n = le(take(1), 1);
          if (n > 8) bad(op_at, "integer of ", n, " bytes");
          const uint8_t* p = take(n);
          uint64_t u = le(p, int(n));
          if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~uint64_t{0} << (8 * n);
          push_int(int64_t(u));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          const uint8_t* p = take(8);
          uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = u << 8 | p[k];
          auto v = make(Value::Kind::Float);
          std::memcpy(&v->f, &u, 8);
          push(v);
          break;
        }
        case 'X':
        case 'T':  // BINUNICODE BINSTRING
          push_str(le(take(4), 4));
          break;
        case 0x8c:
        case 'U':  // SHORT_BINUNICODE SHORT_BINSTRING
          push_str(le(take(1), 1));
          break;
        case 'c': {  // GLOBAL "module\nname\n"
          const std::string module = line(), name = line();
          auto v = make(Value::Kind::Global);
          v->s = module + " " + name;
          push(v);
          break;
        }
        case '}':
          push(make(Value::Kind::Dict));
          break;
        case ']':
          push(make(Value::Kind::List));
          break;
        case ')':
          push(make(Value::Kind::Tuple));
          break;
        case 't':
        case 'l': {  // TUPLE LIST
          auto v = make(op == 't' ? Value::Kind::Tuple : Value::Kind::List);
          for (auto& item : pop_mark(op_at)) adopt(v, item, op_at);
          push(v);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1 TUPLE2 TUPLE3
          auto v = make(Value::Kind::Tuple);
          for (auto& item : pop_n(size_t(op - 0x84), op_at)) adopt(v, item, op_at);
          push(v);
          break;
        }
        case 'd': {  // DICT
          auto v = make(Value::Kind::Dict);
          set_items(v, pop_mark(op_at), op_at);
          push(v);
          break;
        }
        case 's': {  // SETITEM
          auto kv = pop_n(2, op_at);
          set_items(top(op_at, Value::Kind::Dict), kv, op_at);
          break;
        }
        case 'u': {  // SETITEMS
          auto kv = pop_mark(op_at);
          set_items(top(op_at, Value::Kind::Dict), kv, op_at);
          break;
        }
        case 'a': {  // APPEND
          auto item = pop_n(1, op_at);
          adopt(top(op_at, Value::Kind::List), item[0], op_at);
          break;
        }
        case 'e': {  // APPENDS
          auto items = pop_mark(op_at);
          auto list = top(op_at, Value::Kind::List);
          for (auto& item : items) adopt(list, item, op_at);
          break;
        }
        case 'q':
          memo_[le(take(1), 1)] = top(op_at);  // BINPUT
          break;
        case 'r':
          memo_[le(take(4), 4)] = top(op_at);  // LONG_BINPUT
          break;
        case 0x94:
          memo_[memo_.size()] = top(op_at);  // MEMOIZE
          break;
        case 'h':
          push(memo(le(take(1), 1), op_at));  // BINGET
          break;
        case 'j':
          push(memo(le(take(4), 4), op_at));  // LONG_BINGET
          break;
        case 'Q':
          push(persistent(pop_n(1, op_at)[0], op_at));  // BINPERSID
          break;
        case 'R': {  // REDUCE
          auto fa = pop_n(2, op_at);
          push(reduce(fa[0], fa[1], op_at));
          break;
        }
        case 'b': {  // BUILD: the state of an OrderedDict (e.g. _metadata) is not needed
          auto state = pop_n(1, op_at);
          top(op_at, Value::Kind::Dict);
          break;
        }
        default:
          bad(op_at, "unsupported pickle opcode 0x", hex(op));
      }
    }
  }

 private:
  template <typename... Args>
  [[noreturn]] void bad(uint64_t at, const Args&... what) const {
    fail(path_, ": data.pkl byte ", at, ": ", what...);
  }
  static std::string hex(uint8_t b) {
    const char* d = "0123456789abcdef";
    return {d[b >> 4], d[b & 15]};
  }
  static bool is_mark(const ValuePtr& v) { return v == nullptr; }

  uint8_t byte() { return *take(1); }
  const uint8_t* take(uint64_t n) {
    if (n > in_.size() - pos_) bad(pos_, "truncated pickle");
    const uint8_t* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::string line() {
    const uint8_t* start = in_.data() + pos_;
    const void* nl = std::memchr(start, '\n', std::min<size_t>(in_.size() - pos_, 256));
    if (!nl) bad(pos_, "GLOBAL name without an end of line within 256 bytes");
    const size_t n = size_t(static_cast<const uint8_t*>(nl) - start);
    pos_ += n + 1;
    return std::string(reinterpret_cast<const char*>(start), n);
  }

  ValuePtr make(Value::Kind k) {
    if (all_.size() >= kMaxValues) bad(pos_, "more than ", kMaxValues, " values");
    all_.push_back(std::make_shared<Value>());
    all_.back()->kind = k;
    return all_.back();
  }
  void push(ValuePtr v) { stack_.push_back(std::move(v)); }
  void push_int(int64_t i) {
    auto v = make(Value::Kind::Int);
    v->i = i;
    push(v);
  }
  void push_str(uint64_t n) {
    const uint8_t* p = take(n);
    auto v = make(Value::Kind::Str);
    v->s.assign(reinterpret_cast<const char*>(p), size_t(n));
    push(v);
  }
  ValuePtr top(uint64_t at) {
    if (stack_.empty() || is_mark(stack_.back())) bad(at, "empty stack");
    return stack_.back();
  }
  ValuePtr top(uint64_t at, Value::Kind k) {
    ValuePtr v = top(at);
    if (v->kind != k)
      bad(at, "expected a ", kind_name(k), " on the stack, found a ", kind_name(v->kind));
    return v;
  }
  std::vector<ValuePtr> pop_n(size_t n, uint64_t at) {
    if (stack_.size() < n) bad(at, "stack underflow");
    std::vector<ValuePtr> out(stack_.end() - std::ptrdiff_t(n), stack_.end());
    for (const auto& v : out)
      if (is_mark(v)) bad(at, "unexpected MARK");
    stack_.resize(stack_.size() - n);
    return out;
  }
  std::vector<ValuePtr> pop_mark(uint64_t at) {
    size_t m = stack_.size();
    while (m > 0 && !is_mark(stack_[m - 1])) --m;
    if (m == 0) bad(at, "no MARK on the stack");
    std::vector<ValuePtr> out(stack_.begin() + std::ptrdiff_t(m), stack_.end());
    stack_.resize(m - 1);
    return out;
  }
  ValuePtr memo(uint64_t key, uint64_t at) {
    const auto it = memo_.find(key);
    if (it == memo_.end()) bad(at, "memo entry ", key, " was never stored");
    return it->second;
  }
  void adopt(const ValuePtr& parent, const ValuePtr& child, uint64_t at) {
    if (child.get() == parent.get()) bad(at, "a ", kind_name(parent->kind), " inside itself");
    parent->depth = std::max(parent->depth, child->depth + 1);
    if (parent->depth > kMaxDepth) bad(at, "values nested more than ", kMaxDepth, " deep");
    parent->items.push_back(child);
  }
  void set_items(const ValuePtr& dict, const std::vector<ValuePtr>& kv, uint64_t at) {
    if (kv.size() % 2) bad(at, "a dict item without a value");
    for (size_t k = 0; k < kv.size(); k += 2) {
      if (kv[k]->kind != Value::Kind::Str) {
        bad(at, "a dict key is a ", kind_name(kv[k]->kind), ", not a string");
      }
      const ValuePtr& v = kv[k + 1];
      if (v.get() == dict.get()) bad(at, "a dict inside itself");
      dict->depth = std::max(dict->depth, v->depth + 1);
      if (dict->depth > kMaxDepth) bad(at, "values nested more than ", kMaxDepth, " deep");
      dict->dict[kv[k]->s] = v;
    }
  }
  int64_t as_int(const ValuePtr& v, const char* what, uint64_t at) {
    if (v->kind != Value::Kind::Int) bad(at, what, " is a ", kind_name(v->kind), ", not an int");
    return v->i;
  }
  std::vector<int64_t> int_tuple(const ValuePtr& v, const char* what, uint64_t at) {
    if (v->kind != Value::Kind::Tuple) bad(at, what, " is a ", kind_name(v->kind), ", not a tuple");
    if (v->items.size() > size_t(kMaxDims)) bad(at, what, " has more than ", kMaxDims, " entries");
    std::vector<int64_t> out;
    for (const auto& x : v->items) out.push_back(as_int(x, what, at));
    return out;
  }

  // ('storage', torch.<Type>Storage, key, location, numel)
  ValuePtr persistent(const ValuePtr& pid, uint64_t at) {
    const auto& t = pid->items;
    if (pid->kind != Value::Kind::Tuple || t.size() != 5 || t[0]->kind != Value::Kind::Str ||
        t[0]->s != "storage" || t[1]->kind != Value::Kind::Global ||
        t[2]->kind != Value::Kind::Str) {
      bad(at, "a persistent id other than ('storage', type, key, location, numel)");
    }
    auto v = make(Value::Kind::Storage);
    if (!storage_dtype(t[1]->s, &v->dtype)) bad(at, "unsupported storage type '", t[1]->s, "'");
    v->s = t[2]->s;
    v->i = as_int(t[4], "a storage's size", at);
    if (v->i < 0) bad(at, "a storage of negative size");
    return v;
  }

  ValuePtr reduce(const ValuePtr& fn, const ValuePtr& args, uint64_t at) {
    if (fn->kind != Value::Kind::Global) bad(at, "REDUCE on a ", kind_name(fn->kind));
    if (args->kind != Value::Kind::Tuple) bad(at, "REDUCE with arguments that are not a tuple");
    const auto& a = args->items;
    if (fn->s == "collections OrderedDict") {
      if (!a.empty()) bad(at, "OrderedDict built with arguments");
      return make(Value::Kind::Dict);
    }
    if (fn->s == "torch._utils _rebuild_tensor_v2") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() < 4 || a[0]->kind != Value::Kind::Storage) {
        bad(at, "_rebuild_tensor_v2 without (storage, offset, size, stride)");
      }
      auto v = make(Value::Kind::Tensor);
      v->items = {a[0]};
      v->dtype = a[0]->dtype;
      v->i = as_int(a[1], "a tensor's storage offset", at);
      v->sizes = int_tuple(a[2], "a tensor's size", at);
      v->strides = int_tuple(a[3], "a tensor's stride", at);
      if (v->sizes.size() != v->strides.size())
        bad(at, "a tensor's size and stride differ in length");
      return v;
    }
    if (fn->s == "torch._utils _rebuild_parameter") {  // (tensor, requires_grad, hooks)
      if (a.empty() || a[0]->kind != Value::Kind::Tensor)
        bad(at, "_rebuild_parameter without a tensor");
      return a[0];
    }
    if (fn->s == "torch.jit._pickle restore_type_tag") {  // (value, type name)
      if (a.size() != 2) bad(at, "restore_type_tag without (value, type)");
      return a[0];
    }
    bad(at, "unsupported global '", fn->s, "' (only a state dict of tensors is read)");
  }

  const std::vector<uint8_t>& in_;
  std::string path_;
  uint64_t pos_ = 0;
  std::vector<ValuePtr> stack_;  // nullptr is a MARK
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::vector<ValuePtr> all_;
};

// ---------------------------------------------------------------------------------------------
// Tensors out of their records.

class Records {
 public:
  Records(File& f, const std::map<std::string, Entry>& dir, const std::string& path)
      : f_(f), dir_(dir), path_(path) {}

  at::Tensor tensor(const Value& t, const std::string& name) {
    const Value& st = *t.items[0];
    const int64_t esize = int64_t(c10::elementSize(t.dtype));
    const auto it = dir_.find("data/" + st.s);
    if (it == dir_.end()) fail(path_, ": tensor '", name, "': no record data/", st.s);
    const uint64_t bytes = it->second.size;
    // The extent the size, stride and offset reach, checked against the record before any
    // of it is read.
    bool empty = false, bad = t.i < 0;
    uint64_t last = uint64_t(std::max<int64_t>(t.i, 0));
    for (size_t d = 0; d < t.sizes.size() && !bad; ++d) {
      const int64_t n = t.sizes[d], s = t.strides[d];
      bad = n < 0 || s < 0 || (n > 1 && uint64_t(s) > (uint64_t{1} << 40) / uint64_t(n));
      if (n == 0) empty = true;
      if (!bad && n > 0) last += uint64_t(n - 1) * uint64_t(s);
    }
    if (!bad && !empty && (last >= bytes / uint64_t(esize) || last >= uint64_t(st.i))) bad = true;
    if (bad) {
      fail(path_, ": tensor '", name, "' of shape ", shape_str(t.sizes),
           " reaches past its stored data (", bytes, " bytes)");
    }
    if (empty) return at::empty(t.sizes, t.dtype);
    at::Tensor& storage = cache_[st.s];
    if (!storage.defined()) {
      if (bytes % uint64_t(esize)) {
        fail(path_, ": record data/", st.s, " is ", bytes, " bytes, not a whole number of ",
             c10::toString(t.dtype), " values");
      }
      storage = at::empty({int64_t(bytes / uint64_t(esize))}, t.dtype);
      f_.read(it->second.offset, bytes, storage.data_ptr());
    }
    return storage.as_strided(t.sizes, t.strides, t.i);
  }

 private:
  File& f_;
  const std::map<std::string, Entry>& dir_;
  std::string path_;
  std::map<std::string, at::Tensor> cache_;
};

void flatten(const Value& v, const std::string& name, const std::string& path, int depth,
             Records& records, uint64_t* budget, std::map<std::string, at::Tensor>* out) {
  if (v.kind == Value::Kind::Tensor) {
    at::Tensor t = records.tensor(v, name);
    const uint64_t bytes = uint64_t(t.numel()) * t.element_size();
    if (bytes > *budget) {
      fail(path, ": tensor '", name, "' of shape ", shape_str(t.sizes()),
           ": the tensors read so far exceed twice the file's size (storages reused)");
    }
    *budget -= bytes;
    out->emplace(name, (t.is_floating_point() ? t.to(at::kFloat) : t.to(at::kLong)).contiguous());
    return;
  }
  if (v.kind != Value::Kind::Dict || depth > 2) {
    fail(path, ": entry '", name, "' is a ", kind_name(v.kind),
         ", expected a tensor or a dict of tensors (a torch.save state dict)");
  }
  for (const auto& [key, value] : v.dict) {
    flatten(*value, name.empty() ? key : name + "/" + key, path, depth + 1, records, budget, out);
  }
}

}  // namespace

std::map<std::string, at::Tensor> read_torch_save(const std::string& path, int64_t max_bytes) {
  if (!file_exists(path)) fail_not_found(path, ": no such file");
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) fail_io(path, ": ", ec.message());
  if (size > uint64_t(max_bytes)) {
    fail(path, ": ", size, " bytes, more than the ", max_bytes, " this reader accepts");
  }
  File f(path);
  const std::map<std::string, Entry> dir = read_zip_directory(f, path);
  const auto pkl = dir.find("data.pkl");
  if (pkl == dir.end()) fail(path, ": not a readable torch.save file (no data.pkl record)");
  if (pkl->second.size > kMaxPickleBytes) {
    fail(path, ": data.pkl is ", pkl->second.size, " bytes, more than the ", kMaxPickleBytes,
         " a state dict needs");
  }
  if (const auto bo = dir.find("byteorder"); bo != dir.end()) {
    const std::vector<uint8_t> b =
        f.bytes(bo->second.offset, std::min<uint64_t>(bo->second.size, 16));
    if (std::string(b.begin(), b.end()) != "little") {
      fail(path, ": byteorder '", std::string(b.begin(), b.end()),
           "' (only little-endian is read)");
    }
  }
  const std::vector<uint8_t> bytes = f.bytes(pkl->second.offset, pkl->second.size);
  Unpickler unpickler(bytes, path);
  const ValuePtr root = unpickler.run();
  Records records(f, dir, path);
  uint64_t budget = 2 * uint64_t(size);
  std::map<std::string, at::Tensor> out;
  flatten(*root, "", path, 0, records, &budget, &out);
  return out;
}

}  // namespace cocom::model
