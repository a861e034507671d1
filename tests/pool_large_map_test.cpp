// Maps whose chunks' results are large (64 KiB and more): the collector reads them from
// the workers straight to their place in the result vector (TaskSink::result_place).
// The results must come whole and in order, also when a chunk's result is larger than a
// worker's ring (it streams through in pieces), when the pool is reused, and when a
// worker dies or a call throws in the middle of such a map.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstddef>
#include <stdexcept>
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

TEST(PoolLargeMapTest, AThrowingCallInALargeMapFailsItAndThePoolGoesOn) {
  mpx_test::Watchdog dog(120s, "a large map with a throwing call");
  constexpr int n = 1000000;
  const std::vector<int> xs = inputs(n);
  mpx::Pool pool(2);
  EXPECT_THROW(pool.map(throw_at_700k, xs), std::invalid_argument);
  EXPECT_EQ(first_wrong(pool.map(affine, xs), n), -1);
}

}  // namespace
