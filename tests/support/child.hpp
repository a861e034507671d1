// tests/support/child.hpp — child processes for tests, on top of mpx::Process.
#pragma once

#include <sys/types.h>

#include <functional>
#include <utility>

#include "mpx/process.hpp"

namespace mpx_test {

// A started mpx::Process running fn; join() returns its exitcode (-N: killed by signal N).
// The destructor joins a child not joined yet, so a failing test leaves no child behind.
class Child {
 public:
  explicit Child(std::function<void()> fn) : process_(std::move(fn)) { process_.start(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (!joined_) process_.join();
  }
  int join() {
    process_.join();
    joined_ = true;
    return *process_.exitcode();
  }
  void kill() { process_.kill(); }
  pid_t pid() const { return process_.pid(); }

 private:
  mpx::Process process_;
  bool joined_ = false;
};

// Starts fn in a child process and returns its (started) Process.
template <class F>
mpx::Process start_child(F fn) {
  mpx::Process p(std::move(fn));
  p.start();
  return p;
}

// Waits for the child; its exit code, -N when killed by signal N.
inline int join_child(mpx::Process& p) {
  p.join();
  return p.exitcode().value_or(-1000);
}

}  // namespace mpx_test
