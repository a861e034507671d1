// Pools and executors whose workers come from spawn or forkserver (mpx/pool.hpp): the
// zygote is a new run of this program, handed the pool's shared memory; results,
// initializers, maxtasksperchild, crashes and the end of the pool are as under fork.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/errors.hpp"
#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "mpx/queues.hpp"
#include "process/start_methods.hpp"
#include "support/leak_check.hpp"
#include "support/proc_state.hpp"
#include "support/start_methods.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using mpx::StartMethod;

int square(int x) {
  return x * x;
}
int my_pid(int) {
  return static_cast<int>(::getpid());
}
int segfault(int) {
  ::raise(SIGSEGV);
  return 0;
}
std::string worker_name(int) {
  return mpx::current_process().name();
}
void sleep_forever(int) {
  for (;;)
    ::pause();
}

// Set by the initializer in each worker; 0 in a worker that did not run it.
int g_initialized_with = 0;
void remember(int value, std::string text) {
  g_initialized_with = value + static_cast<int>(text.size());
}
int initialized_with(int) {
  return g_initialized_with;
}

const auto* const g_forkserver_env =
    ::testing::AddGlobalTestEnvironment(new mpx_test::StartTheForkserver);

std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = i;
  return v;
}
std::vector<int> squares(int n) {
  std::vector<int> v = iota_vec(n);
  for (int& x : v)
    x *= x;
  return v;
}

std::string method_name(const ::testing::TestParamInfo<StartMethod>& param) {
  return std::string(mpx::start_method_name(param.param));
}

class PoolStartMethods : public ::testing::TestWithParam<StartMethod> {
 protected:
  mpx::Context ctx() const { return mpx::Context(GetParam()); }
  mpx::PoolOptions options() const {
    mpx::PoolOptions o;
    o.context = GetParam();
    return o;
  }
};

TEST_P(PoolStartMethods, MapApplyAsyncAndImapReturnTheResults) {
  mpx_test::Watchdog dog(120s, "a spawn or forkserver pool's map, apply_async, imap");
  auto pool = ctx().Pool(3);
  EXPECT_EQ(pool.map(square, iota_vec(200)), squares(200));
  EXPECT_EQ(pool.map(square, iota_vec(200), 1), squares(200));
  EXPECT_EQ(pool.apply_async(square, 12).get(60s), 144);
  EXPECT_EQ(pool.apply(square, 5), 25);
  std::vector<int> got;
  for (int r : pool.imap(square, iota_vec(100)))
    got.push_back(r);
  EXPECT_EQ(got, squares(100));
  // A captureless lambda is a portable callable too.
  EXPECT_EQ(pool.apply_async([](int x) { return x + 1; }, 41).get(60s), 42);
  pool.close();
  pool.join();
}

TEST_P(PoolStartMethods, InitializerRunsInEveryWorker) {
  mpx_test::Watchdog dog(120s, "a spawn or forkserver pool with an initializer");
  auto o = options();
  o.initializer(remember, 40, std::string("xy"));
  mpx::Pool pool(2, o);
  // Every task (in whichever worker) sees what its worker's initializer set.
  std::vector<int> seen = pool.map(initialized_with, iota_vec(64), 1);
  EXPECT_EQ(seen, std::vector<int>(64, 42));
  // This process never ran it.
  EXPECT_EQ(g_initialized_with, 0);
}

// mpx objects among the initializer's arguments (Python's initargs=(queue,)): kept by
// each worker, used by its tasks.
std::unique_ptr<mpx::Queue<int>> g_queue;
std::unique_ptr<mpx::Lock> g_lock;
void keep_objects(mpx::Queue<int> q, mpx::Lock lock, int offset) {
  g_queue = std::make_unique<mpx::Queue<int>>(std::move(q));
  g_lock = std::make_unique<mpx::Lock>(std::move(lock));
  g_initialized_with = offset;
}
int put_under_lock(int x) {
  std::lock_guard hold(*g_lock);
  g_queue->put(x + g_initialized_with);
  return x;
}

int put_through_objects(mpx::Pool& pool, mpx::Queue<int>& q) {
  EXPECT_EQ(pool.map(put_under_lock, iota_vec(20), 1), iota_vec(20));
  int sum = 0;
  for (int i = 0; i < 20; ++i)
    sum += q.get(60s);
  return sum;
}

TEST_P(PoolStartMethods, InitializerArgumentsMayBeMpxObjects) {
  mpx_test::Watchdog dog(120s, "a spawn or forkserver pool's initializer with a Queue");
  mpx::Queue<int> q;
  auto o = options();
  o.initializer(keep_objects, q, ctx().Lock(), 100);
  o.maxtasksperchild = 7;  // replacements get them too
  mpx::Pool pool(2, o);
  EXPECT_EQ(put_through_objects(pool, q), 190 + 20 * 100);
}

TEST_P(PoolStartMethods, InitializerObjectsThatCannotTravelAreRefused) {
  mpx::Queue<int> q;
  auto o = options();
  o.initializer(keep_objects, q, mpx::Lock(), 0);  // by its constructor: fork only
  try {
    mpx::Pool pool(1, o);
    ADD_FAILURE() << "a constructor's Lock reached a " << mpx::start_method_name(GetParam())
                  << " pool";
  } catch (const mpx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("initializer's arguments"), std::string::npos) << e.what();
  }
}

TEST_P(PoolStartMethods, MaxtasksperchildReplacesWorkers) {
  mpx_test::Watchdog dog(120s, "a spawn or forkserver pool with maxtasksperchild");
  auto o = options();
  o.maxtasksperchild = 1;
  o.initializer(remember, 1, std::string("a"));
  mpx::Pool pool(2, o);
  std::set<int> pids;
  for (int i = 0; i < 6; ++i) {
    pids.insert(pool.apply(my_pid, i));
    // Each replacement ran the initializer too.
    EXPECT_EQ(pool.apply(initialized_with, i), 2);
  }
  EXPECT_EQ(pids.size(), 6U);
}

TEST_P(PoolStartMethods, SegfaultingTaskFailsAloneAndPoolGoesOn) {
  mpx_test::Watchdog dog(120s, "a spawn or forkserver pool after a crashing task");
  mpx::Pool pool(2, options());
  auto r = pool.apply_async(segfault, 0);
  mpx_test::expect_lost_to_segfault(r);
  EXPECT_EQ(pool.map(square, iota_vec(50), 1), squares(50));
}

TEST_P(PoolStartMethods, TaskOverItsTimeoutIsKilledAndItsWorkerReplaced) {
  mpx_test::Watchdog dog(120s, "a spawn or forkserver pool with a per-task timeout");
  auto o = options();
  o.timeout = 300ms;
  mpx::Pool pool(1, o);
  const int before = pool.apply(my_pid, 0);
  auto slow = pool.apply_async(sleep_forever, 0);
  auto next = pool.apply_async(my_pid, 0);
  EXPECT_THROW(slow.get(60s), mpx::TimeoutError);
  EXPECT_NE(next.get(60s), before);
}

// Built on a thread that is not the main thread (the spawn then runs on mpx's forker
// thread), used and ended on another.
TEST_P(PoolStartMethods, PoolBuiltOnAnotherThread) {
  mpx_test::Watchdog dog(120s, "a spawn or forkserver pool built on another thread");
  std::unique_ptr<mpx::Pool> pool;
  std::thread([&] { pool = std::make_unique<mpx::Pool>(2, options()); }).join();
  EXPECT_EQ(pool->map(square, iota_vec(30), 1), squares(30));
  std::thread([&] { pool.reset(); }).join();
}

// The owner of a spawn or forkserver pool killed with SIGKILL: its zygote and workers die
// with it (nothing orphaned runs on).
void build_pool_and_wait(StartMethod method, mpx::Queue<std::vector<int>> out) {
  mpx::PoolOptions o;
  o.context = method;
  mpx::Pool pool(2, o);
  out.put(pool.map(my_pid, iota_vec(8), 1));
  for (;;)
    ::pause();
}

bool gone(int pid) {
  const char state = mpx_test::proc_state(std::to_string(pid));
  return state == '?' || state == 'Z' || state == 'X';
}

TEST_P(PoolStartMethods, WorkersDieWithTheKilledOwner) {
  mpx_test::Watchdog dog(120s, "the workers of a killed pool owner");
  mpx::Queue<std::vector<int>> pids;
  mpx::Process owner(build_pool_and_wait, GetParam(), pids);
  owner.start();
  const std::vector<int> workers = pids.get(60s);
  ASSERT_FALSE(workers.empty());
  owner.kill();
  owner.join();
  for (int pid : workers) {
    for (int i = 0; i < 3000 && !gone(pid); ++i)
      std::this_thread::sleep_for(10ms);  // polling the kernel's state: bounded, 30 s
    EXPECT_TRUE(gone(pid)) << "worker " << pid << " outlived its pool's owner";
  }
}

TEST_P(PoolStartMethods, ExecutorWithAContextSubmitsAndReturns) {
  mpx_test::Watchdog dog(120s, "a spawn or forkserver ProcessPoolExecutor");
  mpx::ProcessPoolExecutor ex(2, {.context = ctx()});
  auto f = ex.submit(square, 9);
  EXPECT_EQ(f.result(60s), 81);
  std::vector<int> got;
  for (int r : ex.map(square, iota_vec(20)))
    got.push_back(r);
  EXPECT_EQ(got, squares(20));
  ex.shutdown();
}

// In a child that is not a fork, pools of either method: their tasks carry the child's
// own code addresses, though it adopted its parent's table (a fork pool's workers took
// them for the parent's and failed). Exit status 0, or 10 + the method whose results
// were wrong (an exception: 1, with its message on stderr).
void map_in_a_fork_and_a_spawn_pool() {
  for (StartMethod m : {StartMethod::fork, StartMethod::spawn}) {
    mpx::PoolOptions o;
    o.context = m;
    mpx::Pool pool(2, o);
    if (pool.map(square, iota_vec(50)) != squares(50)) std::exit(10 + static_cast<int>(m));
  }
}

TEST_P(PoolStartMethods, AChildOfTheMethodRunsPoolsOfItsOwn) {
  mpx_test::Watchdog dog(120s, "pools in a spawn or forkserver child");
  mpx::Process p = ctx().Process(map_in_a_fork_and_a_spawn_pool);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// After close() + join(), and after terminate() with a task running: no worker, zygote,
// fd or /dev/shm entry is left (the leak check of every test says so too).
TEST_P(PoolStartMethods, NothingLeftAfterJoinOrTerminate) {
  mpx_test::Watchdog dog(120s, "the end of a spawn or forkserver pool");
  const auto fds = mpx_test::open_fds();
  {
    mpx::Pool pool(2, options());
    EXPECT_EQ(pool.apply(square, 3), 9);
    pool.close();
    pool.join();
  }
  EXPECT_EQ(mpx_test::open_fds(), fds);
  EXPECT_TRUE(mpx_test::child_processes().empty());
  std::vector<int> workers;
  {
    mpx::Pool pool(2, options());
    auto r = pool.apply_async(sleep_forever, 0);
    workers = pool.map(my_pid, iota_vec(8), 1);
    pool.terminate();
    pool.join();
    EXPECT_THROW(r.get(60s), mpx::CancelledError);
  }
  EXPECT_EQ(mpx_test::open_fds(), fds);
  EXPECT_TRUE(mpx_test::child_processes().empty());
  for (int pid : workers)  // gone, not merely orphaned
    EXPECT_NE(::kill(pid, 0), 0) << pid;
}

// A lock another thread holds when the pool is built (a std::mutex, and malloc's by a
// thread that allocates in a loop) does not reach its workers: each takes that lock in
// its initializer and allocates.
std::mutex g_held;
void take_the_held_lock() {
  std::lock_guard lock(g_held);
  std::vector<std::string> v(100, std::string(100, 'x'));
  static_cast<void>(v);
}

TEST_P(PoolStartMethods, ThreadsHoldingLocksDoNotReachTheWorkers) {
  mpx_test::Watchdog dog(240s, "spawn or forkserver pools built while threads hold locks");
  std::atomic<bool> stop{false};
  std::mutex started;
  started.lock();
  std::thread holder([&] {
    std::lock_guard lock(g_held);
    started.unlock();
    while (!stop.load())
      std::this_thread::yield();
  });
  std::thread allocator([&] {
    while (!stop.load()) {
      std::vector<std::string> v(64, std::string(200, 'y'));
      static_cast<void>(v);
    }
  });
  started.lock();  // g_held is held from here on
  auto o = options();
  o.initializer(take_the_held_lock);
  int wrong = 0;
  for (int i = 0; i < 20; ++i) {
    mpx::Pool pool(2, o);
    if (pool.map(square, iota_vec(10), 1) != squares(10)) ++wrong;
  }
  stop = true;
  holder.join();
  allocator.join();
  started.unlock();
  EXPECT_EQ(wrong, 0);
}

TEST_P(PoolStartMethods, WithoutInitThePoolThrowsTheClearError) {
  mpx::detail::set_init_called(false);
  try {
    mpx::Pool pool(1, options());
    ADD_FAILURE() << "a pool started without mpx::init";
  } catch (const mpx::InvalidStateError& e) {
    EXPECT_NE(std::string(e.what()).find("mpx::init(argc, argv)"), std::string::npos) << e.what();
  }
  mpx::detail::set_init_called(true);
}

INSTANTIATE_TEST_SUITE_P(All, PoolStartMethods,
                         ::testing::Values(StartMethod::spawn, StartMethod::forkserver),
                         method_name);

// Who runs a task, as current_process() and parent_process() tell it.
std::string whoami(int) {
  const auto me = mpx::current_process();
  const auto parent = mpx::parent_process();
  return me.name() + (me.daemon() ? " daemon" : "") + " parent " +
         (parent ? parent->name() + " " + std::to_string(parent->pid()) : "none");
}

// The number at the end of "<prefix><number><suffix>"; -1 when `name` is not of that form.
int number_in(const std::string& name, const std::string& prefix, const std::string& suffix) {
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoi(digits);
}

class PoolWorkerNames : public PoolStartMethods {};

// As Python's: a Pool's workers are "ForkPoolWorker-N" (Spawn..., ForkServer...),
// daemons, an executor's "ForkProcess-N", not daemons; N counts this process's children
// with its Process objects, a replaced worker takes a new one; the parent is this process.
TEST_P(PoolWorkerNames, AreThoseOfPythonsWorkers) {
  mpx_test::Watchdog dog(120s, "naming pool workers");
  const StartMethod m = GetParam();
  const std::string method = m == StartMethod::fork    ? "Fork"
                             : m == StartMethod::spawn ? "Spawn"
                                                       : "ForkServer";
  const std::string parent = " parent MainProcess " + std::to_string(::getpid());
  const int before = number_in(mpx::Process([] {}).name(), "Process-", "");
  ASSERT_GT(before, 0);
  std::set<int> numbers;
  {
    mpx::Pool pool(2, {.maxtasksperchild = 1, .context = m});
    for (int i = 0; i < 4; ++i) {  // each task in a new worker
      const std::string who = pool.apply(whoami, 0);
      const int n = number_in(who, method + "PoolWorker-", " daemon" + parent);
      EXPECT_GT(n, before) << who;
      numbers.insert(n);
    }
  }
  EXPECT_EQ(numbers.size(), 4u);
  mpx::ProcessPoolExecutor ex(1, {.context = m});
  const std::string who = ex.submit(whoami, 0).result(60s);
  const int n = number_in(who, method + "Process-", parent);
  EXPECT_GT(n, *numbers.rbegin()) << who;
  ex.shutdown();
  EXPECT_GT(number_in(mpx::Process([] {}).name(), "Process-", ""), n);
}

INSTANTIATE_TEST_SUITE_P(All, PoolWorkerNames,
                         ::testing::Values(StartMethod::fork, StartMethod::spawn,
                                           StartMethod::forkserver),
                         method_name);

// Under fork the workers inherit the initializer's objects, whatever made them.
TEST(PoolForkInitializer, ArgumentsMayBeAnyMpxObjects) {
  mpx_test::Watchdog dog(120s, "a fork pool's initializer with a Queue and a Lock");
  mpx::Queue<int> q;
  mpx::PoolOptions o;
  o.context = StartMethod::fork;
  o.initializer(keep_objects, q, mpx::Lock(), 1);
  mpx::Pool pool(2, o);
  EXPECT_EQ(put_through_objects(pool, q), 190 + 20);
}

// The program's start method is a pool's default; fork_map forks whatever it is.
TEST(PoolDefaultStartMethod, FollowsTheProgramsAndForkMapStillForks) {
  mpx_test::Watchdog dog(120s, "a pool under the program's start method");
  struct Restore {
    ~Restore() { mpx::set_start_method("fork", true); }
  } restore;
  {
    mpx::Pool pool(1);
    EXPECT_EQ(pool.apply(worker_name, 0).rfind("ForkPoolWorker-", 0), 0u);
  }
  mpx::set_start_method("spawn", true);
  int captured = 10;
  mpx::Pool pool(1);
  EXPECT_EQ(pool.apply(worker_name, 0).rfind("SpawnPoolWorker-", 0), 0u);
  // fork_map's workers are forks of this process: they see `captured`.
  EXPECT_EQ(mpx::fork_map([&](int x) { return x + captured; }, iota_vec(3), 1),
            (std::vector<int>{10, 11, 12}));
}

}  // namespace
