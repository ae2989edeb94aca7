// load_tokenizer: the tokenizer of a directory, chosen by the files it holds
// (tokenizer_llama.cpp, tokenizer_bert.cpp; the shared machinery: tokenizer_impl.h).
#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  if (!dir_exists(dir)) {
    fail(dir,
         ": not a directory (expected a tokenizer directory with tokenizer.model or "
         "vocab.txt)");
  }
  const std::string model = join_path(dir, "tokenizer.model");
  const std::string vocab = join_path(dir, "vocab.txt");
  if (file_exists(model)) return detail::load_llama_tokenizer(dir);
  if (file_exists(vocab)) return detail::load_bert_tokenizer(dir);
  fail(dir, ": no tokenizer found; looked for ", model, " (sentencepiece, LlamaTokenizer) and ",
       vocab, " (WordPiece, BertTokenizer)");
}

}  // namespace cocom::model
