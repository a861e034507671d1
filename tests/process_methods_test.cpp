// Process lifecycle (mpx/process.hpp) under each start method, fork, spawn and forkserver:
// states, exit codes, timeouts, daemon children at exit, misuse errors, the child's view
// of itself, sentinels, no zombies, no fd leaks. The targets are portable (functions and
// captureless lambdas) and talk to the test through mpx objects that reach any child: a
// Context's events, queues, and files named by path. The fork-only behaviours (captured
// state, a Process object copied by fork) are in process_test.cpp.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpx/connection.hpp"
#include "mpx/context.hpp"
#include "mpx/errors.hpp"
#include "mpx/queues.hpp"
#include "mpx/sharedctypes.hpp"
#include "mpx/synchronize.hpp"
#include "support/leak_check.hpp"
#include "support/start_methods.hpp"
#include "sys/fd.hpp"
#include "sys/pidfd.hpp"

namespace {

using namespace std::chrono_literals;
using mpx::StartMethod;
using mpx::sys::Fd;
using Lines = mpx::SimpleQueue<std::string>;

bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

// A temporary file a child writes its stdout or stderr to, named by path (an fd does not
// reach a spawned child); removed with this object.
class OutputFile {
 public:
  OutputFile() : path_("/tmp/mpx-process-test-XXXXXX") { fd_ = Fd(::mkstemp(path_.data())); }
  ~OutputFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }
  std::string text() const {
    std::string out(1 << 16, '\0');
    ssize_t n = ::pread(fd_.get(), out.data(), out.size(), 0);
    out.resize(static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
    return out;
  }

 private:
  std::string path_;
  Fd fd_;
};

// In the child: sends its stdout (1) or stderr (2) to the file at `path`.
void redirect(int target, const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) mpx::exit(100);
  ::dup2(fd, target);
  ::close(fd);
}

// Targets.
void wait_event(mpx::Event release) {
  release.wait();
}
void pause_forever() {
  for (;;)
    ::pause();
}
void set_then_pause(mpx::Event ready) {
  ready.set();
  pause_forever();
}
void exit_with(int code) {
  mpx::exit(code);
}
void send_arguments(Lines out, int a, std::string b, std::vector<int> c) {
  out.put(std::to_string(a) + " " + b + " " + std::to_string(c.size()));
}
void throw_invalid_argument(std::string err_path) {
  redirect(STDERR_FILENO, err_path);
  throw std::invalid_argument("bad value 17");
}
void throw_int(std::string err_path) {
  redirect(STDERR_FILENO, err_path);
  throw 42;
}

std::string method_name(const ::testing::TestParamInfo<StartMethod>& param) {
  return std::string(mpx::start_method_name(param.param));
}

const auto* const g_forkserver_env =
    ::testing::AddGlobalTestEnvironment(new mpx_test::StartTheForkserver);

class ProcessMethods : public ::testing::TestWithParam<StartMethod> {
 protected:
  mpx::Context ctx() const { return mpx::Context(GetParam()); }
  std::string method() const { return std::string(mpx::start_method_name(GetParam())); }
};

TEST_P(ProcessMethods, StatesBeforeStartWhileRunningAndAfterJoin) {
  auto release = ctx().Event();
  mpx::Process p = ctx().Process(wait_event, release);
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  EXPECT_EQ(p.pid(), 0);
  EXPECT_EQ(p.name().rfind("Process-", 0), 0u);
  EXPECT_FALSE(p.daemon());

  p.start();
  EXPECT_TRUE(p.is_alive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  EXPECT_GT(p.pid(), 0);
  EXPECT_NE(p.pid(), ::getpid());

  release.set();
  p.join();
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 0);
  p.join();  // joining again is fine
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessMethods, TargetReceivesItsArguments) {
  Lines out;
  mpx::Process p =
      ctx().Process(send_arguments, out, 42, std::string("hello"), std::vector<int>{1, 2, 3});
  p.start();
  EXPECT_EQ(out.get(), "42 hello 3");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessMethods, ExitcodeIsZeroWhenTheTargetReturns) {
  mpx::Process p = ctx().Process([] { return 5; });  // the value is ignored, as in Python
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessMethods, ExitcodeIsNAfterMpxExit) {
  mpx::Process p = ctx().Process(exit_with, 7);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST_P(ProcessMethods, ExitcodeIsNAfterStdExit) {
  mpx::Process p = ctx().Process([] { std::exit(3); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST_P(ProcessMethods, UncaughtExceptionGivesExitcodeOneAndPrintsTypeAndMessageOnStderr) {
  OutputFile err;
  mpx::Process p =
      ctx().Process(mpx::ProcessOptions{.name = "thrower"}, throw_invalid_argument, err.path());
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_NE(err.text().find("Process thrower:"), std::string::npos) << err.text();
  EXPECT_NE(err.text().find("std::invalid_argument: bad value 17"), std::string::npos)
      << err.text();
}

TEST_P(ProcessMethods, UncaughtNonStandardExceptionGivesExitcodeOneAndNamesItsType) {
  OutputFile err;
  mpx::Process p = ctx().Process(throw_int, err.path());
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_NE(err.text().find("int"), std::string::npos) << err.text();
}

TEST_P(ProcessMethods, TerminateGivesExitcodeMinus15) {
  auto ready = ctx().Event();
  mpx::Process p = ctx().Process(set_then_pause, ready);
  p.start();
  ASSERT_TRUE(ready.wait(60s));
  p.terminate();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGTERM);
  p.terminate();  // after exit: no-op
}

TEST_P(ProcessMethods, KillGivesExitcodeMinus9) {
  mpx::Process p = ctx().Process(pause_forever);
  p.start();
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  p.kill();  // after exit: no-op
}

TEST_P(ProcessMethods, JoinWithTimeoutOnALiveChildReturnsWithTheChildAlive) {
  auto release = ctx().Event();
  mpx::Process p = ctx().Process(wait_event, release);
  p.start();
  auto t0 = std::chrono::steady_clock::now();
  p.join(200ms);
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(elapsed, 100ms);
  EXPECT_LT(elapsed, 30s);
  EXPECT_TRUE(p.is_alive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  p.join(0ms);
  EXPECT_TRUE(p.is_alive());
  release.set();
  p.join(60s);
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessMethods, SentinelBecomesReadableWhenTheChildExits) {
  auto release = ctx().Event();
  mpx::Process p = ctx().Process(wait_event, release);
  p.start();
  int sentinel = p.sentinel();
  EXPECT_FALSE(readable(sentinel, 0ms));
  release.set();
  EXPECT_TRUE(readable(sentinel, 60'000ms));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ProcessMethods, MisuseThrowsInvalidStateError) {
  mpx::Process p = ctx().Process([] {});
  EXPECT_THROW(p.join(), mpx::InvalidStateError);
  EXPECT_THROW(p.join(1ms), mpx::InvalidStateError);
  EXPECT_THROW(p.terminate(), mpx::InvalidStateError);
  EXPECT_THROW(p.kill(), mpx::InvalidStateError);
  EXPECT_THROW(p.sentinel(), mpx::InvalidStateError);
  p.set_daemon(true);  // fine before start
  p.set_daemon(false);
  p.start();
  EXPECT_THROW(p.start(), mpx::InvalidStateError);
  EXPECT_THROW(p.set_daemon(true), mpx::InvalidStateError);
  p.join();
  p.close();
  p.close();  // twice is fine
  EXPECT_THROW(p.start(), mpx::InvalidStateError);
  EXPECT_THROW(p.join(), mpx::InvalidStateError);
  EXPECT_THROW(p.is_alive(), mpx::InvalidStateError);
  EXPECT_THROW(p.exitcode(), mpx::InvalidStateError);
  EXPECT_THROW(p.pid(), mpx::InvalidStateError);
  EXPECT_THROW(p.sentinel(), mpx::InvalidStateError);
  EXPECT_THROW(p.terminate(), mpx::InvalidStateError);
  EXPECT_THROW(p.set_daemon(true), mpx::InvalidStateError);
  EXPECT_NO_THROW(p.name());
  EXPECT_NO_THROW(p.daemon());
}

TEST_P(ProcessMethods, CloseWhileRunningThrowsAndLeavesTheProcessUsable) {
  auto release = ctx().Event();
  mpx::Process p = ctx().Process(wait_event, release);
  p.start();
  EXPECT_THROW(p.close(), mpx::InvalidStateError);
  EXPECT_TRUE(p.is_alive());
  release.set();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  p.close();
}

TEST_P(ProcessMethods, CloseBeforeStartIsAllowedAndStartThenThrows) {
  mpx::Process p = ctx().Process([] {});
  p.close();
  EXPECT_THROW(p.start(), mpx::InvalidStateError);
}

// The child's view: "name is-me daemon parent-name parent-pid parent-alive children".
void report_identity(Lines out) {
  auto me = mpx::current_process();
  auto parent = mpx::parent_process();
  out.put(me.name() + " " + std::to_string(me.pid() == ::getpid()) + " " +
          std::to_string(me.daemon()) + " " +
          (parent ? parent->name() + " " + std::to_string(parent->pid()) + " " +
                        std::to_string(parent->is_alive())
                  : std::string("none")) +
          " " + std::to_string(mpx::active_children().size()));
}

TEST_P(ProcessMethods, ChildSeesItsOwnNameAndItsParent) {
  Lines out;
  mpx::Process p =
      ctx().Process(mpx::ProcessOptions{.name = "worker-7", .daemon = true}, report_identity, out);
  EXPECT_TRUE(p.daemon());
  p.start();
  EXPECT_EQ(out.get(), "worker-7 1 1 MainProcess " + std::to_string(::getpid()) + " 1 0");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// In the child: starts a grandchild by `method` that sends its name.
void start_named_grandchild(std::string method, Lines out) {
  mpx::Process child =
      mpx::get_context(method).Process([](Lines o) { o.put(mpx::current_process().name()); }, out);
  child.start();
  child.join();
}

TEST_P(ProcessMethods, DefaultNamesCountUpAndGrandchildrenAreNamedHierarchically) {
  mpx::Process a = ctx().Process([] {});
  mpx::Process b = ctx().Process([] {});
  auto number = [](const std::string& name) { return std::stoi(name.substr(8)); };
  EXPECT_EQ(number(b.name()), number(a.name()) + 1);

  Lines out;
  mpx::Process parent = ctx().Process(start_named_grandchild, method(), out);
  parent.start();
  EXPECT_EQ(out.get(), parent.name() + ":1");
  parent.join();
  EXPECT_EQ(parent.exitcode(), 0);
}

TEST_P(ProcessMethods, HundredChildrenStartAndJoinWithoutZombiesOrLeakedFds) {
  auto fds_before = mpx_test::open_fds();
  {
    std::vector<mpx::Process> children;
    for (int i = 0; i < 100; ++i)
      children.push_back(ctx().Process(exit_with, i % 50));
    for (auto& c : children)
      c.start();
    for (int i = 0; i < 100; ++i) {
      children[i].join();
      EXPECT_EQ(children[i].exitcode(), i % 50);
    }
    EXPECT_TRUE(mpx_test::child_processes().empty());
    EXPECT_TRUE(mpx::active_children().empty());
  }
  EXPECT_EQ(mpx_test::open_fds(), fds_before);
}

TEST_P(ProcessMethods, ActiveChildrenListsRunningChildrenAndReapsFinishedOnes) {
  auto release = ctx().Event();
  mpx::Process running = ctx().Process(wait_event, release);
  mpx::Process quick = ctx().Process([] {});
  running.start();
  quick.start();
  // Wait until `quick` has exited without reaping it, then let active_children reap it.
  EXPECT_TRUE(readable(quick.sentinel(), 60'000ms));
  auto children = mpx::active_children();
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].pid(), running.pid());
  EXPECT_EQ(children[0].name(), running.name());
  EXPECT_EQ(quick.exitcode(), 0);
  release.set();
  running.join();
  EXPECT_TRUE(mpx::active_children().empty());
}

TEST_P(ProcessMethods, ProcessDestroyedWhileRunningKeepsRunningAndStaysAChild) {
  auto release = ctx().Event();
  pid_t pid = 0;
  {
    mpx::Process p = ctx().Process(wait_event, release);
    p.start();
    pid = p.pid();
  }
  auto children = mpx::active_children();
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].pid(), pid);
  EXPECT_TRUE(children[0].is_alive());
  release.set();
  children[0].join();
  EXPECT_EQ(children[0].exitcode(), 0);
}

TEST_P(ProcessMethods, MovedProcessKeepsItsChild) {
  mpx::Process p = ctx().Process(exit_with, 4);
  p.start();
  mpx::Process q(std::move(p));
  EXPECT_THROW(p.join(), mpx::InvalidStateError);  // NOLINT(bugprone-use-after-move)
  q.join();
  EXPECT_EQ(q.exitcode(), 4);
}

TEST_P(ProcessMethods, ChildStartedFromAThreadThatExitsKeepsRunning) {
  auto release = ctx().Event();
  std::optional<mpx::Process> p;
  std::thread starter([&] {
    p.emplace(ctx().Process(wait_event, release));
    p->start();
  });
  starter.join();  // PR_SET_PDEATHSIG must not fire when this thread is gone
  p->join(100ms);
  EXPECT_TRUE(p->is_alive());
  release.set();
  p->join();
  EXPECT_EQ(p->exitcode(), 0);
}

TEST_P(ProcessMethods, ThreadsStartAndJoinProcessesConcurrently) {
#if defined(__SANITIZE_ADDRESS__)
  // GCC 12's AddressSanitizer takes none of its locks around fork (LLVM's runtime does
  // since 18): a child forked while another thread held the lock of its stack store spins
  // forever on its first malloc, here 4 runs in 20. Allocation stacks off would avoid it
  // but turn off the leak check too. Plain builds run it; spawn and forkserver fork from
  // no thread of this process.
  if (GetParam() == StartMethod::fork) GTEST_SKIP() << "AddressSanitizer is not fork-safe here";
#endif
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        mpx::Process p = ctx().Process(exit_with, t * 10 + i);
        p.start();
        p.join();
        if (p.exitcode() == t * 10 + i) ++good;
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(good.load(), 40);
  EXPECT_TRUE(mpx::active_children().empty());
}

TEST_P(ProcessMethods, TwoThreadsCanJoinTheSameProcess) {
  auto release = ctx().Event();
  mpx::Process p = ctx().Process(wait_event, release);
  p.start();
  std::atomic<int> joined{0};
  std::thread other([&] {
    p.join();
    if (p.exitcode() == 0) ++joined;
  });
  release.set();
  p.join();
  if (p.exitcode() == 0) ++joined;
  other.join();
  EXPECT_EQ(joined.load(), 2);
}

TEST_P(ProcessMethods, ChildStdinIsDevNull) {
  mpx::Process p = ctx().Process([] {
    char c;
    mpx::exit(::read(STDIN_FILENO, &c, 1) == 0 ? 0 : 1);
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// In the child, whose stdout is a file (fully buffered): prints around a grandchild.
void print_around_a_child(std::string method, std::string out_path) {
  redirect(STDOUT_FILENO, out_path);
  std::printf("before;");
  mpx::Process inner = mpx::get_context(method).Process([] { std::printf("inner;"); });
  inner.start();
  inner.join();
  std::printf("after;");
}

TEST_P(ProcessMethods, BufferedStdoutIsNotPrintedTwice) {
  OutputFile out;
  mpx::Process outer = ctx().Process(print_around_a_child, method(), out.path());
  outer.start();
  outer.join();
  EXPECT_EQ(outer.exitcode(), 0);
  EXPECT_EQ(out.text(), "before;inner;after;");
}

// Daemon children are terminated and non-daemon children joined when their parent ends
// normally. The parent here is itself a child: `middle`, which sends its children's pids,
// waits for `go` and returns.
void start_daemon_and_worker(std::string method, Lines pids, mpx::Event go, mpx::Event release) {
  auto ctx = mpx::get_context(method);
  mpx::Process daemon = ctx.Process(mpx::ProcessOptions{.daemon = true}, pause_forever);
  mpx::Process worker = ctx.Process(wait_event, release);
  daemon.start();
  worker.start();
  pids.put(std::to_string(daemon.pid()) + " " + std::to_string(worker.pid()));
  go.wait();
  // Returning ends `middle` normally: both Process objects are still running.
}

// Two pids sent by a child as "a b".
std::pair<pid_t, pid_t> two_pids(const std::string& line) {
  int a = 0, b = 0;
  EXPECT_EQ(std::sscanf(line.c_str(), "%d %d", &a, &b), 2) << line;
  return {a, b};
}

TEST_P(ProcessMethods, AtNormalExitDaemonChildrenAreTerminatedAndOthersJoined) {
  Lines pids;
  auto go = ctx().Event();
  auto release = ctx().Event();
  mpx::Process middle = ctx().Process(start_daemon_and_worker, method(), pids, go, release);
  middle.start();
  const auto [daemon_pid, worker_pid] = two_pids(pids.get());
  ASSERT_GT(daemon_pid, 0);
  Fd daemon_fd = mpx::sys::pidfd_open(daemon_pid);
  Fd worker_fd = mpx::sys::pidfd_open(worker_pid);
  go.set();

  EXPECT_TRUE(readable(daemon_fd.get(), 60'000ms));  // the daemon is terminated
  middle.join(200ms);
  EXPECT_TRUE(middle.is_alive());  // still joining its non-daemon child
  EXPECT_FALSE(readable(worker_fd.get(), 0ms));
  release.set();
  middle.join();
  EXPECT_EQ(middle.exitcode(), 0);
  EXPECT_TRUE(readable(worker_fd.get(), 60'000ms));
}

// A daemon child that ignores SIGTERM gets SIGKILL after a grace period.
void start_a_stubborn_daemon(std::string method) {
  auto ctx = mpx::get_context(method);
  auto ready = ctx.Event();
  mpx::Process daemon = ctx.Process(
      mpx::ProcessOptions{.daemon = true},
      [](mpx::Event r) {
        ::signal(SIGTERM, SIG_IGN);
        set_then_pause(r);
      },
      ready);
  daemon.start();
  ready.wait();
}

TEST_P(ProcessMethods, AtNormalExitADaemonIgnoringSigtermIsKilled) {
  mpx::Process middle = ctx().Process(start_a_stubborn_daemon, method());
  middle.start();
  middle.join(60s);
  EXPECT_EQ(middle.exitcode(), 0);
}

// Children get SIGKILL when their parent dies abruptly (PR_SET_PDEATHSIG), daemon or not.
void start_two_and_pause(std::string method, Lines pids) {
  auto ctx = mpx::get_context(method);
  mpx::Process a = ctx.Process(pause_forever);
  mpx::Process b = ctx.Process(mpx::ProcessOptions{.daemon = true}, pause_forever);
  a.start();
  b.start();
  pids.put(std::to_string(a.pid()) + " " + std::to_string(b.pid()));
  pause_forever();
}

TEST_P(ProcessMethods, ChildrenDieWhenTheirParentIsKilled) {
  Lines pids;
  mpx::Process middle = ctx().Process(start_two_and_pause, method(), pids);
  middle.start();
  const auto [a_pid, b_pid] = two_pids(pids.get());
  ASSERT_GT(a_pid, 0);
  Fd a_fd = mpx::sys::pidfd_open(a_pid);
  Fd b_fd = mpx::sys::pidfd_open(b_pid);
  middle.kill();
  middle.join();
  EXPECT_EQ(middle.exitcode(), -SIGKILL);
  EXPECT_TRUE(readable(a_fd.get(), 60'000ms));
  EXPECT_TRUE(readable(b_fd.get(), 60'000ms));
}

// mpx::exit in a child joins that child's own children first, as a normal end does.
void start_a_child_and_exit(std::string method, Lines out) {
  mpx::Process child = mpx::get_context(method).Process([](Lines o) { o.put("child done"); }, out);
  child.start();
  mpx::exit(9);
}

TEST_P(ProcessMethods, MpxExitInAChildJoinsItsChildren) {
  Lines out;
  mpx::Process middle = ctx().Process(start_a_child_and_exit, method(), out);
  middle.start();
  middle.join();
  EXPECT_EQ(middle.exitcode(), 9);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.get(), "child done");
}

// A child made by a plain fork() (not by Process) does not inherit its parent's
// children and can start processes of its own, by any method.
TEST_P(ProcessMethods, APlainForkChildHasNoChildrenAndCanStartProcesses) {
  auto release = ctx().Event();
  mpx::Process running = ctx().Process(wait_event, release);
  running.start();
  pid_t pid = ::fork();
  if (pid == 0) {
    bool no_children = mpx::active_children().empty();
    mpx::Process p = ctx().Process(exit_with, 5);
    p.start();
    p.join();
    ::_exit(no_children && p.exitcode() == 5 ? 0 : 1);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  release.set();
  running.join();
  EXPECT_EQ(running.exitcode(), 0);
}

TEST_P(ProcessMethods, CpuCountFollowsTheAffinityMask) {
  // In a child, so that the test process keeps its mask.
  mpx::Process p = ctx().Process([] {
    cpu_set_t set;
    ::sched_getaffinity(0, sizeof set, &set);
    int first = 0;
    while (!CPU_ISSET(first, &set))
      ++first;
    CPU_ZERO(&set);
    CPU_SET(first, &set);
    ::sched_setaffinity(0, sizeof set, &set);
    mpx::exit(mpx::cpu_count());
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
}

// As Python's module-level objects: after set_start_method, a Lock, a Value and a Pipe end
// made by their constructors reach the child; after set_start_method("fork") again, a
// new Lock reaches a spawn or forkserver child no more.
void under_the_lock_add(mpx::Lock lock, mpx::Value<int> value, mpx::Connection out) {
  std::lock_guard guard(lock);
  value.set(value.value() + 41);
  out.send(value.value());
}

TEST_P(ProcessMethods, ConstructorsFollowTheProgramsStartMethod) {
  mpx::set_start_method(method(), true);
  struct Restore {
    ~Restore() { mpx::set_start_method("fork", true); }
  } restore;
  mpx::Lock lock;
  mpx::Value<int> value(1);
  auto [in, out] = mpx::Pipe(false);
  mpx::Process p(under_the_lock_add, lock, value, std::move(out));
  p.start();
  EXPECT_EQ(in.recv<int>(), 42);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(value.value(), 42);
  mpx::set_start_method("fork", true);
  if (GetParam() == StartMethod::fork) return;
  mpx::Process q = ctx().Process([](mpx::Lock) {}, mpx::Lock());
  EXPECT_THROW(q.start(), mpx::ValueError);
}

INSTANTIATE_TEST_SUITE_P(All, ProcessMethods,
                         ::testing::Values(StartMethod::fork, StartMethod::spawn,
                                           StartMethod::forkserver),
                         method_name);

}  // namespace
