// mpx/thread.hpp — Thread: run a callable in a thread, with Process's interface
// (threading.Thread). Switching between a thread and a process is a one-word change.
//
//   mpx::Thread t([&](int n) { total += n; }, 42);
//   t.start();
//   t.join();
//
// Or subclass it, as Python's `class Worker(Thread): def run(self)`:
//
//   struct Counter : mpx::Thread {
//     int count = 0;
//     Counter() : mpx::Thread(mpx::ThreadOptions{.name = "counter"}) {}
//     void run() override { count = 42; }  // runs on the new thread
//   };
//   Counter w;
//   w.start();
//   w.join();
//
// The thread calls run() on the object itself: a subclass object must stay alive, and
// in place (not moved from), until its thread has ended (join() it first), as Python
// keeps it alive by reference. The default run() calls the target.
//
// Lifetime, as in Python:
//  - A Thread destroyed while it runs keeps running (its state is shared with the
//    running thread); a non-daemon one is joined at the normal exit of the process
//    (std::exit, return from main), before the processes are joined.
//  - Daemon threads are never joined: they keep running while the process exits, as
//    Python's daemon threads are abandoned. They must not touch objects with static
//    storage duration that are destroyed at exit.
//  - An uncaught exception ends the thread and goes to excepthook() (by default printed
//    on stderr: "Exception in thread Thread-1:", as Python's threading.excepthook); the
//    process goes on.
//
// A Thread object is a handle: current_thread(), main_thread() and enumerate() return
// handles sharing the state of the thread they name, and two handles of one thread
// compare equal. Threads mpx did not start (the main thread, a std::thread) get a state
// the first time they are named, as Python's _MainThread and _DummyThread: "MainThread",
// "Dummy-N" (daemon; join() throws InvalidStateError; alive until the thread ends).
//
// threading.local: use C++'s thread_local, which does the same (a variable per thread,
// destroyed when its thread ends); mpx adds no class for it.
//
// Thread safety: one Thread may be used from several threads. Across fork: a forked
// child has only the forking thread, which becomes its main_thread(); Thread objects
// copied into it report the other threads as finished (is_alive() false, join() returns
// at once).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mpx/detail/bound_call.hpp"
#include "mpx/detail/deadline.hpp"

namespace mpx {

// Optional settings of a Thread (Python: Thread(name=..., daemon=...)).
struct ThreadOptions {
  // Empty: "Thread-N", N counting the Threads created in this process.
  std::string name{};
  // Empty: the daemon flag of the creating thread (false for the main thread).
  std::optional<bool> daemon{};
};

namespace detail {
struct ThreadState;
}

class Thread {
 public:
  // A thread whose target does nothing (Python: Thread()).
  Thread();
  explicit Thread(ThreadOptions options);

  // Thread(target, args...): the thread calls target(args...) with decayed copies as
  // rvalues (like std::thread). Target and arguments are destroyed on the thread when
  // it ends.
  template <class F, class... Args>
  requires(!std::same_as<std::decay_t<F>, ThreadOptions> &&
           detail::OneShotCallable<F, Args...>) explicit Thread(F&& target, Args&&... args)
      : Thread(ThreadOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  template <class F, class... Args>
  requires detail::OneShotCallable<F, Args...> Thread(ThreadOptions options, F&& target,
                                                      Args&&... args)
      : Thread(std::move(options),
               detail::bind_call(std::forward<F>(target), std::forward<Args>(args)...)) {}

  Thread(Thread&&) noexcept;
  Thread& operator=(Thread&&) noexcept;
  Thread(const Thread&) = delete;
  Thread& operator=(const Thread&) = delete;
  // Never waits: a running thread goes on (see the top; a subclass must be joined first).
  virtual ~Thread();

  // What the thread runs (Python: run()). This one calls the target (once: it is
  // dropped after); override it in a subclass (see the top). Calling it directly runs
  // the target in the caller, as in Python.
  virtual void run();

  // Starts the thread.
  // Throws: InvalidStateError if started before; std::system_error if the OS refuses.
  void start();

  // Waits until the thread has finished; join(timeout) returns normally when the
  // timeout expires (check is_alive()).
  // Blocks: yes (spins briefly, then sleeps on a futex). Timeout: steady clock.
  // Throws: InvalidStateError if not started, or when a thread joins itself.
  void join();
  template <class Rep, class Period>
  void join(std::chrono::duration<Rep, Period> timeout) {
    join_until(detail::Deadline::after(timeout));
  }

  // True from start() until the target has returned or thrown.
  bool is_alive() const;

  // Name, for messages only; default "Thread-N". Settable at any time.
  std::string name() const;
  void set_name(std::string name);

  // A daemon thread is not joined at exit.
  // Throws (set_daemon): InvalidStateError after start.
  bool daemon() const;
  void set_daemon(bool daemon);

  // The thread's pthread_t as an integer (Python: threading.get_ident()); 0 before
  // start (Python: None).
  unsigned long ident() const;
  // The kernel's thread id (gettid); 0 before start. May wait for the new thread to run
  // its first instruction.
  pid_t native_id() const;

  // Handles of the same thread (Python: `is`).
  friend bool operator==(const Thread& a, const Thread& b) noexcept { return a.state_ == b.state_; }

 protected:
  Thread(ThreadOptions options, std::unique_ptr<detail::BoundCall> target);

 private:
  friend Thread current_thread();
  friend Thread main_thread();
  friend std::vector<Thread> enumerate();
  explicit Thread(std::shared_ptr<detail::ThreadState> state) noexcept;
  void join_until(const detail::Deadline& deadline);
  detail::ThreadState& checked(const char* what) const;

  std::shared_ptr<detail::ThreadState> state_;
};

// The thread the caller runs on (threading.current_thread()); for a thread mpx did not
// start, its MainThread or Dummy-N handle (see the top).
Thread current_thread();
// The main thread: the one whose kernel id is the process id (the process's first thread,
// or in a forked child the thread that forked). Throws nothing.
Thread main_thread();
// The threads alive now: the main thread, the started mpx Threads that have not ended,
// and the dummy threads named so far that have not ended (threading.enumerate()).
std::vector<Thread> enumerate();
// enumerate().size() (threading.active_count()).
int active_count();
// pthread_self() of the caller as an integer, as Thread::ident() (threading.get_ident()).
unsigned long get_ident() noexcept;
// The caller's kernel thread id, as Thread::native_id() (threading.get_native_id()).
pid_t get_native_id() noexcept;

namespace detail {
struct TimerState;
}

// A thread that calls f(args...) after `interval`, unless cancel() came first
// (threading.Timer). A Thread: start() it, join() it, name it.
//   mpx::Timer t(500ms, [] { std::puts("late"); });
//   t.start();
//   t.cancel();  // before 500 ms: nothing is printed
// Blocks: the timer's thread waits on a futex (steady clock). Across fork: as Thread.
class Timer : public Thread {
 public:
  template <class Rep, class Period, class F, class... Args>
  requires detail::OneShotCallable<F, Args...> Timer(std::chrono::duration<Rep, Period> interval,
                                                     F&& f, Args&&... args)
      : Timer(std::chrono::duration<double>(interval),
              detail::bind_call(std::forward<F>(f), std::forward<Args>(args)...)) {}

  // Stops the timer if it is still waiting; f is then not called. Any time, from any
  // thread; idempotent.
  void cancel() noexcept;

 private:
  Timer(std::chrono::duration<double> interval, std::unique_ptr<detail::BoundCall> f);
  Timer(std::shared_ptr<detail::TimerState> timer, std::chrono::duration<double> interval,
        std::unique_ptr<detail::BoundCall> f);
  std::shared_ptr<detail::TimerState> timer_;
};

// What excepthook() gets (threading.ExceptHookArgs).
struct ExceptHookArgs {
  std::string exc_type;            // the exception's type, demangled ("std::runtime_error")
  std::exception_ptr exc_value;    // rethrow it to look at it
  const Thread* thread = nullptr;  // the thread it ended
};
using ExceptHook = std::function<void(const ExceptHookArgs&)>;

// Handles an exception that escaped a Thread's target (Python: threading.excepthook):
// calls the hook set by set_excepthook(), or default_excepthook(). Called on the dying
// thread. An exception thrown by the hook is printed by default_excepthook, after
// "Exception in threading.excepthook:".
void excepthook(const ExceptHookArgs& args);
// Installs `hook` for every thread (an empty one: back to the default); returns the one
// it replaces (empty for the default). Thread-safe.
ExceptHook set_excepthook(ExceptHook hook);
// Prints "Exception in thread <name>:\n<type>: <what()>\n" on stderr (Python's
// threading.__excepthook__).
void default_excepthook(const ExceptHookArgs& args);

}  // namespace mpx
