// src/sys/syscall.hpp — the one wrapper every system call of mpx goes through.
// Retries EINTR; turns a failure into std::system_error naming the call; and is the
// seam where tests inject failures (set_failure_injector).
#pragma once

#include <cerrno>
#include <cstdint>
#include <system_error>
#include <type_traits>

namespace mpx::sys {

// Throws std::system_error(err, "<what>: <strerror>").
[[noreturn]] void throw_errno(const char* what, int err = errno);

// Tests only: when set, call()/call_raw() ask the injector before each call; a non-zero
// result makes the call fail with that errno without being made.
using FailureInjector = int (*)(const char* what);
void set_failure_injector(FailureInjector injector) noexcept;
int injected_failure(const char* what) noexcept;

// The value a system call returns on failure: -1, or MAP_FAILED for pointers.
template <class T>
constexpr T failure_value() noexcept {
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<T>(static_cast<std::intptr_t>(-1));
  } else {
    return static_cast<T>(-1);
  }
}

// Runs fn() (a system call returning -1 or MAP_FAILED with errno on failure), retrying
// EINTR. Returns the result, the failure value with errno set on failure.
template <class F>
auto call_raw(const char* what, F&& fn) -> decltype(fn()) {
  using Result = decltype(fn());
  if (int err = injected_failure(what)) {
    errno = err;
    return failure_value<Result>();
  }
  for (;;) {
    Result rc = fn();
    if (rc != failure_value<Result>() || errno != EINTR) return rc;
  }
}

// As call_raw, but throws std::system_error naming `what` on failure.
template <class F>
auto call(const char* what, F&& fn) -> decltype(fn()) {
  auto rc = call_raw(what, static_cast<F&&>(fn));
  if (rc == failure_value<decltype(rc)>()) throw_errno(what);
  return rc;
}

}  // namespace mpx::sys
