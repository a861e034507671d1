// Tests of the queues of small raw items (src/ipc/slot_ring.hpp): a Queue<int> keeps its
// items in slots. What they share with every queue is in queues_test.cpp; here: the slots'
// laps, their type, and processes killed holding a slot.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "ipc/ring.hpp"
#include "mpx/connection.hpp"
#include "mpx/queues.hpp"
#include "support/child.hpp"
#include "support/leak_check.hpp"
#include "sys/membarrier.hpp"
#include "sys/self.hpp"
#include "sys/syscall.hpp"

namespace {

using namespace std::chrono_literals;
using mpx_test::Child;

static_assert(mpx::detail::slotted_v<int> && mpx::detail::slotted_v<double> &&
              mpx::detail::slotted_v<std::array<char, 24>>);
static_assert(!mpx::detail::slotted_v<std::array<char, 25>> &&
              !mpx::detail::slotted_v<std::string> && !mpx::detail::slotted_v<std::optional<int>>);

TEST(SlotQueueTest, ItemsKeepTheirOrderLapAfterLap) {
  for (std::size_t maxsize : {1u, 3u, 4u}) {  // one slot; laps by division; laps by mask
    mpx::Queue<long> q(maxsize);
    EXPECT_EQ(q.capacity(), maxsize * 16);
    constexpr long kItems = 20000;
    Child producer([&] {
      for (long i = 0; i < kItems; ++i)
        q.put(i * 7);
    });
    for (long i = 0; i < kItems; ++i)
      ASSERT_EQ(q.get(30s), i * 7) << "maxsize " << maxsize;
    EXPECT_EQ(producer.join(), 0);
    EXPECT_TRUE(q.empty());
  }
}

TEST(SlotQueueTest, ItemsOfTwentyFourBytesArriveWhole) {
  using Record = std::array<uint64_t, 3>;
  mpx::SimpleQueue<Record> q;
  Child producer([&] {
    for (uint64_t i = 0; i < 1000; ++i)
      q.put(Record{i, ~i, i * i});
  });
  for (uint64_t i = 0; i < 1000; ++i)
    ASSERT_EQ(q.get(), (Record{i, ~i, i * i}));
  EXPECT_EQ(producer.join(), 0);
}

TEST(SlotQueueTest, OpenedAsAnotherTypeItThrowsDecodeError) {
  const std::string name = mpx_test::unique_name("slots");
  auto ints = mpx::Queue<int>::create(name, 8);
  EXPECT_THROW(mpx::Queue<float>::open(name), mpx::DecodeError);        // same size
  EXPECT_THROW(mpx::Queue<long>::open(name), mpx::DecodeError);         // another size
  EXPECT_THROW(mpx::Queue<std::string>::open(name), mpx::DecodeError);  // messages
  EXPECT_THROW(mpx::JoinableQueue<int>::open(name), mpx::ValueError);   // counts no tasks
  auto again = mpx::Queue<int>::open(name);
  ints.put(5);
  EXPECT_EQ(again.get(1s), 5);
  // A JoinableQueue keeps the message ring, which a Queue of the same T may open.
  const std::string joinable_name = mpx_test::unique_name("joinable");
  auto jobs = mpx::JoinableQueue<int>::create(joinable_name);
  auto plain = mpx::Queue<int>::open(joinable_name);
  jobs.put(6);
  EXPECT_EQ(plain.get(1s), 6);
  jobs.task_done();
  EXPECT_TRUE(jobs.join(0ms));
}

// A process that membarrier(2) refuses (a kernel without it, a seccomp filter) fences its
// own stores and sleeps in short slices; sleepers on both sides still wake. Four slots:
// both sides sleep.
TEST(SlotQueueTest, AProcessThatMembarrierRefusesFencesItsOwnStores) {
  mpx::Queue<int> q(4);
  mpx::Queue<int> back(4);
  constexpr int kItems = 20000;
  Child unreached([&] {
    mpx::sys::set_failure_injector(
        [](const char* what) { return std::strncmp(what, "membarrier", 10) == 0 ? EPERM : 0; });
    if (mpx::sys::reached_by_heavy_fence(mpx::sys::this_pid())) ::_exit(2);
    if (mpx::sys::heavy_fence()) ::_exit(3);
    for (int i = 0; i < kItems; ++i)
      back.put(q.get(30s) + 1);
  });
  std::thread feeder([&] {
    for (int i = 0; i < kItems; ++i)
      q.put(i);
  });
  for (int i = 0; i < kItems; ++i)
    ASSERT_EQ(back.get(30s), i + 1);
  feeder.join();
  EXPECT_EQ(unreached.join(), 0);
}

// Kills the calling process at `step` of a put or get.
void die_at(mpx::detail::CommitStep step) {
  static std::atomic<mpx::detail::CommitStep> at;
  at = step;
  mpx::detail::set_commit_hook([](mpx::detail::CommitStep s) noexcept {
    if (s == at.load()) ::raise(SIGKILL);
  });
}

TEST(SlotQueueTest, AProducerKilledHoldingASlotDeliversNothingAndStallsNoOne) {
  mpx::Queue<int> q(2);
  q.put(1);
  Child victim([&] {
    die_at(mpx::detail::CommitStep::kClaimed);
    q.put(2);
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(), 1);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.try_get(50ms));  // the dead producer's slot is freed, its item never comes
  q.put(3);
  q.put(4);  // the queue has its two slots again
  EXPECT_TRUE(q.full());
  EXPECT_EQ(q.get(), 3);
  EXPECT_EQ(q.get(), 4);
}

TEST(SlotQueueTest, AProducerKilledAfterPublishingDeliversItsItemOnce) {
  mpx::Queue<int> q;
  Child victim([&] {
    die_at(mpx::detail::CommitStep::kCommitted);
    q.put(1);
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(1s), 1);
  EXPECT_FALSE(q.try_get(50ms));
}

TEST(SlotQueueTest, AConsumerKilledTakingAnItemLosesItAndFreesTheSlot) {
  mpx::Queue<int> q(1);  // one slot: the next put needs the dead consumer's
  q.put(1);
  Child victim([&] {
    die_at(mpx::detail::CommitStep::kTaking);
    q.get();
  });
  EXPECT_EQ(victim.join(), -SIGKILL);
  EXPECT_TRUE(q.empty());  // the item was taken: its get() did not finish
  q.put(2, 10s);           // throws Full if the slot stayed taken
  EXPECT_EQ(q.get(), 2);
  EXPECT_TRUE(q.empty());
}

TEST(SlotQueueTest, AConsumerAsleepOnAKilledProducersSlotGetsTheNextItem) {
  mpx::Queue<int> q;
  auto [claimed_r, claimed_w] = mpx::Pipe(false);
  // The victim claims a slot, says so, and waits there to be killed.
  Child victim([&, &claimed_w = claimed_w] {
    static mpx::Connection* tell = &claimed_w;
    mpx::detail::set_commit_hook([](mpx::detail::CommitStep s) noexcept {
      if (s != mpx::detail::CommitStep::kClaimed) return;
      try {
        tell->send_bytes(std::as_bytes(std::span("c", 1)));
      } catch (...) {
      }
      for (;;)
        ::pause();
    });
    q.put(1);
  });
  claimed_w.close();
  ASSERT_EQ(claimed_r.recv_bytes().size(), 1u);
  std::atomic<int> got{0};
  std::thread consumer([&] { got = q.get(30s); });  // waits on the victim's slot
  victim.kill();
  EXPECT_EQ(victim.join(), -SIGKILL);
  q.put(2);
  consumer.join();
  EXPECT_EQ(got, 2);
  EXPECT_TRUE(q.empty());
}

}  // namespace
