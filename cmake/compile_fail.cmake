# Compiles a probe that must not compile (tests/compile_fail/) and checks how it fails:
# the compiler exits non-zero, its first error line matches the probe's
# `// expect-error: <regex>` line, and it reports at most `// max-errors: N` errors (2
# unless the probe says): one mpx message, at most one follow-on where the probe uses the
# rejected call's result.
# Usage: cmake -DCOMPILER=... -DSOURCE=... -DINCLUDE_DIRS=dir1,dir2 -P compile_fail.cmake
string(REPLACE "," ";" dirs "${INCLUDE_DIRS}")
set(flags -std=c++20 -fsyntax-only)
foreach(dir IN LISTS dirs)
  list(APPEND flags -I${dir})
endforeach()
execute_process(COMMAND ${COMPILER} ${flags} ${SOURCE} OUTPUT_VARIABLE output
                ERROR_VARIABLE errors RESULT_VARIABLE status TIMEOUT 110)
set(all "${output}${errors}")
if(status STREQUAL "0")
  message(FATAL_ERROR "${SOURCE} compiled, but must not")
endif()
file(STRINGS ${SOURCE} expect_line REGEX "^// expect-error: ")
file(STRINGS ${SOURCE} max_line REGEX "^// max-errors: ")
if(NOT expect_line)
  message(FATAL_ERROR "${SOURCE} has no `// expect-error: <regex>` line")
endif()
string(REGEX REPLACE "^// expect-error: " "" expected "${expect_line}")
set(max_errors 2)
if(max_line)
  string(REGEX REPLACE "^// max-errors: " "" max_errors "${max_line}")
endif()
string(REPLACE ";" "," flat "${all}")  # no list splitting inside the lines below
string(REGEX MATCHALL "[^\n]*error: [^\n]*" error_lines "${flat}")
list(LENGTH error_lines count)
if(count EQUAL 0)
  message(FATAL_ERROR "${SOURCE} failed without an error line (status ${status}):\n${all}")
endif()
list(GET error_lines 0 first)
message("first error (of ${count}): ${first}")
if(NOT first MATCHES "${expected}")
  message(FATAL_ERROR "the first error does not match `${expected}`:\n${all}")
endif()
if(count GREATER max_errors)
  message(FATAL_ERROR "${count} errors, more than ${max_errors}:\n${all}")
endif()
