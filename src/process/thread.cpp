// Thread (mpx/thread.hpp).
#include "mpx/thread.hpp"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "mpx/detail/waiter.hpp"
#include "mpx/errors.hpp"
#include "process/process_internal.hpp"

namespace mpx {

namespace detail {

struct ThreadState {
  enum Phase : uint32_t { kInitial, kStarted, kDone };

  mutable std::mutex mu;  // guards name, daemon, target
  std::string name;
  bool daemon = false;
  std::unique_ptr<BoundCall> target;
  std::atomic<uint32_t> phase{kInitial};
  std::atomic<unsigned long> ident{0};
  std::atomic<pid_t> native_id{0};
  WaitWord word;  // notified when native_id is set and when phase becomes kDone
};

}  // namespace detail

namespace {

using detail::ThreadState;

struct ThreadRegistry {
  std::mutex mu;
  std::vector<std::shared_ptr<ThreadState>> running;
  int counter = 0;
  std::vector<std::shared_ptr<ThreadState>> abandoned;  // see adopt_after_fork
};

thread_local bool t_daemon = false;
thread_local const ThreadState* t_current = nullptr;

void adopt_after_fork(ThreadRegistry& r) {
  r.mu.unlock();  // locked by the fork handler, left locked in the child until now
  // The parent's other threads do not exist here. Their states are kept, never
  // destroyed: that could run destructors of targets belonging to those threads.
  for (auto& st : r.running) {
    if (st.get() != t_current) {
      st->phase.store(ThreadState::kDone, std::memory_order_release);
      r.abandoned.push_back(std::move(st));
    }
  }
  std::erase(r.running, nullptr);
}

using Threads = detail::ForkAwareRegistry<ThreadRegistry, adopt_after_fork>;

ThreadRegistry& thread_registry() {
  return Threads::get();
}

void join_threads_at_exit() {
  detail::join_non_daemon_threads();
}

void finish(const std::shared_ptr<ThreadState>& st) {
  {
    ThreadRegistry& r = thread_registry();
    std::lock_guard lock(r.mu);
    std::erase(r.running, st);
  }
  st->phase.store(ThreadState::kDone, std::memory_order_release);
  detail::notify(st->word);
}

void thread_main(std::shared_ptr<ThreadState> st) {
  st->native_id.store(static_cast<pid_t>(::syscall(SYS_gettid)), std::memory_order_release);
  detail::notify(st->word);
  std::unique_ptr<detail::BoundCall> target;
  std::string name;
  {
    std::lock_guard lock(st->mu);
    target = std::move(st->target);
    t_daemon = st->daemon;
  }
  t_current = st.get();
  try {
    if (target) (*target)();
  } catch (...) {
    std::string n = [&] {
      std::lock_guard lock(st->mu);
      return st->name;
    }();
    std::fprintf(stderr, "Exception in thread %s:\n%s\n", n.c_str(),
                 detail::describe_current_exception().c_str());
  }
  target.reset();  // the target's captures die on its thread, before join() returns
  finish(st);
}

}  // namespace

namespace detail {

void join_non_daemon_threads() noexcept {
  // Still stale after a fork: no Thread was started in this process since.
  if (Threads::stale()) return;
  for (;;) {
    std::shared_ptr<ThreadState> next;
    {
      ThreadRegistry& r = thread_registry();
      std::lock_guard lock(r.mu);
      for (auto& st : r.running) {
        if (st.get() == t_current) continue;
        std::lock_guard state_lock(st->mu);
        if (!st->daemon) {
          next = st;
          break;
        }
      }
    }
    if (!next) return;
    detail::wait_until(
        next->word,
        [&] { return next->phase.load(std::memory_order_acquire) == ThreadState::kDone; },
        Deadline::never());
  }
}

}  // namespace detail

Thread::Thread() : Thread(ThreadOptions{}, nullptr) {}

Thread::Thread(ThreadOptions options) : Thread(std::move(options), nullptr) {}

Thread::Thread(ThreadOptions options, std::unique_ptr<detail::BoundCall> target)
    : state_(std::make_shared<ThreadState>()) {
  int n;
  {
    ThreadRegistry& r = thread_registry();
    std::lock_guard lock(r.mu);
    n = ++r.counter;
  }
  state_->name = options.name.empty() ? "Thread-" + std::to_string(n) : std::move(options.name);
  state_->daemon = options.daemon.value_or(t_daemon);
  state_->target = std::move(target);
}

Thread::Thread(Thread&&) noexcept = default;
Thread& Thread::operator=(Thread&&) noexcept = default;
Thread::~Thread() = default;

ThreadState& Thread::checked(const char* what) const {
  if (!state_) throw InvalidStateError(std::string(what) + ": the Thread object was moved from");
  thread_registry();  // in a forked child, marks the parent's threads finished first
  return *state_;
}

void Thread::start() {
  ThreadState& st = checked("start");
  uint32_t expected = ThreadState::kInitial;
  if (!st.phase.compare_exchange_strong(expected, ThreadState::kStarted))
    throw InvalidStateError("threads can only be started once");
  Threads::install_handlers(join_threads_at_exit);
  {
    ThreadRegistry& r = thread_registry();
    std::lock_guard lock(r.mu);
    r.running.push_back(state_);
  }
  try {
    std::thread t(thread_main, state_);
    st.ident.store(static_cast<unsigned long>(t.native_handle()), std::memory_order_release);
    t.detach();
  } catch (...) {
    {
      ThreadRegistry& r = thread_registry();
      std::lock_guard lock(r.mu);
      std::erase(r.running, state_);
    }
    st.phase.store(ThreadState::kInitial);
    throw;
  }
}

void Thread::join() {
  join_until(detail::Deadline::never());
}

void Thread::join_until(const detail::Deadline& deadline) {
  ThreadState& st = checked("join");
  if (st.phase.load(std::memory_order_acquire) == ThreadState::kInitial)
    throw InvalidStateError("cannot join thread before it is started");
  if (&st == t_current) throw InvalidStateError("cannot join current thread");
  detail::wait_until(
      st.word, [&] { return st.phase.load(std::memory_order_acquire) == ThreadState::kDone; },
      deadline);
}

bool Thread::is_alive() const {
  return checked("is_alive").phase.load(std::memory_order_acquire) == ThreadState::kStarted;
}

std::string Thread::name() const {
  ThreadState& st = checked("name");
  std::lock_guard lock(st.mu);
  return st.name;
}

void Thread::set_name(std::string name) {
  ThreadState& st = checked("set_name");
  std::lock_guard lock(st.mu);
  st.name = std::move(name);
}

bool Thread::daemon() const {
  ThreadState& st = checked("daemon");
  std::lock_guard lock(st.mu);
  return st.daemon;
}

void Thread::set_daemon(bool daemon) {
  ThreadState& st = checked("set_daemon");
  std::lock_guard lock(st.mu);
  if (st.phase.load() != ThreadState::kInitial)
    throw InvalidStateError("cannot set daemon status of active thread");
  st.daemon = daemon;
}

unsigned long Thread::ident() const {
  return checked("ident").ident.load(std::memory_order_acquire);
}

pid_t Thread::native_id() const {
  ThreadState& st = checked("native_id");
  if (st.phase.load(std::memory_order_acquire) == ThreadState::kInitial) return 0;
  detail::wait_until(
      st.word, [&] { return st.native_id.load(std::memory_order_acquire) != 0; },
      detail::Deadline::never());
  return st.native_id.load(std::memory_order_acquire);
}

}  // namespace mpx
