// mpx::subprocess::Popen (mpx/subprocess.hpp): wait and poll with timeouts, signals,
// communicate() (megabytes both ways, timeouts and retries), the pipe ends (reads,
// writes, EPIPE, mpx::wait), pipelines, the reaping of a Popen destroyed while its child
// runs, many threads at once. The fixture of tests/support checks after every test that
// no child and no fd is left.
#include "mpx/subprocess.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mpx/connection.hpp"
#include "mpx/errors.hpp"
#include "support/subprocess.hpp"
#include "sys/fd.hpp"

namespace {

using namespace std::chrono_literals;
namespace sp = mpx::subprocess;
using mpx::sys::Fd;
using mpx::sys::make_pipe;
using mpx_test::inheritable_fds;
using mpx_test::is_child;
using mpx_test::read_all;
using mpx_test::seconds_since;

// The reaper (see ~Popen) holds a pipe for the life of the process, by design. Start it
// before the first test, so that the leak check does not count its pipe against
// whichever test needs it first.
class StartReaper : public ::testing::Environment {
 public:
  void SetUp() override {
    pid_t pid;
    {
      sp::Popen p({"sleep", "30"});
      pid = p.pid();
    }
    ::kill(pid, SIGKILL);
    const auto t0 = std::chrono::steady_clock::now();
    while (is_child(pid) && seconds_since(t0) < 20)
      std::this_thread::sleep_for(1ms);
  }
};
[[maybe_unused]] auto* const g_start_reaper = ::testing::AddGlobalTestEnvironment(new StartReaper);

TEST(PopenTest, PopenWaitTimeoutLeavesTheChildRunningUntilKilled) {
  sp::Popen p({"sh", "-c", "trap '' TERM; echo ready; exec sleep 30"}, {.stdout = sp::PIPE});
  EXPECT_EQ(p.stdout().readline(), "ready\n");  // the trap is set
  EXPECT_THROW(p.wait(100ms), mpx::TimeoutExpired);
  EXPECT_EQ(p.poll(), std::nullopt);
  EXPECT_EQ(p.returncode(), std::nullopt);
  p.terminate();  // ignored
  EXPECT_THROW(p.wait(200ms), mpx::TimeoutExpired);
  p.kill();
  EXPECT_EQ(p.wait(), -SIGKILL);
  EXPECT_EQ(p.returncode(), -SIGKILL);
  p.kill();  // reaped: nothing to signal, no error
  p.send_signal(SIGTERM);
}

TEST(PopenTest, InputWrittenThroughTheStdinEndComesBeforeCommunicate) {
  sp::Popen p({"sh", "-c", "echo a; read x; echo $x; echo b >&2"},
              {.stdin = sp::PIPE, .stdout = sp::PIPE, .stderr = sp::PIPE});
  p.stdin().write("line\n");
  p.stdin().flush();
  auto [out, err] = p.communicate({}, 30s);
  EXPECT_EQ(out, "a\nline\n");
  EXPECT_EQ(err, "b\n");
  EXPECT_EQ(p.returncode(), 0);
}

TEST(PopenTest, CommunicateTimeoutKeepsTheOutputForTheNextCall) {
  auto [release_r, release_w] = make_pipe();
  const std::string script =
      "echo first; read x <&" + std::to_string(release_r.get()) + "; echo second";
  sp::Popen p({"sh", "-c", script}, {.stdout = sp::PIPE, .pass_fds = {release_r.get()}});
  release_r.reset();
  std::string partial;
  try {
    p.communicate({}, 200ms);
    FAIL() << "no timeout";
  } catch (const mpx::TimeoutExpired& e) {
    partial = e.stdout();
  }
  EXPECT_TRUE(partial.empty() || partial == "first\n") << partial;
  release_w.reset();  // the child's read returns
  auto [out, err] = p.communicate();
  EXPECT_EQ(out, "first\nsecond\n");
  EXPECT_EQ(err, "");
  EXPECT_EQ(p.returncode(), 0);
}

TEST(PopenTest, CommunicateMoves64MiBInWhile64MiBComeOutOnStdoutAndStderr) {
  std::string input(64u << 20, '\0');
  for (std::size_t i = 0; i < input.size(); ++i)
    input[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  sp::Popen p({"tee", "/dev/stderr"}, {.stdin = sp::PIPE, .stdout = sp::PIPE, .stderr = sp::PIPE});
  auto [out, err] = p.communicate(input, 120s);
  EXPECT_EQ(p.returncode(), 0);
  EXPECT_EQ(out.size(), input.size());
  EXPECT_EQ(err.size(), input.size());
  EXPECT_TRUE(out == input);
  EXPECT_TRUE(err == input);
}

TEST(PopenTest, PipeEndsReadWriteAndClose) {
  sp::Popen p({"cat"}, {.stdin = sp::PIPE, .stdout = sp::PIPE});
  EXPECT_TRUE(p.stdin());
  EXPECT_FALSE(p.stderr());
  EXPECT_TRUE(p.stderr().closed());
  EXPECT_THROW(p.stderr().read(), mpx::InvalidStateError);
  EXPECT_THROW(p.stdin().read(), mpx::InvalidStateError);
  EXPECT_THROW(p.stdout().write("x"), mpx::InvalidStateError);
  EXPECT_EQ(p.stdin().write("one\ntwo\nthree"), 13u);
  p.stdin().close();
  EXPECT_TRUE(p.stdin().closed());
  EXPECT_THROW(p.stdin().write("x"), mpx::InvalidStateError);
  EXPECT_EQ(p.stdout().readline(), "one\n");
  EXPECT_EQ(p.stdout().read(2), "tw");
  EXPECT_EQ(p.stdout().read1(3), "o\nt");  // cat wrote it all at once: it is read ahead
  EXPECT_EQ(p.stdout().read(), "hree");
  EXPECT_EQ(p.stdout().readline(), "");
  EXPECT_EQ(p.wait(), 0);
  sp::Popen q({"printf", "a\\nb\\r\\nc"}, {.stdout = sp::PIPE, .text = true});
  EXPECT_EQ(q.stdout().readlines(), (std::vector<std::string>{"a\n", "b\n", "c"}));
  q.wait();
}

TEST(PopenTest, WhatAPipeEndReadAheadIsPartOfCommunicatesResult) {
  sp::Popen p({"printf", "1\\n2\\n3\\n"}, {.stdout = sp::PIPE});
  EXPECT_EQ(p.stdout().readline(), "1\n");
  EXPECT_EQ(p.communicate().first, "2\n3\n");
}

TEST(PopenTest, PipeEndsAndTheSentinelWorkInMpxWait) {
  auto [conn_a, conn_b] = mpx::Pipe();
  auto [release_r, release_w] = make_pipe();
  sp::Popen p({"sh", "-c", "read x; echo $x"}, {.stdin = release_r.get(), .stdout = sp::PIPE});
  release_r.reset();
  EXPECT_TRUE(mpx::wait({p.stdout(), conn_a, p.sentinel()}, 50ms).empty());
  ASSERT_EQ(::write(release_w.get(), "go\n", 3), 3);
  auto ready = mpx::wait({p.stdout(), conn_a}, 30s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].fd(), p.stdout().fileno());
  EXPECT_EQ(p.stdout().readline(), "go\n");
  ready = mpx::wait({p.sentinel()}, 30s);
  EXPECT_EQ(ready.size(), 1u);
  EXPECT_EQ(p.wait(), 0);
}

TEST(PopenTest, APipelineFeedsOnePopensStdoutToTheNext) {
  sp::Popen a({"printf", "b\\na\\nc\\n"}, {.stdout = sp::PIPE});
  sp::Popen b({"sort"}, {.stdin = a.stdout().fileno(), .stdout = sp::PIPE});
  a.stdout().close();
  EXPECT_EQ(b.communicate().first, "a\nb\nc\n");
  EXPECT_EQ(a.wait(), 0);
}

TEST(PopenTest, WritingToAChildThatExitedThrowsEpipeAndDoesNotKillUs) {
  sp::Popen p({"true"}, {.stdin = sp::PIPE});
  p.wait();
  std::string big(1 << 20, 'x');
  try {
    p.stdin().write(big);
    FAIL() << "no exception";
  } catch (const mpx::BrokenPipeError& e) {
    EXPECT_EQ(e.code().value(), EPIPE);
  }
  sigset_t pending;
  ::sigpending(&pending);
  EXPECT_FALSE(::sigismember(&pending, SIGPIPE));
  // communicate() ignores a child that stopped reading, as Python does.
  sp::Popen q({"head", "-c", "1"}, {.stdin = sp::PIPE, .stdout = sp::PIPE});
  EXPECT_EQ(q.communicate(std::string(8 << 20, 'y')).first, "y");
}

TEST(PopenTest, AccessorsReportTheChild) {
  sp::Popen p({"sh", "-c", "exit 7"});
  EXPECT_GT(p.pid(), 0);
  EXPECT_EQ(p.args(), (std::vector<std::string>{"sh", "-c", "exit 7"}));
  EXPECT_EQ(p.wait(), 7);
  EXPECT_EQ(p.poll(), 7);
  EXPECT_EQ(p.returncode(), 7);
}

TEST(PopenTest, APopenDestroyedWhileItsChildRunsLeavesItRunningAndItIsReapedLater) {
  auto [out_r, out_w] = make_pipe();
  auto [release_r, release_w] = make_pipe();
  pid_t pid;
  {
    sp::Popen p({"sh", "-c", "read x; echo still-running"},
                {.stdin = release_r.get(), .stdout = out_w.get()});
    pid = p.pid();
  }
  release_r.reset();
  out_w.reset();
  EXPECT_TRUE(is_child(pid));  // not killed, not reaped: still running
  ASSERT_EQ(::write(release_w.get(), "\n", 1), 1);
  EXPECT_EQ(read_all(out_r.get()), "still-running\n");
  // The reaper reaps it soon after it exits; no zombie stays.
  const auto t0 = std::chrono::steady_clock::now();
  while (is_child(pid) && seconds_since(t0) < 20)
    std::this_thread::sleep_for(5ms);
  EXPECT_FALSE(is_child(pid));
}

TEST(PopenTest, APopenDestroyedAfterItsChildExitedReapsItAtOnce) {
  pid_t pid;
  {
    sp::Popen p({"true"});
    pid = p.pid();
    pollfd exited{p.sentinel(), POLLIN, 0};
    ASSERT_EQ(::poll(&exited, 1, 30000), 1);
    EXPECT_TRUE(is_child(pid));  // a zombie until reaped
  }
  EXPECT_FALSE(is_child(pid));
}

TEST(PopenTest, HundredThreadsWithPopenSeeOnlyTheirOwnPipesInTheChild) {
  constexpr int kThreads = 100;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  const std::set<std::string> inherited = inheritable_fds();
  auto inode = [](int fd) {
    struct stat st {};
    ::fstat(fd, &st);
    return "pipe:[" + std::to_string(st.st_ino) + "]";
  };
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        sp::Popen p({"cat"}, {.stdin = sp::PIPE, .stdout = sp::PIPE, .close_fds = t % 2 == 0});
        // Once cat has echoed a line it is past its start-up (which opens locale files)
        // and waits for input: look at its fds from outside.
        p.stdin().write("ping\n");
        if (p.stdout().readline() != "ping\n") ++failures;
        std::set<std::string> fds;
        const std::string dir = "/proc/" + std::to_string(p.pid()) + "/fd";
        for (const auto& entry : std::filesystem::directory_iterator(dir))
          fds.insert(entry.path().filename().string() + " " +
                     std::filesystem::read_symlink(entry.path()).string());
        std::set<std::string> expected{"0 " + inode(p.stdin().fileno()),
                                       "1 " + inode(p.stdout().fileno())};
        std::error_code ec;
        expected.insert("2 " + std::filesystem::read_symlink("/proc/self/fd/2", ec).string());
        if (t % 2 == 1) expected.insert(inherited.begin(), inherited.end());
        if (fds != expected) {
          ++failures;
          std::string got;
          for (const auto& f : fds)
            got += f + "; ";
          for (const auto& f : expected)
            got += "| " + f;
          std::fprintf(stderr, "%s\n", got.c_str());
        }
        const std::string token = "token-" + std::to_string(t);
        if (p.communicate(token).first != token) ++failures;
      } catch (...) {
        ++failures;
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
