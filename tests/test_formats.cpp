// The readers typed by content or container: libmagic for files without a known extension,
// .gz/.bz2/.xz, .rst/.org/.tex/.csv, .docx/.odt/.epub, and the walker's store/hidden rules. The
// fixtures are built here (libarchive's writer), with hand-written expected texts; every
// hostile input (truncated, bombs, entity expansion, wrong magic, invalid UTF-8, empty) must
// give a clear skip reason and never a crash.
#include <archive.h>
#include <archive_entry.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/utf8.h"
#include "ingest/documents.h"
#include "tests/ingest_test_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using cocom::ingest::Document;
using cocom::ingest::ReadOptions;
using cocom::ingest::ReadResult;
using cocom::ingest::UnpackLimits;
using cocom::test::make_temp_dir;
using cocom::test::write_bytes;

namespace {

using Entries = std::vector<std::pair<std::string, std::string>>;

// A zip archive of `entries` (deflated unless `store`), written by libarchive.
std::string make_zip(const Entries& entries, bool store = false) {
  size_t cap = size_t{1} << 20;
  for (const auto& e : entries) cap += e.second.size() + 1024;
  std::vector<char> buf(cap);
  size_t used = 0;
  archive* a = archive_write_new();
  archive_write_set_format_zip(a);
  if (store) archive_write_set_format_option(a, "zip", "compression", "store");
  EXPECT_EQ(archive_write_open_memory(a, buf.data(), buf.size(), &used), ARCHIVE_OK);
  for (const auto& [name, data] : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK) << archive_error_string(a);
    EXPECT_EQ(archive_write_data(a, data.data(), data.size()),
              static_cast<la_ssize_t>(data.size()));
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buf.data(), used);
}

// `data` compressed with a libarchive filter (gzip, bzip2, xz) as a raw stream.
std::string compress(const std::string& data, int filter) {
  std::vector<char> buf(data.size() + (size_t{1} << 20));
  size_t used = 0;
  archive* a = archive_write_new();
  archive_write_add_filter(a, filter);
  archive_write_set_format_raw(a);
  archive_write_set_bytes_in_last_block(a, 1);
  EXPECT_EQ(archive_write_open_memory(a, buf.data(), buf.size(), &used), ARCHIVE_OK);
  archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, "data");
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
  EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK) << archive_error_string(a);
  if (!data.empty()) archive_write_data(a, data.data(), data.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buf.data(), used);
}

std::string gz(const std::string& s) { return compress(s, ARCHIVE_FILTER_GZIP); }

// A ustar archive holding one file.
std::string make_tar(const std::string& name, const std::string& data) {
  std::vector<char> buf(data.size() + (size_t{1} << 16));
  size_t used = 0;
  archive* a = archive_write_new();
  archive_write_set_format_ustar(a);
  EXPECT_EQ(archive_write_open_memory(a, buf.data(), buf.size(), &used), ARCHIVE_OK);
  archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
  EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK) << archive_error_string(a);
  archive_write_data(a, data.data(), data.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buf.data(), used);
}

std::string trim_newlines(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

using cocom::test::find_doc;
using cocom::test::find_skip;

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// --- docx / odt / epub fixtures ----------------------------------------------------------------

const char* kW = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"";

std::string docx_body(const std::string& paragraphs) {
  return std::string(
             "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n"
             "<w:document ") +
         kW + "><w:body>" + paragraphs + "</w:body></w:document>";
}

Entries docx_entries(const std::string& document_xml, const std::string& title) {
  return {
      {"[Content_Types].xml",
       "<?xml version=\"1.0\"?><Types "
       "xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\"/>"},
      {"_rels/.rels",
       "<?xml version=\"1.0\"?><Relationships "
       "xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">"
       "<Relationship Id=\"rId1\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/"
       "relationships/officeDocument\" Target=\"word/document.xml\"/></Relationships>"},
      {"word/document.xml", document_xml},
      {"docProps/core.xml",
       "<?xml version=\"1.0\"?><cp:coreProperties "
       "xmlns:cp=\"http://schemas.openxmlformats.org/package/2006/metadata/core-properties\" "
       "xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><dc:title>" +
           title + "</dc:title></cp:coreProperties>"},
  };
}

std::string odt(const std::string& body, const std::string& title,
                const std::string& mimetype = "application/vnd.oasis.opendocument.text") {
  const std::string ns =
      "xmlns:office=\"urn:oasis:names:tc:opendocument:xmlns:office:1.0\" "
      "xmlns:text=\"urn:oasis:names:tc:opendocument:xmlns:text:1.0\" "
      "xmlns:dc=\"http://purl.org/dc/elements/1.1/\"";
  return make_zip({{"mimetype", mimetype},
                   {"content.xml", "<?xml version=\"1.0\"?><office:document-content " + ns +
                                       "><office:body><office:text>" + body +
                                       "</office:text></office:body></office:document-content>"},
                   {"meta.xml", "<?xml version=\"1.0\"?><office:document-meta " + ns +
                                    "><office:meta><dc:title>" + title +
                                    "</dc:title></office:meta></office:document-meta>"}},
                  true);
}

std::string xhtml(const std::string& title, const std::string& body) {
  return "<?xml version=\"1.0\" encoding=\"utf-8\"?><!DOCTYPE html><html "
         "xmlns=\"http://www.w3.org/1999/xhtml\"><head><title>" +
         title + "</title></head><body>" + body + "</body></html>";
}

Entries epub_entries(const std::string& title) {
  return {
      {"mimetype", "application/epub+zip"},
      {"META-INF/container.xml",
       "<?xml version=\"1.0\"?><container version=\"1.0\" "
       "xmlns=\"urn:oasis:names:tc:opendocument:xmlns:container\"><rootfiles><rootfile "
       "full-path=\"OEBPS/content.opf\" media-type=\"application/oebps-package+xml\"/>"
       "</rootfiles></container>"},
      {"OEBPS/content.opf",
       "<?xml version=\"1.0\"?><package xmlns=\"http://www.idpf.org/2007/opf\" version=\"3.0\">"
       "<metadata xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><dc:title>" +
           title +
           "</dc:title></metadata><manifest>"
           "<item id=\"c1\" href=\"text/one.xhtml\" media-type=\"application/xhtml+xml\"/>"
           "<item id=\"c2\" href=\"text/chapter%20two.xhtml\" "
           "media-type=\"application/xhtml+xml\"/>"
           "<item id=\"img\" href=\"images/x.png\" media-type=\"image/png\"/>"
           "</manifest><spine><itemref idref=\"c2\"/><itemref idref=\"c1\"/>"
           "<itemref idref=\"missing\"/></spine></package>"},
      {"OEBPS/text/one.xhtml", xhtml("One", "<h1>Chapter One</h1><p>First &amp; last.</p>")},
      {"OEBPS/text/chapter two.xhtml", xhtml("Two", "<h1>Chapter Two</h1><p>Read first.</p>")},
      {"OEBPS/images/x.png", std::string("\x89PNG\r\n\x1a\n", 8)},
  };
}

const std::string kBillionLaughs =
    "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n"
    " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
    " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
    " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
    " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
    " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
    " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
    " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
    " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
    " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
    "]>\n";

}  // namespace

// --- types by content ----------------------------------------------------------------------

TEST(Formats, FilesWithoutAKnownExtensionAreTypedByContent) {
  std::string dir = make_temp_dir("fmt-magic");
  write_bytes(dir + "/README", "Read me first.\nSecond line.\n");
  write_bytes(dir + "/COPYING", "Copyright \xA9 2024 Jos\xE9 M\xFCller.\n");  // Latin-1
  write_bytes(dir + "/NEWS.Debian", "foo (1.0) unstable; urgency=low\n\n  * New release.\n");
  write_bytes(dir + "/AUTHORS", "");
  write_bytes(dir + "/page",
              "<!DOCTYPE html>\n<html><head><title>A Page</title></head><body>"
              "<p>Hello from HTML.</p></body></html>\n");
  write_bytes(dir + "/logo", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06"
                                         "\0\0\0\x1f\x15\xc4\x89",
                                         33));
  write_bytes(dir + "/wide", std::string("\xff\xfeH\0i\0 \0t\0h\0e\0r\0e\0\n\0", 20));  // UTF-16LE
  write_bytes(dir + "/figure", "%!PS-Adobe-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n");
  write_bytes(dir + "/LICENSE.notes",
              "Permission is hereby granted, free of charge, to any person.\n");
  ReadResult r = cocom::ingest::read_paths({dir});

  const Document* readme = find_doc(r, dir + "/README");
  ASSERT_TRUE(readme);
  EXPECT_EQ(readme->text, "Read me first.\nSecond line.\n");
  EXPECT_EQ(readme->title, "README");
  const Document* copying = find_doc(r, dir + "/COPYING");
  ASSERT_TRUE(copying);
  EXPECT_EQ(copying->text, "Copyright \xC2\xA9 2024 Jos\xC3\xA9 M\xC3\xBCller.\n");  // as UTF-8
  const Document* news = find_doc(r, dir + "/NEWS.Debian");
  ASSERT_TRUE(news);
  EXPECT_EQ(news->title, "NEWS");
  EXPECT_EQ(news->text, "foo (1.0) unstable; urgency=low\n\n  * New release.\n");
  const Document* authors = find_doc(r, dir + "/AUTHORS");
  ASSERT_TRUE(authors);
  EXPECT_EQ(authors->text, "");
  const Document* page = find_doc(r, dir + "/page");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->title, "A Page");
  EXPECT_EQ(page->text, "Hello from HTML.");
  ASSERT_TRUE(find_doc(r, dir + "/LICENSE.notes"));
  EXPECT_EQ(find_skip(r, dir + "/logo"), "binary file (image/png)");
  EXPECT_TRUE(has(find_skip(r, dir + "/wide"), "text in utf-16le")) << find_skip(r, dir + "/wide");
  EXPECT_EQ(find_skip(r, dir + "/figure"),
            "not a document format read as text (application/postscript)");
  EXPECT_EQ(r.skipped.size(), 3u);
  EXPECT_EQ(r.formats, (std::map<std::string, int64_t>{{"html", 1}, {"text", 5}}));
  fs::remove_all(dir);
}

// --- compressed files ----------------------------------------------------------------------

TEST(Formats, CompressedFilesAreReadByTheirInnerName) {
  std::string dir = make_temp_dir("fmt-gz");
  write_bytes(dir + "/changelog.Debian.gz",
              gz("pkg (2.0-1) unstable; urgency=medium\n\n  * Fixed the frobnicator.\n"));
  write_bytes(dir + "/guide.md.gz", gz("# The Guide\n\nRead *this* first.\n"));
  write_bytes(dir + "/notes.txt.bz2", compress("Bzip2 notes.\n", ARCHIVE_FILTER_BZIP2));
  write_bytes(dir + "/notes.txt.xz", compress("Xz notes.\n", ARCHIVE_FILTER_XZ));
  write_bytes(dir + "/empty.txt.gz", gz(""));
  write_bytes(dir + "/archive.tgz", gz(make_tar("x.txt", "inside a tar")));
  write_bytes(dir + "/double.txt.gz.gz", gz(gz("inner")));
  write_bytes(dir + "/data.jsonl.gz", gz("{\"id\": \"j1\", \"text\": \"From gzip jsonl.\"}\n"));
  ReadResult r = cocom::ingest::read_paths({dir});

  const Document* cl = find_doc(r, dir + "/changelog.Debian.gz");
  ASSERT_TRUE(cl);
  EXPECT_EQ(cl->title, "changelog");  // the stem of the inner name "changelog.Debian"
  EXPECT_EQ(cl->text, "pkg (2.0-1) unstable; urgency=medium\n\n  * Fixed the frobnicator.\n");
  const Document* guide = find_doc(r, dir + "/guide.md.gz");
  ASSERT_TRUE(guide);
  EXPECT_EQ(guide->title, "The Guide");
  EXPECT_EQ(guide->text, "Read this first.");
  const Document* bz = find_doc(r, dir + "/notes.txt.bz2");
  ASSERT_TRUE(bz);
  EXPECT_EQ(bz->text, "Bzip2 notes.\n");
  EXPECT_EQ(bz->title, "notes");
  const Document* xz = find_doc(r, dir + "/notes.txt.xz");
  ASSERT_TRUE(xz);
  EXPECT_EQ(xz->text, "Xz notes.\n");
  const Document* empty = find_doc(r, dir + "/empty.txt.gz");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->text, "");
  ASSERT_TRUE(find_doc(r, "j1"));
  EXPECT_EQ(find_doc(r, "j1")->text, "From gzip jsonl.");
  EXPECT_EQ(find_skip(r, dir + "/double.txt.gz.gz"),
            "compressed data inside gzip data (only one layer is unpacked)");
  EXPECT_EQ(find_skip(r, dir + "/archive.tgz"), "binary file (application/x-tar) inside gzip data");
  EXPECT_EQ(r.formats, (std::map<std::string, int64_t>{{"jsonl (gzip)", 1},
                                                       {"markdown (gzip)", 1},
                                                       {"text (bzip2)", 1},
                                                       {"text (gzip)", 2},
                                                       {"text (xz)", 1}}));
  fs::remove_all(dir);
}

TEST(Formats, HostileCompressedFilesAreSkippedWithTheReason) {
  std::string dir = make_temp_dir("fmt-gz-bad");
  const std::string good = gz(std::string(4000, 'a') + "\n");
  write_bytes(dir + "/truncated.txt.gz", good.substr(0, good.size() / 2));
  write_bytes(dir + "/header-only.gz", good.substr(0, 10));
  write_bytes(dir + "/plain.txt.gz", "this is not compressed at all\n");  // wrong magic
  write_bytes(dir + "/empty.gz", "");
  write_bytes(dir + "/bomb.txt.gz", gz(std::string(size_t{3} << 20, '\0')));
  write_bytes(dir + "/bomb.txt.xz", compress(std::string(size_t{3} << 20, 'z'), ARCHIVE_FILTER_XZ));
  write_bytes(dir + "/latin.txt.gz",
              gz("caf\xE9\n"));  // a known inner type: repaired, not converted
  ReadOptions opt;
  opt.max_unpacked_bytes = int64_t{1} << 20;
  ReadResult r = cocom::ingest::read_paths({dir}, opt);

  EXPECT_TRUE(has(find_skip(r, dir + "/truncated.txt.gz"), "truncated"))
      << find_skip(r, dir + "/truncated.txt.gz");
  EXPECT_TRUE(has(find_skip(r, dir + "/truncated.txt.gz"), dir + "/truncated.txt.gz"));
  EXPECT_NE(find_skip(r, dir + "/header-only.gz"), "<not skipped>");
  EXPECT_EQ(find_skip(r, dir + "/plain.txt.gz"),
            "cannot read " + dir + "/plain.txt.gz: not gzip, bzip2 or xz data");
  EXPECT_EQ(find_skip(r, dir + "/empty.gz"),
            "cannot read " + dir + "/empty.gz: not gzip, bzip2 or xz data");
  EXPECT_EQ(find_skip(r, dir + "/bomb.txt.gz"),
            "cannot read " + dir +
                "/bomb.txt.gz: it decompresses to more than max_unpacked_bytes (1048576) bytes");
  EXPECT_TRUE(has(find_skip(r, dir + "/bomb.txt.xz"), "max_unpacked_bytes (1048576)"));
  const Document* latin = find_doc(r, dir + "/latin.txt.gz");
  ASSERT_TRUE(latin);
  EXPECT_EQ(latin->text, "caf\xEF\xBF\xBD\n");
  EXPECT_EQ(r.documents.size(), 1u);

  // The limit applies through read_paths' options; 0 = no limit; negative is refused.
  opt.max_unpacked_bytes = 0;
  r = cocom::ingest::read_paths({dir + "/bomb.txt.gz"}, opt);
  EXPECT_EQ(find_skip(r, dir + "/bomb.txt.gz"), "binary file");  // unpacked whole: NULs
  opt.max_unpacked_bytes = -1;
  EXPECT_THROW(cocom::ingest::read_paths({dir}, opt), cocom::Error);
  fs::remove_all(dir);
}

// --- light markup ----------------------------------------------------------------------------

TEST(Formats, RstOrgTexAndCsvAreReadAsText) {
  std::string title;
  EXPECT_EQ(cocom::ingest::rst_to_text("=========\nThe Title\n=========\n\n"
                                       "Intro with ``code`` and a `link <http://x>`_.\n\n"
                                       "Usage\n-----\n\n.. note::\n\n   See :ref:`usage` now::\n\n"
                                       ".. _target:\n\n----\n\nEnd.\n",
                                       &title),
            "The Title\n\n\nIntro with code and a link.\n\nUsage\n\n\n\n   See usage now:\n\n\n\n"
            "End.\n\n");
  EXPECT_EQ(title, "The Title");

  EXPECT_EQ(cocom::ingest::org_to_text("#+TITLE: Org Notes\n#+AUTHOR: me\n* TODO First heading\n"
                                       ":PROPERTIES:\n:ID: 42\n:END:\nSee [[https://x][the site]] "
                                       "and [[file:y]].\n# a comment\n#+BEGIN_SRC sh\nls\n"
                                       "#+END_SRC\n** Sub\n",
                                       &title),
            "\nTODO First heading\nSee the site and file:y.\nls\n\nSub\n\n");
  EXPECT_EQ(title, "Org Notes");
  cocom::ingest::org_to_text("* Only a heading\ntext\n", &title);
  EXPECT_EQ(title, "Only a heading");

  EXPECT_EQ(cocom::ingest::tex_to_text(
                "\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n"
                "\\title{A \\emph{Tex} Paper}\n\\begin{document}\n\\maketitle\n"
                "\\section{Intro}\\label{sec:intro}\nWe show~\\cite{x} that $a+b$ holds 50\\% "
                "of the time. % a comment\nNext line.\\\\\n\\end{document}\ntrailing",
                &title),
            "\n\n\n\nIntro\nWe show  that a+b holds 50% of the time. Next line.\n\n");
  EXPECT_EQ(title, "A Tex Paper");
  // Unbalanced braces and a lone backslash at the end never read past the input.
  EXPECT_EQ(cocom::ingest::tex_to_text("\\title{open\n\\textbf{x", &title), "open\nx");
  EXPECT_EQ(title, "open x");
  EXPECT_EQ(cocom::ingest::tex_to_text("a\\", &title), "a");
  // A backslash before a multi-byte character drops the backslash only (found by fuzz_formats).
  EXPECT_EQ(cocom::ingest::tex_to_text("x\\\xC3\xA9y", &title), "x\xC3\xA9y");

  // Empty input, invalid UTF-8 (repaired with a warning by read_paths, like any text file).
  for (auto* f :
       {&cocom::ingest::rst_to_text, &cocom::ingest::org_to_text, &cocom::ingest::tex_to_text}) {
    title = "x";
    EXPECT_EQ(trim_newlines((*f)("", &title)), "");
    EXPECT_EQ(title, "");
  }

  std::string dir = make_temp_dir("fmt-markup");
  write_bytes(dir + "/e.tex", "caf\xE9 \\emph{x}\n");
  write_bytes(dir + "/a.rst", "Title\n=====\n\nBody.\n");
  write_bytes(dir + "/b.org", "#+title: B\nBody.\n");
  write_bytes(dir + "/c.tex", "\\title{C}\nBody.\n");
  write_bytes(dir + "/d.csv", "name,size\nfoo,1\n");
  ReadResult r = cocom::ingest::read_paths({dir});
  ASSERT_EQ(r.documents.size(), 5u);
  EXPECT_EQ(r.documents[0].title, "Title");
  EXPECT_EQ(r.documents[1].title, "B");
  EXPECT_EQ(r.documents[2].title, "C");
  EXPECT_EQ(r.documents[3].title, "d");
  EXPECT_EQ(r.documents[3].text, "name,size\nfoo,1\n");
  EXPECT_EQ(r.documents[4].text, "caf\xEF\xBF\xBD x\n");
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0], dir + "/e.tex: replaced 1 invalid UTF-8 sequence(s) with U+FFFD");
  EXPECT_EQ(r.formats,
            (std::map<std::string, int64_t>{{"csv", 1}, {"org", 1}, {"rst", 1}, {"tex", 2}}));
  fs::remove_all(dir);
}

// --- docx / odt / epub -----------------------------------------------------------------------

TEST(Formats, DocxOdtAndEpubWithTheirTitles) {
  std::string dir = make_temp_dir("fmt-office");
  const std::string doc_xml = docx_body(
      "<w:p><w:pPr><w:pStyle w:val=\"Heading1\"/></w:pPr><w:r><w:t>Release notes</w:t></w:r>"
      "</w:p><w:p><w:r><w:t xml:space=\"preserve\">Tabs </w:t></w:r><w:r><w:tab/><w:t>and"
      "</w:t><w:br/><w:t>breaks &amp; more.</w:t></w:r><w:del><w:r><w:delText>gone</w:delText>"
      "</w:r></w:del></w:p><w:p><mc:AlternateContent xmlns:mc=\"urn:mc\"><mc:Choice><w:t>Box"
      "</w:t></mc:Choice><mc:Fallback><w:t>Box again</w:t></mc:Fallback></mc:AlternateContent>"
      "</w:p>");
  write_bytes(dir + "/notes.docx", make_zip(docx_entries(doc_xml, "Word Title")));
  write_bytes(dir + "/letter.odt",
              odt("<text:h text:outline-level=\"1\">Heading</text:h><text:p>One<text:s "
                  "text:c=\"3\"/>two<text:tab/>three<text:line-break/>four"
                  "<office:annotation><text:p>a comment</text:p></office:annotation></text:p>",
                  "Odt Title"));
  write_bytes(dir + "/book.epub", make_zip(epub_entries("The Book")));
  write_bytes(dir + "/untitled.docx", make_zip(docx_entries(doc_xml, "")));
  // Without an extension the container is typed by content.
  write_bytes(dir + "/bookfile", make_zip(epub_entries("By Content"), true));
  ReadResult r = cocom::ingest::read_paths({dir});
  for (const auto& s : r.skipped) ADD_FAILURE() << s.path << ": " << s.reason;

  const Document* docx = find_doc(r, dir + "/notes.docx");
  ASSERT_TRUE(docx);
  EXPECT_EQ(docx->title, "Word Title");
  EXPECT_EQ(docx->text, "Release notes\nTabs \tand\nbreaks & more.\nBox\n");
  const Document* odt_doc = find_doc(r, dir + "/letter.odt");
  ASSERT_TRUE(odt_doc);
  EXPECT_EQ(odt_doc->title, "Odt Title");
  EXPECT_EQ(odt_doc->text, "Heading\n\nOne   two\tthree\nfour\n");
  const Document* epub = find_doc(r, dir + "/book.epub");
  ASSERT_TRUE(epub);
  EXPECT_EQ(epub->title, "The Book");
  EXPECT_EQ(epub->text,
            "Chapter Two\n\nRead first.\n\nChapter One\n\nFirst & last.");  // spine order
  const Document* untitled = find_doc(r, dir + "/untitled.docx");
  ASSERT_TRUE(untitled);
  EXPECT_EQ(untitled->title, "untitled");
  const Document* by_content = find_doc(r, dir + "/bookfile");
  ASSERT_TRUE(by_content) << find_skip(r, dir + "/bookfile");
  EXPECT_EQ(by_content->title, "By Content");
  EXPECT_EQ(r.formats["docx"], 2);
  EXPECT_EQ(r.formats["odt"], 1);
  EXPECT_EQ(r.formats["epub"], 2);
  fs::remove_all(dir);
}

TEST(Formats, HostileContainersGiveClearReasons) {
  std::string dir = make_temp_dir("fmt-office-bad");
  const std::string ok_xml = docx_body("<w:p><w:r><w:t>fine</w:t></w:r></w:p>");
  const std::string good = make_zip(docx_entries(ok_xml, "T"));
  // Billion laughs and an external entity, in the body and in the metadata.
  write_bytes(dir + "/laughs.docx",
              make_zip(docx_entries(kBillionLaughs + "<w:document " + kW +
                                        "><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p>"
                                        "</w:body></w:document>",
                                    "T")));
  write_bytes(dir + "/xxe.docx",
              make_zip(docx_entries("<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY x SYSTEM "
                                    "\"file:///etc/passwd\">]><w:document " +
                                        std::string(kW) +
                                        "><w:body><w:p><w:r><w:t>&x;</w:t></w:r></w:p>"
                                        "</w:body></w:document>",
                                    "T")));
  // The same in UTF-16 (the bytes "<!ENTITY" do not appear).
  std::string utf16 = "\xff\xfe";
  for (char c : kBillionLaughs.substr(22) + "<w:document " + kW +
                    "><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>") {
    utf16 += c;
    utf16 += '\0';
  }
  write_bytes(dir + "/laughs16.docx", make_zip(docx_entries(utf16, "T")));
  Entries meta_laughs = docx_entries(ok_xml, "T");
  meta_laughs[3].second = kBillionLaughs + "<t>&lol9;</t>";
  write_bytes(dir + "/meta-laughs.docx", make_zip(meta_laughs));
  // An undefined entity, invalid UTF-8 in the body and in the title, deep nesting.
  write_bytes(dir + "/undefined.docx",
              make_zip(docx_entries(docx_body("<w:p><w:r><w:t>&nope;</w:t></w:r></w:p>"), "T")));
  write_bytes(
      dir + "/bad-utf8.docx",
      make_zip(docx_entries(docx_body("<w:p><w:r><w:t>bad \xC3 byte</w:t></w:r></w:p>"), "T")));
  write_bytes(dir + "/bad-title.docx", make_zip(docx_entries(ok_xml, "bad \xFF title")));
  std::string deep;
  for (int i = 0; i < 20000; ++i) deep += "<w:p>";
  for (int i = 0; i < 20000; ++i) deep += "</w:p>";
  write_bytes(dir + "/deep.docx", make_zip(docx_entries(docx_body(deep), "T")));
  // Truncated, empty, wrong magic, not the expected container.
  write_bytes(dir + "/truncated.docx", good.substr(0, good.size() / 2));
  write_bytes(dir + "/empty.docx", "");
  write_bytes(dir + "/plain.odt", "just text, not a zip\n");
  write_bytes(dir + "/bundle", make_zip({{"a.txt", "a"}, {"b.txt", "b"}}));
  write_bytes(dir + "/nobody.docx", make_zip({{"_rels/.rels", "<Relationships/>"}}));
  write_bytes(dir + "/sheet.odt",
              odt("<text:p>x</text:p>", "S", "application/vnd.oasis.opendocument.spreadsheet"));
  Entries no_opf = epub_entries("X");
  no_opf.erase(no_opf.begin() + 2);
  write_bytes(dir + "/no-opf.epub", make_zip(no_opf));
  Entries no_container = epub_entries("X");
  no_container.erase(no_container.begin() + 1);
  write_bytes(dir + "/no-container.epub", make_zip(no_container));
  // Zip bombs: one entry unpacking past the byte limit, and too many entries.
  write_bytes(
      dir + "/bomb.docx",
      make_zip(docx_entries(
          docx_body("<w:p><w:r><w:t>" + std::string(size_t{2} << 20, 'a') + "</w:t></w:r></w:p>"),
          "T")));
  Entries many = docx_entries(ok_xml, "T");
  for (int i = 0; i < 20; ++i) many.emplace_back("word/media/p" + std::to_string(i) + ".xml", "x");
  write_bytes(dir + "/many.docx", make_zip(many));

  // EPUB and ODT: truncated, empty, invalid UTF-8 in a chapter (repaired like HTML files).
  const std::string book = make_zip(epub_entries("B"));
  write_bytes(dir + "/truncated.epub", book.substr(0, book.size() * 2 / 3));
  write_bytes(dir + "/empty.epub", "");
  write_bytes(dir + "/truncated.odt", odt("<text:p>x</text:p>", "T").substr(0, 100));
  Entries bad_chapter = epub_entries("Bad Bytes");
  bad_chapter[3].second = xhtml("One", "<p>caf\xE9 \xF0\x9F</p>");
  write_bytes(dir + "/bad-chapter.epub", make_zip(bad_chapter));

  ReadOptions opt;
  opt.max_unpacked_bytes = int64_t{1} << 20;
  opt.max_archive_entries = 16;
  ReadResult r = cocom::ingest::read_paths({dir}, opt);
  auto reason = [&](const std::string& f) { return find_skip(r, dir + "/" + f); };
  for (const char* f : {"truncated.epub", "truncated.odt"}) {
    EXPECT_EQ(reason(f).rfind("cannot read " + dir + "/" + f + ": ", 0), 0u)
        << f << ": " << reason(f);
  }
  EXPECT_EQ(reason("empty.epub"), "cannot read " + dir + "/empty.epub: not a zip archive");
  const Document* bc = find_doc(r, dir + "/bad-chapter.epub");
  ASSERT_TRUE(bc);
  EXPECT_EQ(bc->title, "Bad Bytes");
  EXPECT_TRUE(cocom::utf8::is_valid(bc->text));
  EXPECT_TRUE(has(bc->text, "caf\xEF\xBF\xBD")) << bc->text;

  // In UTF-16 the bytes do not give the declaration away; libxml2's amplification guard (or
  // the DOCTYPE check, whichever comes first) stops it before anything is expanded.
  const std::string l16 = reason("laughs16.docx");
  EXPECT_EQ(l16.rfind("cannot read " + dir + "/laughs16.docx: word/document.xml ", 0), 0u) << l16;
  EXPECT_TRUE(has(l16, "declares XML entities") || has(l16, "entity reference loop")) << l16;
  for (const char* f : {"laughs.docx", "xxe.docx"}) {
    EXPECT_EQ(reason(f), "cannot read " + dir + "/" + f +
                             ": word/document.xml declares XML entities (refused: entity "
                             "expansion is not accepted)");
  }
  // Metadata that cannot be read costs the title only.
  const Document* ml = find_doc(r, dir + "/meta-laughs.docx");
  ASSERT_TRUE(ml);
  EXPECT_EQ(ml->title, "meta-laughs");
  EXPECT_EQ(ml->text, "fine\n");
  const Document* bt = find_doc(r, dir + "/bad-title.docx");
  ASSERT_TRUE(bt);
  EXPECT_EQ(bt->title, "bad-title");
  EXPECT_TRUE(has(reason("undefined.docx"), "word/document.xml is not well-formed XML"))
      << reason("undefined.docx");
  EXPECT_TRUE(has(reason("bad-utf8.docx"), "is not well-formed XML")) << reason("bad-utf8.docx");
  EXPECT_TRUE(has(reason("deep.docx"), "is not well-formed XML")) << reason("deep.docx");
  EXPECT_TRUE(has(reason("truncated.docx"), "cannot read " + dir + "/truncated.docx"))
      << reason("truncated.docx");
  EXPECT_TRUE(has(reason("empty.docx"), "not a zip archive")) << reason("empty.docx");
  EXPECT_TRUE(has(reason("plain.odt"), "not a zip archive")) << reason("plain.odt");
  EXPECT_EQ(reason("bundle"), "binary file (application/zip: not a .docx, .odt or .epub)");
  EXPECT_EQ(reason("nobody.docx"),
            "cannot read " + dir + "/nobody.docx: not a Word document (no word/document.xml)");
  EXPECT_EQ(reason("sheet.odt"), "cannot read " + dir +
                                     "/sheet.odt: not an OpenDocument text (mimetype "
                                     "application/vnd.oasis.opendocument.spreadsheet)");
  EXPECT_EQ(reason("no-opf.epub"), "cannot read " + dir +
                                       "/no-opf.epub: the EPUB package document "
                                       "OEBPS/content.opf is missing");
  EXPECT_EQ(reason("no-container.epub"),
            "cannot read " + dir + "/no-container.epub: not an EPUB (no META-INF/container.xml)");
  EXPECT_EQ(reason("bomb.docx"), "cannot read " + dir +
                                     "/bomb.docx: its content unpacks to more than "
                                     "max_unpacked_bytes (1048576) bytes");
  EXPECT_EQ(reason("many.docx"), "cannot read " + dir +
                                     "/many.docx: more than max_archive_entries (16) entries in "
                                     "the archive");
  EXPECT_EQ(r.documents.size(), 3u);  // meta-laughs, bad-title, bad-chapter
  fs::remove_all(dir);
}

// --- the walker ------------------------------------------------------------------------------

TEST(Formats, WalkerSkipsStoresHiddenEntriesAndSurvivesLoops) {
  std::string dir = make_temp_dir("fmt-walk");
  fs::create_directories(dir + "/docs/store");
  fs::create_directories(dir + "/docs/other-db");
  fs::create_directories(dir + "/docs/.git/objects");
  fs::create_directories(dir + "/.notes");
  write_bytes(dir + "/docs/a.txt", "visible");
  write_bytes(dir + "/docs/.hidden.txt", "hidden file");
  write_bytes(dir + "/docs/.git/config", "[core]\n");
  write_bytes(dir + "/.notes/n.md", "# Note\n");
  // A cocom store (RocksDB files + cocom-db.json) and another RocksDB database.
  for (const char* d : {"/docs/store", "/docs/other-db"}) {
    write_bytes(dir + d + "/CURRENT", "MANIFEST-000005\n");
    write_bytes(dir + d + "/IDENTITY", "0f7c1a2e-0000\n");
    write_bytes(dir + d + "/MANIFEST-000005", std::string("\0\x01\x02", 3));
    write_bytes(dir + d + "/000004.log", "plain looking log text");
    write_bytes(dir + d + "/OPTIONS-000007", "[Version]\n  rocksdb_version=7.8.3\n");
  }
  write_bytes(dir + "/docs/store/cocom-db.json", "{\"model\": \"m\"}");
  fs::create_directory_symlink(dir, dir + "/docs/up");  // a loop back to the root

  ReadResult r = cocom::ingest::read_paths({dir});
  std::vector<std::string> ids;
  for (const auto& d : r.documents) ids.push_back(d.id.substr(dir.size() + 1));
  EXPECT_EQ(ids, (std::vector<std::string>{"docs/a.txt"}));
  ASSERT_EQ(r.skipped.size(), 2u);
  EXPECT_EQ(find_skip(r, dir + "/docs/store"), "a cocom store (not read)");
  EXPECT_EQ(find_skip(r, dir + "/docs/other-db"), "a RocksDB database (not read)");

  // A store named as a root is refused the same way.
  r = cocom::ingest::read_paths({dir + "/docs/store"});
  EXPECT_TRUE(r.documents.empty());
  EXPECT_EQ(find_skip(r, dir + "/docs/store"), "a cocom store (not read)");

  // --include names hidden entries with their leading dot written out.
  ReadOptions opt;
  opt.include = {".notes/*.md", ".hidden.txt"};
  r = cocom::ingest::read_paths({dir}, opt);
  ids.clear();
  for (const auto& d : r.documents) ids.push_back(d.id.substr(dir.size() + 1));
  EXPECT_EQ(ids, (std::vector<std::string>{".notes/n.md", "docs/.hidden.txt"}));
  opt.include = {"*"};  // '*' does not name hidden entries
  r = cocom::ingest::read_paths({dir}, opt);
  EXPECT_EQ(r.documents.size(), 1u);
  // ".*" names every hidden entry; files still have to match a glob ("docs/.git/config" does
  // not match ".*": globs match the path relative to the root, or the base name).
  opt.include = {".*"};
  r = cocom::ingest::read_paths({dir}, opt);
  ids.clear();
  for (const auto& d : r.documents) ids.push_back(d.id.substr(dir.size() + 1));
  EXPECT_EQ(ids, (std::vector<std::string>{".notes/n.md", "docs/.hidden.txt"}));
  opt.include = {".git", "config"};
  r = cocom::ingest::read_paths({dir}, opt);
  ids.clear();
  for (const auto& d : r.documents) ids.push_back(d.id.substr(dir.size() + 1));
  EXPECT_EQ(ids, (std::vector<std::string>{"docs/.git/config"}));

  // A hidden file named explicitly is read.
  r = cocom::ingest::read_paths({dir + "/docs/.hidden.txt"});
  ASSERT_EQ(r.documents.size(), 1u);
  EXPECT_EQ(r.documents[0].text, "hidden file");
  fs::remove_all(dir);
}

// --- the single-format readers directly ----------------------------------------------------

TEST(Formats, DecompressAndContainerReadersThrowNamingTheInput) {
  try {
    cocom::ingest::decompress(gz(std::string(5000, 'x')), "mem.gz", 100);
    FAIL() << "expected cocom::Error";
  } catch (const cocom::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot read mem.gz: it decompresses to more than max_unpacked_bytes (100) bytes");
  }
  EXPECT_EQ(cocom::ingest::decompress(gz("abc"), "mem.gz", 3), "abc");  // exactly at the limit
  std::string title;
  UnpackLimits lim;
  EXPECT_THROW(cocom::ingest::docx_to_text("PK\x03\x04", "x.docx", lim, &title), cocom::Error);
  EXPECT_THROW(cocom::ingest::epub_to_text("", "x.epub", lim, 256, &title), cocom::Error);
  EXPECT_EQ(cocom::ingest::odt_to_text(odt("<text:p>Hi</text:p>", "T"), "x.odt", lim, &title),
            "Hi\n");
  EXPECT_EQ(title, "T");
}
