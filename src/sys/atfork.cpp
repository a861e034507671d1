// mpx's fork handlers (sys/atfork.hpp).
#include "sys/atfork.hpp"

#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace mpx::sys {

namespace {

struct Handlers {
  void (*prepare)();
  void (*parent)();
  void (*child)();
};
constexpr int kMaxHandlers = 32;
Handlers g_handlers[kMaxHandlers];
// Entries below it are complete; a child reads it without the registration lock.
std::atomic<int> g_count{0};
std::mutex g_register;

}  // namespace

void atfork(void (*prepare)(), void (*parent)(), void (*child)()) noexcept {
  std::lock_guard lock(g_register);
  const int n = g_count.load(std::memory_order_relaxed);
  if (n == kMaxHandlers || ::pthread_atfork(prepare, parent, child) != 0) {
    std::fprintf(stderr, "mpx: cannot register a fork handler\n");
    std::abort();
  }
  g_handlers[n] = {prepare, parent, child};
  g_count.store(n + 1, std::memory_order_release);
}

pid_t fork_with_handlers(pid_t (*fork_like)(void*), void* arg) {
  const int n = g_count.load(std::memory_order_acquire);
  for (int i = n - 1; i >= 0; --i)
    if (g_handlers[i].prepare) g_handlers[i].prepare();
  const pid_t pid = fork_like(arg);
  const int error = errno;
  for (int i = 0; i < n; ++i) {
    void (*handler)() = pid == 0 ? g_handlers[i].child : g_handlers[i].parent;
    if (handler) handler();
  }
  errno = error;
  return pid;
}

}  // namespace mpx::sys
