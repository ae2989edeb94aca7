#include "storage/records.h"

#include "common/error.h"
#include "storage/bytes.h"

namespace cocom::storage::detail {

std::string encode_document(const DocumentRecord& d) {
  Writer w;
  w.u8(1);
  w.str(d.id);
  w.str(d.source);
  w.str(d.title);
  w.str(d.content_hash);
  w.str(d.meta_json);
  w.varint(d.passage_ids.size());
  for (uint64_t id : d.passage_ids) w.varint(id);
  return w.take();
}

DocumentRecord decode_document(const std::string& s, const std::string& what) {
  Reader r(s, what);
  if (r.u8() != 1) fail(what, ": record has an unknown version");
  DocumentRecord d;
  d.id = r.str();
  d.source = r.str();
  d.title = r.str();
  d.content_hash = r.str();
  d.meta_json = r.str();
  const uint64_t n = r.varint();
  if (n > s.size()) fail_corrupt(what, ": record is damaged (passage count ", n, ")");
  d.passage_ids.reserve(n);
  for (uint64_t i = 0; i < n; ++i) d.passage_ids.push_back(r.varint());
  r.finish();
  return d;
}

std::string encode_passage(const StoredPassage& p) {
  Writer w;
  w.u8(1);
  w.str(p.rec.doc_id);
  w.zz(p.rec.index);
  w.str(p.rec.text);
  w.zz(p.rec.char_begin);
  w.zz(p.rec.char_end);
  w.u8((p.has_embeddings ? 1 : 0) | (p.has_retriever ? 2 : 0));
  w.varint(p.length);
  w.varint(p.terms.size());
  for (const auto& t : p.terms) w.str(t);
  return w.take();
}

StoredPassage decode_passage(uint64_t id, const std::string& s, const std::string& what) {
  Reader r(s, what);
  if (r.u8() != 1) fail(what, ": record has an unknown version");
  StoredPassage p;
  p.rec.id = id;
  p.rec.doc_id = r.str();
  p.rec.index = r.zz();
  p.rec.text = r.str();
  p.rec.char_begin = r.zz();
  p.rec.char_end = r.zz();
  const uint8_t flags = r.u8();
  p.has_embeddings = flags & 1;
  p.has_retriever = flags & 2;
  p.length = r.varint();
  const uint64_t n = r.varint();
  if (n > s.size()) fail_corrupt(what, ": record is damaged (term count ", n, ")");
  p.terms.reserve(n);
  for (uint64_t i = 0; i < n; ++i) p.terms.push_back(r.str());
  r.finish();
  return p;
}

}  // namespace cocom::storage::detail
