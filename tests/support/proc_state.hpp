// tests/support/proc_state.hpp — the scheduler state of a process or thread, for tests
// that must wait until another party sleeps in the kernel before they act.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

namespace mpx_test {

// The state letter of /proc/<path>/stat ('S': asleep in the kernel; '?': unreadable).
// path: "<pid>", or "<pid>/task/<tid>" for a thread.
inline char proc_state(const std::string& path) {
  std::FILE* f = std::fopen(("/proc/" + path + "/stat").c_str(), "r");
  if (!f) return '?';
  char buf[512] = {};
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* close_paren = std::strrchr(buf, ')');
  return n > 0 && close_paren && close_paren[1] == ' ' ? close_paren[2] : '?';
}

// Waits until proc_state(path) is 'S', for at most `limit`; whether it came. A party that
// published its id just before the one wait it may sleep in is then asleep in that wait.
inline bool until_asleep(const std::string& path,
                         std::chrono::steady_clock::duration limit = std::chrono::seconds(30)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (proc_state(path) != 'S') {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace mpx_test
