// tests/support/python.hpp — the system's CPython, for the interop tests (they skip
// when it is missing).
#pragma once

#include <unistd.h>

namespace mpx_test {

inline constexpr const char* kPython = "/usr/bin/python3";

inline bool have_python() {
  return ::access(kPython, X_OK) == 0;
}

}  // namespace mpx_test
