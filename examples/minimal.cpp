// The smallest program embedding cocom: open (or create) a store, ingest a folder, ask.
//   example_minimal DB_DIR MODEL_DIR DOCS_DIR "question"
#include <cocom/cocom.h>

#include <cstdio>
#include <memory>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s DB_DIR MODEL_DIR DOCS_DIR QUESTION\n", argv[0]);
    return 2;
  }
  cocom::Options options;
  options.db_path = argv[1];
  options.model_dir = argv[2];  // a COCOM checkpoint; the store remembers it

  std::unique_ptr<cocom::Engine> engine;
  cocom::Status status = cocom::Engine::Open(options, &engine);
  if (!status.ok()) {
    std::fprintf(stderr, "open: %s\n", status.ToString().c_str());
    return 1;
  }

  // Unchanged files are skipped, so running this twice only compresses new documents.
  cocom::Result<cocom::IngestStats> ingested = engine->Ingest({argv[3]});
  if (!ingested.ok()) {
    std::fprintf(stderr, "ingest: %s\n", ingested.status().ToString().c_str());
    return 1;
  }
  std::printf("ingested: %lld added, %lld unchanged, %lld passages\n",
              static_cast<long long>(ingested->added), static_cast<long long>(ingested->unchanged),
              static_cast<long long>(ingested->passages));

  cocom::Result<cocom::Answer> answer = engine->Ask(argv[4]);
  if (!answer.ok()) {
    std::fprintf(stderr, "ask: %s\n", answer.status().ToString().c_str());
    return 1;
  }
  std::printf("answer: %s\n", answer->text.c_str());
  for (size_t i = 0; i < answer->sources.size(); ++i) {
    const cocom::Passage& p = answer->sources[i];
    std::printf("[%zu] %s (%s)\n", i + 1, p.title.c_str(), p.source.c_str());
  }
  return 0;
}
