// HTML to plain text through gumbo, with iterative traversals only (deeply nested documents
// must not overflow the stack); <title> or the first <h1> becomes the title.
//
// Linear time on hostile input. gumbo 0.10's tree construction walks its stack of open
// elements for nearly every tag (a <div> looks for an open <p> "in button scope", a formatting
// element checks the list of active formatting elements, duplicate attributes are searched
// pairwise), so 100k nested or unclosed elements cost ~10^10 steps (a 1.1 MB file of nested
// <div>s took 28 s). gumbo is therefore never given the file itself but a normalised copy
// (normalize_html below) whose nesting is bounded by max_nesting_depth:
//  - a small model of the HTML tree builder tokenizes the input (tags, comments, raw text
//    elements, as the HTML tokenizer delimits them) and keeps its own stack of open elements,
//    with the common implied end tags (<p>, <li>, <dd>/<dt>, <option>, headings, table parts,
//    nested <a>/<table>/<select>/<form>, leaving SVG/MathML on an HTML-only tag);
//  - every element the model closes gets an explicit end tag in the copy, end tags the model
//    cannot match are dropped (</p> and </br> pass: gumbo turns them into an empty <p>/<br>);
//  - an element that would be nested deeper than the limit loses its start and end tags: it
//    becomes a flat text container (its text is kept, its block break is not);
//  - tags are written without attributes (text extraction needs none), comments and CDATA
//    outside SVG/MathML are dropped, '<' in text is written as "&lt;"; raw text (script, style,
//    title, textarea) is kept with '<' escaped, RAWTEXT elements whose text is shown (xmp,
//    iframe, noembed, noframes, plaintext) become plain escaped text. So gumbo sees exactly the
//    tags the model saw, whatever gumbo's own context rules (foreign content, raw text) say.
// gumbo only ever keeps open what the model keeps open (plus a bounded number of implied and
// reconstructed elements), so its stack walks are bounded by the limit and the whole read is
// O(size * limit) at worst; the fuzz target checks the depth bound on gumbo's tree.
#include "ingest/html.h"

#include <gumbo.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"
#include "ingest/documents.h"
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

// ---------------------------------------------------------------------------------------------
// Normalisation before gumbo (see the top of the file).

enum TagFlag : uint32_t {
  kSpecial = 1u << 0,        // HTML "special" category: an unmatched end tag stops there
  kScope = 1u << 1,          // boundary of "has an element in scope"
  kClosesP = 1u << 2,        // the start tag closes an open <p> (in button scope)
  kHeading = 1u << 3,        // h1..h6
  kVoid = 1u << 4,           // no end tag, never open
  kRawKeep = 1u << 5,        // script, style, title, textarea: raw content inside the element
  kRawFlat = 1u << 6,        // xmp, iframe, noembed, noframes, plaintext: content as plain text
  kForeignRoot = 1u << 7,    // svg, math
  kIntegration = 1u << 8,    // HTML content inside SVG/MathML (foreignObject, desc, mi, ...)
  kBreakout = 1u << 9,       // an HTML start tag that ends SVG/MathML content
  kTableSection = 1u << 10,  // tbody, thead, tfoot
  kMarker = 1u << 11,        // a nested <a>/<nobr> is not searched for below these
};

// Tags the model compares by id; registered first, in this order.
enum KnownTag : uint32_t {
  kTagP,
  kTagLi,
  kTagDd,
  kTagDt,
  kTagA,
  kTagNobr,
  kTagButton,
  kTagOption,
  kTagOptgroup,
  kTagSelect,
  kTagForm,
  kTagTable,
  kTagTr,
  kTagTd,
  kTagTh,
  kTagCaption,
  kTagColgroup,
  kTagTemplate,
  kTagHtml,
  kTagHead,
  kTagBody,
  kTagBr,
  kTagImage,
  kTagImg,
  kTagOl,
  kTagUl,
  kTagDiv,
  kTagAddress,
  kTagPlaintext,
  kTagInput,
  kTagKeygen,
  kTagTextarea,
  kTagScript,
  kKnownTags
};

const char* const kKnownNames[kKnownTags] = {
    "p",         "li",       "dd",       "dt",       "a",     "nobr", "button",
    "option",    "optgroup", "select",   "form",     "table", "tr",   "td",
    "th",        "caption",  "colgroup", "template", "html",  "head", "body",
    "br",        "image",    "img",      "ol",       "ul",    "div",  "address",
    "plaintext", "input",    "keygen",   "textarea", "script"};

struct TagFlags {
  const char* names;  // space-separated
  uint32_t flag;
};

const TagFlags kTagFlags[] = {
    {"address applet area article aside base basefont bgsound blockquote body br button caption "
     "center col colgroup dd details dir div dl dt embed fieldset figcaption figure footer form "
     "frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img input keygen li link "
     "listing main marquee menu meta nav noembed noframes noscript object ol p param plaintext "
     "pre script section select source style summary table tbody td template textarea tfoot th "
     "thead title tr track ul wbr xmp mi mo mn ms mtext annotation-xml foreignobject desc",
     kSpecial},
    {"applet caption html table td th marquee object template mi mo mn ms mtext annotation-xml "
     "foreignobject desc",
     kScope},
    {"address article aside blockquote center details dialog dir div dl fieldset figcaption figure "
     "footer header hgroup main menu nav ol p section summary ul h1 h2 h3 h4 h5 h6 pre listing "
     "form table hr xmp plaintext li dd dt",
     kClosesP},
    {"h1 h2 h3 h4 h5 h6", kHeading},
    {"area base basefont bgsound br col embed frame hr img input keygen link meta param source "
     "track wbr",
     kVoid},
    {"script style title textarea", kRawKeep},
    {"xmp iframe noembed noframes plaintext", kRawFlat},
    {"svg math", kForeignRoot},
    {"foreignobject desc mi mo mn ms mtext annotation-xml", kIntegration},
    {"b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img "
     "li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul "
     "var",
     kBreakout},
    {"tbody thead tfoot", kTableSection},
    {"td th caption template applet object marquee html", kMarker},
};

// Tag names (ASCII-lowercased) to small ids, with their flags; unknown names are added on
// first use as a start tag.
class TagTable {
 public:
  TagTable() {
    for (const char* name : kKnownNames) add(name);
    for (const auto& tf : kTagFlags) {
      const char* p = tf.names;
      while (*p) {
        const char* e = std::strchr(p, ' ');
        if (!e) e = p + std::strlen(p);
        std::string name(p, e);
        auto it = ids_.find(name);
        uint32_t id = it == ids_.end() ? add(name) : it->second;
        flags_[id] |= tf.flag;
        p = *e ? e + 1 : e;
      }
    }
  }
  uint32_t intern(const std::string& name) {
    auto it = ids_.find(name);
    return it == ids_.end() ? add(name) : it->second;
  }
  // -1 when the name was never seen.
  int64_t find(const std::string& name) const {
    auto it = ids_.find(name);
    return it == ids_.end() ? -1 : static_cast<int64_t>(it->second);
  }
  uint32_t flags(uint32_t id) const { return flags_[id]; }
  const std::string& name(uint32_t id) const { return names_[id]; }
  size_t size() const { return names_.size(); }

 private:
  uint32_t add(const std::string& name) {
    const auto id = static_cast<uint32_t>(names_.size());
    ids_.emplace(name, id);
    names_.push_back(name);
    flags_.push_back(0);
    return id;
  }
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<std::string> names_;
  std::vector<uint32_t> flags_;
};

bool html_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'; }
bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

class HtmlNormalizer {
 public:
  HtmlNormalizer(const std::string& in, int64_t limit)
      : s_(in), n_(in.size()), limit_(static_cast<size_t>(limit)) {
    out_.reserve(n_ + n_ / 16 + 64);
    count_.assign(tags_.size(), 0);
  }

  detail::NormalizedHtml run() {
    while (i_ < n_) {
      const void* hit = std::memchr(s_.data() + i_, '<', n_ - i_);
      const size_t lt = hit ? static_cast<size_t>(static_cast<const char*>(hit) - s_.data()) : n_;
      text(i_, lt, /*escape_amp=*/false);
      i_ = lt;
      if (i_ >= n_) break;
      if (!markup()) {
        out_ += "&lt;";
        ++i_;
      }
    }
    detail::NormalizedHtml r;
    r.html = std::move(out_);
    r.flattened = flattened_;
    r.max_depth = static_cast<int64_t>(max_depth_);
    return r;
  }

 private:
  struct Open {
    uint32_t id;
    uint32_t flags;
  };
  static constexpr int64_t kNone = -1;

  // --- output ---------------------------------------------------------------------------------

  // Text with '<' escaped (and '&' too for raw text that must stay literal).
  void text(size_t b, size_t e, bool escape_amp) {
    for (size_t k = b; k < e; ++k) {
      const char c = s_[k];
      if (c == '<') {
        out_ += "&lt;";
      } else if (c == '&' && escape_amp) {
        out_ += "&amp;";
      } else {
        out_.push_back(c);
      }
    }
  }
  void start(uint32_t id, const char* suffix) {
    out_.push_back('<');
    out_ += tags_.name(id);
    out_ += suffix;
  }
  void end(uint32_t id) {
    out_ += "</";
    out_ += tags_.name(id);
    out_.push_back('>');
  }

  // --- the model's stack ----------------------------------------------------------------------

  int count(uint32_t id) const { return id < count_.size() ? count_[id] : 0; }
  void push(uint32_t id, uint32_t flags) {
    if (id >= count_.size()) count_.resize(tags_.size(), 0);
    stack_.push_back({id, flags});
    ++count_[id];
    if (flags & kForeignRoot) ++foreign_;
    max_depth_ = std::max(max_depth_, stack_.size());
    start(id, ">");
  }
  void pop() {
    // Elements dropped for depth were inside the element at the limit: they end with it.
    if (stack_.size() == limit_) dropped_.clear();
    const Open o = stack_.back();
    stack_.pop_back();
    --count_[o.id];
    if (o.flags & kForeignRoot) --foreign_;
    end(o.id);
  }
  void pop_through(int64_t idx) {  // pops stack_[idx] and everything above it
    while (static_cast<int64_t>(stack_.size()) > idx) pop();
  }
  void pop_above(int64_t idx) {  // keeps stack_[idx]
    while (static_cast<int64_t>(stack_.size()) > idx + 1) pop();
  }
  bool top_is(uint32_t id) const { return !stack_.empty() && stack_.back().id == id; }

  // Index of the nearest open `id` with no scope boundary (or `extra`) above it; kNone if none.
  int64_t in_scope(uint32_t id, uint32_t extra1 = UINT32_MAX, uint32_t extra2 = UINT32_MAX) const {
    if (count(id) == 0) return kNone;
    for (size_t k = stack_.size(); k-- > 0;) {
      const Open& o = stack_[k];
      if (o.id == id) return static_cast<int64_t>(k);
      if ((o.flags & kScope) || o.id == extra1 || o.id == extra2) return kNone;
    }
    return kNone;
  }
  // Nearest open table, table section or row (per `want`) with no template above it.
  int64_t table_context(bool sections, bool rows) const {
    if (count(kTagTable) == 0) return kNone;
    for (size_t k = stack_.size(); k-- > 0;) {
      const Open& o = stack_[k];
      if (o.id == kTagTable || (sections && (o.flags & kTableSection)) ||
          (rows && o.id == kTagTr)) {
        return static_cast<int64_t>(k);
      }
      if (o.id == kTagTemplate || o.id == kTagHtml) return kNone;
    }
    return kNone;
  }
  // True when the nearest SVG/MathML root is above any HTML integration point.
  bool in_foreign() const {
    if (foreign_ == 0) return false;
    for (size_t k = stack_.size(); k-- > 0;) {
      if (stack_[k].flags & kForeignRoot) return true;
      if (stack_[k].flags & kIntegration) return false;
    }
    return false;
  }
  // True when the nearest <select> is above any <template>: the parser then ignores most tags.
  bool in_select() const {
    if (count(kTagSelect) == 0) return false;
    for (size_t k = stack_.size(); k-- > 0;) {
      if (stack_[k].id == kTagSelect) return true;
      if (stack_[k].id == kTagTemplate) return false;
    }
    return false;
  }
  void close_select() {
    for (size_t k = stack_.size(); k-- > 0;) {
      if (stack_[k].id == kTagSelect) {
        pop_through(static_cast<int64_t>(k));
        return;
      }
    }
  }
  static bool table_tag(uint32_t id, uint32_t flags) {
    return id == kTagTable || id == kTagTr || id == kTagTd || id == kTagTh || id == kTagCaption ||
           (flags & kTableSection);
  }
  // In a <select>, the parser keeps only option/optgroup (and script/template); a table tag
  // (inside a table), input, keygen or textarea first closes the select. False = ignored.
  bool select_allows(uint32_t id, uint32_t flags, bool end_tag) {
    if (id == kTagOption || id == kTagOptgroup || id == kTagSelect || id == kTagTemplate) {
      return true;
    }
    if (!end_tag && id == kTagScript) return true;
    if ((table_tag(id, flags) && count(kTagTable) > 0) ||
        (!end_tag && (id == kTagInput || id == kTagKeygen || id == kTagTextarea))) {
      close_select();
      return true;
    }
    return false;
  }
  // Pops up to and including the nearest SVG/MathML root.
  void leave_foreign() {
    while (!stack_.empty()) {
      const bool root = (stack_.back().flags & kForeignRoot) != 0;
      pop();
      if (root) break;
    }
  }
  void close_p() {
    const int64_t k = in_scope(kTagP, kTagButton);
    if (k != kNone) pop_through(k);
  }
  // <li> closes an open <li>, <dd>/<dt> an open <dd>/<dt>, unless a special element other
  // than <address>, <div>, <p> is in between.
  void close_list_item(uint32_t a, uint32_t b) {
    if (count(a) + count(b) == 0) return;
    for (size_t k = stack_.size(); k-- > 0;) {
      const Open& o = stack_[k];
      if (o.id == a || o.id == b) {
        pop_through(static_cast<int64_t>(k));
        return;
      }
      if ((o.flags & kSpecial) && o.id != kTagAddress && o.id != kTagDiv && o.id != kTagP) return;
    }
  }

  // Implied end tags of a start tag; false when the HTML parser ignores the start tag.
  bool before_start(uint32_t id, uint32_t flags) {
    switch (id) {
      case kTagLi:
        close_list_item(kTagLi, kTagLi);
        break;
      case kTagDd:
      case kTagDt:
        close_list_item(kTagDd, kTagDt);
        break;
      case kTagA:
      case kTagNobr:
        if (count(id) > 0) {
          for (size_t k = stack_.size(); k-- > 0;) {
            if (stack_[k].id == id) {
              pop_through(static_cast<int64_t>(k));
              break;
            }
            if (stack_[k].flags & kMarker) break;
          }
        }
        break;
      case kTagButton: {
        const int64_t k = in_scope(kTagButton);
        if (k != kNone) pop_through(k);
        break;
      }
      case kTagOption:
        if (top_is(kTagOption)) pop();
        break;
      case kTagOptgroup:
        if (top_is(kTagOption)) pop();
        if (top_is(kTagOptgroup) && count(kTagSelect) > 0) pop();
        break;
      case kTagSelect:
        if (count(kTagSelect) > 0) {  // <select> inside <select> acts as </select>
          for (size_t k = stack_.size(); k-- > 0;) {
            if (stack_[k].id == kTagSelect) {
              pop_through(static_cast<int64_t>(k));
              break;
            }
          }
          return false;
        }
        break;
      case kTagForm:
        if (count(kTagForm) > 0 && count(kTagTemplate) == 0) return false;  // nested: ignored
        break;
      case kTagCaption:
      case kTagColgroup: {
        const int64_t k = table_context(false, false);
        if (k == kNone) return false;  // outside a table: ignored
        pop_above(k);
        break;
      }
      case kTagTr: {
        const int64_t k = table_context(true, false);
        if (k == kNone) return false;
        pop_above(k);
        break;
      }
      case kTagTd:
      case kTagTh: {
        const int64_t k = table_context(true, true);
        if (k == kNone) return false;
        pop_above(k);
        break;
      }
      case kTagTable:
        // A table directly in a table (not in a cell or caption) closes the open one.
        if (count(kTagTable) > 0) {
          for (size_t k = stack_.size(); k-- > 0;) {
            const uint32_t t = stack_[k].id;
            if (t == kTagTable) {
              pop_through(static_cast<int64_t>(k));
              break;
            }
            if (t == kTagTd || t == kTagTh || t == kTagCaption || t == kTagTemplate) break;
          }
        }
        break;
      default:
        if (flags & kTableSection) {
          const int64_t k = table_context(false, false);
          if (k == kNone) return false;
          pop_above(k);
        }
        break;
    }
    if (flags & kClosesP) close_p();
    if ((flags & kHeading) && !stack_.empty() && (stack_.back().flags & kHeading)) pop();
    return true;
  }

  // --- tokens ---------------------------------------------------------------------------------

  static bool name_end(char c) { return html_ws(c) || c == '/' || c == '>'; }

  std::string lower_name(size_t b, size_t e) const {
    std::string name = s_.substr(b, e - b);
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return name;
  }

  // Scans the attributes of a tag from `p` (just after its name) as the HTML tokenizer does
  // ('>' inside a quoted value does not end the tag); returns the index after the closing
  // '>', or npos when the input ends inside the tag (the parser then drops the tag).
  size_t scan_attributes(size_t p, bool* self_closing) const {
    *self_closing = false;
    while (p < n_) {
      const char c = s_[p];
      if (c == '>') return p + 1;
      if (html_ws(c)) {
        ++p;
        continue;
      }
      if (c == '/') {
        ++p;
        if (p < n_ && s_[p] == '>') {
          *self_closing = true;
          return p + 1;
        }
        continue;
      }
      ++p;  // the first character of a name may be anything, '=' included
      while (p < n_ && !name_end(s_[p]) && s_[p] != '=') ++p;
      while (p < n_ && html_ws(s_[p])) ++p;
      if (p >= n_ || s_[p] != '=') continue;
      ++p;
      while (p < n_ && html_ws(s_[p])) ++p;
      if (p >= n_) break;
      if (s_[p] == '"' || s_[p] == '\'') {
        const size_t q = s_.find(s_[p], p + 1);
        if (q == std::string::npos) break;
        p = q + 1;
      } else if (s_[p] != '>') {
        while (p < n_ && !html_ws(s_[p]) && s_[p] != '>') ++p;
      }
    }
    return std::string::npos;
  }

  void skip_to_gt(size_t p) {
    const size_t q = s_.find('>', p);
    i_ = q == std::string::npos ? n_ : q + 1;
  }

  // At '<': consumes a tag, comment or declaration; false = the '<' is text.
  bool markup() {
    if (i_ + 1 >= n_) return false;
    const char c = s_[i_ + 1];
    if (ascii_alpha(c)) {
      start_tag();
      return true;
    }
    if (c == '/') {
      if (i_ + 2 >= n_) return false;
      const char d = s_[i_ + 2];
      if (ascii_alpha(d)) {
        end_tag();
      } else if (d == '>') {
        i_ += 3;  // "</>" is ignored
      } else {
        skip_to_gt(i_ + 2);  // bogus comment
      }
      return true;
    }
    if (c == '!') {
      declaration();
      return true;
    }
    if (c == '?') {
      skip_to_gt(i_ + 2);  // bogus comment
      return true;
    }
    return false;
  }

  bool at(size_t p, const char* lit, bool fold_case) const {
    const size_t len = std::strlen(lit);
    if (p + len > n_) return false;
    for (size_t k = 0; k < len; ++k) {
      char c = s_[p + k];
      if (fold_case && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != lit[k]) return false;
    }
    return true;
  }

  // "<!": comment (dropped), DOCTYPE (kept: it decides quirks mode), CDATA (its text, in
  // SVG/MathML only), anything else is a bogus comment up to '>'.
  void declaration() {
    size_t p = i_ + 2;
    if (at(p, "--", false)) {
      p += 2;
      if (p < n_ && s_[p] == '>') {  // "<!-->"
        i_ = p + 1;
        return;
      }
      if (at(p, "->", false)) {  // "<!--->"
        i_ = p + 2;
        return;
      }
      while (true) {
        const size_t q = s_.find("--", p);
        if (q == std::string::npos) {
          i_ = n_;
          return;
        }
        size_t r = q + 2;
        while (r < n_ && s_[r] == '-') ++r;
        if (r < n_ && s_[r] == '>') {
          i_ = r + 1;
          return;
        }
        if (at(r, "!>", false)) {
          i_ = r + 2;
          return;
        }
        p = r;
      }
    }
    if (at(p, "doctype", true)) {
      const size_t q = s_.find('>', p);
      const size_t e = q == std::string::npos ? n_ : q + 1;
      out_.append(s_, i_, e - i_);
      if (q == std::string::npos) out_.push_back('>');
      i_ = e;
      return;
    }
    if (at(p, "[CDATA[", false) && in_foreign()) {
      const size_t q = s_.find("]]>", p + 7);
      const size_t e = q == std::string::npos ? n_ : q;
      text(p + 7, e, /*escape_amp=*/true);
      i_ = q == std::string::npos ? n_ : q + 3;
      return;
    }
    skip_to_gt(p);
  }

  // Where the raw text of `name` ends: the index of "</name" followed by whitespace, '/' or
  // '>' (ASCII case-insensitive), or npos.
  size_t raw_end(const std::string& name, size_t p) const {
    while (true) {
      const size_t q = s_.find("</", p);
      if (q == std::string::npos) return q;
      const size_t e = q + 2 + name.size();
      if (e < n_ && name_end(s_[e])) {
        bool same = true;
        for (size_t k = 0; k < name.size() && same; ++k) {
          char c = s_[q + 2 + k];
          if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
          same = c == name[k];
        }
        if (same) return q;
      }
      p = q + 2;
    }
  }

  // Raw text from i_ to its end tag: the content range, i_ moved past the end tag; false when
  // the input ends first (the content then runs to the end).
  bool raw_content(uint32_t id, size_t* b, size_t* e) {
    const std::string& name = tags_.name(id);
    *b = i_;
    const size_t q = id == kTagPlaintext ? std::string::npos : raw_end(name, i_);
    if (q == std::string::npos) {
      *e = n_;
      i_ = n_;
      return false;
    }
    *e = q;
    bool sc = false;
    const size_t after = scan_attributes(q + 2 + name.size(), &sc);
    i_ = after == std::string::npos ? n_ : after;
    return after != std::string::npos;
  }

  void start_tag() {
    size_t p = i_ + 1;
    const size_t b = p;
    while (p < n_ && !name_end(s_[p])) ++p;
    const std::string name = lower_name(b, p);
    bool self_closing = false;
    const size_t e = scan_attributes(p, &self_closing);
    if (e == std::string::npos) {  // the input ends inside the tag: dropped
      i_ = n_;
      return;
    }
    i_ = e;
    on_start(tags_.intern(name), self_closing);
  }

  void on_start(uint32_t id, bool self_closing) {
    uint32_t flags = tags_.flags(id);
    if ((flags & kBreakout) && in_foreign()) leave_foreign();  // e.g. <svg><p>: the SVG ends
    if (id == kTagHtml || id == kTagHead || id == kTagBody) {  // never on the model's stack
      start(id, ">");
      return;
    }
    if (in_select() && !select_allows(id, flags, /*end_tag=*/false)) return;
    const bool foreign = in_foreign();
    if (self_closing && !(flags & kVoid) && (foreign || (flags & kForeignRoot))) {
      // Self-closing in SVG/MathML; the end tag closes it should gumbo see HTML here.
      start(id, "/>");
      end(id);
      return;
    }
    if (foreign) flags &= ~(kRawKeep | kRawFlat);  // e.g. SVG <style>: ordinary content
    if (flags & kRawKeep) {
      size_t b = 0, e = 0;
      const bool closed = raw_content(id, &b, &e);
      start(id, ">");
      text(b, e, /*escape_amp=*/false);  // raw text: '<' can no longer start a tag
      if (closed) end(id);
      return;
    }
    if (flags & kRawFlat) {
      if (flags & kClosesP) close_p();
      size_t b = 0, e = 0;
      raw_content(id, &b, &e);
      text(b, e, /*escape_amp=*/true);  // decodes back to the literal raw text
      return;
    }
    if (id == kTagImage && !foreign) {  // the HTML parser reads <image> as <img>
      id = kTagImg;
      flags = tags_.flags(id);
    }
    if (!before_start(id, flags)) return;
    if (flags & kVoid) {
      start(id, "/>");  // void in HTML, self-closing in SVG/MathML: never left open
      return;
    }
    if (stack_.size() >= limit_) {  // too deep: a flat text container
      ++dropped_[id];
      ++flattened_;
      return;
    }
    push(id, flags);
  }

  void end_tag() {
    size_t p = i_ + 2;
    const size_t b = p;
    while (p < n_ && !name_end(s_[p])) ++p;
    const std::string name = lower_name(b, p);
    bool self_closing = false;
    const size_t e = scan_attributes(p, &self_closing);
    if (e == std::string::npos) {
      i_ = n_;
      return;
    }
    i_ = e;
    const int64_t found = tags_.find(name);
    if (found < 0) return;  // never opened
    on_end(static_cast<uint32_t>(found));
  }

  void on_end(uint32_t id) {
    if (!dropped_.empty()) {
      auto it = dropped_.find(id);
      if (it != dropped_.end() && it->second > 0) {  // closes a flattened element
        --it->second;
        return;
      }
    }
    const uint32_t flags = tags_.flags(id);
    int64_t k = kNone;
    if (id == kTagHtml || id == kTagHead || id == kTagBody) return;
    if (in_select() && !select_allows(id, flags, /*end_tag=*/true)) return;
    if ((id == kTagBr || id == kTagP) && in_foreign()) leave_foreign();
    if (id == kTagBr) {  // the parser reads </br> as <br>
      start(id, "/>");
      return;
    }
    if (id == kTagP) {
      k = in_scope(kTagP, kTagButton);
      if (k == kNone) {
        end(id);  // the parser makes it an empty paragraph
        return;
      }
    } else if (flags & kHeading) {  // any open heading
      for (size_t j = stack_.size(); j-- > 0;) {
        if (stack_[j].flags & kHeading) {
          k = static_cast<int64_t>(j);
          break;
        }
        if (stack_[j].flags & kScope) break;
      }
    } else if (count(id) == 0) {
      return;
    } else if (id == kTagLi) {
      k = in_scope(kTagLi, kTagOl, kTagUl);
    } else if (id == kTagTable || id == kTagTemplate) {
      for (size_t j = stack_.size(); j-- > 0;) {
        if (stack_[j].id == id) {
          k = static_cast<int64_t>(j);
          break;
        }
        if (stack_[j].id == kTagHtml || (id == kTagTable && stack_[j].id == kTagTemplate)) break;
      }
    } else if (id == kTagTr || id == kTagTd || id == kTagTh || id == kTagCaption ||
               id == kTagColgroup || (flags & kTableSection)) {
      for (size_t j = stack_.size(); j-- > 0;) {
        const uint32_t t = stack_[j].id;
        if (t == id) {
          k = static_cast<int64_t>(j);
          break;
        }
        if (t == kTagTable || t == kTagTemplate || t == kTagHtml) break;
      }
    } else if (flags & kSpecial) {
      k = in_scope(id);
    } else {  // formatting and unknown elements: not past a special element
      for (size_t j = stack_.size(); j-- > 0;) {
        if (stack_[j].id == id) {
          k = static_cast<int64_t>(j);
          break;
        }
        if (stack_[j].flags & kSpecial) break;
      }
    }
    if (k != kNone) pop_through(k);
  }

  const std::string& s_;
  const size_t n_;
  const size_t limit_;
  size_t i_ = 0;
  std::string out_;
  TagTable tags_;
  std::vector<Open> stack_;
  std::vector<int> count_;                         // open elements per tag id
  std::unordered_map<uint32_t, int64_t> dropped_;  // flattened elements not yet closed
  int foreign_ = 0;                                // open svg/math elements
  size_t max_depth_ = 0;
  int64_t flattened_ = 0;
};

}  // namespace

namespace detail {

NormalizedHtml normalize_html(const std::string& html, int64_t max_depth) {
  if (max_depth < 1) fail("html_to_text: max_nesting_depth must be >= 1 (got ", max_depth, ")");
  return HtmlNormalizer(html, max_depth).run();
}

int64_t gumbo_element_depth(const std::string& html) {
  GumboOutput* output = gumbo_parse(html.c_str());
  if (!output) fail("gumbo failed to parse the document");
  std::unique_ptr<GumboOutput, void (*)(GumboOutput*)> guard(
      output, [](GumboOutput* o) { gumbo_destroy_output(&kGumboDefaultOptions, o); });
  int64_t deepest = 0;
  std::vector<std::pair<const GumboNode*, int64_t>> stack{{output->document, 0}};
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    deepest = std::max(deepest, depth);
    const GumboVector* ch = html_children(node);
    if (!ch) continue;
    for (unsigned i = 0; i < ch->length; ++i) {
      const auto* child = static_cast<const GumboNode*>(ch->data[i]);
      if (child->type == GUMBO_NODE_ELEMENT || child->type == GUMBO_NODE_TEMPLATE) {
        stack.emplace_back(child, depth + 1);
      }
    }
  }
  return deepest;
}

std::string html_to_text_counted(const std::string& html, std::string* title, int64_t max_depth,
                                 int64_t* flattened) {
  NormalizedHtml norm = normalize_html(html, max_depth);
  if (flattened) *flattened = norm.flattened;
  GumboOptions options = kGumboDefaultOptions;
  options.max_errors = 100;
  GumboOutput* output = gumbo_parse_with_options(&options, norm.html.data(), norm.html.size());
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

}  // namespace detail

std::string html_to_text(const std::string& html, std::string* title, int64_t max_depth) {
  return detail::html_to_text_counted(html, title, max_depth, nullptr);
}

}  // namespace cocom::ingest
