#include "common/error.h"

namespace cocom::detail {

std::string concat_pieces(std::initializer_list<std::string> pieces) {
  std::string out;
  for (const auto& p : pieces) out += p;
  return out;
}

}  // namespace cocom::detail
