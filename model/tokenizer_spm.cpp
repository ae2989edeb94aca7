// The sentencepiece shim (libcocom_spm.so): finding and loading it once per process, and
// SpmModel, a loaded sentencepiece model behind the shim's C interface.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model::detail {

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
  return path.empty() || path[0] != '/' || slash == std::string::npos ? "" : path.substr(0, slash);
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

}  // namespace cocom::model::detail
