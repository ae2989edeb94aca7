// libcocom_spm.so: the only code of the project that links sentencepiece. It exposes the small
// C interface declared in tokenizer_impl.h and is loaded with dlopen(RTLD_LOCAL|RTLD_DEEPBIND),
// so that sentencepiece's bundled protobuf never meets libtorch's (ENVIRONMENT.md, trap 4).
// Every C++ exception stays inside this file.
#define COCOM_SPM_C_API_ONLY
#include "tokenizer_impl.h"

#include <sentencepiece_processor.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <vector>

struct cocom_spm_model {
  sentencepiece::SentencePieceProcessor sp;
};

struct cocom_spm_result {
  std::vector<std::string> pieces;
  std::vector<int32_t> ids;
  std::string text;
};

namespace {

void set_error(char** error, const std::string& message) {
  if (error == nullptr) return;
  char* copy = static_cast<char*>(std::malloc(message.size() + 1));
  if (copy != nullptr) std::memcpy(copy, message.c_str(), message.size() + 1);
  *error = copy;
}

bool valid_id(const cocom_spm_model* model, int32_t id) {
  return model != nullptr && id >= 0 && id < model->sp.GetPieceSize();
}

}  // namespace

extern "C" {

COCOM_SPM_API int cocom_spm_abi_version(void) { return COCOM_SPM_ABI_VERSION; }

COCOM_SPM_API cocom_spm_model* cocom_spm_load(const char* path, int add_dummy_prefix,
                                              char** error) {
  if (error != nullptr) *error = nullptr;
  try {
    if (path == nullptr) {
      set_error(error, "no path given");
      return nullptr;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      set_error(error, std::string("cannot open (") + std::strerror(errno) + ")");
      return nullptr;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) {
      set_error(error, "read error");
      return nullptr;
    }
    std::string bytes = ss.str();
    if (bytes.empty()) {
      set_error(error, "empty file (expected a serialized sentencepiece ModelProto)");
      return nullptr;
    }
    if (add_dummy_prefix >= 0) {
      // Protocol buffers merge repeated occurrences of an embedded message, so appending
      // `normalizer_spec { add_dummy_prefix: X }` (field 3 of ModelProto, field 3 of
      // NormalizerSpec) overrides just that flag, as transformers' get_spm_processor does with
      // MergeFrom.
      const char patch[4] = {0x1A, 0x02, 0x18, static_cast<char>(add_dummy_prefix ? 1 : 0)};
      bytes.append(patch, sizeof(patch));
    }
    std::unique_ptr<cocom_spm_model> model(new cocom_spm_model());
    auto status = model->sp.LoadFromSerializedProto(bytes);
    if (!status.ok()) {
      set_error(error, std::string("not a valid sentencepiece model: ") + status.ToString());
      return nullptr;
    }
    if (model->sp.GetPieceSize() <= 0) {
      set_error(error, "the sentencepiece model has no pieces");
      return nullptr;
    }
    return model.release();
  } catch (const std::exception& e) {
    set_error(error, std::string("sentencepiece failed: ") + e.what());
  } catch (...) {
    set_error(error, "sentencepiece failed with an unknown exception");
  }
  return nullptr;
}

COCOM_SPM_API void cocom_spm_free(cocom_spm_model* model) { delete model; }

COCOM_SPM_API void cocom_spm_free_error(char* error) { std::free(error); }

COCOM_SPM_API int32_t cocom_spm_piece_size(const cocom_spm_model* model) {
  if (model == nullptr) return -1;
  try {
    return model->sp.GetPieceSize();
  } catch (...) {
    return -1;
  }
}

COCOM_SPM_API const char* cocom_spm_id_to_piece(const cocom_spm_model* model, int32_t id,
                                                size_t* len) {
  try {
    if (!valid_id(model, id)) return nullptr;
    const std::string& piece = model->sp.IdToPiece(id);
    if (len != nullptr) *len = piece.size();
    return piece.data();
  } catch (...) {
    return nullptr;
  }
}

COCOM_SPM_API int32_t cocom_spm_piece_to_id(const cocom_spm_model* model, const char* piece,
                                            size_t len) {
  if (model == nullptr || (piece == nullptr && len != 0)) return -1;
  try {
    return model->sp.PieceToId(std::string(piece == nullptr ? "" : piece, len));
  } catch (...) {
    return -1;
  }
}

COCOM_SPM_API int cocom_spm_piece_flags(const cocom_spm_model* model, int32_t id) {
  try {
    if (!valid_id(model, id)) return -1;
    int flags = 0;
    if (model->sp.IsControl(id)) flags |= COCOM_SPM_PIECE_CONTROL;
    if (model->sp.IsUnknown(id)) flags |= COCOM_SPM_PIECE_UNKNOWN;
    if (model->sp.IsByte(id)) flags |= COCOM_SPM_PIECE_BYTE;
    if (model->sp.IsUnused(id)) flags |= COCOM_SPM_PIECE_UNUSED;
    return flags;
  } catch (...) {
    return -1;
  }
}

COCOM_SPM_API int32_t cocom_spm_special_id(const cocom_spm_model* model, int which) {
  if (model == nullptr) return -1;
  try {
    switch (which) {
      case 0:
        return model->sp.unk_id();
      case 1:
        return model->sp.bos_id();
      case 2:
        return model->sp.eos_id();
      case 3:
        return model->sp.pad_id();
      default:
        return -1;
    }
  } catch (...) {
    return -1;
  }
}

COCOM_SPM_API cocom_spm_result* cocom_spm_encode(const cocom_spm_model* model, const char* text,
                                                 size_t len, char** error) {
  if (error != nullptr) *error = nullptr;
  if (model == nullptr || (text == nullptr && len != 0)) {
    set_error(error, "invalid arguments");
    return nullptr;
  }
  cocom_spm_result* result = nullptr;
  try {
    sentencepiece::ImmutableSentencePieceText spt;
    auto status =
        model->sp.Encode(std::string_view(text == nullptr ? "" : text, len), spt.mutable_proto());
    if (!status.ok()) {
      set_error(error, std::string("sentencepiece Encode failed: ") + status.ToString());
      return nullptr;
    }
    result = new cocom_spm_result();
    const size_t n = spt.pieces_size();
    result->pieces.reserve(n);
    result->ids.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      auto piece = spt.pieces(static_cast<int>(i));
      result->pieces.push_back(piece.piece());
      result->ids.push_back(static_cast<int32_t>(piece.id()));
    }
    return result;
  } catch (const std::exception& e) {
    set_error(error, std::string("sentencepiece Encode failed: ") + e.what());
  } catch (...) {
    set_error(error, "sentencepiece Encode failed with an unknown exception");
  }
  delete result;
  return nullptr;
}

COCOM_SPM_API cocom_spm_result* cocom_spm_decode_pieces(const cocom_spm_model* model,
                                                        const char* const* pieces,
                                                        const size_t* lens, size_t n,
                                                        char** error) {
  if (error != nullptr) *error = nullptr;
  if (model == nullptr || (n != 0 && (pieces == nullptr || lens == nullptr))) {
    set_error(error, "invalid arguments");
    return nullptr;
  }
  cocom_spm_result* result = nullptr;
  try {
    std::vector<std::string> input;
    input.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (pieces[i] == nullptr && lens[i] != 0) {
        set_error(error, "invalid arguments");
        return nullptr;
      }
      input.emplace_back(pieces[i] == nullptr ? "" : pieces[i], lens[i]);
    }
    result = new cocom_spm_result();
    auto status = model->sp.Decode(input, &result->text);
    if (!status.ok()) {
      set_error(error, std::string("sentencepiece Decode failed: ") + status.ToString());
      delete result;
      return nullptr;
    }
    return result;
  } catch (const std::exception& e) {
    set_error(error, std::string("sentencepiece Decode failed: ") + e.what());
  } catch (...) {
    set_error(error, "sentencepiece Decode failed with an unknown exception");
  }
  delete result;
  return nullptr;
}

COCOM_SPM_API size_t cocom_spm_result_size(const cocom_spm_result* result) {
  return result == nullptr ? 0 : result->pieces.size();
}

COCOM_SPM_API const char* cocom_spm_result_piece(const cocom_spm_result* result, size_t i,
                                                 size_t* len) {
  if (result == nullptr || i >= result->pieces.size()) return nullptr;
  if (len != nullptr) *len = result->pieces[i].size();
  return result->pieces[i].data();
}

COCOM_SPM_API int32_t cocom_spm_result_id(const cocom_spm_result* result, size_t i) {
  if (result == nullptr || i >= result->ids.size()) return -1;
  return result->ids[i];
}

COCOM_SPM_API const char* cocom_spm_result_text(const cocom_spm_result* result, size_t* len) {
  if (result == nullptr) return nullptr;
  if (len != nullptr) *len = result->text.size();
  return result->text.data();
}

COCOM_SPM_API void cocom_spm_result_free(cocom_spm_result* result) { delete result; }

}  // extern "C"
