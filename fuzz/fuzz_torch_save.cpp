// libFuzzer target: arbitrary bytes as a torch.save file (PISCO's adapters.pth and
// decoder_first_last_layers.pth), read by model::read_torch_save. Besides "no crash / no
// sanitizer report / only cocom::Error", it checks the SETITEM rewrite the reader applies to
// the pickle: its output is the input unchanged, or the input with MARK bytes inserted and
// SETITEM opcodes turned into SETITEMS (the same length plus one byte per rewrite).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "model/torch_save.h"
#include "model/weights.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cocom::model;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string out = pickle_setitem_as_setitems(bytes);
  if (out != bytes) {
    size_t marks = 0, setitems = 0;
    for (char c : out) marks += c == '(';
    for (char c : bytes) marks -= c == '(';
    check(out.size() == bytes.size() + marks);
    for (size_t i = 0, j = 0; i < bytes.size(); ++i, ++j) {
      while (out[j] != bytes[i] && out[j] == '(') ++j;  // an inserted MARK
      if (out[j] != bytes[i]) {
        check(bytes[i] == 's' && out[j] == 'u');
        ++setitems;
      }
    }
    check(setitems >= 1 && setitems <= marks);
  }
  char path[] = "/tmp/fuzz-torch-save-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return 0;
  const bool written = write(fd, data, size) == static_cast<ssize_t>(size);
  close(fd);
  if (written) {
    try {
      read_torch_save(path, int64_t{1} << 26);
    } catch (const cocom::Error&) {
    }
  }
  unlink(path);
  return 0;
}
