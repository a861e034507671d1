// Maps whose chunks are large (64 KiB and more): a worker reads such a chunk in place
// from its inbox (kInPlaceFrame), the pool keeps no copy of it meanwhile, and the
// collector reads the results straight to their place in the result vector
// (TaskSink::result_place). The results must come whole and in order, also when a
// chunk's result is larger than a worker's ring (it streams through in pieces), when
// the pool is reused, when a worker dies or a call throws in the middle of such a map,
// and for the chunks that go to another worker (queued behind a dead worker's, or
// taken back for an idle worker), whose bytes come back from the inbox.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mpx/errors.hpp"
#include "mpx/pool.hpp"
#include "support/start_methods.hpp"
#include "support/watchdog.hpp"

using namespace std::chrono_literals;

namespace {

int affine(int x) {
  return 3 * x + 1;
}

struct Pair {
  int index;
  double half;
};

Pair to_pair(int x) {
  return {x, x / 2.0};
}

int segfault_at_700k(int x) {
  if (x == 700000) ::raise(SIGSEGV);
  return affine(x);
}

int throw_at_700k(int x) {
  if (x == 700000) throw std::invalid_argument("700000");
  return affine(x);
}

int segfault_later(int) {
  std::this_thread::sleep_for(100ms);
  ::raise(SIGSEGV);
  return 0;
}

long long total(const std::vector<int>& v) {
  long long sum = 0;
  for (int x : v)
    sum += x;
  return sum;
}

int slow_at_0(int x) {
  if (x == 0) std::this_thread::sleep_for(300ms);
  return affine(x);
}

std::vector<int> inputs(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = i;
  return v;
}

// The index of the first result that is not affine(i), or -1.
long first_wrong(const std::vector<int>& results, int n) {
  if (results.size() != static_cast<std::size_t>(n)) return -2;
  for (int i = 0; i < n; ++i)
    if (results[static_cast<std::size_t>(i)] != affine(i)) return i;
  return -1;
}

TEST(PoolLargeMapTest, LargeChunksComeWholeAndInOrder) {
  mpx_test::Watchdog dog(120s, "large maps");
  constexpr int n = 1000003;  // the last chunk is shorter than the others
  mpx::Pool pool(2);
  const std::vector<int> xs = inputs(n);
  EXPECT_EQ(first_wrong(pool.map(affine, xs), n), -1);
  // Chunks of 1.2 MB of results, more than a worker's ring holds: read in pieces.
  EXPECT_EQ(first_wrong(pool.map(affine, xs, 300000), n), -1);
  EXPECT_EQ(first_wrong(pool.map_async(affine, xs, 100000).get(60s), n), -1);
  // The same pool again, with its buffers reused.
  EXPECT_EQ(first_wrong(pool.map(affine, xs), n), -1);
  const std::vector<Pair> pairs = pool.map(to_pair, xs, 50000);
  ASSERT_EQ(pairs.size(), xs.size());
  for (std::size_t i = 0; i < pairs.size(); i += 997) {
    EXPECT_EQ(pairs[i].index, static_cast<int>(i));
    EXPECT_EQ(pairs[i].half, static_cast<double>(i) / 2.0);
  }
  EXPECT_EQ(pairs.back().index, n - 1);
}

TEST(PoolLargeMapTest, ThreeWorkersAndReplacedWorkers) {
  mpx_test::Watchdog dog(120s, "large maps, three workers, one chunk per worker");
  constexpr int n = 600000;
  const std::vector<int> xs = inputs(n);
  mpx::Pool three(3);
  EXPECT_EQ(first_wrong(three.map(affine, xs), n), -1);
  mpx::PoolOptions options;
  options.maxtasksperchild = 1;  // a new worker for every chunk
  mpx::Pool replaced(2, options);
  EXPECT_EQ(first_wrong(replaced.map(affine, xs, 40000), n), -1);
}

TEST(PoolLargeMapTest, AWorkerLostInALargeMapFailsItAndThePoolGoesOn) {
  mpx_test::Watchdog dog(120s, "a large map losing a worker");
  constexpr int n = 1000000;
  const std::vector<int> xs = inputs(n);
  mpx::Pool pool(2);
  auto lost = pool.map_async(segfault_at_700k, xs);
  mpx_test::expect_lost_to_segfault(lost);
  EXPECT_EQ(first_wrong(pool.map(affine, xs), n), -1);
}

TEST(PoolLargeMapTest, ChunksQueuedBehindALostOneRunElsewhereWithTheirOwnItems) {
  mpx_test::Watchdog dog(120s, "an imap of large chunks losing a worker");
  constexpr int n = 1000000;
  constexpr int chunk = 20000;  // 80 KB chunks, several queued in each inbox
  const std::vector<int> xs = inputs(n);
  mpx::Pool pool(2);
  auto it = pool.imap(segfault_at_700k, xs, chunk);
  int index = 0, lost = 0, wrong = 0;
  for (;;) {
    try {
      auto r = it.next();
      if (!r) break;
      if (*r != affine(index)) ++wrong;
      ++index;
    } catch (const mpx::WorkerLost&) {  // the chunk holding 700000, skipped
      ++lost;
      index += chunk;
    }
  }
  EXPECT_EQ(lost, 1);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(index, n);
}

TEST(PoolLargeMapTest, LargeCallsQueuedBehindALostOneRunElsewhereWithTheirOwnArguments) {
  mpx_test::Watchdog dog(120s, "large calls queued behind a crashing one");
  mpx::Pool pool(2);
  auto crash = pool.apply_async(segfault_later, 0);
  auto busy = pool.apply_async(slow_at_0, 0);  // no worker idles to take tasks back
  std::vector<std::vector<int>> args;
  std::vector<mpx::AsyncResult<long long>> sums;
  for (int k = 0; k < 6; ++k) {  // 400 KB each: read in place, one queued per worker
    args.push_back(std::vector<int>(100000, k + 1));
    sums.push_back(pool.apply_async(total, args.back()));
  }
  mpx_test::expect_lost_to_segfault(crash);
  EXPECT_EQ(busy.get(60s), affine(0));
  for (int k = 0; k < 6; ++k)
    EXPECT_EQ(sums[static_cast<std::size_t>(k)].get(60s), 100000LL * (k + 1)) << k;
}

TEST(PoolLargeMapTest, ChunksTakenBackForAnIdleWorkerKeepTheirItems) {
  mpx_test::Watchdog dog(120s, "a large map with a slow first chunk");
  constexpr int n = 400000;
  const std::vector<int> xs = inputs(n);
  mpx::Pool pool(2);
  // The first chunk sleeps: the chunks queued behind it go to the other worker.
  std::vector<int> results = pool.map(slow_at_0, xs, 20000);
  ASSERT_EQ(results.size(), xs.size());
  long wrong = -1;
  for (int i = 0; i < n && wrong < 0; ++i)
    if (results[static_cast<std::size_t>(i)] != affine(i)) wrong = i;
  EXPECT_EQ(wrong, -1);
}

TEST(PoolLargeMapTest, AThrowingCallInALargeMapFailsItAndThePoolGoesOn) {
  mpx_test::Watchdog dog(120s, "a large map with a throwing call");
  constexpr int n = 1000000;
  const std::vector<int> xs = inputs(n);
  mpx::Pool pool(2);
  EXPECT_THROW(pool.map(throw_at_700k, xs), std::invalid_argument);
  EXPECT_EQ(first_wrong(pool.map(affine, xs), n), -1);
}

}  // namespace
