// mor_tests' main: GoogleTest's, except that a run in which every selected test skipped (and none failed)
// exits 77, which CTest reports as Skipped (SKIP_RETURN_CODE in tests/ctest_groups.cmake): CTest runs one
// suite per process, so a suite whose test data is absent shows as skipped rather than passed.
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  const testing::UnitTest& u = *testing::UnitTest::GetInstance();
  if (rc == 0 && u.skipped_test_count() > 0 && u.successful_test_count() == 0) return 77;
  return rc;
}
