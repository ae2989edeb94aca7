# ctest helper: runs PROGRAM with ARG1..ARG6, fails unless it exits 0 and its output
# (stdout + stderr) matches the regular expression EXPECT.
#   cmake -DPROGRAM=p -DARG1=a -DEXPECT=regex -P RunAndCheck.cmake
set(args)
foreach(i RANGE 1 6)
  if(DEFINED ARG${i})
    list(APPEND args "${ARG${i}}")
  endif()
endforeach()
execute_process(COMMAND "${PROGRAM}" ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE out)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${rc}")
endif()
if(DEFINED EXPECT AND NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "the output of ${PROGRAM} does not match: ${EXPECT}")
endif()
