// Compressed files and zip containers through libarchive (internal to ingest/).
#pragma once

#include <functional>
#include <map>
#include <string>

#include "ingest/documents.h"

namespace cocom::ingest::detail {

// The compression filter `data` starts with ("gzip", "bzip2", "xz"), or "" when none of them.
std::string compression_of(const std::string& data);

// Entries of the zip archive `data` whose names `want` accepts, name -> content (the first of
// duplicate names wins; directories are ignored). Every entry counts against
// lim.max_entries, every byte read against lim.max_bytes (0 = no limit); the archive stops
// being read as soon as a limit is passed. Throws cocom::Error naming `name` and the limit, or
// what libarchive said about a damaged, encrypted or non-zip input.
std::map<std::string, std::string> read_zip(const std::string& data, const std::string& name,
                                            const UnpackLimits& lim,
                                            const std::function<bool(const std::string&)>& want);

// What a zip archive holds, from its entries (office.cpp): "docx" (word/document.xml or an
// officeDocument relationship), "odt" or "epub" (its "mimetype" entry), else "". Throws like
// read_zip.
std::string office_kind(const std::string& zip, const std::string& name, const UnpackLimits& lim);

}  // namespace cocom::ingest::detail
