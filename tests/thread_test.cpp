// Thread (mpx/thread.hpp): the same lifecycle as Process, on a thread.
#include "mpx/thread.hpp"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
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

// What the thread named `name` running `target` prints on stderr before it ends.
template <class F>
std::string stderr_of_thread(const char* name, F target) {
  auto [r, w] = mpx::sys::make_pipe();
  mpx::sys::Fd saved(::dup(STDERR_FILENO));
  ::dup2(w.get(), STDERR_FILENO);
  mpx::Thread t(mpx::ThreadOptions{.name = name}, std::move(target));
  t.start();
  t.join();
  ::dup2(saved.get(), STDERR_FILENO);
  EXPECT_FALSE(t.is_alive());  // the exception ended it
  w.reset();
  std::string err;
  char buf[512];
  ssize_t n;
  while ((n = ::read(r.get(), buf, sizeof buf)) > 0)
    err.append(buf, static_cast<std::size_t>(n));
  return err;
}

TEST(ThreadTest, UncaughtExceptionEndsTheThreadAndIsPrintedOnStderr) {
  std::string err = stderr_of_thread("bad", [] { throw std::runtime_error("oops"); });
  EXPECT_NE(err.find("Exception in thread bad:"), std::string::npos) << err;
  EXPECT_NE(err.find("std::runtime_error: oops"), std::string::npos) << err;
}

TEST(ThreadTest, UncaughtNonStandardExceptionIsPrintedWithItsType) {
  std::string err = stderr_of_thread("odd", [] { throw 42; });
  EXPECT_NE(err.find("Exception in thread odd:\nint\n"), std::string::npos) << err;
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

// ---------------------------------------------------------------------------
// The rest of threading: current_thread, main_thread, enumerate, Timer, excepthook

TEST(ThreadTest, CurrentThreadInsideAThreadIsThatThread) {
  std::atomic<bool> same{false}, ids{false};
  std::string name;
  mpx::Thread* self = nullptr;
  std::promise<void> ready;
  auto go = ready.get_future();
  mpx::Thread t(mpx::ThreadOptions{.name = "worker"}, [&] {
    go.wait();
    mpx::Thread me = mpx::current_thread();
    same = me == *self;
    name = me.name();
    ids = me.ident() == mpx::get_ident() && me.native_id() == mpx::get_native_id();
  });
  self = &t;
  t.start();
  ready.set_value();
  t.join();
  EXPECT_TRUE(same.load());
  EXPECT_EQ(name, "worker");
  EXPECT_TRUE(ids.load());
  EXPECT_NE(mpx::get_native_id(), t.native_id());
}

TEST(ThreadTest, TheMainThreadIsMainThreadAndCannotJoinItself) {
  // gtest runs the tests on the process's main thread.
  ASSERT_EQ(mpx::get_native_id(), ::getpid());
  mpx::Thread main = mpx::main_thread();
  EXPECT_THROW(main.join(), mpx::InvalidStateError);  // before current_thread() named it too
  EXPECT_TRUE(mpx::current_thread() == main);
  EXPECT_EQ(main.name(), "MainThread");
  EXPECT_FALSE(main.daemon());
  EXPECT_TRUE(main.is_alive());
  EXPECT_EQ(main.native_id(), ::getpid());
  EXPECT_EQ(main.ident(), mpx::get_ident());
  EXPECT_THROW(main.join(), mpx::InvalidStateError);
  EXPECT_THROW(main.start(), mpx::InvalidStateError);
  EXPECT_THROW(main.set_daemon(true), mpx::InvalidStateError);
}

TEST(ThreadTest, AStdThreadGetsADummyThreadThatEndsWithIt) {
  std::optional<mpx::Thread> dummy;
  bool alive = false, same = false;
  pid_t tid = 0;
  std::thread t([&] {
    dummy.emplace(mpx::current_thread());
    alive = dummy->is_alive();
    same = mpx::current_thread() == *dummy;
    tid = mpx::get_native_id();
    bool listed = false;
    for (const auto& th : mpx::enumerate())
      listed = listed || th == *dummy;
    alive = alive && listed;
  });
  t.join();
  ASSERT_TRUE(dummy);
  EXPECT_EQ(dummy->name().rfind("Dummy-", 0), 0u) << dummy->name();
  EXPECT_TRUE(dummy->daemon());
  EXPECT_TRUE(alive);
  EXPECT_TRUE(same);
  EXPECT_EQ(dummy->native_id(), tid);
  EXPECT_NE(dummy->ident(), 0u);
  EXPECT_FALSE(dummy->is_alive());  // its std::thread has ended
  EXPECT_THROW(dummy->join(), mpx::InvalidStateError);
  for (const auto& th : mpx::enumerate())
    EXPECT_FALSE(th == *dummy);
}

TEST(ThreadTest, EnumerateAndActiveCountListTheLiveThreads) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  mpx::Thread a([released] { released.wait(); });
  mpx::Thread b([released] { released.wait(); });
  const int before = mpx::active_count();
  a.start();
  b.start();
  auto contains = [](const mpx::Thread& t) {
    for (const auto& th : mpx::enumerate())
      if (th == t) return true;
    return false;
  };
  EXPECT_TRUE(contains(a));
  EXPECT_TRUE(contains(b));
  EXPECT_TRUE(contains(mpx::main_thread()));
  EXPECT_EQ(mpx::active_count(), before + 2);
  release.set_value();
  a.join();
  b.join();
  EXPECT_FALSE(contains(a));
  EXPECT_EQ(mpx::active_count(), before);
}

TEST(ThreadTest, ATimerCallsItsFunctionAfterTheInterval) {
  std::atomic<int> got{0};
  const auto t0 = std::chrono::steady_clock::now();
  std::atomic<std::chrono::steady_clock::duration> when{};
  mpx::Timer timer(
      150ms,
      [&](int v) {
        when = std::chrono::steady_clock::now() - t0;
        got = v;
      },
      7);
  EXPECT_EQ(timer.name().rfind("Thread-", 0), 0u);
  timer.start();
  timer.join();
  EXPECT_EQ(got.load(), 7);
  EXPECT_GE(when.load(), 100ms);
  EXPECT_LT(when.load(), 30s);
}

TEST(ThreadTest, ACancelledTimerDoesNotCallItsFunction) {
  std::atomic<bool> called{false};
  mpx::Timer timer(60s, [&] { called = true; });
  timer.start();
  const auto t0 = std::chrono::steady_clock::now();
  timer.cancel();
  timer.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
  EXPECT_FALSE(called.load());
  mpx::Timer early(0ms, [&] { called = true; });
  early.cancel();  // before start
  early.start();
  early.join();
  EXPECT_FALSE(called.load());
}

TEST(ThreadTest, ASetExcepthookGetsTheExceptionAndItsThread) {
  std::string type, what, thread_name;
  auto previous = mpx::set_excepthook([&](const mpx::ExceptHookArgs& args) {
    type = args.exc_type;
    thread_name = args.thread ? args.thread->name() : "";
    try {
      std::rethrow_exception(args.exc_value);
    } catch (const std::exception& e) {
      what = e.what();
    }
  });
  mpx::Thread t(mpx::ThreadOptions{.name = "failing"}, [] { throw std::out_of_range("index 9"); });
  t.start();
  t.join();
  mpx::set_excepthook(std::move(previous));
  EXPECT_EQ(type, "std::out_of_range");
  EXPECT_EQ(what, "index 9");
  EXPECT_EQ(thread_name, "failing");
}

TEST(ThreadTest, AnExcepthookThatThrowsIsReportedByTheDefaultOne) {
  auto previous =
      mpx::set_excepthook([](const mpx::ExceptHookArgs&) { throw std::logic_error("hook broke"); });
  std::string err = stderr_of_thread("t", [] { throw 42; });
  mpx::set_excepthook(std::move(previous));
  EXPECT_NE(err.find("Exception in threading.excepthook:\n"), std::string::npos) << err;
  EXPECT_NE(err.find("std::logic_error: hook broke"), std::string::npos) << err;
}

TEST(ThreadTest, InAForkedChildTheForkingThreadIsTheMainThread) {
  mpx::current_thread();  // the parent's main thread has a state, copied into the child
  mpx::Process p([] {
    mpx::Thread main = mpx::main_thread();
    bool ok = mpx::current_thread() == main && main.native_id() == ::getpid() &&
              main.name() == "MainThread" && mpx::enumerate().size() == 1;
    mpx::exit(ok ? 0 : 1);
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  // A child forked for a thread other than the main one (by mpx's forker thread).
  std::atomic<int> code{-1};
  mpx::Thread starter([&] {
    mpx::Process q([] {
      bool ok = mpx::current_thread() == mpx::main_thread() &&
                mpx::main_thread().native_id() == ::getpid();
      mpx::exit(ok ? 0 : 1);
    });
    q.start();
    q.join();
    code = q.exitcode().value_or(-2);
  });
  starter.start();
  starter.join();
  EXPECT_EQ(code.load(), 0);
}

}  // namespace
