// What a store remembers to recognise the COCOM checkpoint its context embeddings were made
// with: a hash of the checkpoint's content (config.json and every weight file), never of its
// directory name. A byte-identical copy anywhere is the same model; a retrained or damaged
// one of the same shape is another.
#pragma once

#include <string>

namespace cocom::model {

// "xxh3:<16 hex digits>" over config.json and the content of each safetensors file of the
// checkpoint (sorted by name). Hashing reads every weight byte once (seconds for a 7B
// checkpoint); the per-file hashes are then cached by path, size, modification time and inode
// in $COCOM_CACHE_DIR (default $XDG_CACHE_HOME/cocom, else ~/.cache/cocom), so later calls cost
// a stat per file. A file rewritten in place gets a new modification time and is hashed
// again. Throws cocom::Error naming the directory or file that cannot be read.
std::string checkpoint_fingerprint(const std::string& model_dir);

// The identity stores made before content hashes recorded: the directory's base name and a
// hash of config.json and the tensor names, dtypes and shapes ("name:<hex>"). Used only to
// recognise such a store's checkpoint once, after which the store records the content hash.
std::string legacy_checkpoint_fingerprint(const std::string& model_dir);

// True for a fingerprint in the legacy form.
bool is_legacy_fingerprint(const std::string& fingerprint);

}  // namespace cocom::model
