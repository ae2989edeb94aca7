// The web page served at / (serve/web/index.html, embedded at build time).
#pragma once

#include <string>

namespace cocom::serve {

const std::string& web_page();

}  // namespace cocom::serve
