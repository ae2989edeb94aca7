// COCOM without a cocom store: the application keeps the context embeddings in its own
// database (here, one binary file per passage in a directory) and retrieves with its own
// method (here, the passages sharing the most words with the question). cocom only
// compresses and answers: Model::Compress once per passage, Model::Generate per question.
//   example_own_vectors MODEL_DIR VECTOR_DIR DOCS_DIR "question"
// DOCS_DIR's files are read as one passage each (up to 128 tokens are compressed).
#include <cocom/cocom.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::set<std::string> words(const std::string& text) {
  std::set<std::string> out;
  std::string w;
  for (char c : text + " ") {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!w.empty()) {
      if (w.size() > 3) out.insert(w);
      w.clear();
    }
  }
  return out;
}

// The application's "database": [vectors, dim] floats after a small header, per passage.
bool save(const std::string& path, const cocom::ContextEmbeddings& e) {
  std::ofstream f(path, std::ios::binary);
  const int64_t header[2] = {e.vectors, e.dim};
  f.write(reinterpret_cast<const char*>(header), sizeof header);
  f.write(reinterpret_cast<const char*>(e.data.data()),
          static_cast<std::streamsize>(e.data.size() * sizeof(float)));
  return static_cast<bool>(f);
}

bool load(const std::string& path, cocom::ContextEmbeddings* e) {
  std::ifstream f(path, std::ios::binary);
  int64_t header[2] = {0, 0};
  if (!f.read(reinterpret_cast<char*>(header), sizeof header)) return false;
  if (header[0] < 1 || header[1] < 1 || header[0] * header[1] > (int64_t(1) << 24)) return false;
  e->count = 1;
  e->vectors = header[0];
  e->dim = header[1];
  e->data.resize(static_cast<size_t>(header[0] * header[1]));
  return static_cast<bool>(f.read(reinterpret_cast<char*>(e->data.data()),
                                  static_cast<std::streamsize>(e->data.size() * sizeof(float))));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s MODEL_DIR VECTOR_DIR DOCS_DIR QUESTION\n", argv[0]);
    return 2;
  }
  cocom::ModelOptions mo;
  mo.model_dir = argv[1];
  std::shared_ptr<cocom::Model> model;
  cocom::Status status = cocom::Model::Open(mo, &model);
  if (!status.ok()) {
    std::fprintf(stderr, "open: %s\n", status.ToString().c_str());
    return 1;
  }

  // Compress every document once, keeping its vectors in the application's own files.
  const std::string vector_dir = argv[2];
  fs::create_directories(vector_dir);
  std::vector<std::string> names, texts;
  for (const auto& entry : fs::directory_iterator(argv[3])) {
    if (!entry.is_regular_file()) continue;
    std::ifstream f(entry.path());
    texts.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    names.push_back(entry.path().filename().string());
  }
  std::vector<size_t> order(names.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return names[a] < names[b]; });
  size_t compressed = 0;
  for (size_t i : order) {
    const std::string path = vector_dir + "/" + names[i] + ".vec";
    if (fs::exists(path)) continue;  // already in the "database"
    cocom::Result<cocom::ContextEmbeddings> e = model->Compress({texts[i]});
    if (!e.ok()) {
      std::fprintf(stderr, "compress %s: %s\n", names[i].c_str(), e.status().ToString().c_str());
      return 1;
    }
    if (!save(path, *e)) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return 1;
    }
    ++compressed;
  }
  std::printf("compressed %zu passages (%zu stored), %lld vectors of %lld values each\n",
              compressed, names.size(),
              static_cast<long long>((128 + model->Info().compression_rate - 1) /
                                     model->Info().compression_rate),
              static_cast<long long>(model->Info().embedding_dim));

  // The application's own retrieval: the passages sharing the most words with the question,
  // as many as the model was trained to read (generation_top_k).
  const std::set<std::string> q = words(argv[4]);
  std::vector<std::pair<int, size_t>> scored;
  for (size_t i : order) {
    int shared = 0;
    for (const auto& w : words(texts[i])) shared += q.count(w) ? 1 : 0;
    scored.push_back({-shared, i});
  }
  std::stable_sort(scored.begin(), scored.end());
  std::vector<cocom::ContextEmbeddings> parts;
  std::vector<std::string> used;
  const size_t k = static_cast<size_t>(model->Info().generation_top_k);
  for (size_t j = 0; j < scored.size() && j < k; ++j) {
    const size_t i = scored[j].second;
    cocom::ContextEmbeddings e;
    if (!load(vector_dir + "/" + names[i] + ".vec", &e)) {
      std::fprintf(stderr, "cannot read the vectors of %s\n", names[i].c_str());
      return 1;
    }
    parts.push_back(std::move(e));
    used.push_back(names[i]);
  }
  cocom::Result<cocom::ContextEmbeddings> contexts = cocom::ContextEmbeddings::Concat(parts);
  if (!contexts.ok()) {
    std::fprintf(stderr, "%s\n", contexts.status().ToString().c_str());
    return 1;
  }
  cocom::GenerationOptions g;
  g.max_new_tokens = 32;
  cocom::Result<cocom::Generation> answer = model->Generate(argv[4], *contexts, g);
  if (!answer.ok()) {
    std::fprintf(stderr, "generate: %s\n", answer.status().ToString().c_str());
    return 1;
  }
  std::printf("answer: %s\n", answer->text.c_str());
  for (size_t i = 0; i < used.size(); ++i) std::printf("[%zu] %s\n", i + 1, used[i].c_str());
  std::printf("prompt %lld positions, %.1f ms\n",
              static_cast<long long>(answer->timings.prompt_tokens), answer->timings.total_ms);
  return 0;
}
