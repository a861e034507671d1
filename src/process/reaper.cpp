// The reaper: one thread per process, started on first use, that reaps the children of
// Popen objects destroyed while their child still ran (see ~Popen in mpx/subprocess.hpp).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <thread>
#include <vector>

#include "process/subprocess_internal.hpp"
#include "sys/atfork.hpp"
#include "sys/fd.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

struct Reaper {
  std::mutex mu;
  std::vector<sys::Fd> pidfds;  // children not reaped yet
  sys::Fd wake_read;            // a byte arrives when pidfds grew
  sys::Fd wake_write;
};

// Never destroyed: the reaper thread runs until the process ends. A forked child has no
// reaper thread; it starts its own (the parent's one is left, still reachable).
std::mutex* g_reaper_mu = new std::mutex;
Reaper* g_reaper = nullptr;
pid_t g_reaper_pid = 0;
std::vector<Reaper*>* g_abandoned = new std::vector<Reaper*>;

// fork() must not copy the reaper in the middle of a change.
void lock_reaper() {
  g_reaper_mu->lock();
  if (g_reaper) g_reaper->mu.lock();
}
void unlock_reaper() {
  if (g_reaper) g_reaper->mu.unlock();
  g_reaper_mu->unlock();
}
// In a child the parent's reaper (its thread is not here) is left, and so are the
// copies of its fds: they are closed (no allocation here).
void unlock_reaper_in_child() {
  unlock_reaper();
  if (!g_reaper) return;
  g_reaper->pidfds.clear();
  g_reaper->wake_read.reset();
  g_reaper->wake_write.reset();
}

// True when the child has been reaped (or was reaped by someone else).
bool try_reap(int pidfd) {
  siginfo_t info{};
  int rc = sys::call_raw("waitid(P_PIDFD)", [&] {
    return ::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG);
  });
  return rc == -1 ? errno == ECHILD : info.si_pid != 0;
}

void reaper_loop(Reaper* r) {
  std::vector<pollfd> fds;
  for (;;) {
    {
      std::lock_guard lock(r->mu);
      fds.assign(1, pollfd{r->wake_read.get(), POLLIN, 0});
      for (const sys::Fd& fd : r->pidfds)
        fds.push_back(pollfd{fd.get(), POLLIN, 0});
    }
    if (sys::call_raw("poll(reaper)",
                      [&] { return ::poll(fds.data(), static_cast<nfds_t>(fds.size()), -1); }) < 0)
      continue;
    if (fds[0].revents != 0) {
      char buf[64];
      sys::call_raw("read(reaper wake)",
                    [&] { return ::read(r->wake_read.get(), buf, sizeof buf); });
    }
    std::lock_guard lock(r->mu);
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0 || !try_reap(fds[i].fd)) continue;
      std::erase_if(r->pidfds, [&](const sys::Fd& fd) { return fd.get() == fds[i].fd; });
    }
  }
}

Reaper& reaper() {
  static const bool installed = [] {
    sys::atfork(lock_reaper, unlock_reaper, unlock_reaper_in_child);
    return true;
  }();
  static_cast<void>(installed);
  if (g_reaper && g_reaper_pid == ::getpid()) return *g_reaper;
  if (g_reaper) g_abandoned->push_back(g_reaper);
  auto* r = new Reaper;
  try {
    auto [wake_read, wake_write] = sys::make_pipe(O_NONBLOCK);
    r->wake_read = std::move(wake_read);
    r->wake_write = std::move(wake_write);
    // Every signal blocked: process-directed signals go to the user's threads.
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      std::thread(reaper_loop, r).detach();
    } catch (...) {
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  } catch (...) {
    delete r;
    throw;
  }
  g_reaper = r;
  g_reaper_pid = ::getpid();
  return *r;
}

}  // namespace

void reap_later(sys::Fd pidfd) noexcept {
  if (try_reap(pidfd.get())) return;
  try {
    std::lock_guard global(*g_reaper_mu);
    Reaper& r = reaper();
    {
      std::lock_guard lock(r.mu);
      r.pidfds.push_back(std::move(pidfd));
    }
    sys::call_raw("write(reaper wake)", [&] { return ::write(r.wake_write.get(), "", 1); });
  } catch (...) {
    // No thread or no memory: the child stays a zombie until this process ends; the
    // pidfd is closed by its destructor.
  }
}

}  // namespace mpx::detail
