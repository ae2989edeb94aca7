// Streaming answers: the token callback prints each piece of text as soon as the decoder
// produces it, and can stop the generation early by returning false.
//   example_streaming DB_DIR "question" [MAX_PIECES]
// The store must exist (e.g. made by example_minimal); it remembers its model.
#include <cocom/cocom.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s DB_DIR QUESTION [MAX_PIECES]\n", argv[0]);
    return 2;
  }
  const long max_pieces = argc == 4 ? std::strtol(argv[3], nullptr, 10) : 0;  // 0: no limit

  cocom::Options options;
  options.db_path = argv[1];
  options.create_if_missing = false;
  std::unique_ptr<cocom::Engine> engine;
  cocom::Status status = cocom::Engine::Open(options, &engine);
  if (!status.ok()) {
    std::fprintf(stderr, "open: %s\n", status.ToString().c_str());
    return 1;
  }

  long pieces = 0;
  auto on_piece = [&](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    ++pieces;
    return max_pieces <= 0 || pieces < max_pieces;  // false: stop generating
  };
  cocom::AskOptions ask;  // per-question settings; unset fields keep the Options values
  ask.generation = cocom::GenerationOptions{};
  ask.generation->max_new_tokens = 48;
  cocom::Result<cocom::Answer> answer = engine->AskStreaming(argv[2], on_piece, ask);
  if (!answer.ok()) {
    std::fprintf(stderr, "\nask: %s\n", answer.status().ToString().c_str());
    return 1;
  }
  std::printf("\n");
  if (answer->cancelled) std::printf("(stopped after %ld pieces)\n", pieces);
  const cocom::Timings& t = answer->timings;
  std::printf("%lld tokens, %.1f tokens/s, first token after %.1f ms\n",
              static_cast<long long>(t.generated_tokens), t.decode_tokens_per_second,
              t.retrieve_ms + t.load_embeddings_ms + t.prefill_ms);
  for (size_t i = 0; i < answer->sources.size(); ++i) {
    std::printf("[%zu] %s\n", i + 1, answer->sources[i].source.c_str());
  }
  return 0;
}
