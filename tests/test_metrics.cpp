// QA metrics against values worked out by hand from the SQuAD / rouge-score definitions.
#include <gtest/gtest.h>

#include "common/error.h"
#include "eval/metrics.h"

using namespace cocom::eval;

TEST(Metrics, NormalizeAnswerFollowsTheSquadRule) {
  EXPECT_EQ(normalize_answer("The  Eiffel Tower!"), "eiffel tower");
  EXPECT_EQ(normalize_answer("U.S.A."), "usa");
  // Articles go only as whole words; "theory" and "anthem" keep their letters.
  EXPECT_EQ(normalize_answer("A theory of an anthem, the end"), "theory of anthem end");
  // Punctuation goes before articles are looked for: "the-end" -> "theend" stays one word.
  EXPECT_EQ(normalize_answer("the-end"), "theend");
  EXPECT_EQ(normalize_answer("\tMany\n spaces\u00a0here "), "many spaces here");
  // Non-ASCII letters are lower-cased and kept; a non-ASCII dash separates words.
  EXPECT_EQ(normalize_answer("\xC3\x89"
                             "COLE the\xE2\x80\x94"
                             "End"),
            "\xC3\xA9"
            "cole \xE2\x80\x94"
            "end");
  EXPECT_EQ(normalize_answer(""), "");
  EXPECT_EQ(normalize_answer("the a an"), "");
  // Invalid UTF-8 never throws.
  EXPECT_EQ(normalize_answer("ok\xFF"), "ok\xEF\xBF\xBD");
}

TEST(Metrics, MatchIsGoldInsidePrediction) {
  EXPECT_EQ(match("It was built in Paris, France.", {"paris"}), 1.0);
  EXPECT_EQ(match("It was built in Paris.", {"London", "Paris, France"}), 0.0);
  EXPECT_EQ(match("It was built in Paris.", {"London", "the Paris"}), 1.0);
  // An answer that normalises to nothing never matches.
  EXPECT_EQ(match("anything", {"The"}), 0.0);
  EXPECT_EQ(match("anything", {}), 0.0);
}

TEST(Metrics, ExactMatchAfterNormalisation) {
  EXPECT_EQ(exact_match("The Beatles.", {"beatles"}), 1.0);
  EXPECT_EQ(exact_match("The Beatles were", {"beatles"}), 0.0);
  EXPECT_EQ(exact_match("1969", {"1968", "1969"}), 1.0);
}

TEST(Metrics, TokenF1CountsRepeatedTokensOnce) {
  // pred "paris paris france" vs gold "paris": overlap 1, P = 1/3, R = 1 -> F1 = 0.5.
  EXPECT_DOUBLE_EQ(token_f1("Paris Paris France", {"Paris"}), 0.5);
  // pred "new york city" vs gold "york new": overlap 2, P = 2/3, R = 1 -> 0.8.
  EXPECT_DOUBLE_EQ(token_f1("New York City", {"York, New"}), 0.8);
  EXPECT_DOUBLE_EQ(token_f1("rome", {"paris"}), 0.0);
  // Best gold wins.
  EXPECT_DOUBLE_EQ(token_f1("New York City", {"rome", "new york city"}), 1.0);
  // Both empty after normalisation: agreement; one empty: none.
  EXPECT_DOUBLE_EQ(token_f1("The", {"an"}), 1.0);
  EXPECT_DOUBLE_EQ(token_f1("The", {"rome"}), 0.0);
}

TEST(Metrics, RougeLIsLcsFMeasure) {
  EXPECT_EQ(rouge_tokens("Hello, World-2 caf\xC3\xA9!"),
            (std::vector<std::string>{"hello", "world", "2", "caf"}));
  // pred "the cat sat on the mat" (6), ref "the cat on a mat" (5): LCS "the cat on mat" = 4.
  // P = 4/6, R = 4/5 -> F = 2 * (2/3) * (4/5) / (2/3 + 4/5) = 8/11.
  EXPECT_NEAR(rouge_l("The cat sat on the mat.", {"the cat on a mat"}), 8.0 / 11.0, 1e-12);
  EXPECT_DOUBLE_EQ(rouge_l("a b c", {"a b c"}), 1.0);
  EXPECT_DOUBLE_EQ(rouge_l("a b c", {"x y"}), 0.0);
  EXPECT_DOUBLE_EQ(rouge_l("", {"x y"}), 0.0);
  // Order matters: "c b a" vs "a b c" share one in-order token.
  EXPECT_NEAR(rouge_l("c b a", {"a b c"}), 1.0 / 3.0, 1e-12);
}

TEST(Metrics, ScoreQaAveragesAndChecksSizes) {
  QaScores s = score_qa({"Paris", "rome"}, {{"paris"}, {"Paris"}});
  EXPECT_EQ(s.count, 2u);
  EXPECT_DOUBLE_EQ(s.match, 0.5);
  EXPECT_DOUBLE_EQ(s.exact_match, 0.5);
  EXPECT_DOUBLE_EQ(s.f1, 0.5);
  EXPECT_DOUBLE_EQ(s.rouge_l, 0.5);
  EXPECT_THROW(score_qa({"a"}, {}), cocom::Error);
  EXPECT_EQ(score_qa({}, {}).count, 0u);
}
