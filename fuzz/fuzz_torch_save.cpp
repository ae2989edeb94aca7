// libFuzzer target: arbitrary bytes as a torch.save file (PISCO's adapters.pth and
// decoder_first_last_layers.pth), read by model::read_torch_save: no crash, no sanitizer
// report, no allocation beyond libFuzzer's limit, only cocom::Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char path[] = "/tmp/fuzz-torch-save-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return 0;
  const bool written = write(fd, data, size) == static_cast<ssize_t>(size);
  close(fd);
  if (written) {
    try {
      cocom::model::read_torch_save(path, int64_t{1} << 26);
    } catch (const cocom::Error&) {
    }
  }
  unlink(path);
  return 0;
}
