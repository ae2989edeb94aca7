// HTML internals shared by the reader, the tests and the fuzz target (internal to ingest/).
#pragma once

#include <cstdint>
#include <string>

namespace cocom::ingest::detail {

struct NormalizedHtml {
  std::string html;       // what gumbo parses: balanced, nesting bounded, no attributes/comments
  int64_t flattened = 0;  // start tags dropped because they were nested deeper than the limit
  int64_t max_depth = 0;  // deepest element nesting kept (<= the limit)
};

// Rewrites `html` so that gumbo's tree construction stays linear (see html.cpp): every element
// the model closes gets an explicit end tag, elements deeper than `max_depth` lose their tags
// (their text stays), raw-text contents are escaped. Linear time in html.size() * max_depth
// at worst, linear in practice. max_depth must be >= 1.
NormalizedHtml normalize_html(const std::string& html, int64_t max_depth);

// html_to_text with the count of flattened elements (for the reader's warning).
std::string html_to_text_counted(const std::string& html, std::string* title, int64_t max_depth,
                                 int64_t* flattened);

// Depth of the deepest element in gumbo's parse of `html` as given (no normalisation): lets
// tests and the fuzz target check the bound that normalize_html promises.
int64_t gumbo_element_depth(const std::string& html);

}  // namespace cocom::ingest::detail
