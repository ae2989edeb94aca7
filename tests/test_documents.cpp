// Document readers and the chunker, on real files written by the tests.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/utf8.h"
#include "ingest/documents.h"
#include "ingest/html.h"
#include "tests/ingest_test_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using cocom::ingest::ChunkOptions;
using cocom::ingest::Document;
using cocom::ingest::Passage;
using cocom::ingest::ReadOptions;
using cocom::ingest::ReadResult;
using cocom::test::make_temp_dir;
using cocom::test::write_bytes;

namespace {

// Word counter: number of spaces + 1 (passages have whitespace collapsed to single spaces).
int64_t count_words(const std::string& s) {
  int64_t n = 1;
  for (char c : s) n += c == ' ';
  return n;
}

// Number of UTF-8 code points.
int64_t count_chars(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// A minimal valid PDF with one page showing `text` in Helvetica, and an Info /Title.
std::string make_pdf(const std::string& text, const std::string& title) {
  std::string content = "BT /F1 24 Tf 72 720 Td (" + text + ") Tj ET\n";
  std::vector<std::string> objs = {
      "<< /Type /Catalog /Pages 2 0 R >>",
      "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
      "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
      "/Resources << /Font << /F1 5 0 R >> >> >>",
      "<< /Length " + std::to_string(content.size()) + " >>\nstream\n" + content + "endstream",
      "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
      "<< /Title (" + title + ") >>",
  };
  std::string pdf = "%PDF-1.4\n";
  std::vector<size_t> offsets;
  for (size_t i = 0; i < objs.size(); ++i) {
    offsets.push_back(pdf.size());
    pdf += std::to_string(i + 1) + " 0 obj\n" + objs[i] + "\nendobj\n";
  }
  size_t xref = pdf.size();
  pdf += "xref\n0 " + std::to_string(objs.size() + 1) + "\n";
  pdf += "0000000000 65535 f \n";
  for (size_t off : offsets) {
    char line[32];
    std::snprintf(line, sizeof(line), "%010zu 00000 n \n", off);
    pdf += line;
  }
  pdf += "trailer\n<< /Size " + std::to_string(objs.size() + 1) +
         " /Root 1 0 R /Info 6 0 R >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
  return pdf;
}

using cocom::test::find_doc;
using cocom::test::find_skip;

bool any_warning(const ReadResult& r, const std::string& needle) {
  for (const auto& w : r.warnings) {
    if (w.find(needle) != std::string::npos) return true;
  }
  return false;
}

std::string non_ws(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c != ' ' && c != '\n' && c != '\t' && c != '\r' && c != '\f' && c != '\v') out.push_back(c);
  }
  return out;
}

const std::string kFFFD = "\xEF\xBF\xBD";

}  // namespace

// ------------------------------------------------------------------------------------------------
// UTF-8 repair

TEST(Utf8Repair, MaximalSubparts) {
  struct Case {
    std::string in, out;
    size_t n;
  };
  std::vector<Case> cases = {
      {"plain ascii", "plain ascii", 0},
      {"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 0},
      {"a\xFF"
       "b",
       "a" + kFFFD + "b", 1},
      {"\xE2\x82", kFFFD, 1},  // truncated 3-byte sequence: one
      {"\xE2\x82"
       "A",
       kFFFD + "A", 1},                                        // maximal subpart then A
      {"\xF0\x80\x80", kFFFD + kFFFD + kFFFD, 3},              // F0 80 is not a valid prefix
      {"\xED\xA0\x80", kFFFD + kFFFD + kFFFD, 3},              // surrogate
      {"\xC0\xAF", kFFFD + kFFFD, 2},                          // overlong
      {"\xF4\x90\x80\x80", kFFFD + kFFFD + kFFFD + kFFFD, 4},  // > U+10FFFF
      {"\xF0\x9F\x98", kFFFD, 1},                              // truncated 4-byte
      {"x\x80\x80y", "x" + kFFFD + kFFFD + "y", 2},
  };
  for (auto& c : cases) {
    std::string s = c.in;
    EXPECT_EQ(cocom::utf8::repair(&s), c.n) << c.out;
    EXPECT_EQ(s, c.out);
  }
}

// ------------------------------------------------------------------------------------------------
// Format readers

TEST(Markdown, StripsMarkup) {
  std::string md =
      "Intro line before heading.\n"
      "\n"
      "# The *Main* Title #\n"
      "\n"
      "Some **bold** and _emph_ text with `inline_code` and a [link](http://x.org/a_b).\n"
      "Second line of snake_case ![an image](img.png) here.\n"
      "\n"
      "## Section two\n"
      "\n"
      "- item one\n"
      "* item two\n"
      "1. numbered\n"
      "\n"
      "> quoted text\n"
      "\n"
      "```python\n"
      "def f(x):\n"
      "    return x * 2\n"
      "```\n"
      "\n"
      "| a | b |\n"
      "|---|:-:|\n"
      "| c | d |\n"
      "\n"
      "<div>html block</div>\n"
      "\n"
      "[![badge](b.svg)](http://ci)\n"
      "2 * 3 = 6\n";
  std::string title;
  std::string text = cocom::ingest::markdown_to_text(md, &title);
  EXPECT_EQ(title, "The Main Title");
  EXPECT_EQ(text,
            "Intro line before heading.\n\n"
            "The Main Title\n\n"
            "Some bold and emph text with inline_code and a link.\n"
            "Second line of snake_case here.\n\n"
            "Section two\n\n"
            "item one\nitem two\nnumbered\n\n"
            "quoted text\n\n"
            "def f(x):\n    return x * 2\n\n"
            "a b\nc d\n\n"
            "html block\n\n"
            "2 * 3 = 6");
}

TEST(Markdown, SetextHeadingAndNoHeading) {
  std::string title = "x";
  // A heading that opens the document is the title and is not repeated in the text.
  EXPECT_EQ(cocom::ingest::markdown_to_text("Title here\n=====\n\nBody.\n", &title), "Body.");
  EXPECT_EQ(title, "Title here");
  EXPECT_EQ(cocom::ingest::markdown_to_text("# First\n\nBody.\n\n## Later\n\nMore.\n", &title),
            "Body.\n\nLater\n\nMore.");
  EXPECT_EQ(title, "First");
  EXPECT_EQ(cocom::ingest::markdown_to_text("just text\n\n\n\nmore\n", &title),
            "just text\n\nmore");
  EXPECT_EQ(title, "");
  EXPECT_EQ(cocom::ingest::markdown_to_text("", &title), "");
}

TEST(Html, BodyTextTitleAndEntities) {
  std::string html =
      "<!DOCTYPE html><html><head><title> The  Page &amp; Co </title>"
      "<style>body { color: red; }</style><script>var x = '<p>no</p>';</script></head>"
      "<body><h1>Heading</h1><p>First   paragraph\n with &lt;entities&gt; &eacute; &#x263A;.</p>"
      "<div>Line one<br>Line two</div><noscript>hidden</noscript>"
      "<template><p>tmpl</p></template>"
      "<ul><li>a</li><li>b <b>bold</b></li></ul>"
      "<table><tr><td>c1</td><td>c2</td></tr></table>"
      "<pre>  keep\n    spaces</pre>"
      "<script>alert(1)</script><!-- comment --></body></html>";
  std::string title;
  std::string text = cocom::ingest::html_to_text(html, &title);
  EXPECT_EQ(title, "The Page & Co");
  EXPECT_EQ(text,
            "Heading\n\nFirst paragraph with <entities> \xC3\xA9 \xE2\x98\xBA.\n\n"
            "Line one\nLine two\n\na\nb bold\n\nc1 c2\n\n  keep\n    spaces");
  EXPECT_EQ(text.find("color"), std::string::npos);
  EXPECT_EQ(text.find("alert"), std::string::npos);
  EXPECT_EQ(text.find("hidden"), std::string::npos);
  EXPECT_EQ(text.find("tmpl"), std::string::npos);
}

TEST(Html, FirstH1IsTitleWithoutTitleTag) {
  std::string title;
  std::string text =
      cocom::ingest::html_to_text("<body><p>x</p><h1>The <i>H1</i></h1><h1>second</h1>", &title);
  EXPECT_EQ(title, "The H1");
  EXPECT_EQ(text, "x\n\nThe H1\n\nsecond");
}

TEST(Html, DeeplyNestedDoesNotOverflow) {
  for (const char* tag : {"div", "span"}) {
    std::string html;
    const int depth = 10000;
    for (int i = 0; i < depth; ++i) html += std::string("<") + tag + ">";
    html += "deep text";
    for (int i = 0; i < depth; ++i) html += std::string("</") + tag + ">";
    std::string title;
    EXPECT_EQ(cocom::ingest::html_to_text(html, &title), "deep text") << tag;
  }
}

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

// What gumbo builds from the normalised document: never deeper than about twice the limit
// (implied <tbody>/<tr> in tables), whatever the input's nesting.
int64_t normalized_depth(const std::string& html, int64_t limit) {
  return cocom::ingest::detail::gumbo_element_depth(
      cocom::ingest::detail::normalize_html(html, limit).html);
}

// Hostile nesting used to take quadratic time in gumbo (28 s for 100k nested <div>s, 118 s for
// 100k unclosed <div><span> pairs). No timing is asserted: the ctest timeout catches a
// regression; the results and the depth bound are checked here.
TEST(Html, HostileNestingIsFlattenedNotQuadratic) {
  using cocom::ingest::detail::html_to_text_counted;
  std::string title;
  int64_t flattened = 0;
  const std::string nested =
      repeat("<div>", 100000) + "deep text" + repeat("</div>", 100000) + "<p>after</p>";
  EXPECT_EQ(html_to_text_counted(nested, &title, 256, &flattened), "deep text\n\nafter");
  EXPECT_EQ(flattened, 100000 - 256);
  EXPECT_LE(normalized_depth(nested, 256), 256 + 2);

  const std::string unclosed = "<title>T</title>" + repeat("<div><span>", 100000) + "bottom";
  EXPECT_EQ(html_to_text_counted(unclosed, &title, 256, &flattened), "bottom");
  EXPECT_EQ(title, "T");
  EXPECT_EQ(flattened, 200000 - 256);
  EXPECT_LE(normalized_depth(unclosed, 256), 256 + 2);

  // Text of every element below the limit is kept (a flat container: no block breaks).
  const std::string text_everywhere = repeat("<div>x", 100000);
  EXPECT_EQ(non_ws(cocom::ingest::html_to_text(text_everywhere, &title)), repeat("x", 100000));
}

TEST(Html, MisnestingCannotDeepenTheParse) {
  // Patterns where the HTML parser keeps elements open that a naive tag counter would close,
  // or ignores tags: gumbo's tree stays within the bound either way.
  const int64_t limit = 64;
  const size_t n = 5000;
  const std::vector<std::string> hostile = {
      repeat("<span><div></span>", n),     // </span> ignored past a <div>
      repeat("<b><p>x</b>", n),            // formatting element misnested with a block
      repeat("<p><b id=1><i>x</p>", n),    // formatting elements reopened after </p>
      repeat("<table><td>", n),            // tables in cells: implied <tbody><tr>
      repeat("<svg><script><div>", n),     // SVG script is no raw text; <div> leaves SVG
      repeat("<svg><g/><style><p>", n),    // self-closing and raw text in SVG
      repeat("<select><div><select>", n),  // tags ignored inside <select>
      repeat("<template><div>", n),        // template contents
      repeat("<math><mi><math><mi>", n),   // MathML integration points
      repeat("<a><div><a>", n),            // nested links
      repeat("<x<div a='>'<b>", n),        // odd tag names and quoted '>'
      repeat("<div><!--<p>--></div><div>", n),
      repeat("<object><ul><li>", n),
  };
  for (const auto& html : hostile) {
    EXPECT_LE(normalized_depth(html, limit), 2 * limit + 4) << html.substr(0, 40);
    std::string title;
    cocom::ingest::html_to_text(html, &title, limit);
  }
}

TEST(Html, NormalisationKeepsTheText) {
  // Raw text, comments, entities, implied end tags and stray end tags read as before.
  std::string title;
  std::string text = cocom::ingest::html_to_text(
      "<html><head><title>A &lt;b&gt; t</title><style>p{}</style></head><body>"
      "<p>1 < 2 &amp; <!-- <div> --> 3<!--> <p>four<!---->five</p><xmp><b>&amp;</xmp>"
      "<script>if (a<b) x=\"</div>\";</script><textarea>t<u>&lt;</textarea>"
      "<svg><desc>d</desc><circle/><![CDATA[c<d]]></svg>"
      "<table><tr><td>c1<td>c2<tr><td>c3</table><ul><li>one<li>two</ul>"
      "<select><option>o1<div>no</div><option>o2</select><p>after<div/>in div</p>",
      &title);
  EXPECT_EQ(title, "A <b> t");
  EXPECT_EQ(text,
            "1 < 2 & 3\n\nfourfive\n\n<b>&amp;t<u><dc<d\n\nc1 c2\nc3\n\none\ntwo\n\no1no\no2"
            "\n\nafter\n\nin div");

  // A tiny limit: nothing lost, only the breaks of the flattened elements.
  EXPECT_EQ(
      cocom::ingest::html_to_text("<div><div><p>a</p><p>b</p></div></div><p>c</p>", &title, 1),
      "ab\n\nc");
  EXPECT_THROW(cocom::ingest::html_to_text("<p>x</p>", &title, 0), cocom::Error);
}

TEST(Markdown, DeepNestingIsLinear) {
  std::string title;
  EXPECT_EQ(cocom::ingest::markdown_to_text(repeat(">", 1000000) + " quoted", &title), "quoted");
  EXPECT_EQ(cocom::ingest::markdown_to_text(repeat("> ", 500000) + "- item", &title), "item");
  std::string lists;
  for (int i = 0; i < 2000; ++i) lists += std::string(static_cast<size_t>(i) * 2, ' ') + "- x\n";
  EXPECT_EQ(non_ws(cocom::ingest::markdown_to_text(lists, &title)), repeat("x", 2000));
}

// Hostile Markdown for md4c and the reader's callbacks: each input finishes (the whole test
// takes about a second) and gives a text no longer than the input, with what it must keep.
TEST(Markdown, HostileInputsFinishWithBoundedText) {
  const size_t mib = size_t{1} << 20;
  auto read = [](const std::string& md) {
    std::string title;
    std::string text = cocom::ingest::markdown_to_text(md, &title);
    EXPECT_LE(text.size(), md.size());
    EXPECT_TRUE(cocom::utf8::is_valid(text));
    return text;
  };
  auto count = [](const std::string& s, char c) { return std::count(s.begin(), s.end(), c); };
  // Nesting: lists, ordered lists, quotes and lists, all on one line.
  EXPECT_EQ(read(repeat("- ", 300000) + "x"), "x");
  EXPECT_EQ(read(repeat("1. ", 300000) + "x"), "x");
  EXPECT_EQ(read(repeat("> - ", 250000) + "x"), "x");
  // Megabytes of delimiters: unmatched brackets stay text; emphasis and code spans keep their
  // text; nested images go with their alt text.
  EXPECT_EQ(read(repeat("[", 2 * mib)), repeat("[", 2 * mib));
  EXPECT_EQ(read(repeat("[a](", mib / 4)), repeat("[a](", mib / 4));
  EXPECT_EQ(count(read(repeat("*a", mib / 2)), 'a'), static_cast<int64_t>(mib / 2));
  EXPECT_EQ(count(read(repeat("`a", mib / 2)), 'a'), static_cast<int64_t>(mib / 2));
  EXPECT_EQ(read(repeat("*", mib)), "");                 // one thematic break
  EXPECT_EQ(read(repeat("`", mib) + "\ncode"), "code");  // a fence: the rest is code
  EXPECT_EQ(read(repeat("![", 100000) + "a" + repeat("](b)", 100000)), "");
  // Runs that md4c 0.4.8's strikethrough extension would take quadratic time on.
  std::string strike = read(repeat("~a ", 65536) + "x" + repeat(" b~", 65536));
  EXPECT_EQ(count(strike, 'a'), 65536);
  EXPECT_EQ(count(strike, 'b'), 65536);
  // HTML blocks: '<' without '>' stays text, an unclosed comment drops the rest.
  EXPECT_EQ(read("<div " + repeat("<a", mib / 2)), "<div " + repeat("<a", mib / 2));
  EXPECT_EQ(read("<div>\n" + repeat("<!--", mib / 4)), "");
  EXPECT_EQ(read(repeat("&#x10FFFF;", 1000)), repeat("\xF4\x8F\xBF\xBF", 1000));
  // NUL bytes read as spaces; ill-formed UTF-8 is repaired, a heading still found.
  EXPECT_EQ(read(std::string(mib, '\0')), "");
  EXPECT_EQ(read(std::string("a\0b\0\0c", 7)), "a b c");
  std::string title;
  EXPECT_EQ(cocom::ingest::markdown_to_text("# T\xFF\n\nbad \xC3 and \xED\xA0\x80.\n", &title),
            "bad \xEF\xBF\xBD and \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD.");
  EXPECT_EQ(title, "T\xEF\xBF\xBD");
}

TEST(Markdown, BlocksHtmlAndEntities) {
  std::string title;
  EXPECT_EQ(cocom::ingest::markdown_to_text(
                "a ~~struck~~ b ~ c ~~ d &amp; &#x263A; &#0; &foo; &copy;\n\n"
                "<!-- a comment\nover lines -->\n\n<script>\nbad()\n</script>\n\n"
                "<p>one</p><p>two &lt;x&gt;</p>\n\n- [ ] task\n- [x] done\n\n"
                "inline <b>bold</b> tag <!-- hidden --> end\n\n    indented code\n\n***\n\n"
                "- loose\n\n- list\n\n[ref]: http://example.org\n<http://auto.link> [r][ref]\n",
                &title),
            "a struck b ~ c ~~ d & \xE2\x98\xBA \xEF\xBF\xBD &foo; \xC2\xA9\n\n"
            "one\ntwo <x>\n\ntask\ndone\n\ninline bold tag end\n\nindented code\n\n"
            "loose\n\nlist\n\nhttp://auto.link r");
  EXPECT_EQ(title, "");
}

TEST(Pdf, HandWrittenPdf) {
  std::string dir = make_temp_dir("doc-pdf");
  std::string path = dir + "/hello.pdf";
  write_bytes(path, make_pdf("Hello PDF world", "A PDF Title"));
  std::string title;
  std::string text = cocom::ingest::pdf_to_text(path, &title);
  EXPECT_NE(text.find("Hello PDF world"), std::string::npos) << text;
  EXPECT_EQ(title, "A PDF Title");

  std::string bad = dir + "/corrupt.pdf";
  write_bytes(bad, "%PDF-1.4\nthis is not a pdf at all\n");
  try {
    cocom::ingest::pdf_to_text(bad, &title);
    FAIL() << "expected cocom::Error";
  } catch (const cocom::Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// ------------------------------------------------------------------------------------------------
// read_paths

TEST(ReadPaths, AllFormatsInADirectory) {
  std::string dir = make_temp_dir("doc-read");
  write_bytes(dir + "/a.txt", "Plain text file.\nSecond line.\n");
  write_bytes(dir + "/b.md", "# MD Title\n\nBody with [a link](http://x).\n");
  write_bytes(dir + "/c.html",
              "<html><head><title>Html Title</title><script>bad()</script></head>"
              "<body><p>Hello &amp; welcome</p></body></html>");
  write_bytes(dir + "/d.pdf", make_pdf("Hello PDF world", "Pdf Title"));
  write_bytes(dir + "/e.jsonl",
              "{\"id\": \"doc-1\", \"title\": \"One\", \"text\": \"First.\", \"lang\": \"en\"}\n"
              "{\"id\": 42, \"text\": \"Numeric id.\"}\n"
              "\n"
              "not json at all\n"
              "{\"id\": \"no-text\", \"title\": \"x\"}\n"
              "{\"text\": \"No id.\", \"extra\": {\"k\": [1, 2]}}\n"
              "{\"id\": \"doc-1\", \"text\": \"Duplicate.\"}\n"
              "{\"id\": \"nul\", \"text\": \"a\\u0000b\"}\n"
              "[1, 2]\n");
  write_bytes(dir + "/f.bin.txt", std::string("abc\0def", 7));
  write_bytes(dir + "/g.xyz", "unknown extension, text content");
  write_bytes(dir + "/i.bin", std::string("\x7f"
                                          "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0",
                                          16));
  write_bytes(dir + "/h.txt", "bad \xFF utf8");
  write_bytes(dir + "/Upper.TXT", "Upper case extension.");
  write_bytes(dir + "/noext", "no extension");

  ReadResult r = cocom::ingest::read_paths({dir});
  ASSERT_EQ(r.documents.size(), 12u);

  // Sorted by relative path: Upper.TXT, a.txt, b.md, c.html, d.pdf, e.jsonl x4, g.xyz, h.txt,
  // noext.
  EXPECT_EQ(r.documents[0].id, dir + "/Upper.TXT");
  EXPECT_EQ(r.documents[1].id, dir + "/a.txt");

  const Document* a = find_doc(r, dir + "/a.txt");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->title, "a");
  EXPECT_EQ(a->text, "Plain text file.\nSecond line.\n");
  EXPECT_EQ(a->source, dir + "/a.txt");
  auto meta = nlohmann::json::parse(a->meta_json);
  EXPECT_EQ(meta["size"], 30);

  const Document* b = find_doc(r, dir + "/b.md");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->title, "MD Title");
  EXPECT_EQ(b->text, "Body with a link.");

  const Document* c = find_doc(r, dir + "/c.html");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->title, "Html Title");
  EXPECT_EQ(c->text, "Hello & welcome");

  const Document* d = find_doc(r, dir + "/d.pdf");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->title, "Pdf Title");
  EXPECT_NE(d->text.find("Hello PDF world"), std::string::npos);

  const Document* j1 = find_doc(r, "doc-1");
  ASSERT_TRUE(j1);
  EXPECT_EQ(j1->title, "One");
  EXPECT_EQ(j1->text, "First.");  // first one wins
  EXPECT_EQ(j1->source, dir + "/e.jsonl");
  EXPECT_EQ(nlohmann::json::parse(j1->meta_json), nlohmann::json({{"lang", "en"}}));
  const Document* j42 = find_doc(r, "42");
  ASSERT_TRUE(j42);
  EXPECT_EQ(j42->title, "");
  EXPECT_EQ(j42->text, "Numeric id.");
  const Document* jnoid = find_doc(r, dir + "/e.jsonl#6");
  ASSERT_TRUE(jnoid);
  EXPECT_EQ(jnoid->text, "No id.");
  EXPECT_EQ(nlohmann::json::parse(jnoid->meta_json)["extra"]["k"][1], 2);
  const Document* jnul = find_doc(r, "nul");
  ASSERT_TRUE(jnul);
  EXPECT_EQ(jnul->text, "a b");  // NUL replaced by a space

  // Lines without a document are skipped entries "path:N"; a duplicate id stays a warning.
  EXPECT_EQ(find_skip(r, dir + "/e.jsonl:4").rfind("invalid JSON: ", 0), 0u)
      << find_skip(r, dir + "/e.jsonl:4");
  EXPECT_EQ(find_skip(r, dir + "/e.jsonl:5"), "missing string field \"text\"");
  EXPECT_TRUE(any_warning(r, dir + "/e.jsonl:7: duplicate document id 'doc-1'"));
  EXPECT_EQ(find_skip(r, dir + "/e.jsonl:7"), "<not skipped>");
  EXPECT_EQ(find_skip(r, dir + "/e.jsonl:9"), "not a JSON object");

  const Document* h = find_doc(r, dir + "/h.txt");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->text, "bad " + kFFFD + " utf8");
  EXPECT_TRUE(any_warning(r, dir + "/h.txt: replaced 1 invalid UTF-8"));

  EXPECT_EQ(find_skip(r, dir + "/f.bin.txt"), "binary file");
  // No known extension: typed by content (text is read, a binary skipped with its type).
  const Document* g = find_doc(r, dir + "/g.xyz");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->text, "unknown extension, text content");
  EXPECT_EQ(g->title, "g");
  const Document* noext = find_doc(r, dir + "/noext");
  ASSERT_TRUE(noext);
  EXPECT_EQ(noext->text, "no extension");
  EXPECT_EQ(noext->title, "noext");
  EXPECT_EQ(find_skip(r, dir + "/i.bin").rfind("binary file (application/", 0), 0u)
      << find_skip(r, dir + "/i.bin");
  EXPECT_EQ(r.skipped.size(), 5u);  // 2 files, 3 jsonl lines
  EXPECT_EQ(r.formats, (std::map<std::string, int64_t>{
                           {"html", 1}, {"jsonl", 1}, {"markdown", 1}, {"pdf", 1}, {"text", 5}}));

  // Deterministic.
  ReadResult r2 = cocom::ingest::read_paths({dir});
  ASSERT_EQ(r2.documents.size(), r.documents.size());
  for (size_t i = 0; i < r.documents.size(); ++i) {
    EXPECT_EQ(r2.documents[i].id, r.documents[i].id);
    EXPECT_EQ(cocom::ingest::content_hash(r2.documents[i]),
              cocom::ingest::content_hash(r.documents[i]));
  }
  fs::remove_all(dir);
}

TEST(ReadPaths, InvalidUtf8WithoutRepairIsSkipped) {
  std::string dir = make_temp_dir("doc-utf8");
  write_bytes(dir + "/bad.txt", "bad \xC3 utf8");
  write_bytes(dir + "/bad.jsonl",
              "{\"id\": \"x\", \"text\": \"bad \xFF\"}\n{\"id\": \"y\", \"text\": \"ok\"}\n");
  ReadOptions opt;
  opt.repair_utf8 = false;
  ReadResult r = cocom::ingest::read_paths({dir}, opt);
  ASSERT_EQ(r.documents.size(), 1u);
  EXPECT_EQ(r.documents[0].id, "y");
  EXPECT_EQ(find_skip(r, dir + "/bad.txt"), "invalid UTF-8");
  EXPECT_EQ(find_skip(r, dir + "/bad.jsonl:1"), "invalid UTF-8");

  ReadResult rep = cocom::ingest::read_paths({dir});
  ASSERT_EQ(rep.documents.size(), 3u);
  EXPECT_TRUE(any_warning(rep, dir + "/bad.jsonl:1: replaced 1"));
  const Document* x = find_doc(rep, "x");
  ASSERT_TRUE(x);
  EXPECT_EQ(x->text, "bad " + kFFFD);
  fs::remove_all(dir);
}

TEST(ReadPaths, NestedDirectoriesGlobsAndSymlinkLoop) {
  std::string dir = make_temp_dir("doc-nest");
  fs::create_directories(dir + "/docs/sub/deeper");
  fs::create_directories(dir + "/drafts");
  write_bytes(dir + "/top.md", "# Top\n");
  write_bytes(dir + "/docs/one.txt", "one");
  write_bytes(dir + "/docs/sub/two.md", "two");
  write_bytes(dir + "/docs/sub/deeper/three.txt", "three");
  write_bytes(dir + "/docs/sub/skip.tmp.txt", "tmp");
  write_bytes(dir + "/drafts/draft.txt", "draft");
  fs::create_directory_symlink(dir + "/docs", dir + "/docs/sub/loop");  // a loop
  fs::create_symlink(dir + "/missing-target.txt", dir + "/dangling.txt");

  ReadResult all = cocom::ingest::read_paths({dir});
  std::vector<std::string> ids;
  for (const auto& d : all.documents) ids.push_back(d.id.substr(dir.size() + 1));
  EXPECT_EQ(ids, (std::vector<std::string>{"docs/one.txt", "docs/sub/deeper/three.txt",
                                           "docs/sub/skip.tmp.txt", "docs/sub/two.md",
                                           "drafts/draft.txt", "top.md"}));
  EXPECT_NE(find_skip(all, dir + "/dangling.txt").find("No such file"), std::string::npos);

  ReadOptions opt;
  opt.include = {"*.txt"};
  opt.exclude = {"drafts", "*.tmp.*"};
  ReadResult r = cocom::ingest::read_paths({dir}, opt);
  ids.clear();
  for (const auto& d : r.documents) ids.push_back(d.id.substr(dir.size() + 1));
  EXPECT_EQ(ids, (std::vector<std::string>{"docs/one.txt", "docs/sub/deeper/three.txt"}))
      << "dangling.txt is reported as skipped";

  opt.include = {"docs/sub/*"};  // relative-path glob ('*' crosses '/')
  opt.exclude = {};
  r = cocom::ingest::read_paths({dir}, opt);
  ids.clear();
  for (const auto& d : r.documents) ids.push_back(d.id.substr(dir.size() + 1));
  EXPECT_EQ(ids, (std::vector<std::string>{"docs/sub/deeper/three.txt", "docs/sub/skip.tmp.txt",
                                           "docs/sub/two.md"}));

  // A relative root resolves to absolute ids.
  std::string cwd = fs::current_path();
  fs::current_path(dir);
  r = cocom::ingest::read_paths({"docs/one.txt", "./top.md"});
  fs::current_path(cwd);
  ASSERT_EQ(r.documents.size(), 2u);
  EXPECT_EQ(r.documents[0].id, dir + "/docs/one.txt");
  EXPECT_EQ(r.documents[1].source, dir + "/top.md");
  fs::remove_all(dir);
}

TEST(ReadPaths, MissingPathThrowsNamingIt) {
  std::string dir = make_temp_dir("doc-missing");
  std::string missing = dir + "/nope.txt";
  try {
    cocom::ingest::read_paths({dir, missing});
    FAIL() << "expected cocom::Error";
  } catch (const cocom::Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(ReadPaths, UnreadableFileAndCorruptPdfAreSkipped) {
  std::string dir = make_temp_dir("doc-unread");
  write_bytes(dir + "/broken.pdf", "%PDF-1.4 garbage");
  write_bytes(dir + "/secret.txt", "secret");
  ::chmod((dir + "/secret.txt").c_str(), 0);
  fs::create_symlink(dir + "/loop-b.txt", dir + "/loop-a.txt");  // works as root too
  fs::create_symlink(dir + "/loop-a.txt", dir + "/loop-b.txt");
  ASSERT_EQ(::mkfifo((dir + "/pipe.txt").c_str(), 0644), 0);  // must not block
  ReadResult r = cocom::ingest::read_paths({dir});
  EXPECT_EQ(find_skip(r, dir + "/loop-a.txt"), "unreadable: Too many levels of symbolic links");
  EXPECT_EQ(find_skip(r, dir + "/pipe.txt"), "not a regular file");
  ReadResult r2 = cocom::ingest::read_paths({dir + "/loop-b.txt"});
  EXPECT_EQ(find_skip(r2, dir + "/loop-b.txt"), "unreadable: Too many levels of symbolic links");
  std::string pdf_reason = find_skip(r, dir + "/broken.pdf");
  EXPECT_NE(pdf_reason.find(dir + "/broken.pdf"), std::string::npos) << pdf_reason;
  if (::geteuid() != 0) {  // root reads anything
    EXPECT_EQ(find_skip(r, dir + "/secret.txt"), "unreadable: Permission denied");
    EXPECT_TRUE(r.documents.empty());
  }
  ::chmod((dir + "/secret.txt").c_str(), 0644);
  fs::remove_all(dir);
}

TEST(ReadPaths, HostileInputs) {
  std::string dir = make_temp_dir("doc-hostile");
  for (const char* name : {"empty.txt", "empty.md", "empty.html", "empty.jsonl", "empty.pdf"}) {
    write_bytes(dir + "/" + name, "");
  }
  std::string big;
  big.reserve(5 * 1024 * 1024);
  while (big.size() < 5 * 1024 * 1024) big += "word ";
  write_bytes(dir + "/big.txt", big);
  write_bytes(dir + "/big.md", big);
  std::string deep;
  for (int i = 0; i < 10000; ++i) deep += "<div>";
  deep += "bottom";
  write_bytes(dir + "/deep.html", deep);

  auto t0 = std::chrono::steady_clock::now();
  ReadResult r = cocom::ingest::read_paths({dir});
  EXPECT_NE(find_skip(r, dir + "/empty.pdf"), "<not skipped>");
  for (const char* name : {"empty.txt", "empty.md", "empty.html"}) {
    const Document* d = find_doc(r, dir + "/" + name);
    ASSERT_TRUE(d) << name;
    EXPECT_EQ(d->text, "");
    EXPECT_TRUE(cocom::ingest::chunk_document(*d, {}, count_words).empty());
  }
  const Document* deepdoc = find_doc(r, dir + "/deep.html");
  ASSERT_TRUE(deepdoc);
  EXPECT_EQ(deepdoc->text, "bottom");
  const Document* bigdoc = find_doc(r, dir + "/big.txt");
  ASSERT_TRUE(bigdoc);
  ChunkOptions copt;
  copt.max_tokens = 128;
  auto passages = cocom::ingest::chunk_document(*bigdoc, copt, count_words);
  // "big. " prefix (1 word) + 127 words per passage.
  EXPECT_EQ(passages.size(), (big.size() / 5 + 126) / 127);
  for (const auto& p : passages) ASSERT_LE(count_words(p.text), 128);
  const Document* bigmd = find_doc(r, dir + "/big.md");
  ASSERT_TRUE(bigmd);
  EXPECT_EQ(bigmd->text.size(), big.size() - 1);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 60.0);
  fs::remove_all(dir);
}

TEST(ReadPaths, MaxFileBytesSkipsBeforeReading) {
  std::string dir = make_temp_dir("doc-size");
  write_bytes(dir + "/big.txt", std::string(2000, 'a'));
  write_bytes(dir + "/exact.txt", std::string(1000, 'b'));
  write_bytes(dir + "/big.jsonl", "{\"text\": \"" + std::string(2000, 'c') + "\"}\n");
  write_bytes(dir + "/big.html", "<p>" + std::string(2000, 'd') + "</p>");
  write_bytes(dir + "/big.md", std::string(2000, 'e'));
  std::string pdf = make_pdf(repeat("Hello PDF world ", 80), "T");
  ASSERT_GT(pdf.size(), 1000u);
  write_bytes(dir + "/doc.pdf", pdf);
  ReadOptions opt;
  opt.max_file_bytes = 1000;
  ReadResult r = cocom::ingest::read_paths({dir}, opt);
  ASSERT_EQ(r.documents.size(), 1u);
  EXPECT_EQ(r.documents[0].id, dir + "/exact.txt");  // at the limit: read
  EXPECT_EQ(find_skip(r, dir + "/big.txt"),
            "file too large: 2000 bytes exceeds max_file_bytes (1000 bytes)");
  for (const char* name : {"big.jsonl", "big.html", "big.md", "doc.pdf"}) {
    std::string reason = find_skip(r, dir + "/" + name);
    EXPECT_EQ(reason.rfind("file too large: ", 0), 0u) << name << ": " << reason;
    EXPECT_NE(reason.find("max_file_bytes (1000 bytes)"), std::string::npos) << reason;
  }
  EXPECT_NE(find_skip(r, dir + "/doc.pdf").find(std::to_string(pdf.size()) + " bytes"),
            std::string::npos);
  EXPECT_EQ(r.skipped.size(), 5u);

  opt.max_file_bytes = 0;  // no limit
  EXPECT_EQ(cocom::ingest::read_paths({dir}, opt).documents.size(), 6u);
  EXPECT_EQ(cocom::ingest::read_paths({dir}).documents.size(), 6u);  // default: 256 MiB

  opt.max_file_bytes = -1;
  EXPECT_THROW(cocom::ingest::read_paths({dir}, opt), cocom::Error);
  opt.max_file_bytes = 0;
  opt.max_nesting_depth = 0;
  EXPECT_THROW(cocom::ingest::read_paths({dir}, opt), cocom::Error);
  fs::remove_all(dir);
}

TEST(ReadPaths, JsonlSkippedLinesAreCountedPerLine) {
  std::string dir = make_temp_dir("doc-jsonl");
  const std::vector<std::string> lines = {
      "{\"id\": \"a\", \"text\": \"A.\"}",  // 1 ok
      "{oops",                              // 2 invalid JSON
      "",                                   // 3 blank: not a record
      "\"just a string\"",                  // 4 not an object
      "{\"id\": \"n\", \"text\": 5}",       // 5 text not a string
      repeat("[", 100000),                  // 6 deep and unterminated
      // 7 balanced, 100k deep in a field (copying or dumping it would recurse)
      "{\"text\": \"deep\", \"m\": " + repeat("[", 100000) + repeat("]", 100000) + "}",
      "{\"id\": \"s\", \"text\": \"" + repeat("[", 1000) + "\"}",  // 8 brackets in a string
      "{\"id\": \"d3\", \"text\": \"x\", \"m\": [[1]]}",           // 9 depth 3
      "{\"text\": \"x\", \"n\": 1E99999}",  // 10 number overflow (found by fuzz_read_paths)
  };
  std::string jsonl;
  for (const auto& l : lines) jsonl += l + "\n";
  write_bytes(dir + "/c.jsonl", jsonl);
  ReadResult r = cocom::ingest::read_paths({dir});
  const std::string f = dir + "/c.jsonl";
  EXPECT_EQ(find_skip(r, f + ":2").rfind("invalid JSON: ", 0), 0u) << find_skip(r, f + ":2");
  EXPECT_EQ(find_skip(r, f + ":3"), "<not skipped>");
  EXPECT_EQ(find_skip(r, f + ":4"), "not a JSON object");
  EXPECT_EQ(find_skip(r, f + ":5"), "missing string field \"text\"");
  EXPECT_EQ(find_skip(r, f + ":6"), "JSON nested deeper than max_nesting_depth (256)");
  EXPECT_EQ(find_skip(r, f + ":7"), "JSON nested deeper than max_nesting_depth (256)");
  EXPECT_NE(find_skip(r, f + ":10").find("invalid JSON: number overflow"), std::string::npos)
      << find_skip(r, f + ":10");
  EXPECT_EQ(r.skipped.size(), 6u);
  ASSERT_EQ(r.documents.size(), 3u);
  EXPECT_TRUE(find_doc(r, "a"));
  ASSERT_TRUE(find_doc(r, "s"));
  EXPECT_EQ(find_doc(r, "s")->text, repeat("[", 1000));
  EXPECT_TRUE(find_doc(r, "d3"));
  for (const auto& w : r.warnings) ADD_FAILURE() << "unexpected warning: " << w;

  ReadOptions opt;
  opt.max_nesting_depth = 2;  // {"m": [[1]]} nests 3 deep
  r = cocom::ingest::read_paths({dir}, opt);
  EXPECT_EQ(find_skip(r, f + ":9"), "JSON nested deeper than max_nesting_depth (2)");
  opt.max_nesting_depth = 3;
  r = cocom::ingest::read_paths({dir}, opt);
  EXPECT_EQ(find_skip(r, f + ":9"), "<not skipped>");
  EXPECT_TRUE(find_doc(r, "d3"));
  fs::remove_all(dir);
}

TEST(ReadPaths, HostileHtmlIsFlattenedWithAWarning) {
  std::string dir = make_temp_dir("doc-hostile-html");
  write_bytes(dir + "/nested.html",
              repeat("<div>", 100000) + "deep text" + repeat("</div>", 100000));
  write_bytes(dir + "/unclosed.html", repeat("<div><span>", 100000) + "bottom");
  write_bytes(dir + "/fine.html", "<div><p>fine</p></div>");
  ReadResult r = cocom::ingest::read_paths({dir});
  ASSERT_EQ(r.documents.size(), 3u);
  const Document* nested = find_doc(r, dir + "/nested.html");
  ASSERT_TRUE(nested);
  EXPECT_EQ(nested->text, "deep text");
  const Document* unclosed = find_doc(r, dir + "/unclosed.html");
  ASSERT_TRUE(unclosed);
  EXPECT_EQ(unclosed->text, "bottom");
  EXPECT_TRUE(any_warning(r, dir + "/nested.html: HTML nested deeper than max_nesting_depth (256): "
                                   "99744 element(s)"));
  EXPECT_TRUE(any_warning(r, dir + "/unclosed.html: HTML nested deeper than max_nesting_depth"));
  EXPECT_FALSE(any_warning(r, "fine.html"));
  EXPECT_TRUE(r.skipped.empty());
  fs::remove_all(dir);
}

// ------------------------------------------------------------------------------------------------
// Chunker

TEST(Chunker, HandComputedBoundaries) {
  Document doc;
  doc.title = "T";
  doc.text = "One two three. Four five.\n\nSix seven eight nine. Ten.";
  ChunkOptions opt;
  opt.max_tokens = 5;  // "T. " + at most 4 words
  auto p = cocom::ingest::chunk_document(doc, opt, count_words);
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0].text, "T. One two three.");
  EXPECT_EQ(p[1].text, "T. Four five.");
  EXPECT_EQ(p[2].text, "T. Six seven eight nine.");
  EXPECT_EQ(p[3].text, "T. Ten.");
  EXPECT_EQ(p[0].char_begin, 0);
  EXPECT_EQ(p[0].char_end, 14);
  EXPECT_EQ(p[1].char_begin, 15);
  EXPECT_EQ(p[1].char_end, 25);
  EXPECT_EQ(p[2].char_begin, 27);
  EXPECT_EQ(p[3].char_end, static_cast<int64_t>(doc.text.size()));
  for (size_t i = 0; i < p.size(); ++i) EXPECT_EQ(p[i].index, static_cast<int64_t>(i));

  opt.max_tokens = 7;  // up to 6 words: paragraph break inside a chunk becomes a space
  p = cocom::ingest::chunk_document(doc, opt, count_words);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].text, "T. One two three. Four five.");
  EXPECT_EQ(p[1].text, "T. Six seven eight nine. Ten.");
  EXPECT_EQ(doc.text.substr(p[1].char_begin, p[1].char_end - p[1].char_begin),
            "Six seven eight nine. Ten.");

  opt.overlap_tokens = 2;
  p = cocom::ingest::chunk_document(doc, opt, count_words);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].text, "T. One two three. Four five.");
  EXPECT_EQ(p[1].text, "T. Four five. Six seven eight nine.");
  EXPECT_EQ(p[2].text, "T. Ten.");  // "Six seven eight nine." is 4 > 2 tokens: no overlap

  // Without a title there is no prefix.
  doc.title = "";
  opt.overlap_tokens = 0;
  opt.max_tokens = 5;
  p = cocom::ingest::chunk_document(doc, opt, count_words);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].text, "One two three. Four five.");
  EXPECT_EQ(p[1].text, "Six seven eight nine. Ten.");
}

TEST(Chunker, LongSentenceSplitsAtWords) {
  Document doc;
  doc.text = "a b c d e f g h i j. k";
  ChunkOptions opt;
  opt.max_tokens = 3;
  auto p = cocom::ingest::chunk_document(doc, opt, count_words);
  std::vector<std::string> texts;
  for (const auto& x : p) texts.push_back(x.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"a b c", "d e f", "g h i", "j. k"}));
}

TEST(Chunker, OverlapNeverRepeatsWholeChunk) {
  Document doc;
  doc.title = "T";
  doc.text = "A b. C d. E f. G h. I j. K l.";
  ChunkOptions opt;
  opt.max_tokens = 5;        // two sentences per chunk
  opt.overlap_tokens = 100;  // as much as allowed
  auto p = cocom::ingest::chunk_document(doc, opt, count_words);
  std::vector<std::string> texts;
  for (const auto& x : p) texts.push_back(x.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"T. A b. C d.", "T. C d. E f.", "T. E f. G h.",
                                             "T. G h. I j.", "T. I j. K l."}));
}

TEST(Chunker, HardSplitsLongWordOnUtf8Boundaries) {
  std::string word;
  const char* chars[] = {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "x"};
  for (int i = 0; i < 1000; ++i) word += chars[i % 4];
  Document doc;
  doc.title = "W";
  doc.text = "  start " + word + " end.";
  ChunkOptions opt;
  opt.max_tokens = 100;
  auto p = cocom::ingest::chunk_document(doc, opt, count_chars);
  ASSERT_GE(p.size(), 10u);
  std::string joined;
  for (const auto& x : p) {
    EXPECT_LE(count_chars(x.text), 100);
    std::string t = x.text;
    EXPECT_EQ(cocom::utf8::repair(&t), 0u) << "passage " << x.index << " breaks UTF-8";
    ASSERT_EQ(x.text.substr(0, 3), "W. ");
    std::string span = doc.text.substr(x.char_begin, x.char_end - x.char_begin);
    EXPECT_EQ(non_ws(x.text.substr(3)), non_ws(span));
    joined += span;
  }
  EXPECT_EQ(non_ws(joined), non_ws(doc.text));
  EXPECT_EQ(p.front().char_begin, 2);
}

TEST(Chunker, CoverageAndDeterminism) {
  // Pseudo-random text: words of varying length, sentence ends, paragraph breaks, odd spacing.
  uint32_t state = 12345;
  auto rnd = [&](uint32_t n) {
    state = state * 1664525u + 1013904223u;
    return (state >> 8) % n;
  };
  Document doc;
  doc.title = "Some Title";
  for (int w = 0; w < 3000; ++w) {
    int len = 1 + static_cast<int>(rnd(8));
    if (rnd(200) == 0) len = 300;  // an occasional very long word
    for (int k = 0; k < len; ++k) doc.text.push_back(static_cast<char>('a' + rnd(26)));
    uint32_t r = rnd(20);
    if (r == 0) {
      doc.text += ".\n\n";
    } else if (r == 1) {
      doc.text += "! ";
    } else if (r == 2) {
      doc.text += "\n";
    } else if (r == 3) {
      doc.text += "  \t ";
    } else {
      doc.text += " ";
    }
  }
  // Tokenizer-like counter: one token per 4 bytes of each word, at least one.
  auto counter = [](const std::string& s) {
    int64_t n = 0, run = 0;
    for (char c : s) {
      if (c == ' ') {
        n += (run + 3) / 4;
        run = 0;
      } else {
        ++run;
      }
    }
    return n + (run + 3) / 4;
  };
  for (int64_t max_tokens : {8, 16, 128}) {
    for (int64_t overlap : {0, 5}) {
      ChunkOptions opt;
      opt.max_tokens = max_tokens;
      opt.overlap_tokens = overlap;
      auto p = cocom::ingest::chunk_document(doc, opt, counter);
      auto again = cocom::ingest::chunk_document(doc, opt, counter);
      ASSERT_EQ(p.size(), again.size());
      ASSERT_FALSE(p.empty());
      std::string joined;
      int64_t prev_begin = -1, prev_end = 0;
      for (size_t i = 0; i < p.size(); ++i) {
        EXPECT_EQ(p[i].text, again[i].text);
        EXPECT_EQ(p[i].char_begin, again[i].char_begin);
        ASSERT_LE(counter(p[i].text), max_tokens);
        ASSERT_GT(p[i].char_begin, prev_begin) << "progress";
        if (overlap == 0) {
          ASSERT_GE(p[i].char_begin, prev_end);
          joined += doc.text.substr(p[i].char_begin, p[i].char_end - p[i].char_begin);
        }
        prev_begin = p[i].char_begin;
        prev_end = p[i].char_end;
      }
      EXPECT_EQ(prev_end, static_cast<int64_t>(doc.text.find_last_not_of(" \t\n") + 1));
      if (overlap == 0) {
        EXPECT_EQ(non_ws(joined), non_ws(doc.text));
      }
    }
  }
}

TEST(Chunker, WhitespaceOnlyAndBadOptions) {
  Document doc;
  doc.text = " \n\n\t  ";
  EXPECT_TRUE(cocom::ingest::chunk_document(doc, {}, count_words).empty());
  doc.text = "x";
  ChunkOptions opt;
  opt.max_tokens = 0;
  EXPECT_THROW(cocom::ingest::chunk_document(doc, opt, count_words), cocom::Error);
}

TEST(ContentHash, Fnv1a) {
  Document d;
  EXPECT_EQ(cocom::ingest::content_hash(d), "af63bd4c8601b7df");  // FNV-1a 64 of one NUL byte
  Document a, b;
  a.title = "a";
  b.text = "a";
  EXPECT_NE(cocom::ingest::content_hash(a), cocom::ingest::content_hash(b));
  EXPECT_EQ(cocom::ingest::content_hash(a).size(), 16u);
  a.id = "ignored";
  a.meta_json = "{\"x\":1}";
  Document a2;
  a2.title = "a";
  EXPECT_EQ(cocom::ingest::content_hash(a), cocom::ingest::content_hash(a2));
}
