// Process lifecycle (mpx/process.hpp): states, exit codes, timeouts, daemon children at
// exit, misuse errors, the child's view of itself, sentinels, no zombies, no fd leaks.
#include "mpx/process.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpx/errors.hpp"
#include "support/leak_check.hpp"
#include "sys/fd.hpp"
#include "sys/pidfd.hpp"

namespace {

using namespace std::chrono_literals;
using mpx::sys::Fd;
using mpx::sys::make_pipe;

void write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

// Reads up to and excluding '\n'.
std::string read_line(int fd) {
  std::string out;
  char c;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') return out;
    out += c;
  }
}

// Blocks until the other end writes a byte or closes.
void wait_for(int fd) {
  char c;
  while (::read(fd, &c, 1) < 0 && errno == EINTR) {
  }
}

bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

TEST(ProcessTest, StatesBeforeStartWhileRunningAndAfterJoin) {
  auto [release_r, release_w] = make_pipe();
  mpx::Process p([&] { wait_for(release_r.get()); });
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

  write_all(release_w.get(), "x");
  p.join();
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 0);
  p.join();  // joining again is fine
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTest, TargetReceivesItsArgumentsAndCapturedState) {
  auto [r, w] = make_pipe();
  std::string prefix = "got";
  mpx::Process p(
      [&, fd = w.get()](int a, const std::string& b) {
        write_all(fd, prefix + " " + std::to_string(a) + " " + b);
      },
      42, std::string("hello"));
  p.start();
  w.reset();
  EXPECT_EQ(read_all(r.get()), "got 42 hello");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTest, ExitcodeIsZeroWhenTheTargetReturns) {
  mpx::Process p([] { return 5; });  // the return value is ignored, as in Python
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTest, ExitcodeIsNAfterMpxExit) {
  mpx::Process p([] { mpx::exit(7); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST(ProcessTest, ExitcodeIsNAfterStdExit) {
  mpx::Process p([] { std::exit(3); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST(ProcessTest, UncaughtExceptionGivesExitcodeOneAndPrintsTypeAndMessageOnStderr) {
  auto [r, w] = make_pipe();
  mpx::Process p(mpx::ProcessOptions{.name = "thrower"}, [fd = w.get()] {
    ::dup2(fd, STDERR_FILENO);
    throw std::invalid_argument("bad value 17");
  });
  p.start();
  w.reset();
  std::string err = read_all(r.get());
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_NE(err.find("Process thrower:"), std::string::npos) << err;
  EXPECT_NE(err.find("std::invalid_argument: bad value 17"), std::string::npos) << err;
}

TEST(ProcessTest, UncaughtNonStandardExceptionGivesExitcodeOneAndNamesItsType) {
  auto [r, w] = make_pipe();
  mpx::Process p([fd = w.get()] {
    ::dup2(fd, STDERR_FILENO);
    throw 42;
  });
  p.start();
  w.reset();
  std::string err = read_all(r.get());
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_NE(err.find("int"), std::string::npos) << err;
}

TEST(ProcessTest, TerminateGivesExitcodeMinus15) {
  auto [ready_r, ready_w] = make_pipe();
  mpx::Process p([fd = ready_w.get()] {
    write_all(fd, "x");
    for (;;)
      ::pause();
  });
  p.start();
  wait_for(ready_r.get());
  p.terminate();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGTERM);
  p.terminate();  // after exit: no-op
}

TEST(ProcessTest, KillGivesExitcodeMinus9) {
  mpx::Process p([] {
    for (;;)
      ::pause();
  });
  p.start();
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  p.kill();  // after exit: no-op
}

TEST(ProcessTest, JoinWithTimeoutOnALiveChildReturnsWithTheChildAlive) {
  auto [release_r, release_w] = make_pipe();
  mpx::Process p([&] { wait_for(release_r.get()); });
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
  write_all(release_w.get(), "x");
  p.join(60s);
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTest, SentinelBecomesReadableWhenTheChildExits) {
  auto [release_r, release_w] = make_pipe();
  mpx::Process p([&] { wait_for(release_r.get()); });
  p.start();
  int sentinel = p.sentinel();
  EXPECT_FALSE(readable(sentinel, 0ms));
  write_all(release_w.get(), "x");
  EXPECT_TRUE(readable(sentinel, 60'000ms));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTest, MisuseThrowsInvalidStateError) {
  mpx::Process p([] {});
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

TEST(ProcessTest, CloseWhileRunningThrowsAndLeavesTheProcessUsable) {
  auto [release_r, release_w] = make_pipe();
  mpx::Process p([&] { wait_for(release_r.get()); });
  p.start();
  EXPECT_THROW(p.close(), mpx::InvalidStateError);
  EXPECT_TRUE(p.is_alive());
  write_all(release_w.get(), "x");
  p.join();
  p.close();
}

TEST(ProcessTest, CloseBeforeStartIsAllowedAndStartThenThrows) {
  mpx::Process p([] {});
  p.close();
  EXPECT_THROW(p.start(), mpx::InvalidStateError);
}

TEST(ProcessTest, MisuseErrorsAreUsageErrors) {
  mpx::Process p;
  EXPECT_THROW(p.join(), mpx::UsageError);
  EXPECT_THROW(p.join(), std::logic_error);
}

TEST(ProcessTest, ACopiedProcessObjectCannotBeJoinedInTheChild) {
  mpx::Process p;
  mpx::Process* self = &p;
  p = mpx::Process([self] {
    try {
      self->join();
    } catch (const mpx::InvalidStateError&) {
      mpx::exit(21);
    }
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 21);
}

TEST(ProcessTest, MainProcessIsNamedMainProcessAndHasNoParent) {
  EXPECT_EQ(mpx::current_process().name(), "MainProcess");
  EXPECT_EQ(mpx::current_process().pid(), ::getpid());
  EXPECT_FALSE(mpx::current_process().daemon());
  EXPECT_TRUE(mpx::current_process().is_alive());
  EXPECT_FALSE(mpx::parent_process().has_value());
}

TEST(ProcessTest, ChildSeesItsOwnNameAndItsParent) {
  auto [r, w] = make_pipe();
  mpx::Process p(mpx::ProcessOptions{.name = "worker-7", .daemon = true}, [fd = w.get()] {
    auto me = mpx::current_process();
    auto parent = mpx::parent_process();
    std::string line = me.name() + " " + std::to_string(me.pid() == ::getpid()) + " " +
                       std::to_string(me.daemon()) + " " +
                       (parent ? parent->name() + " " + std::to_string(parent->pid()) + " " +
                                     std::to_string(parent->is_alive())
                               : std::string("none")) +
                       " " + std::to_string(mpx::active_children().size());
    write_all(fd, line);
  });
  EXPECT_TRUE(p.daemon());
  p.start();
  w.reset();
  EXPECT_EQ(read_all(r.get()), "worker-7 1 1 MainProcess " + std::to_string(::getpid()) + " 1 0");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTest, DefaultNamesCountUpAndGrandchildrenAreNamedHierarchically) {
  mpx::Process a;
  mpx::Process b;
  auto number = [](const std::string& name) { return std::stoi(name.substr(8)); };
  EXPECT_EQ(number(b.name()), number(a.name()) + 1);

  auto [r, w] = make_pipe();
  mpx::Process parent([fd = w.get()] {
    mpx::Process child([fd] { write_all(fd, mpx::current_process().name()); });
    child.start();
    child.join();
  });
  parent.start();
  w.reset();
  std::string grandchild_name = read_all(r.get());
  parent.join();
  EXPECT_EQ(grandchild_name, parent.name() + ":1");
}

TEST(ProcessTest, NameCanBeChanged) {
  mpx::Process p;
  p.set_name("renamed");
  EXPECT_EQ(p.name(), "renamed");
}

TEST(ProcessTest, HundredChildrenStartAndJoinWithoutZombiesOrLeakedFds) {
  auto fds_before = mpx_test::open_fds();
  {
    std::vector<mpx::Process> children;
    for (int i = 0; i < 100; ++i)
      children.emplace_back([i] { mpx::exit(i % 50); });
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

TEST(ProcessTest, ActiveChildrenListsRunningChildrenAndReapsFinishedOnes) {
  auto [release_r, release_w] = make_pipe();
  mpx::Process running([&] { wait_for(release_r.get()); });
  mpx::Process quick([] {});
  running.start();
  quick.start();
  // Wait until `quick` has exited without reaping it, then let active_children reap it.
  EXPECT_TRUE(readable(quick.sentinel(), 60'000ms));
  auto children = mpx::active_children();
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].pid(), running.pid());
  EXPECT_EQ(children[0].name(), running.name());
  EXPECT_EQ(quick.exitcode(), 0);
  write_all(release_w.get(), "x");
  running.join();
  EXPECT_TRUE(mpx::active_children().empty());
}

TEST(ProcessTest, ProcessDestroyedWhileRunningKeepsRunningAndStaysAChild) {
  auto [release_r, release_w] = make_pipe();
  pid_t pid = 0;
  {
    mpx::Process p([&] { wait_for(release_r.get()); });
    p.start();
    pid = p.pid();
  }
  auto children = mpx::active_children();
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].pid(), pid);
  EXPECT_TRUE(children[0].is_alive());
  write_all(release_w.get(), "x");
  children[0].join();
  EXPECT_EQ(children[0].exitcode(), 0);
}

TEST(ProcessTest, MovedProcessKeepsItsChild) {
  mpx::Process p([] { mpx::exit(4); });
  p.start();
  mpx::Process q(std::move(p));
  EXPECT_THROW(p.join(), mpx::InvalidStateError);  // NOLINT(bugprone-use-after-move)
  q.join();
  EXPECT_EQ(q.exitcode(), 4);
}

TEST(ProcessTest, ChildStartedFromAThreadThatExitsKeepsRunning) {
  auto [release_r, release_w] = make_pipe();
  std::optional<mpx::Process> p;
  std::thread starter([&] {
    p.emplace([&] { wait_for(release_r.get()); });
    p->start();
  });
  starter.join();  // PR_SET_PDEATHSIG must not fire when this thread is gone
  p->join(100ms);
  EXPECT_TRUE(p->is_alive());
  write_all(release_w.get(), "x");
  p->join();
  EXPECT_EQ(p->exitcode(), 0);
}

TEST(ProcessTest, ThreadsStartAndJoinProcessesConcurrently) {
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        mpx::Process p([t, i] { mpx::exit(t * 10 + i); });
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

TEST(ProcessTest, TwoThreadsCanJoinTheSameProcess) {
  auto [release_r, release_w] = make_pipe();
  mpx::Process p([&] { wait_for(release_r.get()); });
  p.start();
  std::atomic<int> joined{0};
  std::thread other([&] {
    p.join();
    if (p.exitcode() == 0) ++joined;
  });
  write_all(release_w.get(), "x");
  p.join();
  if (p.exitcode() == 0) ++joined;
  other.join();
  EXPECT_EQ(joined.load(), 2);
}

TEST(ProcessTest, ChildStdinIsDevNull) {
  mpx::Process p([] {
    char c;
    mpx::exit(::read(STDIN_FILENO, &c, 1) == 0 ? 0 : 1);
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTest, BufferedStdoutIsNotPrintedTwice) {
  auto [r, w] = make_pipe();
  // A child process whose stdout is a pipe, so that stdio is fully buffered.
  mpx::Process outer([fd = w.get()] {
    ::dup2(fd, STDOUT_FILENO);
    std::printf("before;");
    mpx::Process inner([] { std::printf("inner;"); });
    inner.start();
    inner.join();
    std::printf("after;");
  });
  outer.start();
  w.reset();
  std::string out = read_all(r.get());
  outer.join();
  EXPECT_EQ(out, "before;inner;after;");
}

// Daemon children are terminated and non-daemon children joined when their parent ends
// normally. The parent here is itself a child: `middle`.
TEST(ProcessTest, AtNormalExitDaemonChildrenAreTerminatedAndOthersJoined) {
  auto [pids_r, pids_w] = make_pipe();
  auto [go_r, go_w] = make_pipe();
  auto [release_r, release_w] = make_pipe();
  mpx::Process middle([&] {
    mpx::Process daemon(mpx::ProcessOptions{.daemon = true}, [] {
      for (;;)
        ::pause();
    });
    mpx::Process worker([&] { wait_for(release_r.get()); });
    daemon.start();
    worker.start();
    write_all(pids_w.get(),
              std::to_string(daemon.pid()) + " " + std::to_string(worker.pid()) + "\n");
    wait_for(go_r.get());
    // Returning ends `middle` normally: both Process objects are still running.
  });
  middle.start();
  pids_w.reset();
  std::string line = read_line(pids_r.get());
  pid_t daemon_pid = 0, worker_pid = 0;
  ASSERT_EQ(std::sscanf(line.c_str(), "%d %d", &daemon_pid, &worker_pid), 2) << line;
  Fd daemon_fd = mpx::sys::pidfd_open(daemon_pid);
  Fd worker_fd = mpx::sys::pidfd_open(worker_pid);
  write_all(go_w.get(), "x");

  EXPECT_TRUE(readable(daemon_fd.get(), 60'000ms));  // the daemon is terminated
  middle.join(200ms);
  EXPECT_TRUE(middle.is_alive());  // still joining its non-daemon child
  EXPECT_FALSE(readable(worker_fd.get(), 0ms));
  write_all(release_w.get(), "x");
  middle.join();
  EXPECT_EQ(middle.exitcode(), 0);
  EXPECT_TRUE(readable(worker_fd.get(), 60'000ms));
}

// A daemon child that ignores SIGTERM gets SIGKILL after a grace period.
TEST(ProcessTest, AtNormalExitADaemonIgnoringSigtermIsKilled) {
  mpx::Process middle([] {
    auto [ready_r, ready_w] = make_pipe();
    mpx::Process daemon(mpx::ProcessOptions{.daemon = true}, [fd = ready_w.get()] {
      ::signal(SIGTERM, SIG_IGN);
      write_all(fd, "x");
      for (;;)
        ::pause();
    });
    daemon.start();
    wait_for(ready_r.get());
  });
  middle.start();
  middle.join(60s);
  EXPECT_EQ(middle.exitcode(), 0);
}

// Children get SIGKILL when their parent dies abruptly (PR_SET_PDEATHSIG), daemon or not.
TEST(ProcessTest, ChildrenDieWhenTheirParentIsKilled) {
  auto [pids_r, pids_w] = make_pipe();
  mpx::Process middle([&] {
    mpx::Process a([] {
      for (;;)
        ::pause();
    });
    mpx::Process b(mpx::ProcessOptions{.daemon = true}, [] {
      for (;;)
        ::pause();
    });
    a.start();
    b.start();
    write_all(pids_w.get(), std::to_string(a.pid()) + " " + std::to_string(b.pid()) + "\n");
    for (;;)
      ::pause();
  });
  middle.start();
  pids_w.reset();
  std::string line = read_line(pids_r.get());
  pid_t a_pid = 0, b_pid = 0;
  ASSERT_EQ(std::sscanf(line.c_str(), "%d %d", &a_pid, &b_pid), 2) << line;
  Fd a_fd = mpx::sys::pidfd_open(a_pid);
  Fd b_fd = mpx::sys::pidfd_open(b_pid);
  middle.kill();
  middle.join();
  EXPECT_EQ(middle.exitcode(), -SIGKILL);
  EXPECT_TRUE(readable(a_fd.get(), 60'000ms));
  EXPECT_TRUE(readable(b_fd.get(), 60'000ms));
}

// mpx::exit in a child joins that child's own children first, as a normal end does.
TEST(ProcessTest, MpxExitInAChildJoinsItsChildren) {
  auto [r, w] = make_pipe();
  mpx::Process middle([fd = w.get()] {
    mpx::Process child([fd] { write_all(fd, "child done"); });
    child.start();
    mpx::exit(9);
  });
  middle.start();
  w.reset();
  middle.join();
  EXPECT_EQ(middle.exitcode(), 9);
  EXPECT_EQ(read_all(r.get()), "child done");
}

// A child made by a plain fork() (not by Process) does not inherit its parent's
// children and can start processes of its own.
TEST(ProcessTest, APlainForkChildHasNoChildrenAndCanStartProcesses) {
  auto [release_r, release_w] = make_pipe();
  mpx::Process running([&] { wait_for(release_r.get()); });
  running.start();
  pid_t pid = ::fork();
  if (pid == 0) {
    bool no_children = mpx::active_children().empty();
    mpx::Process p([] { mpx::exit(5); });
    p.start();
    p.join();
    ::_exit(no_children && p.exitcode() == 5 ? 0 : 1);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  write_all(release_w.get(), "x");
  running.join();
  EXPECT_EQ(running.exitcode(), 0);
}

TEST(ProcessTest, CpuCountIsBetweenOneAndTheNumberOfConfiguredCpus) {
  int n = mpx::cpu_count();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, ::sysconf(_SC_NPROCESSORS_CONF));
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_LE(n, CPU_COUNT(&set));
}

TEST(ProcessTest, CpuCountFollowsTheAffinityMask) {
  // In a child, so that the test process keeps its mask.
  mpx::Process p([] {
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

}  // namespace
