// Tests of mpx/managers.hpp: a SyncManager's server in a child process, its proxies in
// this process and in children, register_ for user types and named objects, errors
// coming back as mpx errors, and a killed client releasing what it held.
#include "mpx/managers.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "mpx/connection.hpp"
#include "mpx/listener.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"
#include "mpx/shared_memory.hpp"
#include "support/child.hpp"
#include "support/leak_check.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mpx_test::Child;

TEST(Managers, DictAcrossProcesses) {
  mpx::SyncManager manager;
  manager.start();
  EXPECT_GT(manager.pid(), 0);
  auto d = manager.dict<std::string, int>();
  d.setitem("a", 1);
  Child child([d]() mutable {
    d.setitem("b", d.getitem("a") + 1);
    d.update({{"c", 3}});
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(d.len(), 3u);
  EXPECT_EQ(d.getitem("b"), 2);
  EXPECT_EQ(d.get("zz"), std::nullopt);
  EXPECT_EQ(d.get("zz", 7), 7);
  EXPECT_TRUE(d.contains("c"));
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(d.pop("a"), 1);
  EXPECT_THROW(d.getitem("a"), mpx::KeyError);
  EXPECT_THROW(d.delitem("a"), mpx::KeyError);
  EXPECT_EQ(d.setdefault("x", 9), 9);
  EXPECT_EQ(d.items().size(), 3u);
  d.clear();
  EXPECT_EQ(d.len(), 0u);
  const auto t0 = Clock::now();
  manager.shutdown();  // prompt, though d's connection is open
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_THROW(d.len(), std::exception);  // the server is gone
}

TEST(Managers, ListValueArrayNamespace) {
  mpx::SyncManager manager;
  manager.start();
  auto l = manager.list<int>({1, 2});
  l.append(3);
  l.extend({4, 5});
  EXPECT_EQ(l.len(), 5u);
  EXPECT_EQ(l.getitem(-1), 5);
  l.setitem(0, 10);
  EXPECT_EQ(l.pop(), 5);
  l.insert(0, -1);
  EXPECT_EQ(l.copy(), (std::vector<int>{-1, 10, 2, 3, 4}));
  EXPECT_EQ(l.index(3), 3);
  l.remove(3);
  EXPECT_THROW(l.remove(42), mpx::ValueError);
  EXPECT_THROW(l.getitem(10), mpx::IndexError);

  auto v = manager.Value<double>(1.5);
  EXPECT_EQ(v.get(), 1.5);
  v.set(2.5);
  EXPECT_EQ(v.get(), 2.5);

  auto a = manager.Array<int>(4);
  a.setitem(2, 7);
  EXPECT_EQ(a.tolist(), (std::vector<int>{0, 0, 7, 0}));
  EXPECT_THROW(a.setitem(4, 1), mpx::IndexError);

  auto ns = manager.Namespace();
  ns.set("x", 42);
  ns.set<std::string>("name", "mpx");
  EXPECT_EQ(ns.get<int>("x"), 42);
  EXPECT_EQ(ns.get<std::string>("name"), "mpx");
  EXPECT_THROW(ns.get<std::string>("x"), mpx::DecodeError);
  EXPECT_THROW(ns.get<int>("nope"), mpx::AttributeError);
  EXPECT_EQ(ns.names(), (std::vector<std::string>{"name", "x"}));
}

TEST(Managers, QueueBetweenProcesses) {
  mpx::SyncManager manager;
  manager.start();
  auto q = manager.Queue<int>(2);
  Child producer([q]() mutable {
    for (int i = 0; i < 100; ++i)
      q.put(i);
  });
  long sum = 0;
  for (int i = 0; i < 100; ++i)
    sum += q.get(true, 30s);
  EXPECT_EQ(sum, 4950);
  EXPECT_EQ(producer.join(), 0);
  EXPECT_THROW(q.get_nowait(), mpx::Empty);
  const auto start = Clock::now();
  EXPECT_THROW(q.get(true, 200ms), mpx::Empty);
  EXPECT_GE(Clock::now() - start, 150ms);
  q.put(1);
  q.put(2);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait(3), mpx::Full);
  // JoinableQueue: join() returns once every item is done.
  auto jq = manager.JoinableQueue<int>();
  jq.put(1);
  Child worker([jq]() mutable {
    (void)jq.get();
    jq.task_done();
  });
  jq.join();
  EXPECT_EQ(worker.join(), 0);
  EXPECT_THROW(jq.task_done(), mpx::ValueError);
}

TEST(Managers, LockEventSemaphoreConditionBarrier) {
  mpx::SyncManager manager;
  manager.start();
  auto lock = manager.Lock();
  EXPECT_TRUE(lock.acquire());
  auto other = lock;  // another connection: another owner
  EXPECT_FALSE(other.acquire(false));
  EXPECT_FALSE(other.acquire(true, 100ms));
  lock.release();
  EXPECT_TRUE(other.acquire(false));
  other.release();
  EXPECT_THROW(other.release(), mpx::ValueError);
  { std::lock_guard guard(lock); }

  auto rlock = manager.RLock();
  EXPECT_TRUE(rlock.acquire());
  EXPECT_TRUE(rlock.acquire());
  rlock.release();
  rlock.release();

  auto sem = manager.BoundedSemaphore(2);
  EXPECT_TRUE(sem.acquire());
  EXPECT_TRUE(sem.acquire());
  EXPECT_FALSE(sem.acquire(false));
  sem.release();
  sem.release();
  EXPECT_THROW(sem.release(), mpx::ValueError);

  auto event = manager.Event();
  EXPECT_FALSE(event.wait(50ms));
  Child setter([event]() mutable { event.set(); });
  EXPECT_TRUE(event.wait(30s));
  EXPECT_TRUE(event.is_set());
  EXPECT_EQ(setter.join(), 0);

  auto cond = manager.Condition();
  auto flag = manager.Value<int>(0);
  Child notifier([cond, flag]() mutable {
    std::lock_guard guard(cond);
    flag.set(1);
    cond.notify_all();
  });
  {
    std::lock_guard guard(cond);
    const auto start = Clock::now();
    while (flag.get() == 0 && Clock::now() - start < 30s)
      cond.wait(1s);
    EXPECT_EQ(flag.get(), 1);
  }
  EXPECT_EQ(notifier.join(), 0);

  auto barrier = manager.Barrier(2);
  Child party([barrier]() mutable { (void)barrier.wait(30s); });
  const auto index = barrier.wait(30s);
  EXPECT_TRUE(index == 0 || index == 1);
  EXPECT_EQ(party.join(), 0);
  EXPECT_THROW(barrier.wait(100ms), mpx::BrokenBarrierError);
  EXPECT_TRUE(barrier.broken());
}

// A child process that runs `hold`, then waits to be killed; returned once `hold` ran.
mpx::Process holding(std::function<void()> hold) {
  auto [ready_r, ready_w] = mpx::Pipe(false);
  mpx::Process holder([&hold, &ready_w] {
    hold();
    ready_w.send(1);
    ::pause();  // held until killed
  });
  holder.start();
  ready_w.close();
  EXPECT_EQ(ready_r.recv<int>(), 1);
  return holder;
}

TEST(Managers, AKilledClientReleasesItsLockAndReferences) {
  mpx::SyncManager manager;
  manager.start();
  auto lock = manager.Lock();
  mpx::Process holder = holding([lock]() mutable { lock.acquire(); });
  EXPECT_FALSE(lock.acquire(false));
  holder.kill();
  holder.join();
  EXPECT_TRUE(lock.acquire(true, 30s));  // released by the server when the client dropped
  lock.release();
}

// A killed client gives back the semaphore units it acquired (a pool's, a bounded one's),
// but never lifts a semaphore above its initial value (one used as a signal).
TEST(Managers, AKilledClientGivesBackItsSemaphoreUnits) {
  mpx::SyncManager manager;
  manager.start();
  auto pool = manager.Semaphore(3);
  auto bounded = manager.BoundedSemaphore(2);
  auto signal = manager.Semaphore(1);
  signal.release();  // value 2: one unit above the initial value
  mpx::Process holder = holding([pool, bounded, signal]() mutable {
    for (int i = 0; i < 2; ++i) {
      pool.acquire();
      bounded.acquire();
      signal.acquire();
    }
  });
  EXPECT_TRUE(pool.acquire(false));
  EXPECT_FALSE(pool.acquire(false));
  EXPECT_FALSE(bounded.acquire(false));
  EXPECT_FALSE(signal.acquire(false));
  holder.kill();
  holder.join();
  // Each proxy is its own connection: each semaphore's units come back at once.
  EXPECT_TRUE(pool.acquire(true, 30s));
  EXPECT_TRUE(pool.acquire(false));
  EXPECT_FALSE(pool.acquire(false));  // 3 units, all held here now
  EXPECT_TRUE(bounded.acquire(true, 30s));
  EXPECT_TRUE(bounded.acquire(false));
  bounded.release();
  bounded.release();
  EXPECT_THROW(bounded.release(), mpx::ValueError);  // not above its bound
  EXPECT_TRUE(signal.acquire(true, 30s));
  EXPECT_FALSE(signal.acquire(false));  // back to 1, its initial value, not to 2
}

struct Counter {
  explicit Counter(int start) : n(start) {}
  int add(int k) { return n += k; }
  int get() const { return n; }
  void secret() {}
  int n;
};

TEST(Managers, RegisteredUserTypeExposesOnlyItsMethods) {
  mpx::BaseManager::register_type<Counter, int>(
      "Counter", {{"add", mpx::expose(&Counter::add)}, {"get", mpx::expose(&Counter::get)}});
  mpx::SyncManager manager;
  manager.start();
  mpx::BaseProxy c = manager.create("Counter", 10);
  EXPECT_EQ(c.call<int>("add", 5), 15);
  EXPECT_EQ(c.call<int>("get"), 15);
  EXPECT_THROW(c.call("secret"), mpx::AttributeError);
  EXPECT_THROW(c.call<int>("add", std::string("x")), mpx::RemoteError);  // wrong argument type
  EXPECT_THROW(manager.create("NoSuchType"), mpx::KeyError);
}

TEST(Managers, NamedObjectsAndConnect) {
  mpx::BaseManager server_side("127.0.0.1:0", std::string("secret"));
  server_side.register_<mpx::QueueProxy<int>>("tasks");
  server_side.start();
  // Another manager object, as in another program: connect by address and key.
  mpx::BaseManager client("" + server_side.address(), std::string("secret"));
  client.connect();
  auto q1 = client.get<mpx::QueueProxy<int>>("tasks");
  auto q2 = server_side.get<mpx::QueueProxy<int>>("tasks");
  q1.put(5);
  EXPECT_EQ(q2.get(true, 30s), 5);  // the same object
  EXPECT_THROW(client.get<mpx::QueueProxy<int>>("nope"), mpx::KeyError);
  EXPECT_THROW(client.get<mpx::QueueProxy<double>>("tasks"), mpx::ValueError);
  mpx::BaseManager wrong(server_side.address(), std::string("wrong"));
  EXPECT_THROW(wrong.connect(), mpx::AuthenticationError);
}

TEST(Managers, SilentPeersDoNotStallOthers) {
  mpx::SyncManager manager("127.0.0.1:0");
  manager.start();
  // Ten peers that connect and never answer the challenge (no authkey on their side).
  std::vector<mpx::Connection> silent;
  for (int i = 0; i < 10; ++i)
    silent.push_back(mpx::Client(manager.address()));
  const auto start = Clock::now();
  auto v = manager.Value<int>(7);
  EXPECT_EQ(v.get(), 7);
  EXPECT_LT(Clock::now() - start, 5s);  // not after their 10 s handshake timeouts
}

TEST(Managers, ProxyTravelsThroughAPipe) {
  mpx::SyncManager manager;
  manager.start();
  auto d = manager.dict<int, int>();
  auto [a, b] = mpx::Pipe();
  Child child([&b]() {
    auto got = b.recv<mpx::DictProxy<int, int>>();
    got.setitem(1, 100);
    // Several in one message: each connects while the message is being decoded.
    auto several = b.recv<std::vector<mpx::DictProxy<int, int>>>();
    several.at(2).setitem(2, several.at(0).getitem(1) + several.at(1).getitem(1));
    b.send(0);
  });
  a.send(d);
  a.send(std::vector{d, d, d});  // each takes its transit hold while the message is encoded
  EXPECT_EQ(a.recv<int>(), 0);
  EXPECT_EQ(d.getitem(1), 100);
  EXPECT_EQ(d.getitem(2), 200);
  EXPECT_EQ(child.join(), 0);
}

// A manager's server serving in a thread of this process, stopped on the way out.
struct ServingHere {
  mpx::ManagerServer server;
  std::thread thread{[this] { server.serve_forever(); }};
  ~ServingHere() {
    server.stop();
    thread.join();
  }
};

// Until the server has `objects` shared objects and `clients` connections (30 s at most).
bool server_reaches(const mpx::ManagerServer& server, std::size_t objects, std::size_t clients) {
  const auto start = Clock::now();
  while (server.counts() != std::pair{objects, clients}) {
    if (Clock::now() - start > 30s) return false;
    std::this_thread::sleep_for(5ms);  // polling the server's counts, not a synchronisation
  }
  return true;
}

// A proxy sent to another process keeps its object alive until the receiver decodes it,
// though the sender's proxy is gone by then; one never decoded lets go after the hold.
TEST(Managers, AProxyInTransitKeepsItsObject) {
  mpx::SyncManager manager("127.0.0.1:0", std::string("k"));
  manager.set_transit_hold(300ms);
  ServingHere here{manager.get_server()};
  mpx::ManagerServer& server = here.server;
  mpx::SyncManager client(server.address(), std::string("k"));
  mpx::Queue<mpx::DictProxy<int, int>> queue;
  {
    auto d = client.dict<int, int>();
    d.setitem(1, 100);
    queue.put(d);
    server.set_transit_hold(30s);  // the next holds: long enough for the receiver
    queue.put(d);
  }
  ASSERT_TRUE(server_reaches(server, 1, 0));  // the sender's reference is gone, not the object
  Child receiver([&queue] {
    // The first's hold may have expired by now; the second's keeps the object.
    auto first = queue.get();
    auto second = queue.get();
    if (first.getitem(1) != 100 || second.getitem(1) != 100) std::_Exit(3);
  });
  EXPECT_EQ(receiver.join(), 0);
  // The receiver's reference replaced the hold; it went with the receiver.
  EXPECT_TRUE(server_reaches(server, 0, 0));
  // Never decoded: the object goes when the hold expires.
  server.set_transit_hold(300ms);
  mpx::Bytes in_transit;
  {
    auto d = client.dict<int, int>();
    in_transit = mpx::encode(d);
  }
  EXPECT_TRUE(server_reaches(server, 0, 0));
  using Dict = mpx::DictProxy<int, int>;
  EXPECT_THROW((void)mpx::decode<Dict>(in_transit), mpx::KeyError);
}

TEST(Managers, ServeForeverInThisProcess) {
  mpx::SyncManager manager("127.0.0.1:0", std::string("k"));
  mpx::ManagerServer server = manager.get_server();
  std::thread serving([&] { server.serve_forever(); });
  mpx::SyncManager client(server.address(), std::string("k"));
  client.connect();
  auto v = client.Value<int>(3);
  EXPECT_EQ(v.get(), 3);
  EXPECT_EQ(server.counts().first, 1u);
  server.stop();
  serving.join();
}

}  // namespace

namespace {

// A server killed with -9: a call waiting on it fails with EOFError or BrokenPipeError
// (which one depends on when the kill lands) instead of waiting forever; so do calls
// after it.
TEST(Managers, CallsOnAKilledServerFailInsteadOfWaiting) {
  mpx::SyncManager manager;
  manager.start();
  auto q = manager.Queue<int>();
  auto lock = manager.Lock();
  mpx_test::Watchdog watchdog(60s, "a call on a killed manager server");
  auto fails_as_gone = [](auto&& call) {
    try {
      call();
    } catch (const mpx::EOFError&) {
      return true;
    } catch (const mpx::BrokenPipeError&) {
      return true;
    }
    return false;
  };
  auto waiting = std::async(std::launch::async, [&] { return fails_as_gone([&q] { q.get(); }); });
  ASSERT_EQ(::kill(manager.pid(), SIGKILL), 0);
  EXPECT_TRUE(waiting.get()) << "get() on a killed server returned";
  EXPECT_TRUE(fails_as_gone([&lock] { lock.acquire(); })) << "acquire() returned";
  EXPECT_ANY_THROW(((void)manager.dict<int, int>()));  // refused, or reset in the handshake
  manager.shutdown();
}

bool block_exists(const std::string& name) {
  try {
    (void)mpx::SharedMemory::open(name);
    return true;
  } catch (const mpx::FileNotFoundError&) {
    return false;
  }
}

// Blocks made through a SharedMemoryManager, here and in a child that has exited since,
// live until shutdown(), which unlinks them all (one of them unlinked by a user already).
TEST(SharedMemoryManager, BlocksLiveUntilShutdown) {
  mpx::SharedMemoryManager smm;
  smm.start();
  mpx::SharedMemory shm = smm.SharedMemory(4096);
  EXPECT_EQ(shm.size(), 4096u);
  EXPECT_EQ(shm.name().rfind("psm_", 0), 0u) << shm.name();
  mpx::ShareableList sl = smm.ShareableList({1, "two", 3.0});
  EXPECT_EQ(sl.list(),
            (std::vector<mpx::ShareableList::Item>{std::int64_t{1}, std::string("two"), 3.0}));
  mpx::SharedMemory gone = smm.SharedMemory(100);
  gone.unlink();

  auto [reader, writer] = mpx::Pipe(false);
  Child child([&smm, &sl, &writer = writer] {
    mpx::SharedMemory mine = smm.SharedMemory(64);
    std::memset(mine.buf().data(), 'c', 64);
    sl.set(1, "kid");
    writer.send(mine.name());
  });
  const std::string child_block = reader.recv<std::string>();
  ASSERT_EQ(child.join(), 0);
  ASSERT_TRUE(block_exists(child_block));  // its maker is gone; the block is not
  EXPECT_EQ(static_cast<char>(mpx::SharedMemory::open(child_block).buf()[63]), 'c');
  EXPECT_EQ(sl[1], mpx::ShareableList::Item(std::string("kid")));

  const std::vector<std::string> names{shm.name(), sl.shm().name(), child_block};
  for (const std::string& name : names)
    EXPECT_TRUE(block_exists(name)) << name;
  smm.shutdown();
  for (const std::string& name : names)
    EXPECT_FALSE(block_exists(name)) << name;
  // What this process mapped stays usable until it lets go, as with any unlinked block.
  EXPECT_EQ(std::get<std::string>(sl[1]), "kid");
}

TEST(SharedMemoryManager, RefusesWhatItCannotMakeBeforeMakingIt) {
  mpx::SharedMemoryManager smm;
  smm.start();
  EXPECT_THROW((void)smm.SharedMemory(0), mpx::ValueError);
  EXPECT_THROW((void)smm.ShareableList({std::string("nul\0", 4)}), mpx::ValueError);
  smm.shutdown();
}

// A server killed with -9 leaves no block behind: its resource tracker unlinks them.
TEST(SharedMemoryManager, AKilledServerLeavesNoBlocks) {
  mpx::SharedMemoryManager smm;
  smm.start();
  const std::string name = smm.SharedMemory(4096).name();
  ASSERT_TRUE(block_exists(name));
  ASSERT_EQ(::kill(smm.pid(), SIGKILL), 0);
  // The tracker unlinks once it sees the server gone; nothing tells this process when.
  const auto give_up = Clock::now() + 30s;
  while (block_exists(name) && Clock::now() < give_up)
    std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(block_exists(name));
  smm.shutdown();  // reaps the dead server
}

}  // namespace
