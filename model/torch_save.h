// Internal to model/weights.cpp's read_torch_save (declared in model/weights.h), apart so the
// fuzz target and the tests can reach it.
#pragma once

#include <string>

namespace cocom::model {

// read_torch_save's work-around for libtorch 1.13's unpickler, which lacks the SETITEM opcode
// (Python writes it for a dict of one entry): each SETITEM of a protocol-2 pickle becomes
// MARK key value SETITEMS. Bytes it cannot follow are returned unchanged. Exposed for the fuzz
// target.
std::string pickle_setitem_as_setitems(const std::string& pickle);

}  // namespace cocom::model
