// Office and e-book documents: .docx (WordprocessingML), .odt (OpenDocument text) and .epub,
// read from their zip container (archive.cpp, bounded) with libxml2's streaming reader.
//
// XML safety: documents that declare entities (<!ENTITY) are refused before parsing (and, in
// another encoding, when the parsed DOCTYPE shows them, before any content), so no entity is
// ever expanded (billion laughs, external entities); the parser runs without
// XML_PARSE_NOENT (no substitution), XML_PARSE_DTDLOAD (no external DTD), with XML_PARSE_NONET
// (no network) and without XML_PARSE_HUGE, so libxml2's own limits stay on (depth 256, 10 MB per
// text node). The reader is a pull parser: memory does not grow with the document's depth.
// EPUB chapters are XHTML read by the HTML reader (gumbo, depth-bounded), which expands no
// entities beyond HTML's named characters.
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlreader.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "ingest/archive.h"
#include "ingest/documents.h"
#include "ingest/text.h"

namespace cocom::ingest {

using namespace detail;  // NOLINT

namespace {

struct ReaderDeleter {
  void operator()(xmlTextReader* r) const { xmlFreeTextReader(r); }
};

void capture_error(void* arg, const char* msg, xmlParserSeverities severity,
                   xmlTextReaderLocatorPtr) {
  auto* first = static_cast<std::string*>(arg);
  if (severity != XML_PARSER_SEVERITY_ERROR && severity != XML_PARSER_SEVERITY_VALIDITY_ERROR) {
    return;
  }
  if (first->empty() && msg) *first = trim(msg);
}

std::string str(const xmlChar* s) { return s ? reinterpret_cast<const char*>(s) : ""; }

// Events of one XML part, in document order. Empty elements get start and end.
struct XmlEvents {
  std::function<void(const std::string& local, xmlTextReader* r)> start;
  std::function<void(const std::string& local)> end;
  std::function<void(const std::string& text)> text;
};

// Streams `xml` (the part `part` of `name`) through the events; throws cocom::Error naming
// both on an entity declaration or a parse error.
void parse_xml(const std::string& xml, const std::string& name, const std::string& part,
               const XmlEvents& ev) {
  static const bool initialised = [] {
    xmlInitParser();
    return true;
  }();
  (void)initialised;
  if (xml.find("<!ENTITY") != std::string::npos) {
    fail("cannot read ", name, ": ", part,
         " declares XML entities (refused: entity expansion is not accepted)");
  }
  if (xml.size() > static_cast<size_t>(INT32_MAX))
    fail("cannot read ", name, ": ", part, " is over 2 GiB");
  const int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                      XML_PARSE_NOCDATA | XML_PARSE_NOXINCNODE;
  std::unique_ptr<xmlTextReader, ReaderDeleter> r(
      xmlReaderForMemory(xml.data(), static_cast<int>(xml.size()), nullptr, nullptr, options));
  if (!r) fail("cannot read ", name, ": ", part, ": cannot start the XML parser");
  std::string error;
  xmlTextReaderSetErrorHandler(r.get(), &capture_error, &error);
  while (true) {
    const int ret = xmlTextReaderRead(r.get());
    if (ret == 0) break;
    if (ret < 0) {
      fail_corrupt("cannot read ", name, ": ", part, " is not well-formed XML",
                   error.empty() ? std::string() : " (" + error + ")");
    }
    const int type = xmlTextReaderNodeType(r.get());
    if (type == XML_READER_TYPE_DOCUMENT_TYPE) {
      // The byte check above misses a declaration in another encoding (UTF-16): look at the
      // parsed internal subset before any content, and so any reference, is read.
      const xmlDoc* d = xmlTextReaderCurrentDoc(r.get());
      if (d && d->intSubset && (d->intSubset->entities || d->intSubset->pentities)) {
        fail("cannot read ", name, ": ", part,
             " declares XML entities (refused: entity expansion is not accepted)");
      }
    }
    if (type == XML_READER_TYPE_ELEMENT) {
      const std::string local = str(xmlTextReaderConstLocalName(r.get()));
      const bool empty = xmlTextReaderIsEmptyElement(r.get()) == 1;
      if (ev.start) ev.start(local, r.get());
      if (empty && ev.end) ev.end(local);
    } else if (type == XML_READER_TYPE_END_ELEMENT) {
      if (ev.end) ev.end(str(xmlTextReaderConstLocalName(r.get())));
    } else if (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA ||
               type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE ||
               type == XML_READER_TYPE_WHITESPACE) {
      if (ev.text) ev.text(str(xmlTextReaderConstValue(r.get())));
    }
  }
  if (!error.empty()) {
    fail_corrupt("cannot read ", name, ": ", part, " is not well-formed XML (", error, ")");
  }
}

std::string attribute(xmlTextReader* r, const char* local) {
  // By local name, whatever the prefix (full-path, w:val, text:c ...).
  std::string value;
  if (xmlTextReaderMoveToFirstAttribute(r) == 1) {
    do {
      if (str(xmlTextReaderConstLocalName(r)) == local) {
        value = str(xmlTextReaderConstValue(r));
        break;
      }
    } while (xmlTextReaderMoveToNextAttribute(r) == 1);
    xmlTextReaderMoveToElement(r);
  }
  return value;
}

// The text of the first element named `local` (Dublin Core title in core.xml, meta.xml and the
// OPF), or "" when there is none or the part cannot be parsed (metadata never stops a
// document from being read).
std::string first_element_text(const std::string& xml, const std::string& name,
                               const std::string& part, const std::string& local) {
  std::string out;
  int depth = 0;
  bool done = false;
  XmlEvents ev;
  ev.start = [&](const std::string& l, xmlTextReader*) {
    if (!done && l == local) ++depth;
  };
  ev.end = [&](const std::string& l) {
    if (depth > 0 && l == local && --depth == 0) done = true;
  };
  ev.text = [&](const std::string& t) {
    if (depth > 0 && !done) out += t;
  };
  try {
    parse_xml(xml, name, part, ev);
  } catch (const Error&) {
    return "";
  }
  return normalize_title(out);
}

bool xml_like(const std::string& entry) {
  auto ends = [&](const char* suffix) {
    const std::string s = suffix;
    return entry.size() >= s.size() && to_lower(entry.substr(entry.size() - s.size())) == s;
  };
  return ends(".xml") || ends(".rels") || ends(".opf") || ends(".xhtml") || ends(".html") ||
         ends(".htm") || ends(".xht") || entry == "mimetype";
}

const std::string* find_entry(const std::map<std::string, std::string>& entries,
                              const std::string& path) {
  auto it = entries.find(path);
  return it == entries.end() ? nullptr : &it->second;
}

// "%20" -> ' ' in a zip-relative href (EPUB hrefs are URLs).
std::string url_decode(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// `href` relative to the directory `base` ("" or ending in '/'), with "." and ".." segments
// resolved (never above the archive's root); the fragment is dropped.
std::string resolve_href(const std::string& base, std::string href) {
  const size_t hash = href.find('#');
  if (hash != std::string::npos) href.erase(hash);
  href = url_decode(href);
  std::string joined = !href.empty() && href[0] == '/' ? href.substr(1) : base + href;
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos <= joined.size()) {
    size_t slash = joined.find('/', pos);
    if (slash == std::string::npos) slash = joined.size();
    const std::string seg = joined.substr(pos, slash - pos);
    if (seg == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!seg.empty() && seg != ".") {
      parts.push_back(seg);
    }
    pos = slash + 1;
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
  return out;
}

void end_paragraph(std::string* out) {
  if (!out->empty() && out->back() != '\n') out->push_back('\n');
}

}  // namespace

namespace detail {

std::string office_kind(const std::string& zip, const std::string& name, const UnpackLimits& lim) {
  const auto entries = read_zip(zip, name, lim, [](const std::string& e) {
    return e == "mimetype" || e == "word/document.xml";
  });
  if (const std::string* mt = find_entry(entries, "mimetype")) {
    const std::string m = trim(*mt);
    if (m == "application/epub+zip") return "epub";
    if (m.rfind("application/vnd.oasis.opendocument.text", 0) == 0) return "odt";
  }
  if (find_entry(entries, "word/document.xml")) return "docx";
  return "";
}

}  // namespace detail

std::string docx_to_text(const std::string& zip, const std::string& name, const UnpackLimits& lim,
                         std::string* title) {
  const auto entries = read_zip(zip, name, lim, xml_like);
  std::string main_part = "word/document.xml";
  if (const std::string* rels = find_entry(entries, "_rels/.rels")) {
    XmlEvents ev;
    std::string target;
    ev.start = [&](const std::string& l, xmlTextReader* r) {
      if (l != "Relationship" || !target.empty()) return;
      const std::string type = attribute(r, "Type");
      const std::string suffix = "/officeDocument";
      if (type.size() >= suffix.size() &&
          type.compare(type.size() - suffix.size(), suffix.size(), suffix) == 0) {
        target = attribute(r, "Target");
      }
    };
    parse_xml(*rels, name, "_rels/.rels", ev);
    if (!target.empty()) main_part = resolve_href("", target);
  }
  const std::string* doc = find_entry(entries, main_part);
  if (!doc) fail_corrupt("cannot read ", name, ": not a Word document (no ", main_part, ")");
  std::string out;
  int in_text = 0, skip = 0;
  XmlEvents ev;
  ev.start = [&](const std::string& l, xmlTextReader*) {
    if (l == "Fallback") ++skip;  // mc:AlternateContent repeats its content in a Fallback
    if (skip) return;
    if (l == "t") ++in_text;
    if (l == "tab") out.push_back('\t');
    if (l == "br" || l == "cr") out.push_back('\n');
  };
  ev.end = [&](const std::string& l) {
    if (l == "Fallback") {
      --skip;
      return;
    }
    if (skip) return;
    if (l == "t" && in_text > 0) --in_text;
    if (l == "p") end_paragraph(&out);
  };
  ev.text = [&](const std::string& t) {
    if (in_text > 0 && !skip) out += t;
  };
  parse_xml(*doc, name, main_part, ev);
  if (title) {
    const std::string* core = find_entry(entries, "docProps/core.xml");
    *title = core ? first_element_text(*core, name, "docProps/core.xml", "title") : "";
  }
  return out;
}

std::string odt_to_text(const std::string& zip, const std::string& name, const UnpackLimits& lim,
                        std::string* title) {
  const auto entries = read_zip(zip, name, lim, xml_like);
  if (const std::string* mt = find_entry(entries, "mimetype")) {
    const std::string m = trim(*mt);
    if (m != "application/vnd.oasis.opendocument.text" &&
        m != "application/vnd.oasis.opendocument.text-template") {
      fail("cannot read ", name, ": not an OpenDocument text (mimetype ", m.substr(0, 80), ")");
    }
  }
  const std::string* content = find_entry(entries, "content.xml");
  if (!content) fail_corrupt("cannot read ", name, ": not an OpenDocument file (no content.xml)");
  std::string out;
  int in_body = 0, skip = 0;
  XmlEvents ev;
  ev.start = [&](const std::string& l, xmlTextReader* r) {
    if (l == "body") ++in_body;
    if (!in_body) return;
    if (l == "annotation" || l == "tracked-changes") ++skip;
    if (skip) return;
    if (l == "tab") out.push_back('\t');
    if (l == "line-break") out.push_back('\n');
    if (l == "s") {
      const std::string c = attribute(r, "c");
      int n = 1;
      if (!c.empty() && c.size() <= 4 && c.find_first_not_of("0123456789") == std::string::npos) {
        n = std::max(1, std::stoi(c));
      }
      out.append(static_cast<size_t>(n), ' ');
    }
  };
  ev.end = [&](const std::string& l) {
    if (l == "body" && in_body > 0) --in_body;
    if (l == "annotation" || l == "tracked-changes") {
      if (skip > 0) --skip;
      return;
    }
    if (skip || !in_body) return;
    if (l == "p" || l == "h") end_paragraph(&out);
    if (l == "h") out.push_back('\n');
  };
  ev.text = [&](const std::string& t) {
    if (in_body && !skip) out += t;
  };
  parse_xml(*content, name, "content.xml", ev);
  if (title) {
    const std::string* meta = find_entry(entries, "meta.xml");
    *title = meta ? first_element_text(*meta, name, "meta.xml", "title") : "";
  }
  return out;
}

std::string epub_to_text(const std::string& zip, const std::string& name, const UnpackLimits& lim,
                         int64_t max_depth, std::string* title) {
  const auto entries = read_zip(zip, name, lim, xml_like);
  const std::string* container = find_entry(entries, "META-INF/container.xml");
  if (!container) fail_corrupt("cannot read ", name, ": not an EPUB (no META-INF/container.xml)");
  std::string opf_path;
  {
    XmlEvents ev;
    ev.start = [&](const std::string& l, xmlTextReader* r) {
      if (l == "rootfile" && opf_path.empty()) opf_path = attribute(r, "full-path");
    };
    parse_xml(*container, name, "META-INF/container.xml", ev);
  }
  opf_path = resolve_href("", opf_path);
  const std::string* opf = opf_path.empty() ? nullptr : find_entry(entries, opf_path);
  if (!opf) {
    fail_corrupt("cannot read ", name, ": the EPUB package document ",
                 opf_path.empty() ? std::string("is not named") : opf_path + " is missing");
  }
  const size_t slash = opf_path.rfind('/');
  const std::string base = slash == std::string::npos ? "" : opf_path.substr(0, slash + 1);
  std::map<std::string, std::string> manifest;  // id -> href
  std::vector<std::string> spine;               // idrefs in reading order
  std::string opf_title;
  int in_metadata = 0, in_title = 0;
  bool have_title = false;
  XmlEvents ev;
  ev.start = [&](const std::string& l, xmlTextReader* r) {
    if (l == "metadata") ++in_metadata;
    if (l == "title" && in_metadata && !have_title) ++in_title;
    if (l == "item") manifest.emplace(attribute(r, "id"), attribute(r, "href"));
    if (l == "itemref") spine.push_back(attribute(r, "idref"));
  };
  ev.end = [&](const std::string& l) {
    if (l == "metadata" && in_metadata > 0) --in_metadata;
    if (l == "title" && in_title > 0 && --in_title == 0) have_title = true;
  };
  ev.text = [&](const std::string& t) {
    if (in_title > 0) opf_title += t;
  };
  parse_xml(*opf, name, opf_path, ev);
  std::string out;
  for (const std::string& idref : spine) {
    auto it = manifest.find(idref);
    if (it == manifest.end()) continue;  // a dangling spine entry
    const std::string path = resolve_href(base, it->second);
    const std::string* chapter = find_entry(entries, path);
    if (!chapter) continue;  // not a text document (or missing)
    std::string chapter_title;
    std::string text = trim(html_to_text(*chapter, &chapter_title, max_depth));
    if (text.empty()) continue;
    if (!out.empty()) out += "\n\n";
    out += text;
  }
  if (title) *title = normalize_title(opf_title);
  return out;
}

}  // namespace cocom::ingest
