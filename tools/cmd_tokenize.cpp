// cocom tokenize
#include <iostream>

#include "tools/commands.h"

namespace cocom::cli {

int cmd_tokenize(const GlobalOptions& g, const TokenizeArgs& a) {
  setup_runtime(g);
  auto tok = model::load_tokenizer(a.tokenizer);
  const bool special = !a.no_special;
  std::vector<int64_t> ids = tok->encode(a.text, special);
  std::vector<std::string> pieces = tok->tokenize(a.text, special);
  if (a.json) {
    Json out;
    out["ids"] = ids;
    out["tokens"] = pieces;
    out["count"] = ids.size();
    std::cout << out.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    std::cout << ids[i] << "\t" << (i < pieces.size() ? pieces[i] : "") << "\n";
  }
  std::cerr << ids.size() << " tokens\n";
  return 0;
}

}  // namespace cocom::cli
