#include "model/fingerprint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"
#include "common/log.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace fs = std::filesystem;

namespace cocom::model {

namespace {

constexpr const char* kPrefix = "xxh3:";
constexpr size_t kMaxCacheEntries = 512;

// What identifies one version of a file without reading it.
struct FileKey {
  uint64_t size = 0, inode = 0, device = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileKey& o) const {
    return size == o.size && inode == o.inode && device == o.device && mtime_ns == o.mtime_ns;
  }
};

FileKey key_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail_io(path, ": cannot stat the checkpoint file");
  FileKey k;
  k.size = static_cast<uint64_t>(st.st_size);
  k.inode = static_cast<uint64_t>(st.st_ino);
  k.device = static_cast<uint64_t>(st.st_dev);
  k.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return k;
}

std::string cache_dir() {
  if (const char* d = std::getenv("COCOM_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return join_path(d, "cocom");
  if (const char* h = std::getenv("HOME"); h && *h)
    return join_path(join_path(h, ".cache"), "cocom");
  return {};
}

Json entry_json(const FileKey& k, uint64_t hash) {
  return {{"size", k.size},
          {"inode", k.inode},
          {"device", k.device},
          {"mtime_ns", k.mtime_ns},
          {"xxh3", hex64(hash)}};
}

// The per-file hash cache: in memory for this process, on disk across processes. The disk
// file is a convenience: unreadable or unwritable, the hashes are simply computed again.
class HashCache {
 public:
  uint64_t hash(const std::string& path) {
    const std::string abs = fs::absolute(path).lexically_normal().string();
    const FileKey key = key_of(abs);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = memo_.find(abs);
    if (it != memo_.end() && it->second.first == key) return it->second.second;
    const std::string file = cache_file();
    Json disk = load(file);
    if (auto hit = lookup(disk, abs, key)) {
      memo_[abs] = {key, *hit};
      return *hit;
    }
    log::info("hashing {} ({:.1f} MB) to identify the checkpoint (once; cached)", abs,
              double(key.size) / 1e6);
    const uint64_t h = xxh3_file(abs);
    if (!(key_of(abs) == key)) fail_io(abs, ": changed while it was being hashed");
    memo_[abs] = {key, h};
    save(file, std::move(disk), abs, key, h);
    return h;
  }

 private:
  static std::string cache_file() {
    const std::string d = cache_dir();
    return d.empty() ? d : join_path(d, "checkpoint-hashes.json");
  }
  static Json load(const std::string& file) {
    if (file.empty() || !file_exists(file)) return Json::object();
    try {
      Json j = read_json_file(file);
      if (j.is_object() && j.value("version", 0) == 1 && j.contains("files") &&
          j["files"].is_object()) {
        return j;
      }
    } catch (const Error& e) {
      log::debug("ignoring the checkpoint hash cache: {}", e.what());
    }
    return Json::object();
  }
  static std::optional<uint64_t> lookup(const Json& disk, const std::string& abs,
                                        const FileKey& key) {
    if (!disk.contains("files") || !disk["files"].contains(abs)) return std::nullopt;
    const Json& e = disk["files"][abs];
    try {
      FileKey k;
      k.size = e.at("size").get<uint64_t>();
      k.inode = e.at("inode").get<uint64_t>();
      k.device = e.at("device").get<uint64_t>();
      k.mtime_ns = e.at("mtime_ns").get<int64_t>();
      const std::string hex = e.at("xxh3").get<std::string>();
      if (!(k == key) || hex.size() != 16) return std::nullopt;
      return std::stoull(hex, nullptr, 16);
    } catch (const std::exception&) {
      return std::nullopt;  // a damaged entry: hash again
    }
  }
  static void save(const std::string& file, Json disk, const std::string& abs, const FileKey& key,
                   uint64_t h) {
    if (file.empty()) return;
    try {
      if (!disk.is_object() || !disk.contains("files")) {
        disk = {{"version", 1}, {"files", Json::object()}};
      }
      Json& files = disk["files"];
      if (files.size() >= kMaxCacheEntries) {
        // Bounded: forget entries of files that are gone, then everything but this one.
        for (auto it = files.begin(); it != files.end();) {
          it = fs::exists(it.key()) ? std::next(it) : files.erase(it);
        }
        if (files.size() >= kMaxCacheEntries) files = Json::object();
      }
      files[abs] = entry_json(key, h);
      std::error_code ec;
      fs::create_directories(fs::path(file).parent_path(), ec);
      write_json_file(file, disk);
    } catch (const std::exception& e) {
      log::debug("could not update the checkpoint hash cache {}: {}", file, e.what());
    }
  }

  std::mutex mu_;
  std::map<std::string, std::pair<FileKey, uint64_t>> memo_;
};

HashCache& cache() {
  static HashCache c;
  return c;
}

}  // namespace

std::string checkpoint_fingerprint(const std::string& model_dir) {
  const std::string config = join_path(model_dir, "config.json");
  uint64_t h = fnv1a64(std::string("cocom-checkpoint-v1"));
  h = fnv1a64(read_text_file(config), h);
  auto files = CheckpointFiles::open(model_dir);
  std::set<std::string> weight_files;
  for (const auto& n : files->names()) weight_files.insert(files->file_of(n));
  for (const auto& f : weight_files) {
    h = fnv1a64(fs::path(f).filename().string(), h);
    const uint64_t fh = cache().hash(f);
    h = fnv1a64(&fh, sizeof fh, h);
  }
  return kPrefix + hex64(h);
}

std::string legacy_checkpoint_fingerprint(const std::string& model_dir) {
  uint64_t h = fnv1a64(read_text_file(join_path(model_dir, "config.json")));
  auto files = CheckpointFiles::open(model_dir);
  for (const auto& n : files->names()) {
    const auto& ti = files->info(n);
    h = fnv1a64(n + dtype_name(ti.dtype) + shape_str(ti.shape), h);
  }
  std::string base = fs::path(model_dir).lexically_normal().filename().string();
  if (base.empty()) base = fs::path(model_dir).lexically_normal().parent_path().filename().string();
  return base + ":" + hex64(h);
}

bool is_legacy_fingerprint(const std::string& fp) {
  return !fp.empty() && fp.rfind(kPrefix, 0) != 0;
}

}  // namespace cocom::model
