// Tests of mpx/queues.hpp: Queue, JoinableQueue, SimpleQueue.
#include "mpx/queues.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ipc/ring.hpp"
#include "mpx/connection.hpp"
#include "mpx/process.hpp"
#include "support/child.hpp"
#include "support/leak_check.hpp"
#include "support/proc_state.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using mpx_test::Child;

// An int the message ring carries: a Queue of plain ints keeps them in slots
// (slot_queue_test.cpp), a std::optional is never raw.
using MessageInt = std::optional<int>;
int as_int(int v) {
  return v;
}
int as_int(const MessageInt& v) {
  return v.value();
}

// An item that knows whether it is intact: its id in the first 8 bytes, then bytes that
// follow from the id and the size.
mpx::Bytes make_item(uint64_t id, std::size_t size) {
  mpx::Bytes b(std::max<std::size_t>(size, 8));
  std::memcpy(b.data(), &id, 8);
  uint32_t x = static_cast<uint32_t>(id * 2654435761u + b.size());
  for (std::size_t i = 8; i < b.size(); ++i) {
    x = x * 1664525u + 1013904223u;
    b[i] = static_cast<std::byte>(x >> 24);
  }
  return b;
}

// The item's id, or -1 when it is not an intact item.
int64_t item_id(const mpx::Bytes& b) {
  if (b.size() < 8) return -1;
  uint64_t id;
  std::memcpy(&id, b.data(), 8);
  return b == make_item(id, b.size()) ? static_cast<int64_t>(id) : -1;
}

TEST(QueueTest, ItemsComeOutInFifoOrder) {
  mpx::Queue<int> q;
  for (int i = 0; i < 1000; ++i)
    q.put(i);
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(q.get(), i);
  mpx::Queue<std::string> s;
  s.put("one");
  s.put(std::string(5000, 'x'));
  s.put("");
  EXPECT_EQ(s.get(), "one");
  EXPECT_EQ(s.get(), std::string(5000, 'x'));
  EXPECT_EQ(s.get(), "");
}

// A consumer whose last get found its item waiting looks for the next one lazily (ring.hpp,
// "Waiting"); once that spin is over it sleeps, and a put must still wake it.
TEST(QueueTest, AConsumerThatKeptUpAndThenFellAsleepIsWokenByTheNextPut) {
  mpx::Queue<int> q;
  mpx::Queue<int> ack;
  q.put(1);
  Child consumer([&] {
    if (q.get() != 1) ::_exit(2);  // found waiting
    ack.put(0);
    ::_exit(q.get(30s) == 2 ? 0 : 3);  // throws Empty (exit 1) if never woken
  });
  EXPECT_EQ(ack.get(10s), 0);
  ASSERT_TRUE(mpx_test::until_asleep(std::to_string(consumer.pid()), 10s));
  const auto put_at = Clock::now();
  q.put(2);
  EXPECT_EQ(consumer.join(), 0);
  EXPECT_LT(Clock::now() - put_at, 10s);
}

TEST(QueueTest, GetWithTimeoutThrowsEmptyWhenNothingArrives) {
  mpx::Queue<int> q;
  auto start = Clock::now();
  EXPECT_THROW(q.get(200ms), mpx::Empty);
  EXPECT_GE(Clock::now() - start, 100ms);
  EXPECT_THROW(q.get_nowait(), mpx::Empty);
  EXPECT_EQ(q.try_get(), std::nullopt);
  EXPECT_EQ(q.try_get(50ms), std::nullopt);
}

TEST(QueueTest, PutWithTimeoutThrowsFullWhenMaxsizeItemsAreQueued) {
  mpx::Queue<int> q(2);
  q.put(1);
  q.put_nowait(2);
  EXPECT_TRUE(q.full());
  auto start = Clock::now();
  EXPECT_THROW(q.put(3, 200ms), mpx::Full);
  EXPECT_GE(Clock::now() - start, 100ms);
  EXPECT_THROW(q.put_nowait(3), mpx::Full);
  EXPECT_FALSE(q.try_put(3));
  EXPECT_EQ(q.get(), 1);
  EXPECT_TRUE(q.try_put(3));
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.get(), 3);
}

TEST(QueueTest, PutWithTimeoutThrowsFullWhenTheRingHasNoRoom) {
  mpx::Queue<mpx::Bytes> q(0, 4096);
  q.put(make_item(1, 3000));
  EXPECT_THROW(q.put(make_item(2, 3000), 100ms), mpx::Full);
  EXPECT_EQ(item_id(q.get()), 1);
  EXPECT_EQ(q.qsize(), 0u);
}

TEST(QueueTest, QsizeEmptyAndFullAreExact) {
  mpx::Queue<int> q(3);
  EXPECT_EQ(q.maxsize(), 3u);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
  EXPECT_EQ(q.qsize(), 0u);
  q.put(1);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_FALSE(q.empty());
  q.put(2);
  q.put(3);
  EXPECT_EQ(q.qsize(), 3u);
  EXPECT_TRUE(q.full());
  q.get();
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_FALSE(q.full());
  mpx::Queue<int> unbounded;
  for (int i = 0; i < 100; ++i)
    unbounded.put(i);
  EXPECT_FALSE(unbounded.full());
  EXPECT_EQ(unbounded.qsize(), 100u);
}

TEST(QueueTest, AQueueOfStringsTakesStringLiterals) {
  mpx::Queue<std::string> q;
  q.put("hello");
  q.put_nowait("there");
  EXPECT_TRUE(q.try_put("again"));
  mpx::SimpleQueue<std::string> simple;
  simple.put("simple");
  EXPECT_EQ(q.get(), "hello");
  EXPECT_EQ(q.get(), "there");
  EXPECT_EQ(q.get(), "again");
  EXPECT_EQ(simple.get(), "simple");
}

TEST(QueueTest, CloseMakesPutAndGetThrowInThisProcess) {
  mpx::Queue<int> q;
  q.put(1);
  mpx::Queue<int> copy = q;
  q.close();
  q.close();
  EXPECT_TRUE(q.closed());
  EXPECT_THROW(q.put(2), mpx::InvalidStateError);
  EXPECT_THROW(q.get(), mpx::InvalidStateError);
  EXPECT_THROW(q.try_get(), mpx::InvalidStateError);
  EXPECT_TRUE(copy.closed());  // copies are handles to the same queue object
}

TEST(QueueTest, AClosedQueueAnswersNoQuestionsAboutItsItems) {
  mpx::Queue<int> unbounded;
  mpx::Queue<int> bounded(4);
  bounded.put(1);
  unbounded.close();
  bounded.close();
  for (mpx::Queue<int>* q : {&unbounded, &bounded}) {
    EXPECT_THROW(q->empty(), mpx::InvalidStateError);
    EXPECT_THROW(q->qsize(), mpx::InvalidStateError);
    EXPECT_THROW(q->full(), mpx::InvalidStateError);
  }
  mpx::JoinableQueue<int> joinable;
  joinable.close();
  EXPECT_THROW(joinable.empty(), mpx::InvalidStateError);
}

TEST(QueueTest, AnItemPutByAProcessThatExitsAtOnceIsNotLost) {
  mpx::Queue<std::string> q;
  {
    Child child([&] {
      q.put("still here");
      ::_exit(0);
    });
    EXPECT_EQ(child.join(), 0);
  }
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(5s), "still here");
}

TEST(QueueTest, SixteenAndSixtyFourMiBItemsArriveByteExact) {
  mpx::Queue<mpx::Bytes> q;
  Child producer([&] {
    q.put(make_item(16, 16u << 20));
    q.put(make_item(64, 64u << 20));
    q.put(make_item(1, 10));
  });
  mpx::Bytes a = q.get(30s);
  EXPECT_EQ(a.size(), 16u << 20);
  EXPECT_EQ(item_id(a), 16);
  a = {};
  mpx::Bytes b = q.get(30s);
  EXPECT_EQ(b.size(), 64u << 20);
  EXPECT_EQ(item_id(b), 64);
  b = {};
  EXPECT_EQ(item_id(q.get(30s)), 1);
  EXPECT_EQ(producer.join(), 0);
}

// In a 4 KiB ring (chunks of up to 1000 bytes) items of every size up to twice that, put
// while the ring is partly full: some fit whole, some fit a chunk but not the room left
// (their first chunk then carries the total size, ring.hpp), some need several chunks.
TEST(QueueTest, ItemsSplitWhereverTheRoomEndsArriveByteExact) {
  constexpr int kItems = 300;
  mpx::Queue<mpx::Bytes> q(0, 4096);
  auto size_of = [](int i) { return static_cast<std::size_t>(8 + (i * 397) % 2000); };
  Child producer([&] {
    for (int i = 0; i < kItems; ++i)
      q.put(make_item(static_cast<uint64_t>(i), size_of(i)));
  });
  for (int i = 0; i < kItems; ++i) {
    mpx::Bytes b = q.get(30s);
    ASSERT_EQ(b.size(), size_of(i));
    ASSERT_EQ(item_id(b), i);
  }
  EXPECT_EQ(producer.join(), 0);
  EXPECT_TRUE(q.empty());
}

template <class T>
void many_producers_and_consumers_lose_and_duplicate_nothing() {
  constexpr int kProducers = 4;
  constexpr int kItems = 500;
  constexpr int kConsumers = 3;
  mpx::Queue<T> q(64);
  mpx::Queue<int> results;
  std::vector<std::unique_ptr<Child>> consumers;
  for (int c = 0; c < kConsumers; ++c) {
    consumers.push_back(std::make_unique<Child>([&] {
      for (;;) {
        int v = as_int(q.get());
        if (v < 0) break;
        results.put(v);
      }
    }));
  }
  std::vector<std::unique_ptr<Child>> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.push_back(std::make_unique<Child>([&, p] {
      for (int i = 0; i < kItems; ++i)
        q.put(p * 1000 + i);
    }));
  }
  for (auto& p : producers)
    EXPECT_EQ(p->join(), 0);
  for (int c = 0; c < kConsumers; ++c)
    q.put(-1);
  std::multiset<int> got;
  for (int n = 0; n < kProducers * kItems; ++n)
    got.insert(results.get(30s));
  for (auto& c : consumers)
    EXPECT_EQ(c->join(), 0);
  std::set<int> distinct(got.begin(), got.end());
  EXPECT_EQ(got.size(), distinct.size()) << "an item was delivered twice";
  for (int p = 0; p < kProducers; ++p)
    for (int i = 0; i < kItems; ++i)
      EXPECT_EQ(got.count(p * 1000 + i), 1u);
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(results.empty());
}

TEST(QueueTest, ManyProducersAndConsumersLoseAndDuplicateNothing) {
  many_producers_and_consumers_lose_and_duplicate_nothing<int>();
}

TEST(QueueTest, ManyProducersAndConsumersOfMessagesLoseAndDuplicateNothing) {
  many_producers_and_consumers_lose_and_duplicate_nothing<MessageInt>();
}

TEST(QueueTest, ThreadsShareAQueueLikeProcesses) {
  mpx::Queue<int> q(8);
  std::atomic<long> sum{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < 2; ++c)
    threads.emplace_back([&] {
      for (int v; (v = q.get()) >= 0;)
        sum += v;
    });
  for (int p = 0; p < 2; ++p)
    threads.emplace_back([&] {
      for (int i = 1; i <= 1000; ++i)
        q.put(i);
    });
  threads[2].join();
  threads[3].join();
  q.put(-1);
  q.put(-1);
  threads[0].join();
  threads[1].join();
  EXPECT_EQ(sum.load(), 2 * 500500);
}

TEST(QueueTest, AProducerKilledInTheMiddleOfALargePutLeavesNoCorruptItemAndNoHang) {
  mpx::Queue<mpx::Bytes> q(0, 64 << 10);
  auto [go_r, go_w] = mpx::Pipe(false);
  // The victim puts 1 MiB items (16 times the ring) without end, so it is inside put()
  // nearly all the time; it is killed once the consumer has seen one of its items.
  Child victim([&, &go_r = go_r, &go_w = go_w] {
    go_r.close();
    go_w.close();
    for (uint64_t id = 1000;; ++id)
      q.put(make_item(id, 1 << 20));
  });
  Child survivor([&, &go_r = go_r, &go_w = go_w] {
    go_w.close();
    go_r.recv_bytes();
    for (uint64_t id = 1; id <= 50; ++id)
      q.put(make_item(id, id % 2 ? 100 : 300'000));
    q.put(make_item(0, 8));  // the end
  });
  go_r.close();
  bool killed = false;
  std::vector<int64_t> survivor_ids;
  for (;;) {
    mpx::Bytes item = q.get(30s);
    int64_t id = item_id(item);
    ASSERT_GE(id, 0) << "a corrupt item of " << item.size() << " bytes was delivered";
    if (id >= 1000 && !killed) {
      victim.kill();
      EXPECT_EQ(victim.join(), -SIGKILL);
      go_w.send_bytes(mpx::Bytes(1));
      killed = true;
    } else if (id == 0) {
      break;
    } else if (id < 1000) {
      survivor_ids.push_back(id);
    }
  }
  EXPECT_EQ(survivor.join(), 0);
  ASSERT_EQ(survivor_ids.size(), 50u);
  for (int64_t i = 0; i < 50; ++i)
    EXPECT_EQ(survivor_ids[i], i + 1);
  EXPECT_TRUE(q.empty());
}

TEST(QueueTest, AConsumerKilledInTheMiddleOfAGetLeavesNoCorruptItemAndNoHang) {
  constexpr uint64_t kItems = 40;
  mpx::Queue<mpx::Bytes> q(0, 64 << 10);
  auto [report_r, report_w] = mpx::Pipe(false);
  // The victim takes 1 MiB items as they stream in and reports each id it got whole.
  Child victim([&, &report_r = report_r, &report_w = report_w] {
    report_r.close();
    for (;;) {
      int64_t id = item_id(q.get());
      report_w.send_bytes(std::as_bytes(std::span(&id, 1)));
    }
  });
  report_w.close();
  Child producer([&, &report_r = report_r] {
    report_r.close();
    for (uint64_t id = 1; id <= kItems; ++id)
      q.put(make_item(id, 1 << 20));
  });
  std::set<int64_t> seen;
  int64_t first = 0;
  ASSERT_EQ(report_r.recv_bytes_into(std::as_writable_bytes(std::span(&first, 1))), 8u);
  seen.insert(first);
  victim.kill();
  EXPECT_EQ(victim.join(), -SIGKILL);
  // What the victim reported before it died.
  while (report_r.poll()) {
    try {
      int64_t id = 0;
      report_r.recv_bytes_into(std::as_writable_bytes(std::span(&id, 1)));
      EXPECT_TRUE(seen.insert(id).second);
    } catch (const mpx::EOFError&) {
      break;
    }
  }
  // This process takes over: everything else arrives, intact, in order.
  int64_t last = *seen.rbegin();
  std::size_t taken_here = 0;
  while (last < static_cast<int64_t>(kItems)) {
    int64_t id = item_id(q.get(30s));
    ASSERT_GT(id, last) << "corrupt, duplicated or reordered item";
    EXPECT_TRUE(seen.insert(id).second);
    last = id;
    ++taken_here;
  }
  EXPECT_EQ(producer.join(), 0);
  // At most the one item the victim was taking is lost.
  EXPECT_GE(seen.size(), kItems - 1);
  EXPECT_GT(taken_here, 0u);
  EXPECT_TRUE(q.empty());
}

TEST(QueueTest, NamedQueueIsOpenedByNameAndUnlinkedByItsCreator) {
  const std::string name = mpx_test::unique_name("queue");
  {
    auto q = mpx::Queue<int>::create(name, 5);
    EXPECT_THROW(mpx::Queue<int>::create(name), mpx::FileExistsError);
    Child other([&] {
      auto opened = mpx::Queue<int>::open(name);
      if (opened.maxsize() != 5) ::_exit(2);
      opened.put(41);
      opened.put(42);
    });
    EXPECT_EQ(other.join(), 0);
    EXPECT_EQ(q.get(5s), 41);
    auto again = mpx::Queue<int>::open(name);
    EXPECT_EQ(again.get(5s), 42);
    EXPECT_EQ(access(("/dev/shm/" + name).c_str(), F_OK), 0);
  }
  EXPECT_NE(access(("/dev/shm/" + name).c_str(), F_OK), 0);
  EXPECT_THROW(mpx::Queue<int>::open(name), mpx::FileNotFoundError);
}

TEST(QueueTest, ANamedQueueIsUnlinkedWhenItsCreatorIsKilled) {
  const std::string name = mpx_test::unique_name("orphan");
  auto [ready_r, ready_w] = mpx::Pipe(false);
  Child creator([&, &ready_r = ready_r, &ready_w = ready_w] {
    ready_r.close();
    auto q = mpx::Queue<int>::create(name);
    q.put(1);
    ready_w.send_bytes(mpx::Bytes(1));
    ::pause();
  });
  ready_w.close();
  ready_r.recv_bytes();
  {
    auto opened = mpx::Queue<int>::open(name);
    EXPECT_EQ(opened.get(5s), 1);
  }
  creator.kill();
  EXPECT_EQ(creator.join(), -SIGKILL);
  // The creator's resource tracker unlinks the name soon after the creator's death.
  const auto give_up = Clock::now() + 20s;
  while (access(("/dev/shm/" + name).c_str(), F_OK) == 0 && Clock::now() < give_up)
    std::this_thread::sleep_for(5ms);
  EXPECT_NE(access(("/dev/shm/" + name).c_str(), F_OK), 0);
}

TEST(QueueTest, GettingAnotherTypeThanWasPutThrowsDecodeError) {
  const std::string name = mpx_test::unique_name("typed");
  auto ints = mpx::Queue<MessageInt>::create(name);
  auto strings = mpx::Queue<std::string>::open(name);
  ints.put(7);
  EXPECT_THROW(strings.get(1s), mpx::DecodeError);
  strings.put("ok");
  EXPECT_EQ(strings.get(1s), "ok");
}

TEST(JoinableQueueTest, JoinReturnsOnceEveryItemIsMarkedDone) {
  mpx::JoinableQueue<int> q;
  for (int i = 0; i < 10; ++i)
    q.put(i);
  EXPECT_FALSE(q.join(50ms));
  Child worker([&] {
    for (int i = 0; i < 10; ++i) {
      q.get();
      q.task_done();
    }
  });
  q.join();
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(q.join(0ms));
  EXPECT_EQ(worker.join(), 0);
}

// Kills the calling process at the commit step: after it counted the item it is putting
// or getting, before it published the new position.
void die_between_counting_and_publishing() {
  mpx::detail::set_commit_hook([](mpx::detail::CommitStep) noexcept { ::raise(SIGKILL); });
}

TEST(JoinableQueueTest, AProducerKilledBetweenCountingAndPublishingLeavesJoinExact) {
  mpx::JoinableQueue<int> q;
  q.put(1);
  Child victim([&] {
    die_between_counting_and_publishing();
    q.put(2);
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  EXPECT_EQ(q.get(), 1);
  q.task_done();
  // The dead producer's item was never published: nothing is left to wait for.
  EXPECT_TRUE(q.join(10s));
  EXPECT_EQ(q.qsize(), 0u);
  EXPECT_THROW(q.task_done(), mpx::ValueError);
  q.put(3);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(), 3);
  q.task_done();
  EXPECT_TRUE(q.join(0ms));
}

TEST(JoinableQueueTest, AJoinerAsleepWhenTheProducerDiesIsWoken) {
  mpx::JoinableQueue<int> q;
  q.put(1);
  std::atomic<bool> joined{false};
  std::thread joiner([&] {
    q.join();
    joined = true;
  });
  Child victim([&] {
    die_between_counting_and_publishing();
    q.put(2);
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  EXPECT_FALSE(joined);
  EXPECT_EQ(q.get(), 1);
  q.task_done();
  joiner.join();  // hangs here if the dead producer's count stayed
  EXPECT_TRUE(joined);
}

TEST(QueueTest, AProducerKilledBetweenCountingAndPublishingLeavesQsizeExact) {
  mpx::Queue<MessageInt> q;
  q.put(1);
  Child victim([&] {
    die_between_counting_and_publishing();
    q.put(2);
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(), 1);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.try_get(50ms));
}

// Kills the calling process once the item it is putting is committed (its commit word
// stored), before it published the ring's head.
void die_between_committing_and_publishing() {
  mpx::detail::set_commit_hook([](mpx::detail::CommitStep step) noexcept {
    if (step == mpx::detail::CommitStep::kCommitted) ::raise(SIGKILL);
  });
}

TEST(JoinableQueueTest, AProducerKilledAfterCommittingDeliversItsItemOnceAndLeavesCountsExact) {
  mpx::JoinableQueue<int> q;
  q.put(1);
  Child victim([&] {
    die_between_committing_and_publishing();
    q.put(2);
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  // The item was whole and committed: it is in the queue, counted once.
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(1s), 2);
  EXPECT_FALSE(q.try_get(50ms));
  EXPECT_EQ(q.qsize(), 0u);
  q.task_done();
  EXPECT_FALSE(q.join(0ms));
  q.task_done();
  EXPECT_TRUE(q.join(10s));
  q.put(3);  // the next producer finds the ring as the dead one left it
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(), 3);
  q.task_done();
  EXPECT_TRUE(q.join(0ms));
}

TEST(QueueTest, AConsumerTakesTheItemOfAProducerKilledAfterCommittingBeforeAnyRepair) {
  mpx::Queue<MessageInt> q;
  Child victim([&] {
    die_between_committing_and_publishing();
    q.put(1);
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  EXPECT_EQ(q.get(1s), 1);  // no qsize() or put() has repaired head yet
  EXPECT_EQ(q.qsize(), 0u);
  q.put(2);
  q.put(3);
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.get(), 3);
  EXPECT_FALSE(q.try_get(50ms));
}

TEST(QueueTest, AConsumerKilledBetweenCountingAndPublishingLeavesTheItemAndQsizeExact) {
  mpx::Queue<MessageInt> q;
  q.put(1);
  q.put(2);
  Child victim([&] {
    die_between_counting_and_publishing();
    q.get();
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  // The dead consumer had not taken the item yet: it is still there, and counted.
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.qsize(), 0u);
  q.put(3);
  EXPECT_EQ(q.qsize(), 1u);
}

TEST(JoinableQueueTest, JoinWhileProducersAndConsumersAreAtWorkReturnsWhenAllAreDone) {
  constexpr int kProducers = 2;
  constexpr int kItems = 3000;
  mpx::JoinableQueue<int> q;
  mpx::Queue<int> done_count;
  std::vector<std::unique_ptr<Child>> consumers;
  for (int c = 0; c < 2; ++c) {
    consumers.push_back(std::make_unique<Child>([&] {
      int n = 0;
      for (;;) {
        int v = q.get();
        q.task_done();
        if (v < 0) break;
        ++n;
      }
      done_count.put(n);
    }));
  }
  q.put(0);  // so that the joiner below has a task to wait for from the start
  std::atomic<bool> joined{false};
  std::thread joiner([&] {
    q.join();  // may return at any moment the count touches zero; it must return
    joined = true;
  });
  std::vector<std::unique_ptr<Child>> producers;
  for (int p = 0; p < kProducers; ++p)
    producers.push_back(std::make_unique<Child>([&] {
      for (int i = 1; i <= kItems; ++i)
        q.put(i);
    }));
  for (auto& p : producers)
    EXPECT_EQ(p->join(), 0);
  EXPECT_TRUE(q.join(30s));  // every item put has been marked done
  joiner.join();
  EXPECT_TRUE(joined);
  EXPECT_EQ(q.qsize(), 0u);
  for (int c = 0; c < 2; ++c)
    q.put(-1);
  int total = done_count.get(30s) + done_count.get(30s);
  EXPECT_EQ(total, kProducers * kItems + 1);
  for (auto& c : consumers)
    EXPECT_EQ(c->join(), 0);
  EXPECT_TRUE(q.join(0ms));
}

TEST(JoinableQueueTest, TaskDoneCalledTooOftenThrowsValueError) {
  mpx::JoinableQueue<int> q;
  EXPECT_THROW(q.task_done(), mpx::ValueError);
  q.put(1);
  q.get();
  q.task_done();
  EXPECT_THROW(q.task_done(), mpx::ValueError);
}

TEST(SimpleQueueTest, PutGetEmptyAndClose) {
  mpx::SimpleQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  Child producer([&] { q.put("from the child"); });
  EXPECT_EQ(q.get(), "from the child");
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(producer.join(), 0);
  q.close();
  EXPECT_THROW(q.put("x"), mpx::InvalidStateError);
  EXPECT_THROW(q.get(), mpx::InvalidStateError);
  EXPECT_THROW(q.empty(), mpx::InvalidStateError);
}

}  // namespace
