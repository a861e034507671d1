# Runs an example and checks it: exit status 0, and every `// expect: <regex>` line of its
# source matches its output. Usage: cmake -DPROGRAM=... -DSOURCE=... -P run_example.cmake
# (-DLAUNCHER=a -DLAUNCHER_ARG=b: runs `a b PROGRAM`, e.g. tests/mpi/run.sh 3 PROGRAM).
# -DSTART_METHOD=spawn: runs `PROGRAM --start-method spawn`, which must also print
# `start method: spawn` (the method its processes were started by).
set(args "")
if(START_METHOD)
  set(args --start-method ${START_METHOD})
endif()
execute_process(COMMAND ${LAUNCHER} ${LAUNCHER_ARG} ${PROGRAM} ${args}
                OUTPUT_VARIABLE output ERROR_VARIABLE errors
                RESULT_VARIABLE status TIMEOUT 110)
message("${output}${errors}")
if(NOT status STREQUAL "0")
  message(FATAL_ERROR "${PROGRAM} exited with ${status}")
endif()
file(STRINGS ${SOURCE} expect_lines REGEX "^// expect: ")
if(START_METHOD)
  list(APPEND expect_lines "// expect: start method: ${START_METHOD}")
endif()
foreach(line IN LISTS expect_lines)
  string(REGEX REPLACE "^// expect: " "" regex "${line}")
  if(NOT output MATCHES "${regex}")
    message(FATAL_ERROR "output does not match expected line: ${regex}")
  endif()
endforeach()
