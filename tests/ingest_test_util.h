// Helpers for the tests of ingest/ (test_documents, test_formats): finding what a read made of
// a file. Header-only, so that only the tests that link the ingest library include it.
#pragma once

#include <string>

#include "ingest/documents.h"

namespace cocom::test {

// The document read with this id, or nullptr.
inline const ingest::Document* find_doc(const ingest::ReadResult& r, const std::string& id) {
  for (const auto& d : r.documents) {
    if (d.id == id) return &d;
  }
  return nullptr;
}

// Why the file at `path` was skipped, or "<not skipped>".
inline std::string find_skip(const ingest::ReadResult& r, const std::string& path) {
  for (const auto& s : r.skipped) {
    if (s.path == path) return s.reason;
  }
  return "<not skipped>";
}

}  // namespace cocom::test
