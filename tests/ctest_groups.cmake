# Included by CTest before it runs anything (a TEST_INCLUDE_FILES entry written by CMakeLists.txt, which sets
# MOR_TEST_EXE, MOR_TEST_WD, MOR_TEST_LIST, MOR_TEST_SHARD_SIZE and MOR_TEST_SLOW_SUITES): one CTest test per
# GoogleTest suite of mor_tests instead of one per test. Each mor_tests process spends about 0.85 s of CPU
# starting (Debian's LibTorch loads 288 shared libraries), which was a third of the suite's CPU time with one
# process per test (issue 15). A suite of more than MOR_TEST_SHARD_SIZE tests runs as several GoogleTest
# shards so that both cores stay busy; a suite whose tests all skipped reports Skipped (tests/main.cpp exits 77).
if(NOT EXISTS "${MOR_TEST_EXE}")
  add_test(mor_tests_NOT_BUILT mor_tests_NOT_BUILT)
  return()
endif()
if(NOT EXISTS "${MOR_TEST_LIST}" OR NOT "${MOR_TEST_LIST}" IS_NEWER_THAN "${MOR_TEST_EXE}")
  # GoogleTest's JSON listing: suite and test names as written, whatever a parameter's printout holds.
  execute_process(COMMAND "${MOR_TEST_EXE}" --gtest_list_tests "--gtest_output=json:${MOR_TEST_LIST}"
                  WORKING_DIRECTORY "${MOR_TEST_WD}" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err
                  TIMEOUT 120)
  if(NOT rc EQUAL 0)
    file(REMOVE "${MOR_TEST_LIST}")
    message(FATAL_ERROR "listing the tests of ${MOR_TEST_EXE} failed (${rc}): ${err}")
  endif()
endif()
file(READ "${MOR_TEST_LIST}" listing)
string(JSON n_suites LENGTH "${listing}" testsuites)
if(n_suites EQUAL 0)
  return()
endif()
math(EXPR last "${n_suites} - 1")
foreach(i RANGE ${last})
  string(JSON suite GET "${listing}" testsuites ${i} name)
  string(JSON n_tests LENGTH "${listing}" testsuites ${i} testsuite)
  math(EXPR shards "(${n_tests} + ${MOR_TEST_SHARD_SIZE} - 1) / ${MOR_TEST_SHARD_SIZE}")
  # CTest starts the costliest first; without timings from an earlier run that is this hint: the test count,
  # or far above it for the few suites known to take minutes (so they do not start last).
  set(cost ${n_tests})
  list(FIND MOR_TEST_SLOW_SUITES "${suite}" slow)  # (CTest runs this without a policy for IN_LIST)
  if(slow GREATER -1)
    set(cost 1000)
  endif()
  foreach(k RANGE 1 ${shards})
    set(name "${suite}")
    set(env "")
    if(shards GREATER 1)
      set(name "${suite}#${k}of${shards}")
      math(EXPR index "${k} - 1")
      set(env "GTEST_TOTAL_SHARDS=${shards};GTEST_SHARD_INDEX=${index}")
    endif()
    add_test("${name}" "${MOR_TEST_EXE}" "--gtest_filter=${suite}.*")
    set_tests_properties("${name}" PROPERTIES WORKING_DIRECTORY "${MOR_TEST_WD}" SKIP_RETURN_CODE 77
                         COST ${cost} ENVIRONMENT "${env}")
  endforeach()
endforeach()
