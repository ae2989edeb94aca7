// Reading and writing safetensors files (https://huggingface.co/docs/safetensors format:
// 8-byte little-endian header length, JSON header, raw little-endian tensor data).
// Torch-free on purpose: the loader converts to tensors, and the fuzzers link only this.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cocom::model {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);                         // "F32", "BF16", ...
std::optional<DType> parse_dtype(const std::string& s);  // nullopt when unknown
bool dtype_is_float(DType t);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offset of the data, relative to the start of the data section
  uint64_t end = 0;    // one past the last byte
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// Parses and validates a header. `bytes`/`size` is the whole file (or its first part: only the
// header needs to be present when `file_size` gives the true size). Checks: header length
// within the file, valid UTF-8 JSON object, known dtypes, non-negative shapes, offsets inside
// the data section, offsets consistent with shape x dtype size, no overlapping tensors.
// Throws cocom::Error whose message starts with `path` and names the tensor at fault.
struct ParsedHeader {
  std::vector<TensorInfo> tensors;  // in file order of data offsets
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // absolute offset of the data section (8 + header length)
};
ParsedHeader parse_safetensors_header(const uint8_t* bytes, size_t size, uint64_t file_size,
                                      const std::string& path);

// A safetensors file opened read-only through mmap. Callers copy what they need into owned
// memory (file-backed pages are evicted on this VM, see ENVIRONMENT.md).
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(const std::string& name) const;  // nullptr when absent
  // Pointer to the raw little-endian bytes of a tensor (valid while this object lives).
  const uint8_t* data(const TensorInfo& t) const;
  // Drops this process's mapping of the tensor's pages (after it was copied out), so a
  // large checkpoint read tensor by tensor does not stay in the resident set. The data stays
  // readable: a later access maps the pages again from the file.
  void release(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  ParsedHeader header_;
  std::map<std::string, size_t> by_name_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
};

// Writes a safetensors file atomically (temporary file + rename). Tensors are written in the
// order added; data is 8-byte aligned like the reference writer.
class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
           const void* data, size_t nbytes);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file whose tensor list is known up front, streaming one tensor's data
// at a time, so a checkpoint larger than memory can be written (a 7B model in bf16 is
// 14.5 GB). Atomic like SafetensorsWriter: the file appears under `path` only at finish();
// an unfinished writer removes its temporary file.
class SafetensorsStreamWriter {
 public:
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  SafetensorsStreamWriter(const std::string& path, const std::vector<Spec>& specs,
                          const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;
  // The next tensor in spec order; throws when the name or byte count does not match.
  void write_next(const std::string& name, const void* data, size_t nbytes);
  void finish();

 private:
  void write_all(const void* p, size_t n);
  std::string path_, tmp_;
  int fd_ = -1;
  std::vector<Spec> specs_;
  std::vector<uint64_t> sizes_;
  size_t next_ = 0;
};

// A checkpoint directory: `model.safetensors`, or `model.safetensors.index.json` with shards,
// or (fallback) every `*.safetensors` file in the directory. Maps tensor names to files.
class CheckpointFiles {
 public:
  static std::unique_ptr<CheckpointFiles> open(const std::string& dir);
  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // all tensor names, sorted
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  // Throws naming the directory and tensor when absent.
  const TensorInfo& info(const std::string& name) const;
  const uint8_t* data(const std::string& name) const;
  void release(const std::string& name) const;  // see SafetensorsFile::release
  const std::string& file_of(const std::string& name) const;
  uint64_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>> where_;
};

}  // namespace cocom::model
