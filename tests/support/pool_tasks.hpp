// tests/support/pool_tasks.hpp — the tasks and pipes that tests/pool_test.cpp and
// tests/pool_crash_test.cpp hand to pools: plain functions (they reach forked workers),
// and globals set before a pool is built so that its workers see them.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

namespace pool_tasks {

inline int square(int x) {
  return x * x;
}
inline int add(int a, int b) {
  return a + b;
}
inline int fail_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three");
  return x;
}
struct CustomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
inline int throw_custom(int) {
  throw CustomError("custom");
}
inline int my_pid(int) {
  return static_cast<int>(::getpid());
}
inline int segfault(int) {
  ::raise(SIGSEGV);
  return 0;
}
inline int exit_seven(int) {
  ::_exit(7);
}

// Set before a pool is built, so that its workers (forks) see it: the write end of a
// pipe on which a task announces that it started.
inline int g_started_fd = -1;
inline int announce_then_hang(int) {
  int pid = ::getpid();
  [[maybe_unused]] auto n = ::write(g_started_fd, &pid, sizeof pid);
  for (;;)
    ::pause();
}
inline int hang_on_zero(int x) {
  if (x == 0) announce_then_hang(x);
  return -x;
}
inline int negate(int x) {
  return -x;
}
inline int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

// Set before a pool is built: a pipe on which task 2 of go_between tells task 0 to go.
inline int g_go_r = -1;
inline int g_go_w = -1;
// 0: waits (at most 10 s) for task 2's word; 1 if it came, 0 if not. 2: sends the word.
inline int go_between(int x) {
  if (x == 0) {
    pollfd p{g_go_r, POLLIN, 0};
    char c = 0;
    return ::poll(&p, 1, 10000) == 1 && ::read(g_go_r, &c, 1) == 1 ? 1 : 0;
  }
  if (x == 2) {
    [[maybe_unused]] auto n = ::write(g_go_w, "g", 1);
  }
  return x;
}

// 0: waits (at most 10 s) for a word from each of tasks 2, 4 and 6; 1 if all came.
// 2, 4, 6: send their word. Others: return x.
inline int go_after_three(int x) {
  if (x == 0) {
    int got = 0;
    for (int i = 0; i < 3; ++i)
      got += go_between(0);
    return got == 3 ? 1 : 0;
  }
  if (x == 2 || x == 4 || x == 6) go_between(2);
  return x;
}
// Waits (at most 10 s) for a word on the go pipe; returns x, or -1 if none came.
inline int wait_for_go(int x) {
  return go_between(0) == 1 ? x : -1;
}

// Set before a pool is built: how often each task started, and the pid of the worker
// that started one last, in memory its workers share.
inline std::atomic<int>* g_starts = nullptr;
inline std::atomic<int>* g_last_starter = nullptr;
// Counts its start, then sleeps: 20 ms for every seventh task, 2 ms for the others.
inline int count_start_and_sleep(int i) {
  g_starts[i].fetch_add(1);
  g_last_starter->store(static_cast<int>(::getpid()));
  return sleep_ms(i % 7 == 0 ? 20 : 2) >= 0 ? i : -1;
}

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    ::close(r);
    ::close(w);
  }
  int read_int() const {
    int v = 0;
    EXPECT_EQ(::read(r, &v, sizeof v), static_cast<ssize_t>(sizeof v));
    return v;
  }
};

// The go pipe of go_between(), set for the pools built while it lives.
struct GoPipe : Pipe {
  GoPipe() {
    g_go_r = r;
    g_go_w = w;
  }
  ~GoPipe() { g_go_r = g_go_w = -1; }
};

inline std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}
inline std::vector<int> squares(int n) {
  auto v = iota_vec(n);
  for (auto& x : v)
    x = x * x;
  return v;
}

}  // namespace pool_tasks
