// mpx/process.hpp — Process: run a callable in a child process (multiprocessing.Process).
//
//   mpx::Process p([&](int n) { std::printf("got %d and %s\n", n, text.c_str()); }, 42);
//   p.start();
//   p.join();  // p.exitcode() == 0
//
// Or subclass it, as Python's `class Worker(Process): def run(self)`:
//
//   struct Worker : mpx::Process {
//     int n;
//     explicit Worker(int value) : mpx::Process(mpx::ProcessOptions{.name = "w"}), n(value) {}
//     void run() override { std::printf("worker got %d\n", n); }  // runs in the child
//   };
//   Worker w(7);
//   w.start();
//   w.join();
//
// The child calls run() on its copy of the object, as it was at start() (fork start
// method only: a subclass cannot travel to a spawned child). The default run() calls
// the target.
//
// Start methods (mpx/context.hpp; ProcessOptions::context, set_start_method):
//  - fork (the default): the child is a copy of the parent, so any callable works,
//    capturing lambdas included; it sees the parent's memory as it was at start().
//    Hazard, as in Python: fork copies only the calling thread, so a lock another thread
//    held at that moment (malloc's, a logging library's, a std::mutex) stays locked in
//    the child forever, and a child that takes it deadlocks. A program that starts
//    threads before its processes should use spawn or forkserver.
//  - spawn: the child is a fresh run of the program (posix_spawn of /proc/self/exe, or
//    set_executable()'s) whose mpx::init() runs the target and exits; the target must be
//    a portable callable with encodable arguments (mpx/detail/handoff.hpp), sent over a
//    socket. No lock of the parent reaches it.
//  - forkserver: a single-threaded server, spawned on first use, forks the child on
//    request: a fork's speed with a spawn's safety, the same targets as spawn. The child
//    is the caller's (clone with CLONE_PARENT: getppid() is the caller, the exit status
//    comes from the kernel, and it lives on if the server dies). mpx's fork handlers run
//    in it; other libraries' pthread_atfork handlers do not (the server runs nothing
//    but mpx's loop).
// What the child does to its memory is not seen by the parent: share state through
// mpx's shared memory, queues and pipes.
//
// Lifetime, as in Python:
//  - The child runs the callable, then (like Python's _bootstrap) joins its own
//    non-daemon children, terminates its daemon children, joins its non-daemon mpx
//    Threads, flushes stdio and leaves with _exit(2): it never returns into the caller's
//    stack and never runs the parent's atexit handlers or static destructors.
//  - Every child gets SIGKILL when the parent dies abruptly (PR_SET_PDEATHSIG, checked
//    against the fork race). Linux delivers that signal when the *thread* that forked
//    exits, so start() from a thread other than the main one forks from one long-lived
//    internal thread instead (the child then runs on a copy of that thread: its
//    thread_local variables start from their initial values).
//  - At normal exit of the parent (std::exit, return from main), daemon children are
//    terminated (SIGTERM, then SIGKILL after 1 s) and non-daemon children are joined.
//  - A Process destroyed while its child runs does not wait and does not kill: the child
//    stays registered (as in Python's _children) and is reaped by the next start(),
//    active_children(), or at exit. A finished child is reaped by join(), is_alive(),
//    exitcode() or the destructor, so no zombie outlives its Process object.
//
// Thread safety: one Process may be used from several threads (join from two threads is
// fine). Across fork: a Process object copied into a child (by fork) refers to its
// parent's child: start(), join(), is_alive(), terminate() and kill() throw
// InvalidStateError there.
// A child made by a plain fork() starts with no children, like one made by Process.
//
// Differences from Python: a daemon process may have children (they get SIGKILL when it
// dies, so none is orphaned); the parent's atexit handlers do not run in the child unless
// the child calls std::exit itself.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mpx/detail/bound_call.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/handoff.hpp"

namespace mpx {

// Python's start methods ("fork", "spawn", "forkserver"; mpx/context.hpp).
enum class StartMethod { fork, spawn, forkserver };

// Optional settings of a Process (Python: Process(name=..., daemon=...)).
struct ProcessOptions {
  // Empty: "Process-N", N counting the processes created by this process (in a child,
  // "Process-1:N" and so on, as Python names them).
  std::string name{};
  // Empty: inherit current_process().daemon() (false in the main process).
  std::optional<bool> daemon{};
  // The start method (a Context converts to one); empty: get_start_method()'s, read at
  // start().
  std::optional<StartMethod> context{};
};

namespace detail {
struct ProcessState;
}

class Process {
 public:
  // A process whose target does nothing (Python: Process()).
  Process();
  explicit Process(ProcessOptions options);

  // Process(target, args...): the child calls target(args...) with the decayed copies
  // as rvalues (like std::thread). The return value is ignored; exitcode() is 0.
  // Throws: whatever copying/moving target and args throws.
  template <class F, class... Args>
  requires(!std::same_as<std::decay_t<F>, ProcessOptions> &&
           detail::OneShotCallable<F, Args...>) explicit Process(F&& target, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  template <class F, class... Args>
  requires detail::OneShotCallable<F, Args...> Process(ProcessOptions options, F&& target,
                                                       Args&&... args)
      : Process(std::move(options),
                detail::bind_process_call(std::forward<F>(target), std::forward<Args>(args)...)) {}

  Process(Process&&) noexcept;
  // Assigning over a started Process releases it as the destructor does.
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  // Reaps the child if it has finished; a running child is left running (see the top).
  virtual ~Process();

  // What the child runs (Python: run()). This one calls the target (once: it is dropped
  // after); override it in a subclass (see the top). Calling it directly runs the target
  // in the caller, as in Python.
  virtual void run();

  // Starts the child by the start method, which runs the target. Flushes stdout/stderr
  // first (as Python does) so that buffered output is not printed twice.
  // Blocks: for the fork or spawn (~0.1-1 ms; the first forkserver start spawns it).
  // Throws: InvalidStateError if started before, closed, or this object was created by
  // another process; std::system_error("fork"/"pidfd_open") if the OS refuses. Under
  // spawn or forkserver: ValueError when the target cannot travel (not a portable
  // callable, or an argument with no codec, or a subclass), InvalidStateError when
  // main() did not call mpx::init().
  // OS resources: a child process and a pidfd (sentinel()), released by close() or
  // the destructor once the child has been reaped.
  void start();

  // Waits until the child exits and reaps it. join(timeout) returns normally when the
  // timeout expires (check is_alive() or exitcode(), as in Python).
  // Blocks: yes. Timeout: steady clock; zero or negative polls once.
  // Throws: InvalidStateError if not started, closed, or not a child of the caller.
  void join();
  template <class Rep, class Period>
  void join(std::chrono::duration<Rep, Period> timeout) {
    join_until(detail::Deadline::after(timeout));
  }

  // True from start() until the child has exited (reaps it when it has).
  // Throws: InvalidStateError if closed or not a child of the caller. False before start.
  bool is_alive() const;

  // Empty before start and while running; then 0 on return, N for mpx::exit(N) or
  // std::exit(N), 1 for an uncaught exception (its type and message are printed on the
  // child's stderr), -N when killed by signal N. Reaps the child if it has exited.
  // Throws: InvalidStateError if closed.
  std::optional<int> exitcode() const;

  // The child's pid; 0 before start (Python: None). ident() is the same.
  // Throws: InvalidStateError if closed.
  pid_t pid() const;
  pid_t ident() const { return pid(); }

  // Name, for messages only; default "Process-N". Settable at any time.
  std::string name() const;
  void set_name(std::string name);

  // A daemon child is terminated at the parent's normal exit instead of joined.
  // Throws (set_daemon): InvalidStateError after start or close.
  bool daemon() const;
  void set_daemon(bool daemon);

  // Send SIGTERM / SIGKILL to the child; no-op if it has exited already.
  // Throws: InvalidStateError if not started or closed.
  void terminate();
  void kill();

  // Releases the pidfd and other resources; afterwards every call but name(), daemon()
  // and close() throws InvalidStateError. Closing twice is fine; closing before start
  // too.
  // Throws: InvalidStateError if the child is still running (join or kill it first).
  void close();

  // A file descriptor that becomes readable (poll/select/epoll) when the child exits
  // (the child's pidfd). Valid until close() or destruction; do not close it yourself.
  // Throws: InvalidStateError if not started or closed.
  int sentinel() const;

 private:
  friend std::vector<Process> active_children();
  Process(ProcessOptions options, std::unique_ptr<detail::BoundCall> target);
  explicit Process(std::shared_ptr<detail::ProcessState> state) noexcept;
  void join_until(const detail::Deadline& deadline);
  detail::ProcessState& checked(const char* what) const;

  std::shared_ptr<detail::ProcessState> state_;
};

// What a process knows about itself and its parent (Python: current_process(),
// parent_process()).
class ProcessInfo {
 public:
  ProcessInfo(pid_t pid, std::string name, bool daemon)
      : pid_(pid), name_(std::move(name)), daemon_(daemon) {}
  pid_t pid() const noexcept { return pid_; }
  pid_t ident() const noexcept { return pid_; }
  const std::string& name() const noexcept { return name_; }
  bool daemon() const noexcept { return daemon_; }
  // True while that process runs (for the current process: always).
  bool is_alive() const noexcept;

 private:
  pid_t pid_;
  std::string name_;
  bool daemon_;
};

// This process: "MainProcess" in a program's first process; in a child, its Process's
// name, pid and daemon flag.
ProcessInfo current_process();

// The process that started this one (empty in the main process, as Python's None).
std::optional<ProcessInfo> parent_process();

// The children of this process that are still running, as Process handles sharing
// state with the originals. Reaps the children that have finished.
std::vector<Process> active_children();

// The number of CPUs this process may use: the CPU affinity mask (sched_getaffinity),
// further limited by a cgroup v2 cpu.max quota (rounded up); at least 1.
int cpu_count();

// Ends the current process with exit code `code` (Python: sys.exit(code)).
// In a child started by Process: joins/terminates its own children as at a normal end,
// flushes stdio and _exit(code)s; the caller's stack is not unwound. In the main
// process: std::exit(code).
[[noreturn]] void exit(int code);

}  // namespace mpx
