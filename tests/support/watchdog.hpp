// tests/support/watchdog.hpp — aborts the test binary with a message when a scope takes
// longer than it may: a test of something that could hang fails, and says what hung,
// instead of stalling until ctest's timeout.
//
//   mpx_test::Watchdog dog(10s, "join() after close() and get()");
// With `on_expire`, that runs instead of the abort (say, killing a child program that
// hangs, so that the test fails and still reaps it).
//
// The constructor returns once the watchdog's thread waits. Under ASan (GCC 12's) the
// allocator has no fork handlers: a thread still starting, which allocates, while the
// test forks leaves an allocator lock held forever in the child (seen as a child hung in
// operator new, once in ~40 runs of a test that forks right after its watchdog).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace mpx_test {

class Watchdog {
 public:
  Watchdog(std::chrono::milliseconds limit, std::string what,
           std::function<void()> on_expire = nullptr)
      : what_(std::move(what)), thread_([this, limit, on_expire] {
          std::unique_lock lock(mutex_);
          waiting_ = true;
          cv_.notify_all();
          if (cv_.wait_for(lock, limit, [this] { return done_; })) return;
          if (on_expire) return on_expire();
          std::fprintf(stderr, "watchdog: %s still running after %lld ms\n", what_.c_str(),
                       static_cast<long long>(limit.count()));
          std::fflush(stderr);
          std::abort();
        }) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return waiting_; });
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string what_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool waiting_ = false;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace mpx_test
