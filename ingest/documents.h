// Reading documents for ingestion and cutting them into passages. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cocom::ingest {

struct Document {
  std::string id;  // deterministic: the jsonl "id" field, else the source path
  std::string
      title;  // jsonl "title", HTML <title>, Markdown first heading, PDF title, else file stem
  std::string text;              // plain text (markup removed), valid UTF-8
  std::string source;            // the file it came from (absolute path)
  std::string meta_json = "{}";  // jsonl fields other than id/title/text; file size/mtime otherwise
};

// A file (or line N of a jsonl file: path "FILE:N", or a directory that was not walked) that gave
// no document, and why: "binary file (image/png)", "invalid UTF-8", "unreadable: ...", "file too
// large: ...", "cannot read FILE: it decompresses to more than max_unpacked_bytes (N) bytes",
// "a cocom store (not read)".
struct SkippedFile {
  std::string path;
  std::string reason;
};

// Default limits of ReadOptions (see there).
constexpr int64_t kDefaultMaxFileBytes = int64_t{256} << 20;  // 256 MiB
constexpr int64_t kDefaultMaxNestingDepth = 256;
constexpr int64_t kDefaultMaxUnpackedBytes = int64_t{256} << 20;  // 256 MiB
constexpr int64_t kDefaultMaxArchiveEntries = 10000;

// Bounds on what a compressed file or a zip container (.docx .odt .epub) may unpack to: bytes
// decompressed in all (0 = no limit) and entries in the archive (0 = no limit). Past either,
// the file is skipped with a reason naming it and the limit.
struct UnpackLimits {
  int64_t max_bytes = kDefaultMaxUnpackedBytes;
  int64_t max_entries = kDefaultMaxArchiveEntries;
};

struct ReadOptions {
  // fnmatch globs on the path relative to the given root; empty = all supported. Hidden files
  // and directories (names starting with '.') under a walked directory are taken only when a
  // '/'-separated part of an include glob matches their name with the leading '.' written out
  // (FNM_PERIOD: ".*", ".github", ".notes/*.md" name them; "*" and "*.md" do not).
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  bool repair_utf8 =
      true;  // replace invalid sequences with U+FFFD (warning); false = skip the document
  // The id and source recorded for a file, from its absolute path; unset = the path itself.
  std::function<std::string(const std::string& path)> source_name;
  // A file larger than this (bytes, any format) is skipped before it is read, with a reason
  // naming the limit and the size; 0 = no limit, < 0 is an error.
  int64_t max_file_bytes = kDefaultMaxFileBytes;
  // Nesting bound for hostile input; must be >= 1 (read_paths throws otherwise). HTML: elements
  // nested deeper are flattened (their tags dropped, their text kept; a warning names the file
  // and the limit). jsonl: a line whose arrays/objects nest deeper is skipped ("FILE:N").
  // Markdown (md4c) needs no limit: md4c keeps nesting in arrays, not on the call stack, and
  // the reader keeps O(1) state, so any depth reads in linear time. Text has no nesting; PDF
  // nesting is bounded by poppler itself.
  int64_t max_nesting_depth = kDefaultMaxNestingDepth;
  // .gz/.bz2/.xz files and .docx/.odt/.epub containers: at most this many bytes unpacked per
  // file, at most this many archive entries (0 = no limit; < 0 is an error).
  int64_t max_unpacked_bytes = kDefaultMaxUnpackedBytes;
  int64_t max_archive_entries = kDefaultMaxArchiveEntries;
};

struct ReadResult {
  std::vector<Document> documents;
  std::vector<SkippedFile> skipped;
  std::vector<std::string> warnings;  // e.g. repaired UTF-8 in a document, bad jsonl line N
  // Files that gave documents, by the format they were read as: "text", "markdown", "html",
  // "pdf", "jsonl", "rst", "org", "tex", "csv", "docx", "odt", "epub"; a compressed file as
  // "FORMAT (gzip)" / "(bzip2)" / "(xz)".
  std::map<std::string, int64_t> formats;
};

// Reads files and directories (recursively, sorted, include/exclude globs). The extension picks
// the reader: .txt .text, .md .markdown, .html .htm .xhtml, .pdf, .jsonl, .rst, .org, .tex,
// .csv, .docx, .odt, .epub, and .gz .bz2 .xz (decompressed within max_unpacked_bytes; the inner
// name, "foo.md" of "foo.md.gz", picks the inner reader). A file without an extension or with
// another one is typed by its content (libmagic): text (UTF-8, ASCII or Latin-1, converted; not
// PostScript, SVG or RTF) is read as text, HTML, PDF, compressed data and the container formats by
// their readers, and anything else is skipped with its MIME type ("binary file (image/png)",
// "not a document format read as text (application/postscript)"). Directories holding a cocom store
// or any other RocksDB database are never walked into (one `skipped` entry names them), and hidden
// entries are skipped unless an include glob names them (see ReadOptions::include). One bad
// document never stops the batch: it is skipped or repaired with a reason. Throws cocom::Error only
// for a missing path or a bad limit. Details (see read.cpp): files under a directory are ordered by
// their path relative to it; globs (fnmatch, '*' crosses '/') are matched against that relative
// path and the base name, excluded directories are pruned, and globs do not filter files named
// explicitly. Symlinked directories are followed once (loops are cut by device/inode). Duplicate
// ids: the first document wins, later ones are dropped with a warning. A jsonl record without a
// "title" gets an empty title; a line's number (1-based) names it in warnings and skips
// ("path:N"): every jsonl line that yields no document (invalid JSON, not an object, no string
// "text", nested deeper than max_nesting_depth, invalid UTF-8 without repair) is one entry of
// `skipped`. Texts are normalised: CR LF / CR / FF -> LF, NUL and other C0 controls -> ' '.
// Throws cocom::Error when a given path does not exist, max_nesting_depth < 1 or
// max_file_bytes < 0.
ReadResult read_paths(const std::vector<std::string>& paths, const ReadOptions& opt = {});

// Single-format readers (exposed for tests); `path`/`name` is used in messages and as source.
// Light markup stripping (markup.cpp), linear, never fails: reStructuredText (adornment lines,
// explicit markup and inline roles/literals/references dropped; title: the first section title),
// Org (keywords, comments, drawers dropped, headings and links as text; title: #+TITLE, else the
// first heading), LaTeX (the document body, commands, comments, braces dropped, arguments of
// \label, \cite, \ref ... too; title: \title{...}).
std::string rst_to_text(const std::string& rst, std::string* title);
std::string org_to_text(const std::string& org, std::string* title);
std::string tex_to_text(const std::string& tex, std::string* title);
// gzip, bzip2 or xz data (recognised by its magic bytes) decompressed through libarchive;
// throws cocom::Error naming `name` for other data, damaged or truncated data, or output over
// max_bytes (0 = no limit).
std::string decompress(const std::string& data, const std::string& name, int64_t max_bytes);
// Containers through libarchive (zip) + libxml2 (office.cpp); throw cocom::Error naming `name`
// and the part or limit at fault. XML that declares entities is refused; titles: docx
// docProps/core.xml dc:title, odt meta.xml dc:title, epub the package's dc:title (chapters in
// spine order, read with the HTML reader at max_depth). A title that cannot be read is "".
std::string docx_to_text(const std::string& zip, const std::string& name, const UnpackLimits& lim,
                         std::string* title);
std::string odt_to_text(const std::string& zip, const std::string& name, const UnpackLimits& lim,
                        std::string* title);
std::string epub_to_text(const std::string& zip, const std::string& name, const UnpackLimits& lim,
                         int64_t max_depth, std::string* title);
// md4c (CommonMark, tables, task lists) in linear time; what the text keeps is listed in
// markdown.cpp. Ill-formed UTF-8 is repaired first; throws cocom::Error only for a document
// md4c cannot take (4 GiB or more) or when md4c fails (out of memory).
std::string markdown_to_text(const std::string& md, std::string* title);
// gumbo, in linear time: elements nested deeper than max_depth (>= 1) are flattened (see
// html.cpp); throws cocom::Error when max_depth < 1.
std::string html_to_text(const std::string& html, std::string* title,
                         int64_t max_depth = kDefaultMaxNestingDepth);
std::string pdf_to_text(const std::string& path,
                        std::string* title);  // poppler-cpp; throws on failure
// The same for a PDF held in memory (a .pdf.gz); `name` names it in errors.
std::string pdf_bytes_to_text(const std::string& bytes, const std::string& name,
                              std::string* title);

struct Passage {
  int64_t index = 0;
  std::string text;  // "Title. chunk" (the KILT passage form the models were trained on)
  int64_t char_begin = 0, char_end = 0;  // span of the chunk in Document::text
};

struct ChunkOptions {
  int64_t max_tokens = 128;  // compressor tokens per passage, title prefix included
  int64_t overlap_tokens = 0;
};

// Splits a document into passages whose "Title. chunk" text counts at most max_tokens with
// `count_tokens` (the compressor tokenizer), preferring sentence boundaries, then word
// boundaries; a single over-long word is hard-split. Deterministic.
// Sentences end at '.', '!' or '?' (plus closing quotes/brackets) followed by whitespace, and
// at blank lines. Passage text is "Title. " + the chunk with whitespace runs collapsed to one
// space; char_begin/char_end are byte offsets of the chunk in doc.text. Overlap: the next chunk
// starts with the last whole units (sentences, or pieces of a split sentence) of the previous
// chunk counting at most overlap_tokens, never the whole previous chunk. A title too long to
// leave room for any text is dropped from the passages. Throws cocom::Error when max_tokens
// <= 0, overlap_tokens < 0, or max_tokens cannot hold a single character.
std::vector<Passage> chunk_document(const Document& doc, const ChunkOptions& opt,
                                    const std::function<int64_t(const std::string&)>& count_tokens);

// Content hash (64-bit FNV-1a of title and text, hex) for change detection on re-ingest.
std::string content_hash(const Document& doc);

}  // namespace cocom::ingest
