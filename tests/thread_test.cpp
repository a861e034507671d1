// Thread (mpx/thread.hpp): the same lifecycle as Process, on a thread.
#include "mpx/thread.hpp"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpx/errors.hpp"
#include "mpx/process.hpp"
#include "sys/fd.hpp"

namespace {

using namespace std::chrono_literals;

TEST(ThreadTest, StatesBeforeStartWhileRunningAndAfterJoin) {
  std::promise<void> release;
  auto released = release.get_future();
  mpx::Thread t([&] { released.wait(); });
  EXPECT_FALSE(t.is_alive());
  EXPECT_EQ(t.ident(), 0u);
  EXPECT_EQ(t.native_id(), 0);
  EXPECT_EQ(t.name().rfind("Thread-", 0), 0u);
  EXPECT_FALSE(t.daemon());

  t.start();
  EXPECT_TRUE(t.is_alive());
  EXPECT_NE(t.ident(), 0u);
  EXPECT_GT(t.native_id(), 0);
  EXPECT_NE(t.native_id(), ::getpid());

  release.set_value();
  t.join();
  EXPECT_FALSE(t.is_alive());
  t.join();  // joining again is fine
}

TEST(ThreadTest, TargetReceivesItsArgumentsAndRunsOnItsOwnThread) {
  std::atomic<int> sum{0};
  std::atomic<pid_t> tid{0};
  mpx::Thread t(
      [&](int a, std::string b) {
        sum = a + static_cast<int>(b.size());
        tid = static_cast<pid_t>(::syscall(SYS_gettid));
      },
      40, std::string("ab"));
  t.start();
  t.join();
  EXPECT_EQ(sum.load(), 42);
  EXPECT_EQ(tid.load(), t.native_id());
}

TEST(ThreadTest, MoveOnlyTargetsAndArgumentsAreAccepted) {
  auto value = std::make_unique<int>(5);
  std::atomic<int> seen{0};
  mpx::Thread t([&seen](std::unique_ptr<int> v) { seen = *v; }, std::move(value));
  t.start();
  t.join();
  EXPECT_EQ(seen.load(), 5);
}

TEST(ThreadTest, JoinWithTimeoutOnALiveThreadReturnsWithTheThreadAlive) {
  std::promise<void> release;
  auto released = release.get_future();
  mpx::Thread t([&] { released.wait(); });
  t.start();
  auto t0 = std::chrono::steady_clock::now();
  t.join(200ms);
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(elapsed, 100ms);
  EXPECT_LT(elapsed, 30s);
  EXPECT_TRUE(t.is_alive());
  release.set_value();
  t.join(60s);
  EXPECT_FALSE(t.is_alive());
}

// Starts and joins `t` with this process's stderr going into a pipe; what was written.
std::string stderr_of_run(mpx::Thread& t) {
  auto [r, w] = mpx::sys::make_pipe();
  mpx::sys::Fd saved(::dup(STDERR_FILENO));
  ::dup2(w.get(), STDERR_FILENO);
  t.start();
  t.join();
  ::dup2(saved.get(), STDERR_FILENO);
  w.reset();
  std::string err;
  char buf[512];
  ssize_t n;
  while ((n = ::read(r.get(), buf, sizeof buf)) > 0)
    err.append(buf, static_cast<std::size_t>(n));
  return err;
}

TEST(ThreadTest, UncaughtExceptionEndsTheThreadAndIsPrintedOnStderr) {
  mpx::Thread t(mpx::ThreadOptions{.name = "bad"}, [] { throw std::runtime_error("oops"); });
  std::string err = stderr_of_run(t);
  EXPECT_NE(err.find("Exception in thread bad:"), std::string::npos) << err;
  EXPECT_NE(err.find("std::runtime_error: oops"), std::string::npos) << err;
  EXPECT_FALSE(t.is_alive());
}

TEST(ThreadTest, UncaughtNonStandardExceptionIsPrintedWithItsType) {
  mpx::Thread t(mpx::ThreadOptions{.name = "odd"}, [] { throw 42; });
  std::string err = stderr_of_run(t);
  EXPECT_NE(err.find("Exception in thread odd:\nint\n"), std::string::npos) << err;
  EXPECT_FALSE(t.is_alive());
}

TEST(ThreadTest, MisuseThrowsInvalidStateError) {
  mpx::Thread t([] {});
  EXPECT_THROW(t.join(), mpx::InvalidStateError);
  t.set_daemon(true);
  t.set_daemon(false);
  t.start();
  EXPECT_THROW(t.start(), mpx::InvalidStateError);
  EXPECT_THROW(t.set_daemon(true), mpx::InvalidStateError);
  t.join();
}

TEST(ThreadTest, AThreadCannotJoinItself) {
  std::atomic<bool> threw{false};
  mpx::Thread* self = nullptr;
  mpx::Thread t([&] {
    try {
      self->join();
    } catch (const mpx::InvalidStateError&) {
      threw = true;
    }
  });
  self = &t;
  t.start();
  t.join();
  EXPECT_TRUE(threw.load());
}

TEST(ThreadTest, NamesCountUpAndOptionsSetNameAndDaemon) {
  mpx::Thread a;
  mpx::Thread b;
  EXPECT_EQ(std::stoi(b.name().substr(7)), std::stoi(a.name().substr(7)) + 1);
  mpx::Thread c(mpx::ThreadOptions{.name = "io", .daemon = true}, [] {});
  EXPECT_EQ(c.name(), "io");
  EXPECT_TRUE(c.daemon());
  c.set_name("io-2");
  EXPECT_EQ(c.name(), "io-2");
}

TEST(ThreadTest, ThreadsCreatedByADaemonThreadAreDaemonsByDefault) {
  std::atomic<int> inherited{-1};
  mpx::Thread t(mpx::ThreadOptions{.daemon = true},
                [&] { inherited = mpx::Thread([] {}).daemon() ? 1 : 0; });
  t.start();
  t.join();
  EXPECT_EQ(inherited.load(), 1);
}

TEST(ThreadTest, ThreadDestroyedWhileRunningKeepsRunning) {
  auto release = std::make_shared<std::promise<void>>();
  auto finished = std::make_shared<std::promise<void>>();
  auto done = finished->get_future();
  {
    mpx::Thread t([release, finished] {
      release->get_future().wait();
      finished->set_value();
    });
    t.start();
  }
  release->set_value();
  EXPECT_EQ(done.wait_for(60s), std::future_status::ready);
}

TEST(ThreadTest, NonDaemonThreadsAreJoinedAtExit) {
  // A child process whose main function returns while its thread still runs: the child
  // must wait for the thread before it ends.
  auto [release_r, release_w] = mpx::sys::make_pipe();
  mpx::Process p([fd = release_r.get()] {
    mpx::Thread t([fd] {
      char c;
      if (::read(fd, &c, 1) != 1) std::abort();
    });
    t.start();
  });
  p.start();
  p.join(200ms);
  EXPECT_TRUE(p.is_alive());
  ASSERT_EQ(::write(release_w.get(), "x", 1), 1);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ThreadTest, DaemonThreadsAreNotJoinedAtExit) {
  mpx::Process p([] {
    mpx::Thread t(mpx::ThreadOptions{.daemon = true}, [] {
      for (;;)
        ::pause();
    });
    t.start();
    mpx::exit(6);
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 6);
}

TEST(ThreadTest, InAForkedChildOtherThreadsAreNotAlive) {
  std::promise<void> release;
  auto released = release.get_future();
  mpx::Thread t([&] { released.wait(); });
  t.start();
  mpx::Process p([&] {
    bool alive = t.is_alive();
    t.join();  // must not hang: the thread does not exist here
    mpx::exit(alive ? 1 : 0);
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  release.set_value();
  t.join();
}

}  // namespace
