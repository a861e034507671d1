// Start methods (mpx/context.hpp): fork, spawn and forkserver behind one Process;
// contexts; the fork-with-threads deadlock that spawn and forkserver avoid.
#include "mpx/context.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpx/connection.hpp"
#include "mpx/errors.hpp"
#include "mpx/queues.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sharedctypes.hpp"
#include "mpx/synchronize.hpp"
#include "support/leak_check.hpp"
#include "support/proc_state.hpp"
#include "support/start_methods.hpp"
#include "support/watchdog.hpp"
#include "sys/fd.hpp"
#include "sys/pidfd.hpp"

namespace {

using namespace std::chrono_literals;
using mpx::StartMethod;
using Lines = mpx::SimpleQueue<std::string>;

// Targets: plain functions, so that they reach a child that is not a fork.
void do_nothing() {}
void exit_with(int code) {
  mpx::exit(code);
}
void throw_error() {
  throw std::runtime_error("boom in the child");
}
void sleep_forever() {
  for (;;)
    ::pause();
}
// Exits with a code computed from its arguments: they arrived when it is right.
void exit_with_sum(int a, std::string text, std::vector<int> more) {
  int sum = a + static_cast<int>(text.size());
  for (int x : more)
    sum += x;
  mpx::exit(sum);
}
// 0 when the child sees itself and its parent as the parent named them.
void check_identity(std::string name, bool daemon, int parent_pid) {
  const auto self = mpx::current_process();
  const auto parent = mpx::parent_process();
  const bool ok = self.name() == name && self.daemon() == daemon && parent &&
                  parent->pid() == parent_pid && parent->name() == "MainProcess";
  mpx::exit(ok ? 0 : 7);
}
struct AddTo {
  int base = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(base);
  }
  void operator()(int x) const { mpx::exit(base + x); }
};

const auto* const g_forkserver_env =
    ::testing::AddGlobalTestEnvironment(new mpx_test::StartTheForkserver);

int run(StartMethod method, mpx::Process p) {
  static_cast<void>(method);
  p.start();
  p.join(60s);
  EXPECT_FALSE(p.is_alive());
  if (p.is_alive()) {
    p.kill();
    p.join();
  }
  return p.exitcode().value_or(-1000);
}

std::string method_name(const ::testing::TestParamInfo<StartMethod>& param) {
  return std::string(mpx::start_method_name(param.param));
}

class StartMethods : public ::testing::TestWithParam<StartMethod> {
 protected:
  mpx::Context ctx() const { return mpx::Context(GetParam()); }
};

TEST_P(StartMethods, ExitCodes) {
  EXPECT_EQ(run(GetParam(), ctx().Process(do_nothing)), 0);
  EXPECT_EQ(run(GetParam(), ctx().Process(exit_with, 3)), 3);
  EXPECT_EQ(run(GetParam(), ctx().Process(throw_error)), 1);
  EXPECT_EQ(run(GetParam(), mpx::Process(mpx::ProcessOptions{.context = GetParam()})), 0);
}

TEST_P(StartMethods, TargetsAndArgumentsArrive) {
  EXPECT_EQ(run(GetParam(),
                ctx().Process(exit_with_sum, 5, std::string("four"), std::vector<int>{10, 20})),
            39);
  EXPECT_EQ(run(GetParam(), ctx().Process([](int x) { mpx::exit(x * 2); }, 21)), 42);
  EXPECT_EQ(run(GetParam(), ctx().Process(AddTo{40}, 2)), 42);
}

TEST_P(StartMethods, ChildKnowsItselfAndItsParent) {
  mpx::ProcessOptions options{.name = "worker-x", .daemon = true};
  EXPECT_EQ(run(GetParam(), ctx().Process(options, check_identity, std::string("worker-x"), true,
                                          static_cast<int>(::getpid()))),
            0);
}

TEST_P(StartMethods, SentinelTerminateKill) {
  mpx::Process p = ctx().Process(sleep_forever);
  p.start();
  EXPECT_GT(p.pid(), 0);
  EXPECT_TRUE(p.is_alive());
  pollfd fd{p.sentinel(), POLLIN, 0};
  EXPECT_EQ(::poll(&fd, 1, 0), 0);
  p.join(10ms);
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  p.terminate();
  EXPECT_EQ(::poll(&fd, 1, 60000), 1);
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGTERM);

  mpx::Process q = ctx().Process(sleep_forever);
  q.start();
  q.kill();
  q.join();
  EXPECT_EQ(q.exitcode(), -SIGKILL);
}

TEST_P(StartMethods, ManyAtOnceFromManyThreads) {
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i)
        if (run(GetParam(), ctx().Process(exit_with, t * 10 + i)) == t * 10 + i) ++good;
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(good.load(), 20);
}

// mpx objects handed to the child: they work both ways.
void double_items(mpx::Queue<int> in, mpx::Queue<std::string> out) {
  for (;;) {
    const int x = in.get();
    if (x < 0) return;
    out.put(std::to_string(2 * x));
  }
}
void answer_joinable(mpx::JoinableQueue<int> q, mpx::SimpleQueue<int> back) {
  back.put(q.get() + 1);
  q.task_done();
}
void fill(mpx::SharedMemory shm, char c) {
  auto buf = shm.buf();
  std::memset(buf.data(), c, buf.size());
}

void bump(mpx::ShareableList sl) {
  sl.set(0, std::get<std::int64_t>(sl[0]) + 1);
  sl.set(1, "child");
}

TEST_P(StartMethods, QueuesReachTheChildAndWorkBothWays) {
  mpx::Queue<int> in;
  mpx::Queue<std::string> out;
  mpx::Process p = ctx().Process(double_items, in, out);
  p.start();
  for (int i = 0; i < 100; ++i)
    in.put(i);
  in.put(-1);
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(out.get(30s), std::to_string(2 * i));
  p.join(60s);
  EXPECT_EQ(p.exitcode(), 0);

  mpx::JoinableQueue<int> q;
  mpx::SimpleQueue<int> back;
  mpx::Process r = ctx().Process(answer_joinable, q, back);
  r.start();
  q.put(41);
  q.join();  // returns once the child called task_done
  EXPECT_EQ(back.get(), 42);
  r.join();
  EXPECT_EQ(r.exitcode(), 0);
}

TEST_P(StartMethods, SharedMemoryReachesTheChild) {
  mpx::SharedMemory anonymous(4096);
  EXPECT_EQ(run(GetParam(), ctx().Process(fill, std::move(anonymous), 'a')), 0);
  mpx::SharedMemory shm(8192);
  const int fd = ::dup(shm.fd());
  EXPECT_EQ(run(GetParam(), ctx().Process(fill, std::move(shm), 'z')), 0);
  mpx::SharedMemory again = mpx::SharedMemory::from_fd(fd);
  ::close(fd);
  EXPECT_EQ(static_cast<char>(again.buf()[0]), 'z');
  EXPECT_EQ(static_cast<char>(again.buf()[8191]), 'z');
}

TEST_P(StartMethods, ShareableListReachesTheChild) {
  const std::string name = mpx_test::unique_name("sl");
  std::vector<mpx::ShareableList::Item> items{std::int64_t{41}, std::string("parent")};
  mpx::ShareableList sl = mpx::ShareableList::create(name, items);
  mpx::ShareableList theirs = mpx::ShareableList::open(name);
  EXPECT_EQ(run(GetParam(), ctx().Process(bump, std::move(theirs))), 0);
  EXPECT_EQ(sl.list(),
            (std::vector<mpx::ShareableList::Item>{std::int64_t{42}, std::string("child")}));
  sl.shm().unlink();
}

// A child killed while it holds handed-off objects leaves nothing behind (the leak check
// of tests/support counts fds, children and /dev/shm entries after each test).
TEST_P(StartMethods, KilledChildWithHandedOffObjectsLeavesNothing) {
  // A named queue (its /dev/shm entry must be gone after the test) and an anonymous one.
  auto in = mpx::Queue<int>::create("mpx-test-spawn-" + std::to_string(::getpid()));
  mpx::Queue<std::string> out;
  mpx::Process p = ctx().Process(double_items, in, out);
  p.start();
  in.put(5);
  EXPECT_EQ(out.get(30s), "10");
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  in.put(6);  // the queue still works for this process
  EXPECT_EQ(in.get(), 6);
}

// Locks, events, semaphores and values made by the context reach the child.
void add_under_lock(mpx::Value<long> v, mpx::Lock lock, mpx::Event done, mpx::Semaphore sem,
                    int n) {
  for (int i = 0; i < n; ++i)
    v.with_lock([](long& x) { ++x; });
  { std::lock_guard hold(lock); }
  sem.release();
  done.set();
}
void hold_lock_and_wait(mpx::RLock lock, mpx::Event held) {
  lock.acquire();
  held.set();
  for (;;)
    ::pause();
}

TEST_P(StartMethods, ContextsSyncObjectsReachTheChild) {
  auto v = ctx().Value<long>(0);
  auto lock = ctx().Lock();
  auto done = ctx().Event();
  auto sem = ctx().Semaphore(0);
  mpx::Process p = ctx().Process(add_under_lock, v, lock, done, sem, 1000);
  {
    std::lock_guard hold(lock);  // the child waits for it before it signals
    p.start();
    for (int i = 0; i < 1000; ++i)
      v.with_lock([](long& x) { ++x; });
    EXPECT_FALSE(done.is_set());
  }
  EXPECT_TRUE(done.wait(60s));
  EXPECT_TRUE(sem.acquire(60s));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(v.value(), 2000);
}

// A condition and an array made by the context: the child fills the array and notifies.
void fill_and_notify(mpx::Array<int> a, mpx::Condition cv, mpx::RawValue<int> ready) {
  std::lock_guard hold(cv);
  for (std::size_t i = 0; i < a.size(); ++i)
    a[i] = static_cast<int>(i * i);
  *ready = 1;
  cv.notify_all();
}

TEST_P(StartMethods, ContextsConditionAndArrayReachTheChild) {
  auto a = ctx().Array<int>(100);
  auto cv = ctx().Condition();
  auto ready = ctx().RawValue<int>(0);
  mpx::Process p = ctx().Process(fill_and_notify, a, cv, ready);
  {
    std::unique_lock hold(cv);
    p.start();
    EXPECT_TRUE(cv.wait_for([&] { return *ready == 1; }, 60s));
  }
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(a[99], 99 * 99);
}

// Robust across processes that are not forks: a child killed holding the lock hands it
// to the next acquirer with OwnerDied.
TEST_P(StartMethods, KilledChildHoldingAContextsLockLeavesItRecoverable) {
  auto lock = ctx().RLock();
  auto held = ctx().Event();
  mpx::Process p = ctx().Process(hold_lock_and_wait, lock, held);
  p.start();
  ASSERT_TRUE(held.wait(60s));
  EXPECT_FALSE(lock.try_acquire());
  p.kill();
  p.join();
  EXPECT_THROW(lock.acquire(), mpx::OwnerDied);
  lock.release();
}

// Pipe ends and barriers made by the context reach the child and work both ways.
void echo_doubled(mpx::Connection c) {
  for (int x = c.recv<int>(); x >= 0; x = c.recv<int>())
    c.send(2 * x);
}
void say_hello(mpx::Connection writer) {
  writer.send(std::string("hello"));
}

TEST_P(StartMethods, ContextsPipeEndsReachTheChild) {
  auto [mine, theirs] = ctx().Pipe();
  mpx::Process p = ctx().Process(echo_doubled, std::move(theirs));
  p.start();
  for (int i = 0; i < 100; ++i) {
    mine.send(i);
    ASSERT_EQ(mine.recv<int>(), 2 * i);
  }
  mine.send(-1);
  p.join(60s);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_THROW(mine.recv<int>(), mpx::EOFError);  // the child's end closed with it

  auto [reader, writer] = ctx().Pipe(false);
  mpx::Process q = ctx().Process(say_hello, std::move(writer));
  q.start();
  EXPECT_EQ(reader.recv<std::string>(), "hello");
  q.join(60s);
  EXPECT_EQ(q.exitcode(), 0);
  EXPECT_THROW(reader.recv<std::string>(), mpx::EOFError);
}

void meet_twice(mpx::Barrier b, Lines out) {
  out.put(std::to_string(b.wait()));
  out.put(std::to_string(b.wait()));
}
// Waits alone at a barrier that needs two: its default timeout (which travelled) breaks it.
void wait_alone(mpx::Barrier b) {
  try {
    b.wait();
  } catch (const mpx::BrokenBarrierError&) {
    mpx::exit(3);
  }
}

TEST_P(StartMethods, ContextsBarrierReachesTheChild) {
  auto b = ctx().Barrier(2);
  Lines out;
  mpx::Process p = ctx().Process(meet_twice, b, out);
  p.start();
  for (int round = 0; round < 2; ++round) {
    const unsigned mine = b.wait(60s);
    const unsigned theirs = static_cast<unsigned>(std::stoi(out.get()));
    EXPECT_EQ(mine + theirs, 1u);  // 0 and 1, one each
  }
  p.join(60s);
  EXPECT_EQ(p.exitcode(), 0);

  auto timed = ctx().Barrier(2, std::function<void()>{}, 200ms);
  EXPECT_EQ(run(GetParam(), ctx().Process(wait_alone, timed)), 3);
  EXPECT_TRUE(timed.broken());
}

// A child killed while it holds a pipe end and waits at a barrier: the parent's end reads
// EOF, the barrier breaks, and no fd or child is left behind.
void hold_and_wait(mpx::Connection c, mpx::Barrier b) {
  c.send(1);
  b.wait();
}

TEST_P(StartMethods, KilledChildWithAPipeEndAndABarrierLeavesNothing) {
  const auto fds_before = mpx_test::open_fds();
  {
    auto [mine, theirs] = ctx().Pipe();
    auto b = ctx().Barrier(3);
    mpx::Process p = ctx().Process(hold_and_wait, std::move(theirs), b);
    p.start();
    EXPECT_EQ(mine.recv<int>(), 1);
    mpx_test::Watchdog dog(60s, "the child's wait at the barrier");
    while (b.n_waiting() < 1)
      std::this_thread::yield();
    p.kill();
    p.join();
    EXPECT_EQ(p.exitcode(), -SIGKILL);
    EXPECT_THROW(mine.recv<int>(), mpx::EOFError);
    EXPECT_THROW(mine.send(2), mpx::BrokenPipeError);
    EXPECT_THROW(b.wait(60s), mpx::BrokenBarrierError);  // noticed the dead participant
  }
  EXPECT_TRUE(mpx_test::child_processes().empty());
  EXPECT_EQ(mpx_test::open_fds(), fds_before);
}

INSTANTIATE_TEST_SUITE_P(All, StartMethods,
                         ::testing::Values(StartMethod::fork, StartMethod::spawn,
                                           StartMethod::forkserver),
                         method_name);

class NotForked : public StartMethods {};

TEST_P(NotForked, CapturingTargetIsRefusedAtStart) {
  int captured = 3;
  mpx::Process p(mpx::ProcessOptions{.context = GetParam()}, [captured] { mpx::exit(captured); });
  try {
    p.start();
    FAIL() << "a capturing lambda was started by " << mpx::start_method_name(GetParam());
  } catch (const mpx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("portable callable"), std::string::npos) << e.what();
  }
}

TEST_P(NotForked, ObjectsSharedByForkOnlyAreRefusedAtStart) {
  // Made by their constructor (or mpx::Pipe()): an anonymous mapping, passed on by fork only.
  auto refused = [this](auto object, const char* what) {
    mpx::Process p(
        mpx::ProcessOptions{.context = GetParam()}, [](decltype(object)) {}, std::move(object));
    try {
      p.start();
      ADD_FAILURE() << what << " made outside a context reached a child that is not a fork";
    } catch (const mpx::ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("factory"), std::string::npos) << e.what();
    }
  };
  refused(mpx::Lock(), "a Lock");
  refused(mpx::Barrier(2), "a Barrier");
  refused(std::move(mpx::Pipe().first), "a Pipe end");
  // A Barrier's action is this process's: it cannot travel.
  mpx::Process q = ctx().Process([](mpx::Barrier) {}, ctx().Barrier(2, [] {}));
  try {
    q.start();
    ADD_FAILURE() << "a Barrier with an action reached a child that is not a fork";
  } catch (const mpx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("with an action"), std::string::npos) << e.what();
  }
}

// A lock another thread holds at start() (a std::mutex, and malloc's, by a thread that
// allocates in a loop) does not reach a child that is not a fork: 1000 starts, each child
// takes the lock and allocates, none hangs.
std::mutex g_held;
void take_the_held_lock() {
  std::lock_guard lock(g_held);
  std::vector<std::string> v(100, std::string(100, 'x'));
  mpx::exit(v.size() == 100 ? 0 : 1);
}

// A thread that holds g_held from construction to destruction.
class HeldByAnotherThread {
 public:
  HeldByAnotherThread() {
    holding_.lock();
    holder_ = std::thread([this] {
      std::lock_guard lock(g_held);
      holding_.unlock();
      while (!stop_.load())
        std::this_thread::yield();
    });
    holding_.lock();  // g_held is held from here on
  }
  ~HeldByAnotherThread() {
    stop_ = true;
    holder_.join();
    holding_.unlock();
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex holding_;
  std::thread holder_;
};

TEST_P(NotForked, ThreadsHoldingLocksDoNotReachTheChild) {
  std::atomic<bool> stop{false};
  HeldByAnotherThread held;
  std::thread allocator([&] {
    while (!stop.load()) {
      std::vector<std::string> v(64, std::string(200, 'y'));
      static_cast<void>(v);
    }
  });
  const int starts = 1000;
  int hangs = 0, failures = 0;
  for (int i = 0; i < starts; ++i) {
    mpx::Process p = ctx().Process(take_the_held_lock);
    p.start();
    p.join(30s);
    if (p.is_alive()) {
      ++hangs;
      p.kill();
      p.join();
    } else if (p.exitcode() != 0) {
      ++failures;
    }
  }
  stop = true;
  allocator.join();
  EXPECT_EQ(hangs, 0);
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(All, NotForked,
                         ::testing::Values(StartMethod::spawn, StartMethod::forkserver),
                         method_name);

// The hazard itself, under fork: the child is a copy of a process whose other thread
// held the lock, and it waits for it forever.
TEST(ForkHazard, ForkedChildDeadlocksOnALockAnotherThreadHeld) {
  HeldByAnotherThread held;
  mpx::Process p(mpx::ProcessOptions{.context = StartMethod::fork}, take_the_held_lock);
  p.start();
  p.join(500ms);
  EXPECT_TRUE(p.is_alive());  // stuck on the lock copied held
  p.kill();
  p.join();
}

// A process's state and parent, from /proc/PID/stat ({'?', 0} when it cannot be read).
std::pair<char, pid_t> state_and_parent(const std::filesystem::path& proc_entry) {
  std::ifstream stat(proc_entry / "stat");
  std::string line;
  if (!std::getline(stat, line) || line.rfind(')') == std::string::npos) return {'?', 0};
  std::istringstream rest(line.substr(line.rfind(')') + 1));
  char state = '?';
  long ppid = 0;
  rest >> state >> ppid;
  return {state, static_cast<pid_t>(ppid)};
}

// The forkserver's pid, found among this process's children by its name (its children
// have the program's).
pid_t forkserver_pid() {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream comm(entry.path() / "comm");
    std::string line;
    if (!std::getline(comm, line) || line != "mpx-forkserver") continue;
    const auto [state, ppid] = state_and_parent(entry.path());
    if (ppid == ::getpid() && state != 'Z') return static_cast<pid_t>(std::stol(name));
  }
  return 0;
}

// A forkserver that died is replaced by the next start. Its children are this process's
// (the server forks them with CLONE_PARENT): they live on, and are joined, terminated
// and reaped here as fork's children are.
TEST(Forkserver, ADeadServerIsRestartedByTheNextStart) {
  auto ctx = mpx::get_context("forkserver");
  mpx::Process running = ctx.Process(sleep_forever);
  running.start();
  EXPECT_EQ(state_and_parent("/proc/" + std::to_string(running.pid())).second, ::getpid());
  const pid_t server = forkserver_pid();
  ASSERT_GT(server, 0);
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  mpx::sys::Fd server_fd = mpx::sys::pidfd_open(server);
  pollfd gone{server_fd.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&gone, 1, 60000), 1);
  EXPECT_EQ(run(StartMethod::forkserver, ctx.Process(exit_with, 4)), 4);
  const pid_t replacement = forkserver_pid();
  EXPECT_GT(replacement, 0);
  EXPECT_NE(replacement, server);
  EXPECT_TRUE(running.is_alive());
  running.terminate();
  running.join(60s);
  EXPECT_EQ(running.exitcode(), -SIGTERM);
}

// A fork while another thread waits for the forkserver's answer (holding the client's
// lock): the forked child starts forkserver children through a server of its own.
TEST(Forkserver, AForkWhileAnotherThreadTalksToTheServerCanStartChildren) {
  auto ctx = mpx::get_context("forkserver");
  EXPECT_EQ(run(StartMethod::forkserver, ctx.Process(exit_with, 0)), 0);  // the server is up
  const pid_t server = forkserver_pid();
  ASSERT_GT(server, 0);
  ASSERT_EQ(::kill(server, SIGSTOP), 0);  // a request now waits for its answer
  std::atomic<long> tid{0};
  int code = -1;
  std::thread talker([&] {
    tid = ::syscall(SYS_gettid);
    code = run(StartMethod::forkserver, ctx.Process(exit_with, 6));
  });
  {
    mpx_test::Watchdog dog(60s, "the thread asking the stopped forkserver");
    const std::string task = std::to_string(::getpid()) + "/task/";
    while (tid.load() == 0 || mpx_test::proc_state(task + std::to_string(tid.load())) != 'S')
      std::this_thread::yield();
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    mpx::Process p = ctx.Process(exit_with, 5);
    p.start();
    p.join();
    ::_exit(p.exitcode() == 5 ? 0 : 1);
  }
  ASSERT_GT(pid, 0);
  mpx::sys::Fd child = mpx::sys::pidfd_open(pid);
  pollfd ended{child.get(), POLLIN, 0};
  const bool finished = ::poll(&ended, 1, 60000) == 1;
  if (!finished) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::kill(server, SIGCONT);
  talker.join();
  EXPECT_TRUE(finished) << "the forked child hung on its copy of the client's lock";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(code, 6);
}

TEST(Contexts, NamesAndTheProgramsStartMethod) {
  EXPECT_EQ(mpx::get_context("spawn").get_start_method(), "spawn");
  EXPECT_EQ(mpx::get_context("forkserver").method(), StartMethod::forkserver);
  EXPECT_EQ(mpx::get_context("fork"), mpx::Context(StartMethod::fork));
  EXPECT_THROW(mpx::get_context("vfork"), mpx::ValueError);
  EXPECT_EQ(mpx::get_all_start_methods(),
            (std::vector<std::string>{"fork", "spawn", "forkserver"}));
  EXPECT_EQ(mpx::get_start_method(true), std::nullopt);
  mpx::set_start_method("spawn");
  EXPECT_EQ(mpx::get_start_method(), "spawn");
  EXPECT_EQ(mpx::get_context().method(), StartMethod::spawn);
  EXPECT_THROW(mpx::set_start_method("forkserver"), mpx::InvalidStateError);
  // A Process whose options name no method uses the program's.
  mpx::Process p(exit_with, 5);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 5);
  int captured = 1;
  mpx::Process q([captured] { mpx::exit(captured); });
  EXPECT_THROW(q.start(), mpx::ValueError);
  mpx::set_start_method("fork", true);
  EXPECT_EQ(mpx::get_start_method(), "fork");
  mpx::Process r([captured] { mpx::exit(captured); });
  r.start();
  r.join();
  EXPECT_EQ(r.exitcode(), 1);
  mpx::set_forkserver_preload({"anything"});  // nothing to preload in C++
}

// A child that is not a fork starts its own children by its parent's start method (as
// Python's spawn passes it on), so that what the program set holds in every process.
void report_start_method(Lines out) {
  out.put(mpx::get_start_method(true).value_or("none"));
}

TEST(Contexts, ChildrenKeepTheProgramsStartMethod) {
  Lines out;
  mpx::set_start_method("forkserver", true);
  EXPECT_EQ(run(StartMethod::spawn, mpx::get_context("spawn").Process(report_start_method, out)),
            0);
  EXPECT_EQ(out.get(), "forkserver");
  mpx::set_start_method("spawn", true);
  EXPECT_EQ(run(StartMethod::forkserver,
                mpx::get_context("forkserver").Process(report_start_method, out)),
            0);
  EXPECT_EQ(out.get(), "spawn");
  mpx::set_start_method("fork", true);
}

// A spawned child that runs another build than its parent refuses with a clear error.
TEST(Contexts, AnotherBinaryIsRefused) {
  const std::string self = mpx::get_executable();
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  ASSERT_GT(n, 0);
  std::string dir(buf, static_cast<std::size_t>(n));
  dir.resize(dir.rfind('/'));
  const std::string other = dir + "/sys_test";  // another mpx test binary
  struct stat st {};
  if (::stat(other.c_str(), &st) != 0) GTEST_SKIP() << other << " is not built";
  mpx::set_executable(other);
  char path[] = "/tmp/mpx-spawn-stderr-XXXXXX";
  mpx::sys::Fd err(::mkstemp(path));
  ::unlink(path);
  const int saved = ::dup(2);
  ::dup2(err.get(), 2);
  mpx::Process p = mpx::get_context("spawn").Process(do_nothing);
  p.start();
  ::dup2(saved, 2);
  ::close(saved);
  mpx::set_executable("");
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  std::string text(8192, '\0');
  text.resize(static_cast<std::size_t>(
      std::max<ssize_t>(0, ::pread(err.get(), text.data(), text.size(), 0))));
  EXPECT_NE(text.find("the binary changed on disk or differs"), std::string::npos) << text;
}

}  // namespace
