// src/process/process_internal.hpp — the seams between process.cpp and thread.cpp.
#pragma once

#include <cxxabi.h>
#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <typeinfo>

#include "sys/atfork.hpp"

namespace mpx::detail {

// The one instance of a registry of this process's objects (its children, its Threads),
// kept right across fork(). Registry has a `std::mutex mu`; Adopt(registry) turns a
// forked child's copy, which describes the parent's objects, into the child's own, and
// unlocks mu first. The registry is allocated once and never destroyed, so that it
// outlives every static object and exit handlers can use it last.
//
// fork() never copies it in the middle of a change by another thread: the fork handlers
// hold mu across every fork(), and the child inherits it locked. The child adopts its
// copy lazily, on first use, so that a child which never uses it writes no page of it
// (each page a child writes costs a copy-on-write fault: tens of µs on a VM).
// InChild, if given, runs in the child right after fork(), before anything else (it must
// be async-signal-safe in spirit: no locks, no allocation).
template <class Registry, void (*Adopt)(Registry&), void (*InChild)() noexcept = nullptr>
class ForkAwareRegistry {
 public:
  // The registry, adopted first if this process was forked since its last use; the
  // first thread to get here adopts it, and others wait until it is done.
  static Registry& get() {
    Registry& r = raw();
    if (stale_.load(std::memory_order_acquire) == 0) [[likely]]
      return r;
    int expected = 1;
    if (stale_.compare_exchange_strong(expected, 2, std::memory_order_acq_rel)) {
      Adopt(r);
      stale_.store(0, std::memory_order_release);
    } else {
      while (stale_.load(std::memory_order_acquire) != 0)
        std::this_thread::yield();
    }
    return r;
  }
  // True in a forked child that has not used the registry since the fork.
  static bool stale() noexcept { return stale_.load(std::memory_order_acquire) != 0; }
  // Whether the registry was ever made (here, or in the process this one is a fork of).
  // A child that ends without looking at one never made need not make it: that would
  // cost it an allocation and the page faults of its first writes (a fork's copies).
  static bool made() noexcept { return made_.load(std::memory_order_acquire); }
  // Marks this process's copy as the parent's, to adopt on first use (the child's side
  // of fork()).
  MPX_CHILD_PATH static void mark_stale() noexcept {
    if constexpr (InChild != nullptr) InChild();
    stale_.store(1, std::memory_order_relaxed);
  }
  // Installs the fork handlers, and at_exit with std::atexit, the first time it is
  // called in this process (a function-local static, not std::call_once, which writes
  // thread-local state on every call).
  static void install_handlers(void (*at_exit)()) {
    static const bool installed = [at_exit] {
      sys::atfork(lock, unlock, mark_stale);
      std::atexit(at_exit);
      return true;
    }();
    static_cast<void>(installed);
  }

 private:
  static Registry& raw() {
    static Registry* r = [] {
      auto* made = new Registry;
      made_.store(true, std::memory_order_release);
      return made;
    }();
    return *r;
  }
  static void lock() { get().mu.lock(); }
  static void unlock() { raw().mu.unlock(); }

  // 0: up to date; 1: forked, not adopted yet; 2: being adopted.
  static inline std::atomic<int> stale_{0};
  static inline std::atomic<bool> made_{false};
};

// The demangled type of the exception being handled. Call inside a catch block.
inline std::string current_exception_type_name() {
  std::string name = "unknown exception";
  if (const std::type_info* type = abi::__cxa_current_exception_type()) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(type->name(), nullptr, nullptr, &status);
    name = status == 0 && demangled ? demangled : type->name();
    std::free(demangled);
  }
  return name;
}

// The last line of Python's traceback for the exception being handled: "type: what()",
// or the type alone for one that is not a std::exception. Call inside a catch block.
inline std::string describe_current_exception() {
  const std::string name = current_exception_type_name();
  try {
    throw;
  } catch (const std::exception& e) {
    return name + ": " + e.what();
  } catch (...) {
    return name;
  }
}

// Joins the mpx Threads that are running and not daemon (Python's threading._shutdown).
void join_non_daemon_threads() noexcept;

}  // namespace mpx::detail
