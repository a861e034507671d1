// Subclassing Process and Thread, as Python's `class Worker(Process): def run(self)`
// (mpx/process.hpp, mpx/thread.hpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>

#include "mpx/errors.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"
#include "mpx/thread.hpp"

using namespace std::chrono_literals;

namespace {

struct Doubler : mpx::Process {
  int n;
  mpx::Queue<int> results;
  explicit Doubler(int value) : mpx::Process(mpx::ProcessOptions{.name = "doubler"}), n(value) {}
  void run() override { results.put(n * 2 + (::getpid() == parent ? 1000 : 0)); }
  pid_t parent = ::getpid();
};

TEST(SubclassTest, AProcessSubclassRunsItsRunInTheChild) {
  Doubler w(21);
  w.start();
  EXPECT_EQ(w.results.get(30s), 42);  // computed in another process
  w.join();
  EXPECT_EQ(w.exitcode(), 0);
  EXPECT_EQ(w.name(), "doubler");
}

struct Failing : mpx::Process {
  void run() override { throw std::runtime_error("run failed"); }
};

TEST(SubclassTest, AnExceptionFromAProcessSubclassRunIsExitCode1) {
  Failing w;
  w.start();
  w.join();
  EXPECT_EQ(w.exitcode(), 1);
}

// A subclass that keeps Python's default run(): the target runs.
struct WithTarget : mpx::Process {
  explicit WithTarget(mpx::Queue<int> q) : mpx::Process([q]() mutable { q.put(7); }) {}
};

TEST(SubclassTest, AProcessSubclassWithoutRunRunsItsTarget) {
  mpx::Queue<int> q;
  WithTarget w(q);
  w.start();
  EXPECT_EQ(q.get(30s), 7);
  w.join();
  EXPECT_EQ(w.exitcode(), 0);
}

TEST(SubclassTest, CallingRunDirectlyRunsTheTargetInTheCaller) {
  pid_t ran_in = 0;
  mpx::Process p([&] { ran_in = ::getpid(); });
  p.run();
  EXPECT_EQ(ran_in, ::getpid());
  int calls = 0;
  mpx::Thread t([&] { ++calls; });
  t.run();
  t.run();  // the target runs once, as Python drops it after run()
  EXPECT_EQ(calls, 1);
}

struct Spawned : mpx::Process {
  Spawned() : mpx::Process(mpx::ProcessOptions{.context = mpx::StartMethod::spawn}) {}
  void run() override {}
};

TEST(SubclassTest, AProcessSubclassCannotBeSpawned) {
  Spawned w;
  EXPECT_THROW(w.start(), mpx::ValueError);
}

struct Counter : mpx::Thread {
  int count = 0;
  std::atomic<unsigned long> ran_on{0};
  Counter() : mpx::Thread(mpx::ThreadOptions{.name = "counter"}) {}
  void run() override {
    ran_on = mpx::get_ident();
    count = 42;
  }
};

TEST(SubclassTest, AThreadSubclassRunsItsRunOnTheNewThread) {
  Counter c;
  c.start();
  c.join();
  EXPECT_EQ(c.count, 42);
  EXPECT_EQ(c.ran_on.load(), c.ident());
  EXPECT_NE(c.ran_on.load(), mpx::get_ident());
  EXPECT_EQ(c.name(), "counter");
  EXPECT_FALSE(c.is_alive());
}

struct Raising : mpx::Thread {
  void run() override { throw std::runtime_error("thread run failed"); }
};

TEST(SubclassTest, AnExceptionFromAThreadSubclassRunGoesToTheExcepthook) {
  std::string seen;
  mpx::ExceptHook old = mpx::set_excepthook([&](const mpx::ExceptHookArgs& args) {
    try {
      std::rethrow_exception(args.exc_value);
    } catch (const std::exception& e) {
      seen = e.what();
    }
  });
  Raising r;
  r.start();
  r.join();
  mpx::set_excepthook(old);
  EXPECT_EQ(seen, "thread run failed");
}

}  // namespace
