// eval-scienceqa: answer extraction as Python's re.findall does it, the result file's schema and
// arithmetic on a real adapter, batched == one-by-one generation, resume, the reference's .bin adapter.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "evaluate.h"
#include "helpers.h"

using mor::find_answers;
using mor::pick_answer;
using Strings = std::vector<std::string>;

TEST(Extract, OneMatch) {
  EXPECT_EQ(find_answers("Answer: The answer is B."), Strings{"B"});
  EXPECT_EQ(pick_answer(find_answers("Answer: The answer is B.")), "B");
}

TEST(Extract, NoMatch) {
  EXPECT_TRUE(find_answers("I think it is B.").empty());
  EXPECT_EQ(pick_answer(find_answers("I think it is B.")), "FAILED");
  EXPECT_TRUE(find_answers("The answer is b.").empty());  // [A-Z] only
}

TEST(Extract, TwoMatchesFail) {
  auto m = find_answers("The answer is A. No wait, The answer is C!");
  EXPECT_EQ(m, (Strings{"A", "C"}));
  EXPECT_EQ(pick_answer(m), "FAILED");
}

TEST(Extract, LetterAtVeryEndDoesNotMatch) {
  // The pattern needs one more character after the letter, as in the reference.
  EXPECT_TRUE(find_answers("Answer: The answer is C").empty());
  EXPECT_EQ(pick_answer(find_answers("Answer: The answer is C")), "FAILED");
}

TEST(Extract, DotMatchesAnyCharacterButNewline) {
  EXPECT_EQ(find_answers("The answer is D</s>"), Strings{"D"});
  EXPECT_EQ(find_answers("The answer is Dx"), Strings{"D"});
  EXPECT_TRUE(find_answers("The answer is D\n").empty());
  EXPECT_EQ(find_answers("The answer is E\xc3\xa9"), Strings{"E"});  // é after the letter
}

TEST(Extract, NonOverlappingLikeFindall) {
  // Python: re.findall(r'The answer is ([A-Z]).', 'The answer is The answer is A.') == ['T']
  EXPECT_EQ(find_answers("The answer is The answer is A."), Strings{"T"});
}
