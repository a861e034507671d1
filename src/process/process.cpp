// Process, fork start method, and the module functions of mpx/process.hpp.
#include "mpx/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio_ext.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <new>
#include <thread>
#include <typeinfo>
#if defined(__GLIBCXX__)
#include <ext/stdio_sync_filebuf.h>
#endif

#include "ipc/read_ends.hpp"
#include "mpx/errors.hpp"
#include "process/process_internal.hpp"
#include "process/start_methods.hpp"
#include "sys/fd.hpp"
#include "sys/pidfd.hpp"
#include "sys/syscall.hpp"

namespace mpx {

namespace detail {

struct ProcessState {
  enum class Phase { kInitial, kStarting, kStarted, kClosed };

  mutable std::mutex mu;
  std::string name;
  bool daemon = false;
  std::vector<int> identity;
  Phase phase = Phase::kInitial;
  pid_t creator = 0;  // the process that created the object; only it may start/join
  pid_t pid = 0;
  sys::Fd pidfd;
  std::optional<StartMethod> method;
  std::optional<int> returncode;
  std::unique_ptr<BoundCall> target;
  Process* runner = nullptr;  // a subclass: the child calls runner->run() (its copy)
};

}  // namespace detail

namespace {

using detail::ProcessState;
using Phase = ProcessState::Phase;

// What this process knows about itself and its children (one instance: Children).
struct Registry {
  std::mutex mu;
  std::vector<std::shared_ptr<ProcessState>> children;  // started, not yet reaped
  bool is_child = false;
  std::string name = "MainProcess";
  bool daemon = false;
  std::vector<int> identity;
  int counter = 0;
  std::optional<ProcessInfo> parent;
  bool exiting = false;
  // In a child: the parent's children, kept (never destroyed, but reachable so that
  // leak checkers stay quiet when the child ends with std::exit).
  std::vector<std::shared_ptr<ProcessState>> abandoned;
};

// Set by child_main: the Process this child runs, and its parent's pid.
ProcessState* g_started_as = nullptr;
pid_t g_started_parent = 0;
// True on the forker thread (and on its copy in a child it forked).
thread_local bool t_is_forker = false;

void adopt_after_fork(Registry& r);
using Children = detail::ForkAwareRegistry<Registry, adopt_after_fork>;

Registry& registry() {
  return Children::get();
}

// The long-lived thread that forks for start() calls made from other threads than the
// main one (see "PR_SET_PDEATHSIG" in process.hpp). Created on first use.
struct Forker {
  std::mutex serial;  // one request at a time
  std::mutex mu;
  std::condition_variable cv;
  const std::function<pid_t()>* job = nullptr;
  bool done = false;
  pid_t result = -1;
  int error = 0;
  Forker* abandoned_next = nullptr;  // see child_main
};
Forker* g_forker = nullptr;
Forker* g_abandoned_forkers = nullptr;
std::mutex* g_forker_mu = new std::mutex;

void forker_loop(Forker* f) {
  t_is_forker = true;
  std::unique_lock lock(f->mu);
  for (;;) {
    f->cv.wait(lock, [&] { return f->job != nullptr; });
    const std::function<pid_t()>* job = std::exchange(f->job, nullptr);
    lock.unlock();
    pid_t pid = (*job)();  // a forked child never returns from it
    int error = errno;
    lock.lock();
    f->result = pid;
    f->error = error;
    f->done = true;
    f->cv.notify_all();
  }
}

Forker& forker() {
  std::lock_guard lock(*g_forker_mu);
  if (!g_forker) {
    auto* f = new Forker;
    // The forker runs with every signal blocked so that process-directed signals go to
    // the user's threads; each child restores its requester's mask.
    sigset_t all, old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      std::thread(forker_loop, f).detach();
    } catch (...) {
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      delete f;
      throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    g_forker = f;
  }
  return *g_forker;
}

}  // namespace

// Runs `job` (a fork or a spawn, returning the child's pid or -1 with errno) on the
// calling thread if it is the main thread, else on the forker.
pid_t detail::run_forking(const std::function<pid_t()>& job, const char* what) {
  if (::syscall(SYS_gettid) == ::getpid()) {
    pid_t pid = job();
    if (pid < 0) sys::throw_errno(what);
    return pid;
  }
  Forker& f = forker();
  std::lock_guard serial(f.serial);
  std::unique_lock lock(f.mu);
  f.done = false;
  f.job = &job;
  f.cv.notify_all();
  f.cv.wait(lock, [&] { return f.done; });
  if (f.result < 0) sys::throw_errno(what, f.error);
  return f.result;
}

namespace {

void adopt_after_fork(Registry& r) {
  r.mu.unlock();  // locked by the fork handler, left locked in the child until now
  // The parent's children are not ours: kept aside, never destroyed (destroying them
  // here could run destructors of the parent's objects), reachable for leak checkers.
  for (auto& c : r.children)
    r.abandoned.push_back(std::move(c));
  r.children.clear();
  r.exiting = false;
  if (ProcessState* st = std::exchange(g_started_as, nullptr)) {
    r.parent.emplace(g_started_parent, r.name, r.daemon);
    r.is_child = true;
    r.name = st->name;
    r.daemon = st->daemon;
    r.identity = st->identity;
    r.counter = 0;
  }
  // The forker thread does not exist here, and its mutex may have been held.
  new (g_forker_mu) std::mutex;
  if (g_forker) {
    g_forker->abandoned_next = g_abandoned_forkers;
    g_abandoned_forkers = std::exchange(g_forker, nullptr);
  }
}

// Joins the children at exit; installed by the first start().
void exit_handler() noexcept;

std::string default_name(const std::vector<int>& identity, std::string name = "Process") {
  name += '-';
  for (std::size_t i = 0; i < identity.size(); ++i) {
    if (i) name += ':';
    name += std::to_string(identity[i]);
  }
  return name;
}

void forget_child(const ProcessState* st) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::erase_if(r.children, [&](const auto& c) { return c.get() == st; });
}

// Reaps the child if it has exited; its exit code, or empty while it runs. Call with
// st.mu held and the child started.
std::optional<int> poll_locked(ProcessState& st) {
  if (st.returncode || !st.pidfd) return st.returncode;
  siginfo_t info{};
  int rc = sys::call_raw("waitid(P_PIDFD)", [&] {
    return ::waitid(P_PIDFD, static_cast<id_t>(st.pidfd.get()), &info, WEXITED | WNOHANG);
  });
  if (rc == -1) {
    if (errno != ECHILD) sys::throw_errno("waitid(P_PIDFD)");
    // Someone else reaped it (waitpid(-1) elsewhere, or SIGCHLD set to SIG_IGN): the
    // status is lost.
    st.returncode = 255;
  } else if (info.si_pid == 0) {
    return std::nullopt;
  } else if (info.si_code == CLD_EXITED) {
    st.returncode = info.si_status;
  } else {
    st.returncode = -info.si_status;
  }
  forget_child(&st);
  return st.returncode;
}

std::optional<int> poll(ProcessState& st) {
  std::lock_guard lock(st.mu);
  return poll_locked(st);
}

// Reaps finished children (Python's _cleanup, run by start()); returns those running.
std::vector<std::shared_ptr<ProcessState>> running_children() {
  std::vector<std::shared_ptr<ProcessState>> children;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    if (r.children.empty()) return children;
    children = r.children;
  }
  std::erase_if(children, [](const auto& st) { return poll(*st).has_value(); });
  return children;
}

// Flushes what is buffered in stdout/stderr (C stdio, and the C++ standard streams when
// they are not synchronised with stdio), touching nothing when nothing is buffered.
MPX_CHILD_PATH void flush_std_streams() noexcept {
  try {
    for (std::ostream* os : {&std::cout, &std::cerr, &std::clog}) {
      std::streambuf* buf = os->rdbuf();
#if defined(__GLIBCXX__)
      if (!buf || dynamic_cast<__gnu_cxx::stdio_sync_filebuf<char>*>(buf)) continue;
#endif
      if (buf) os->flush();
    }
  } catch (...) {
  }
  if (::__fpending(stdout) != 0) std::fflush(stdout);
  if (::__fpending(stderr) != 0) std::fflush(stderr);
}

// Waits until the child exits or the deadline passes; true if it has exited.
bool wait_exit(ProcessState& st, const detail::Deadline& deadline) {
  for (;;) {
    int fd;
    {
      std::lock_guard lock(st.mu);
      if (poll_locked(st)) return true;
      fd = st.pidfd.get();
    }
    pollfd p{fd, POLLIN, 0};
    int rc = sys::call("poll(pidfd)", [&] { return ::poll(&p, 1, deadline.poll_timeout_ms()); });
    if (rc == 0 && deadline.expired()) return poll(st).has_value();
  }
}

// Python's util._exit_function: terminate the daemon children, join the others. Daemon
// children that ignore SIGTERM get SIGKILL after a grace period.
void shutdown_children() noexcept {
  try {
    {
      Registry& r = registry();
      std::lock_guard lock(r.mu);
      if (r.exiting) return;
      r.exiting = true;
    }
    auto children = running_children();
    if (children.empty()) return;  // as most children: no clock read, no page touched
    for (auto& st : children)
      if (st->daemon) sys::pidfd_send_signal(st->pidfd.get(), SIGTERM);
    auto grace = detail::Deadline::after(std::chrono::seconds(1));
    for (auto& st : children) {
      if (!st->daemon) continue;
      if (!wait_exit(*st, grace)) {
        sys::pidfd_send_signal(st->pidfd.get(), SIGKILL);
        wait_exit(*st, detail::Deadline::never());
      }
    }
    for (auto& st : children)
      if (!st->daemon) wait_exit(*st, detail::Deadline::never());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx: error while joining children at exit: %s\n", e.what());
  }
}

void exit_handler() noexcept {
  detail::join_non_daemon_threads();
  shutdown_children();
}

[[noreturn]] MPX_CHILD_PATH void exit_now(int code) {
  ::syscall(SYS_exit_group, code);
  __builtin_unreachable();
}

}  // namespace

// The end of a child: as Python's _bootstrap after run().
[[noreturn]] MPX_CHILD_PATH void detail::finish_child(int code) {
  // Still stale: this child never used the registry, so it has no children.
  if (!Children::stale()) shutdown_children();
  detail::join_non_daemon_threads();
  flush_std_streams();
  detail::hang_up_read_ends();  // no destructor runs for them: their writers must learn it
  exit_now(code);
}

namespace {

// The child's side of start(). The system calls that only a child makes go through
// syscall(2), which the parent has bound already: a libc function called here for the
// first time would be bound lazily in every child (symbol lookup plus page faults).
[[noreturn]] MPX_CHILD_PATH void child_main(ProcessState& st, pid_t parent_pid,
                                            const sigset_t& mask) {
  // Die with the parent. If the parent died before prctl, getppid() has changed already.
  if (::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 ||
      ::syscall(SYS_getppid) != parent_pid) {
    ::syscall(SYS_kill, ::syscall(SYS_getpid), SIGKILL);
    exit_now(1);
  }
  if (t_is_forker) {
    t_is_forker = false;
    ::pthread_sigmask(SIG_SETMASK, &mask, nullptr);
  }
  Children::mark_stale();
  g_started_as = &st;
  g_started_parent = parent_pid;

  // As Python's util._close_stdin: the child does not read the parent's stdin. The path
  // is made on the stack: read from the binary's constants, it cost the child a page
  // fault of its own.
  char dev_null[] = "/dev/null";
  long devnull = ::syscall(SYS_openat, AT_FDCWD, dev_null, O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) {
    ::syscall(SYS_dup2, devnull, STDIN_FILENO);
    ::syscall(SYS_close, devnull);
  }

  detail::run_child_target(st.name, [&st] {
    if (st.runner) {
      st.runner->run();  // the child's copy of the object, as it was at fork
    } else if (st.target) {
      (*st.target)();
    }
  });
}

}  // namespace

MPX_CHILD_PATH void detail::run_child_target(const std::string& name,
                                             const std::function<void()>& target) {
  int code = 0;
  try {
    target();
  } catch (...) {
    std::fprintf(stderr, "Process %s:\n%s\n", name.c_str(),
                 detail::describe_current_exception().c_str());
    code = 1;
  }
  finish_child(code);
}

void detail::become_child(const ChildIdentity& self, pid_t parent_pid) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.parent.emplace(parent_pid, self.parent_name, self.parent_daemon);
  r.is_child = true;
  r.name = self.name;
  r.daemon = self.daemon;
  r.identity = self.identity;
  r.counter = 0;
}

namespace {
// A child's identity with this process as its parent (the rest is the caller's).
detail::ChildIdentity child_of_this_process() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  detail::ChildIdentity self;
  self.identity = r.identity;
  self.parent_name = r.name;
  self.parent_daemon = r.daemon;
  return self;
}
}  // namespace

detail::ChildIdentity detail::pool_worker_identity(StartMethod method, bool executor) {
  const char* prefix = "Fork";
  if (method == StartMethod::spawn) prefix = "Spawn";
  if (method == StartMethod::forkserver) prefix = "ForkServer";
  ChildIdentity self = child_of_this_process();
  self.name = std::string(prefix) + (executor ? "Process" : "PoolWorker");
  self.daemon = !executor;
  return self;
}

int detail::next_child_number() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return ++r.counter;
}

void detail::become_numbered(int number) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.identity.push_back(number);
  r.name = default_name(r.identity, std::move(r.name));
  r.counter = 0;
}

// ---------------------------------------------------------------------------
// Process

Process::Process() : Process(ProcessOptions{}, nullptr) {}

Process::Process(ProcessOptions options) : Process(std::move(options), nullptr) {}

Process::Process(ProcessOptions options, std::unique_ptr<detail::BoundCall> target)
    : state_(std::make_shared<ProcessState>()) {
  Registry& r = registry();
  {
    std::lock_guard lock(r.mu);
    state_->identity = r.identity;
    state_->identity.push_back(++r.counter);
    state_->daemon = options.daemon.value_or(r.daemon);
  }
  state_->name = options.name.empty() ? default_name(state_->identity) : std::move(options.name);
  state_->creator = ::getpid();
  state_->method = options.context;
  state_->target = std::move(target);
}

Process::Process(std::shared_ptr<ProcessState> state) noexcept : state_(std::move(state)) {}

Process::Process(Process&& other) noexcept = default;

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    Process old(std::move(*this));
    state_ = std::move(other.state_);
  }
  return *this;
}

Process::~Process() {
  if (!state_ || state_->creator != ::getpid()) return;
  try {
    std::lock_guard lock(state_->mu);
    if (state_->phase == Phase::kStarted) poll_locked(*state_);
  } catch (...) {
    // A destructor must not throw; the child stays registered and is reaped later.
  }
}

ProcessState& Process::checked(const char* what) const {
  if (!state_) throw InvalidStateError(std::string(what) + ": the Process object was moved from");
  if (state_->phase == Phase::kClosed) throw InvalidStateError("process object is closed");
  return *state_;
}

void Process::start() {
  ProcessState& st = checked("start");
  {
    std::lock_guard lock(st.mu);
    if (st.phase == Phase::kClosed) throw InvalidStateError("process object is closed");
    if (st.phase != Phase::kInitial) throw InvalidStateError("cannot start a process twice");
    if (st.creator != ::getpid())
      throw InvalidStateError("can only start a process object created by current process");
    st.phase = Phase::kStarting;
  }
  try {
    running_children();  // reap finished children, as Python's _cleanup()
    Children::install_handlers(exit_handler);
    flush_std_streams();
    const StartMethod method = st.method ? *st.method : detail::default_start_method();
    // A subclass (Python's `class Worker(Process): def run(self)`) runs its run().
    st.runner = typeid(*this) == typeid(Process) ? nullptr : this;
    if (st.runner && method != StartMethod::fork)
      throw ValueError(
          "mpx: a Process subclass runs its run() only under the fork start "
          "method (the object cannot travel to a spawned child)");
    detail::StartedChild started;
    if (method == StartMethod::fork) {
      const pid_t parent_pid = ::getpid();
      sigset_t mask;
      ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
      const std::function<pid_t()> child = [&st, parent_pid, &mask] {
        pid_t pid = ::fork();
        if (pid == 0) child_main(st, parent_pid, mask);
        return pid;
      };
      started.pid = detail::run_forking(child, "fork");
      started.pidfd = detail::child_pidfd(started.pid);
    } else {
      detail::ChildIdentity self = child_of_this_process();
      {
        std::lock_guard lock(st.mu);
        self.name = st.name;
        self.daemon = st.daemon;
        self.identity = st.identity;
      }
      started = detail::start_not_forked(self, method, st.target.get());
    }
    std::unique_ptr<detail::BoundCall> target;
    {
      std::lock_guard lock(st.mu);
      st.pid = started.pid;
      st.pidfd = std::move(started.pidfd);
      st.phase = Phase::kStarted;
      // As Python, the parent drops the target once the child has its copy.
      target = std::move(st.target);
    }
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    r.children.push_back(state_);
  } catch (...) {
    std::lock_guard lock(st.mu);
    st.phase = Phase::kInitial;
    throw;
  }
}

void Process::run() {
  std::unique_ptr<detail::BoundCall> target;
  {
    std::lock_guard lock(checked("run").mu);
    target = std::move(state_->target);  // as Python's run(): the target runs once
  }
  if (target) (*target)();
}

void Process::join() {
  join_until(detail::Deadline::never());
}

void Process::join_until(const detail::Deadline& deadline) {
  ProcessState& st = checked("join");
  if (st.creator != ::getpid()) throw InvalidStateError("can only join a child process");
  {
    std::lock_guard lock(st.mu);
    if (st.phase != Phase::kStarted) throw InvalidStateError("can only join a started process");
  }
  wait_exit(st, deadline);
}

bool Process::is_alive() const {
  ProcessState& st = checked("is_alive");
  if (st.creator != ::getpid()) throw InvalidStateError("can only test a child process");
  std::lock_guard lock(st.mu);
  if (st.phase == Phase::kInitial) return false;
  if (st.phase == Phase::kStarting) return true;
  return !poll_locked(st).has_value();
}

std::optional<int> Process::exitcode() const {
  ProcessState& st = checked("exitcode");
  std::lock_guard lock(st.mu);
  if (st.phase != Phase::kStarted) return std::nullopt;
  if (st.creator != ::getpid()) return st.returncode;
  return poll_locked(st);
}

pid_t Process::pid() const {
  ProcessState& st = checked("pid");
  std::lock_guard lock(st.mu);
  return st.pid;
}

std::string Process::name() const {
  if (!state_) throw InvalidStateError("name: the Process object was moved from");
  std::lock_guard lock(state_->mu);
  return state_->name;
}

void Process::set_name(std::string name) {
  if (!state_) throw InvalidStateError("set_name: the Process object was moved from");
  std::lock_guard lock(state_->mu);
  state_->name = std::move(name);
}

bool Process::daemon() const {
  if (!state_) throw InvalidStateError("daemon: the Process object was moved from");
  std::lock_guard lock(state_->mu);
  return state_->daemon;
}

void Process::set_daemon(bool daemon) {
  ProcessState& st = checked("set_daemon");
  std::lock_guard lock(st.mu);
  if (st.phase != Phase::kInitial) throw InvalidStateError("process has already started");
  st.daemon = daemon;
}

namespace {
void send_signal(ProcessState& st, int sig, const char* what) {
  std::lock_guard lock(st.mu);
  if (st.phase != Phase::kStarted)
    throw InvalidStateError(std::string("can only ") + what + " a started process");
  if (st.creator != ::getpid())
    throw InvalidStateError(std::string("can only ") + what + " a child process");
  if (st.returncode) return;
  sys::pidfd_send_signal(st.pidfd.get(), sig);
}
}  // namespace

void Process::terminate() {
  send_signal(checked("terminate"), SIGTERM, "terminate");
}

void Process::kill() {
  send_signal(checked("kill"), SIGKILL, "kill");
}

void Process::close() {
  if (!state_) throw InvalidStateError("close: the Process object was moved from");
  ProcessState& st = *state_;
  {
    std::lock_guard lock(st.mu);
    if (st.phase == Phase::kClosed) return;
    if (st.phase == Phase::kStarting ||
        (st.phase == Phase::kStarted && st.creator == ::getpid() && !poll_locked(st))) {
      throw InvalidStateError(
          "Cannot close a process while it is still running. You should first call join() or "
          "terminate().");
    }
    st.phase = Phase::kClosed;
    st.pidfd.reset();
    st.target.reset();
  }
  forget_child(&st);
}

int Process::sentinel() const {
  ProcessState& st = checked("sentinel");
  std::lock_guard lock(st.mu);
  if (st.phase != Phase::kStarted) throw InvalidStateError("process not started");
  return st.pidfd.get();
}

// ---------------------------------------------------------------------------
// Module functions

bool ProcessInfo::is_alive() const noexcept {
  if (pid_ == ::getpid() || pid_ == ::getppid()) return true;
  return ::kill(pid_, 0) == 0 || errno == EPERM;
}

ProcessInfo current_process() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return ProcessInfo(::getpid(), r.name, r.daemon);
}

std::optional<ProcessInfo> parent_process() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return r.parent;
}

std::vector<Process> active_children() {
  std::vector<Process> result;
  for (auto& st : running_children())
    result.push_back(Process(std::move(st)));
  return result;
}

void exit(int code) {
  bool is_child;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    is_child = r.is_child;
  }
  if (is_child) detail::finish_child(code);
  std::exit(code);
}

}  // namespace mpx
