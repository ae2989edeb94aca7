// libFuzzer target: arbitrary bytes as a whole safetensors file, fed to the header parser.
// Besides "no crash / no sanitizer report / only cocom::Error", it checks the invariants the
// loader relies on for every header that is accepted: tensors lie inside the data section,
// byte counts match shape x dtype, and tensors are sorted and do not overlap. Each tensor's
// first and last byte is read so that ASan catches any bound the parser got wrong.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "model/safetensors.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cocom::model;
  ParsedHeader h;
  try {
    h = parse_safetensors_header(data, size, size, "fuzz.safetensors");
  } catch (const cocom::Error&) {
    return 0;
  }
  check(h.data_start >= 8 && h.data_start <= size);
  const uint64_t data_size = size - h.data_start;
  uint64_t prev_begin = 0, reach = 0;
  volatile uint8_t sink = 0;
  for (const TensorInfo& t : h.tensors) {
    check(!t.name.empty());
    check(t.begin <= t.end && t.end <= data_size);
    check(t.nbytes() == static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype));
    check(t.begin >= prev_begin);
    check(t.begin == t.end || t.begin >= reach);
    prev_begin = t.begin;
    if (t.end > reach) reach = t.end;
    if (t.nbytes() > 0) {
      sink = sink + data[h.data_start + t.begin] + data[h.data_start + t.end - 1];
    }
    // dtype helpers round-trip.
    auto back = parse_dtype(dtype_name(t.dtype));
    check(back.has_value() && *back == t.dtype);
  }
  // The same bytes, presented as "header only" with the true size given separately, must give
  // the same answer.
  try {
    ParsedHeader h2 = parse_safetensors_header(data, h.data_start, size, "fuzz.safetensors");
    check(h2.tensors.size() == h.tensors.size() && h2.metadata == h.metadata);
  } catch (const cocom::Error&) {
    check(false);
  }
  return 0;
}
