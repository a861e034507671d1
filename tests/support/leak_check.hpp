// tests/support/leak_check.hpp — every test binary links tests/support/main.cpp, which
// fails any test that leaves behind a child process (zombie or alive), a new open fd,
// or a new /dev/shm entry named with this process's pid. The failure is reported by
// name and makes the test binary exit non-zero (ctest runs one test per process).
#pragma once

#include <sys/types.h>

#include <set>
#include <string>
#include <vector>

namespace mpx_test {

// The fds open in this process, as "fd -> target" strings keyed by fd number.
std::set<std::string> open_fds();
// This process's children (any state), as "pid (state)" strings.
std::vector<std::string> child_processes();
// /dev/shm entries whose name contains this process's pid.
std::set<std::string> shm_entries();

// A name for a named resource in a test: "mpx-test-<pid>-<tag>-<counter>", so that the
// leak check sees it.
std::string unique_name(const std::string& tag);

}  // namespace mpx_test
