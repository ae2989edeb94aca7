// Answer-quality metrics for `cocom eval` (torch-free).
//
// They follow the conventions QA papers report with, so that numbers are comparable:
//  - normalize_answer: the SQuAD rule -- lower-case, drop ASCII punctuation, drop the articles
//    "a", "an", "the" as whole words, collapse white space;
//  - match: a normalised gold answer occurs inside the normalised prediction (the main metric
//    of the COCOM paper and BERGEN, robust to verbose answers);
//  - exact_match: normalised prediction equals a normalised gold answer;
//  - token_f1: SQuAD's bag-of-tokens F1 over normalised tokens (multiset overlap);
//  - rouge_l: the F-measure of the longest common token subsequence, with the rouge-score
//    tokenisation (lower-case, every run of characters other than a-z 0-9 is a separator).
// With several gold answers, every metric takes the best one.
#pragma once

#include <string>
#include <vector>

namespace cocom::eval {

std::string normalize_answer(const std::string& s);

double match(const std::string& prediction, const std::vector<std::string>& golds);
double exact_match(const std::string& prediction, const std::vector<std::string>& golds);
double token_f1(const std::string& prediction, const std::vector<std::string>& golds);
double rouge_l(const std::string& prediction, const std::vector<std::string>& references);

// Tokens as rouge-score makes them (exposed for tests).
std::vector<std::string> rouge_tokens(const std::string& s);

// Means over a set of predictions, in [0, 1].
struct QaScores {
  double match = 0, exact_match = 0, f1 = 0, rouge_l = 0;
  size_t count = 0;
};
QaScores score_qa(const std::vector<std::string>& predictions,
                  const std::vector<std::vector<std::string>>& golds);  // throws on size mismatch

}  // namespace cocom::eval
