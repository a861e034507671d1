// Thread, Timer, and threading's module functions (mpx/thread.hpp): the registry of the
// threads of this process (started, main, dummy) and the excepthook.
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
#include <typeinfo>
#include <vector>

#include "mpx/detail/waiter.hpp"
#include "mpx/errors.hpp"
#include "process/process_internal.hpp"

namespace mpx {

namespace detail {

struct ThreadState {
  enum Phase : uint32_t { kInitial, kStarted, kDone };
  enum class Kind { kStarted, kMain, kDummy };  // started by mpx, or named by current_thread

  mutable std::mutex mu;  // guards name, daemon, target
  std::string name;
  bool daemon = false;
  Kind kind = Kind::kStarted;
  std::unique_ptr<BoundCall> target;
  Thread* runner = nullptr;  // a subclass: the thread calls runner->run()
  std::atomic<uint32_t> phase{kInitial};
  std::atomic<unsigned long> ident{0};
  std::atomic<pid_t> native_id{0};
  WaitWord word;  // notified when native_id is set and when phase becomes kDone
};

struct TimerState {
  WaitWord word;
  std::atomic<uint32_t> cancelled{0};
};

}  // namespace detail

namespace {

using detail::ThreadState;
using Kind = ThreadState::Kind;

struct ThreadRegistry {
  std::mutex mu;
  std::vector<std::shared_ptr<ThreadState>> running;  // started mpx Threads
  std::vector<std::shared_ptr<ThreadState>> dummies;  // named by current_thread()
  std::shared_ptr<ThreadState> main;                  // made on first use
  int counter = 0;
  std::vector<std::shared_ptr<ThreadState>> abandoned;  // see adopt_after_fork
};

// This thread's state, if it has one. A dummy thread's state ends with the thread.
struct Self {
  std::shared_ptr<ThreadState> state;
  ~Self();
};
thread_local Self t_self;
thread_local bool t_daemon = false;

// The main thread's pthread_t: recorded when the library is loaded on it, and by the
// fork handler in a child (where the forking thread is the main thread).
std::atomic<unsigned long> g_main_ident{0};
[[maybe_unused]] const bool g_main_ident_recorded = [] {
  if (::syscall(SYS_gettid) == ::getpid())
    g_main_ident.store(static_cast<unsigned long>(::pthread_self()));
  return true;
}();

// The forking thread's state (null if it had none), recorded in the child by the handler.
ThreadState* g_forker_state = nullptr;

void adopt_after_fork(ThreadRegistry& r) {
  r.mu.unlock();  // locked by the fork handler, left locked in the child until now
  // The parent's other threads do not exist here. Their states are kept, never
  // destroyed: that could run destructors of targets belonging to those threads.
  std::shared_ptr<ThreadState> forker;
  auto sort = [&](std::shared_ptr<ThreadState>& st) {
    if (!st) return;
    if (st.get() == g_forker_state) {
      forker = std::move(st);
    } else {
      st->phase.store(ThreadState::kDone, std::memory_order_release);
      r.abandoned.push_back(std::move(st));
    }
  };
  for (auto& st : r.running)
    sort(st);
  for (auto& st : r.dummies)
    sort(st);
  sort(r.main);
  r.running.clear();
  r.dummies.clear();
  // The forking thread is this process's main thread (Python's _after_fork).
  if (forker) {
    forker->kind = Kind::kMain;
    forker->native_id.store(::getpid());
    r.main = std::move(forker);
  }
}

// The child's side of fork(): the forking thread becomes the child's main thread.
void note_forker() noexcept {
  g_forker_state = t_self.state.get();
  g_main_ident.store(static_cast<unsigned long>(::pthread_self()));
}

using Threads = detail::ForkAwareRegistry<ThreadRegistry, adopt_after_fork, note_forker>;

ThreadRegistry& thread_registry() {
  return Threads::get();
}

void join_threads_at_exit() {
  detail::join_non_daemon_threads();
}

void install_handlers() {
  Threads::install_handlers(join_threads_at_exit);
}

void mark_done(ThreadState& st) {
  st.phase.store(ThreadState::kDone, std::memory_order_release);
  detail::notify(st.word);
}

Self::~Self() {
  if (!state || state->kind != Kind::kDummy) return;
  {
    ThreadRegistry& r = thread_registry();
    std::lock_guard lock(r.mu);
    std::erase(r.dummies, state);
  }
  mark_done(*state);
}

// A state for a thread mpx did not start, alive from now on.
std::shared_ptr<ThreadState> named_state(Kind kind, std::string name, unsigned long ident,
                                         pid_t tid) {
  auto st = std::make_shared<ThreadState>();
  st->kind = kind;
  st->name = std::move(name);
  st->daemon = kind == Kind::kDummy;
  st->ident.store(ident);
  st->native_id.store(tid);
  st->phase.store(ThreadState::kStarted);
  return st;
}

// The main thread's state, made on first use. Call with r.mu held.
std::shared_ptr<ThreadState>& main_locked(ThreadRegistry& r) {
  install_handlers();  // a forked child must learn that its main thread is another one
  if (!r.main) r.main = named_state(Kind::kMain, "MainThread", g_main_ident.load(), ::getpid());
  return r.main;
}

std::mutex* g_hook_mu = new std::mutex;  // never destroyed: threads may end at exit
ExceptHook* g_hook = new ExceptHook;

void finish(const std::shared_ptr<ThreadState>& st) {
  {
    ThreadRegistry& r = thread_registry();
    std::lock_guard lock(r.mu);
    std::erase(r.running, st);
  }
  mark_done(*st);
}

}  // namespace

namespace {

void thread_main(std::shared_ptr<ThreadState> st) {
  st->native_id.store(static_cast<pid_t>(::syscall(SYS_gettid)), std::memory_order_release);
  detail::notify(st->word);
  std::unique_ptr<detail::BoundCall> target;
  Thread* runner;
  {
    std::lock_guard lock(st->mu);
    runner = st->runner;
    if (!runner) target = std::move(st->target);
    t_daemon = st->daemon;
  }
  t_self.state = st;
  try {
    if (runner) {
      runner->run();
    } else if (target) {
      (*target)();
    }
  } catch (...) {
    const Thread self = current_thread();  // st's handle
    excepthook(
        ExceptHookArgs{detail::current_exception_type_name(), std::current_exception(), &self});
  }
  target.reset();  // the target's captures die on its thread, before join() returns
  finish(st);
}

}  // namespace

namespace detail {

MPX_CHILD_PATH void join_non_daemon_threads() noexcept {
  // Still stale after a fork: no Thread was started in this process since. Never made:
  // no Thread was ever started.
  if (!Threads::made() || Threads::stale()) return;
  // Python's _shutdown: the main thread counts as ended before the others are joined, so
  // that a thread joining it does not wait for ever.
  if (::syscall(SYS_gettid) == ::getpid()) {
    ThreadRegistry& r = thread_registry();
    std::lock_guard lock(r.mu);
    if (r.main) mark_done(*r.main);
  }
  for (;;) {
    std::shared_ptr<ThreadState> next;
    {
      ThreadRegistry& r = thread_registry();
      std::lock_guard lock(r.mu);
      for (auto& st : r.running) {
        if (st == t_self.state) continue;
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

// ---------------------------------------------------------------------------
// Thread

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

Thread::Thread(std::shared_ptr<ThreadState> state) noexcept : state_(std::move(state)) {}

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
  {
    // A subclass (Python's `class Worker(Thread): def run(self)`) runs its run(); a
    // Timer is mpx's own and keeps to its target.
    std::lock_guard lock(st.mu);
    const std::type_info& type = typeid(*this);
    st.runner = type == typeid(Thread) || type == typeid(Timer) ? nullptr : this;
  }
  install_handlers();
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

void Thread::run() {
  std::unique_ptr<detail::BoundCall> target;
  {
    std::lock_guard lock(checked("run").mu);
    target = std::move(state_->target);  // as Python's run(): the target runs once
  }
  if (target) (*target)();
}

void Thread::join() {
  join_until(detail::Deadline::never());
}

void Thread::join_until(const detail::Deadline& deadline) {
  ThreadState& st = checked("join");
  if (st.phase.load(std::memory_order_acquire) == ThreadState::kInitial)
    throw InvalidStateError("cannot join thread before it is started");
  if (&st == t_self.state.get() || st.native_id.load() == ::syscall(SYS_gettid))
    throw InvalidStateError("cannot join current thread");
  if (st.kind == Kind::kDummy) throw InvalidStateError("cannot join a dummy thread");
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

// ---------------------------------------------------------------------------
// Module functions

Thread current_thread() {
  ThreadRegistry& r = thread_registry();
  if (t_self.state) return Thread(t_self.state);
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  const auto ident = static_cast<unsigned long>(::pthread_self());
  std::lock_guard lock(r.mu);
  if (tid == ::getpid()) {
    std::shared_ptr<ThreadState>& main = main_locked(r);
    main->ident.store(ident);  // unknown when the library was loaded on another thread
    t_self.state = main;
  } else {
    install_handlers();
    t_self.state = named_state(Kind::kDummy, "Dummy-" + std::to_string(++r.counter), ident, tid);
    r.dummies.push_back(t_self.state);
  }
  return Thread(t_self.state);
}

Thread main_thread() {
  ThreadRegistry& r = thread_registry();
  std::lock_guard lock(r.mu);
  return Thread(main_locked(r));
}

std::vector<Thread> enumerate() {
  ThreadRegistry& r = thread_registry();
  std::lock_guard lock(r.mu);
  std::vector<Thread> threads;
  auto add = [&](const std::shared_ptr<ThreadState>& st) {
    if (st->phase.load(std::memory_order_acquire) == ThreadState::kStarted)
      threads.push_back(Thread(st));
  };
  add(main_locked(r));
  for (const auto& st : r.running)
    add(st);
  for (const auto& st : r.dummies)
    add(st);
  return threads;
}

int active_count() {
  return static_cast<int>(enumerate().size());
}

unsigned long get_ident() noexcept {
  return static_cast<unsigned long>(::pthread_self());
}

pid_t get_native_id() noexcept {
  return static_cast<pid_t>(::syscall(SYS_gettid));
}

// ---------------------------------------------------------------------------
// Timer

Timer::Timer(std::chrono::duration<double> interval, std::unique_ptr<detail::BoundCall> f)
    : Timer(std::make_shared<detail::TimerState>(), interval, std::move(f)) {}

Timer::Timer(std::shared_ptr<detail::TimerState> timer, std::chrono::duration<double> interval,
             std::unique_ptr<detail::BoundCall> f)
    : Thread(ThreadOptions{}, detail::bind_call([timer, interval, f = std::move(f)] {
               detail::wait_until(
                   timer->word, [&] { return timer->cancelled.load() != 0; },
                   detail::Deadline::after(interval));
               // Cancelled while it waited, or just then: as Python, f is not called.
               if (timer->cancelled.exchange(1) == 0) (*f)();
             })),
      timer_(std::move(timer)) {}

void Timer::cancel() noexcept {
  if (!timer_) return;
  timer_->cancelled.store(1);
  detail::notify(timer_->word);
}

// ---------------------------------------------------------------------------
// excepthook

void default_excepthook(const ExceptHookArgs& args) {
  std::string name = args.thread ? args.thread->name() : std::string("<unknown>");
  std::string what;
  try {
    if (args.exc_value) std::rethrow_exception(args.exc_value);
  } catch (const std::exception& e) {
    what = std::string(": ") + e.what();
  } catch (...) {
  }
  std::fprintf(stderr, "Exception in thread %s:\n%s%s\n", name.c_str(), args.exc_type.c_str(),
               what.c_str());
}

ExceptHook set_excepthook(ExceptHook hook) {
  std::lock_guard lock(*g_hook_mu);
  return std::exchange(*g_hook, std::move(hook));
}

void excepthook(const ExceptHookArgs& args) {
  ExceptHook hook;
  {
    std::lock_guard lock(*g_hook_mu);
    hook = *g_hook;
  }
  if (!hook) return default_excepthook(args);
  try {
    hook(args);
  } catch (...) {
    std::fputs("Exception in threading.excepthook:\n", stderr);
    default_excepthook(ExceptHookArgs{detail::current_exception_type_name(),
                                      std::current_exception(), args.thread});
  }
}

}  // namespace mpx
