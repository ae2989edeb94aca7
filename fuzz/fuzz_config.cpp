// libFuzzer target: arbitrary bytes as config.json text. Parsing, architecture detection and
// both config readers may only fail with cocom::Error; an accepted config must survive a
// to_json/from_json round trip and give a positive parameter count.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/json_util.h"
#include "model/config.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cocom::model;
  const std::string text(reinterpret_cast<const char*>(data), size);
  cocom::Json j;
  try {
    j = cocom::parse_json_text(text, "config.json");
  } catch (const cocom::Error&) {
    return 0;
  }
  try {
    (void)detect_arch(j, "config.json");
  } catch (const cocom::Error&) {
  }
  // A config that is accepted must round-trip; an Error from the round trip is a finding, so
  // it is not caught.
  std::optional<DecoderConfig> dec;
  try {
    dec = DecoderConfig::from_json(j, "config.json");
  } catch (const cocom::Error&) {
  }
  if (dec) {
    check(dec->parameter_count() > 0);
    DecoderConfig c2 = DecoderConfig::from_json(dec->to_json(), "roundtrip");
    check(c2.vocab_size == dec->vocab_size && c2.hidden_size == dec->hidden_size &&
          c2.head_dim == dec->head_dim && c2.num_key_value_heads == dec->num_key_value_heads &&
          c2.sliding_window == dec->sliding_window && c2.rope_theta == dec->rope_theta);
  }
  std::optional<BertConfig> bert;
  try {
    bert = BertConfig::from_json(j, "config.json");
  } catch (const cocom::Error&) {
  }
  if (bert) {
    check(bert->parameter_count() > 0);
    BertConfig c2 = BertConfig::from_json(bert->to_json(), "roundtrip");
    check(c2.vocab_size == bert->vocab_size && c2.hidden_size == bert->hidden_size &&
          c2.layer_norm_eps == bert->layer_norm_eps);
  }
  return 0;
}
