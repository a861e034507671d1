// mpx/thread.hpp — Thread: run a callable in a thread, with Process's interface
// (threading.Thread). Switching between a thread and a process is a one-word change.
//
//   mpx::Thread t([&](int n) { total += n; }, 42);
//   t.start();
//   t.join();
//
// Lifetime, as in Python:
//  - A Thread destroyed while it runs keeps running (its state is shared with the
//    running thread); a non-daemon one is joined at the normal exit of the process
//    (std::exit, return from main), before the processes are joined.
//  - Daemon threads are never joined: they keep running while the process exits, as
//    Python's daemon threads are abandoned. They must not touch objects with static
//    storage duration that are destroyed at exit.
//  - An uncaught exception ends the thread and is printed on stderr
//    ("Exception in thread Thread-1:"), as Python's threading.excepthook does; the
//    process goes on.
//
// Thread safety: one Thread may be used from several threads. Across fork: a forked
// child has only the forking thread; Thread objects copied into it report the other
// threads as finished (is_alive() false, join() returns at once).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "mpx/detail/bound_call.hpp"
#include "mpx/detail/deadline.hpp"

namespace mpx {

// Optional settings of a Thread (Python: Thread(name=..., daemon=...)).
struct ThreadOptions {
  // Empty: "Thread-N", N counting the Threads created in this process.
  std::string name;
  // Empty: the daemon flag of the creating thread (false for the main thread).
  std::optional<bool> daemon;
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
  // Never waits: a running thread goes on (see the top).
  ~Thread();

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

 private:
  Thread(ThreadOptions options, std::unique_ptr<detail::BoundCall> target);
  void join_until(const detail::Deadline& deadline);
  detail::ThreadState& checked(const char* what) const;

  std::shared_ptr<detail::ThreadState> state_;
};

}  // namespace mpx
