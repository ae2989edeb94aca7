// HTML to plain text through gumbo, with iterative traversals only (deeply nested documents
// must not overflow the stack); <title> or the first <h1> becomes the title.
#include "ingest/documents.h"

#include <gumbo.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"
#include "common/utf8.h"
#include "ingest/text.h"

namespace cocom::ingest {
namespace {

using namespace detail;  // NOLINT

// ---------------------------------------------------------------------------------------------
// HTML (gumbo), iterative traversals only (deeply nested documents must not overflow the stack).

bool html_skipped(GumboTag tag) {
  return tag == GUMBO_TAG_SCRIPT || tag == GUMBO_TAG_STYLE || tag == GUMBO_TAG_NOSCRIPT ||
         tag == GUMBO_TAG_TEMPLATE || tag == GUMBO_TAG_HEAD;
}

// 2 = paragraph break, 1 = line break, 0 = inline.
int html_break(GumboTag tag) {
  switch (tag) {
    case GUMBO_TAG_P:
    case GUMBO_TAG_DIV:
    case GUMBO_TAG_H1:
    case GUMBO_TAG_H2:
    case GUMBO_TAG_H3:
    case GUMBO_TAG_H4:
    case GUMBO_TAG_H5:
    case GUMBO_TAG_H6:
    case GUMBO_TAG_SECTION:
    case GUMBO_TAG_ARTICLE:
    case GUMBO_TAG_HEADER:
    case GUMBO_TAG_FOOTER:
    case GUMBO_TAG_NAV:
    case GUMBO_TAG_ASIDE:
    case GUMBO_TAG_MAIN:
    case GUMBO_TAG_BLOCKQUOTE:
    case GUMBO_TAG_PRE:
    case GUMBO_TAG_UL:
    case GUMBO_TAG_OL:
    case GUMBO_TAG_DL:
    case GUMBO_TAG_TABLE:
    case GUMBO_TAG_FORM:
    case GUMBO_TAG_FIGURE:
    case GUMBO_TAG_HR:
    case GUMBO_TAG_ADDRESS:
    case GUMBO_TAG_FIELDSET:
    case GUMBO_TAG_DETAILS:
    case GUMBO_TAG_BODY:
      return 2;
    case GUMBO_TAG_BR:
    case GUMBO_TAG_LI:
    case GUMBO_TAG_TR:
    case GUMBO_TAG_DT:
    case GUMBO_TAG_DD:
    case GUMBO_TAG_CAPTION:
    case GUMBO_TAG_FIGCAPTION:
    case GUMBO_TAG_SUMMARY:
    case GUMBO_TAG_OPTION:
    case GUMBO_TAG_LEGEND:
      return 1;
    default:
      return 0;
  }
}

const GumboVector* html_children(const GumboNode* node) {
  if (node->type == GUMBO_NODE_DOCUMENT) return &node->v.document.children;
  if (node->type == GUMBO_NODE_ELEMENT || node->type == GUMBO_NODE_TEMPLATE) {
    return &node->v.element.children;
  }
  return nullptr;
}

class HtmlText {
 public:
  void text(const char* s, bool pre) {
    for (const char* p = s; *p; ++p) {
      unsigned char c = static_cast<unsigned char>(*p);
      bool nbsp = c == 0xC2 && static_cast<unsigned char>(p[1]) == 0xA0;
      if (!pre && (is_space(c) || nbsp)) {
        if (nbsp) ++p;
        space_ = true;
        continue;
      }
      if (pre && c == '\n') {
        flush();
        out_.push_back('\n');
        continue;
      }
      flush();
      out_.push_back(static_cast<char>(c));
    }
  }
  void brk(int level) { break_ = std::max(break_, level); }
  void space() { space_ = true; }
  std::string take() { return std::move(out_); }
  size_t size() const { return out_.size(); }
  const std::string& str() const { return out_; }

 private:
  void flush() {
    if (!out_.empty()) {
      if (break_ > 0) {
        while (!out_.empty() && (out_.back() == ' ' || out_.back() == '\t')) out_.pop_back();
        if (!out_.empty() && out_.back() != '\n') out_.push_back('\n');
        if (break_ == 2 && !(out_.size() >= 2 && out_[out_.size() - 2] == '\n')) {
          out_.push_back('\n');
        }
      } else if (space_ && !is_space(static_cast<unsigned char>(out_.back()))) {
        out_.push_back(' ');
      }
    }
    break_ = 0;
    space_ = false;
  }
  std::string out_;
  int break_ = 0;
  bool space_ = false;
};

// Text of a subtree with whitespace collapsed (for <title> and <h1>).
std::string html_subtree_text(const GumboNode* root) {
  std::string acc;
  std::vector<const GumboNode*> stack{root};
  // Depth-first, children pushed in reverse so they pop in document order.
  while (!stack.empty()) {
    const GumboNode* node = stack.back();
    stack.pop_back();
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA ||
        node->type == GUMBO_NODE_WHITESPACE) {
      acc += node->v.text.text;
      continue;
    }
    if (node->type == GUMBO_NODE_ELEMENT && node != root && html_skipped(node->v.element.tag)) {
      continue;
    }
    const GumboVector* ch = html_children(node);
    if (!ch) continue;
    for (unsigned i = ch->length; i-- > 0;) {
      stack.push_back(static_cast<const GumboNode*>(ch->data[i]));
    }
  }
  std::string t = acc;
  // Collapse NBSP too.
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    if (static_cast<unsigned char>(t[i]) == 0xC2 && i + 1 < t.size() &&
        static_cast<unsigned char>(t[i + 1]) == 0xA0) {
      out.push_back(' ');
      ++i;
    } else {
      out.push_back(t[i]);
    }
  }
  return collapse_ws(out);
}

const GumboNode* html_find_first(const GumboNode* root, GumboTag tag, bool skip_head) {
  std::vector<const GumboNode*> stack{root};
  while (!stack.empty()) {
    const GumboNode* node = stack.back();
    stack.pop_back();
    if (node->type == GUMBO_NODE_ELEMENT) {
      if (node->v.element.tag == tag) return node;
      if (skip_head && html_skipped(node->v.element.tag)) continue;
    }
    const GumboVector* ch = html_children(node);
    if (!ch) continue;
    for (unsigned i = ch->length; i-- > 0;) {
      stack.push_back(static_cast<const GumboNode*>(ch->data[i]));
    }
  }
  return nullptr;
}

}  // namespace

std::string html_to_text(const std::string& html, std::string* title) {
  GumboOptions options = kGumboDefaultOptions;
  options.max_errors = 100;
  GumboOutput* output = gumbo_parse_with_options(&options, html.data(), html.size());
  if (!output) fail("html_to_text: gumbo failed to parse the document");
  std::unique_ptr<GumboOutput, void (*)(GumboOutput*)> guard(
      output, [](GumboOutput* o) { gumbo_destroy_output(&kGumboDefaultOptions, o); });

  std::string found_title;
  if (const GumboNode* t = html_find_first(output->document, GUMBO_TAG_TITLE, false)) {
    found_title = html_subtree_text(t);
  }
  if (found_title.empty()) {
    if (const GumboNode* h1 = html_find_first(output->document, GUMBO_TAG_H1, true)) {
      found_title = html_subtree_text(h1);
    }
  }

  HtmlText text;
  struct Frame {
    const GumboNode* node;
    unsigned next;
  };
  std::vector<Frame> stack{{output->document, 0}};
  int pre_depth = 0;
  while (!stack.empty()) {
    Frame& f = stack.back();
    const GumboVector* ch = html_children(f.node);
    if (ch && f.next < ch->length) {
      const GumboNode* child = static_cast<const GumboNode*>(ch->data[f.next++]);
      switch (child->type) {
        case GUMBO_NODE_TEXT:
        case GUMBO_NODE_CDATA:
        case GUMBO_NODE_WHITESPACE:
          text.text(child->v.text.text, pre_depth > 0);
          break;
        case GUMBO_NODE_ELEMENT:
        case GUMBO_NODE_TEMPLATE: {
          GumboTag tag = child->v.element.tag;
          if (child->type == GUMBO_NODE_TEMPLATE || html_skipped(tag)) break;
          int b = html_break(tag);
          if (b) text.brk(b);
          if (tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) text.space();
          if (tag == GUMBO_TAG_PRE || tag == GUMBO_TAG_TEXTAREA || tag == GUMBO_TAG_LISTING) {
            ++pre_depth;
          }
          stack.push_back({child, 0});  // invalidates f
          break;
        }
        default:
          break;  // comments, document
      }
      continue;
    }
    // Leaving the node.
    if (f.node->type == GUMBO_NODE_ELEMENT) {
      GumboTag tag = f.node->v.element.tag;
      int b = html_break(tag);
      if (b) text.brk(b);
      if (tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) text.space();
      if (tag == GUMBO_TAG_PRE || tag == GUMBO_TAG_TEXTAREA || tag == GUMBO_TAG_LISTING) {
        --pre_depth;
      }
    }
    stack.pop_back();
  }
  // Trim trailing spaces of lines (pre text may carry some) and the whole text.
  std::string raw = text.take();
  std::string out;
  out.reserve(raw.size());
  for (char c : raw) {
    if (c == '\n') {
      while (!out.empty() && (out.back() == ' ' || out.back() == '\t')) out.pop_back();
    }
    out.push_back(c);
  }
  if (title) *title = found_title;
  return trim(out);
}

}  // namespace cocom::ingest
