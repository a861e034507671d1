// The Pool and ProcessPoolExecutor over MPI ranks (mpx/mpi.hpp). Run by ctest under
// `mpirun -np 2/3/4` (tests/mpi/run.sh, which also checks that no process of the job is
// left): rank 0 runs these cases, the other ranks serve them.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <numeric>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/mpi.hpp"
#include "mpx/process.hpp"

namespace {

// 100 000 tasks per case; a tenth under the sanitizers (twenty times slower).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kMany = 10000;
#else
constexpr int kMany = 100000;
#endif

int square(int x) {
  return x * x;
}
long long square_ll(long long x) {
  return x * x;
}
int triple(int x) {
  return 3 * x;
}
int rank_of(int) {
  return mpx::mpi::rank();
}
int crash(int) {
  ::raise(SIGSEGV);
  return 0;
}
int hang(int) {
  std::this_thread::sleep_for(std::chrono::seconds(60));
  return 0;
}
int throws(int) {
  throw std::invalid_argument("bad input");
}
// Rank 1's tasks take ten times as long as the others'.
int uneven(int) {
  const int ms = mpx::mpi::rank() == 1 ? 20 : 2;
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return mpx::mpi::rank();
}
void exit_with(int code) {
  std::exit(code);
}
int g_initialized_with = 0;
void remember(int v) {
  g_initialized_with = v;
}
int initialized_with(int) {
  return g_initialized_with;
}
// The worker's rank and name, and what its initializer left.
std::tuple<int, std::string, int> who(int) {
  return {mpx::mpi::rank(), mpx::current_process().name(), g_initialized_with};
}

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

TEST(MpiExecutor, SubmitAndMapOverTheRanks) {
  mpx::mpi::ProcessPoolExecutor ex(2);
  EXPECT_EQ(ex.submit(square, 7).result(), 49);
  const auto input = iota(kMany);
  std::size_t k = 0;
  for (int r : ex.map(triple, input)) {  // one task per item
    ASSERT_EQ(r, 3 * input[k]);
    ++k;
  }
  EXPECT_EQ(k, input.size());
}

TEST(MpiExecutor, AsCompletedOverManyFutures) {
  mpx::mpi::ProcessPoolExecutor ex(2);
  std::vector<mpx::Future<long long>> futures;
  for (long long i = 0; i < kMany; ++i)
    futures.push_back(ex.submit(square_ll, i));
  long long sum = 0;
  std::size_t n = 0;
  for (auto& f : mpx::as_completed(futures)) {
    sum += f.result();
    ++n;
  }
  EXPECT_EQ(n, futures.size());
  long long want = 0;
  for (long long i = 0; i < kMany; ++i)
    want += i * i;
  EXPECT_EQ(sum, want);
}

TEST(MpiPool, MapImapAndEveryServingRank) {
  mpx::mpi::Pool pool(2);
  EXPECT_EQ(pool.processes(), 2u * static_cast<std::size_t>(mpx::mpi::size() - 1));
  const auto input = iota(kMany);
  auto triples = pool.map(triple, input);
  ASSERT_EQ(triples.size(), input.size());
  for (std::size_t i = 0; i < input.size(); ++i)
    ASSERT_EQ(triples[i], 3 * input[i]);
  long long sum = 0;
  for (int r : pool.imap_unordered(square, iota(1000), 10))
    sum += r;
  EXPECT_EQ(sum, 332833500);
  std::set<int> seen;
  for (int r : pool.imap(rank_of, iota(400)))
    seen.insert(r);
  std::set<int> serving;
  for (int r = 1; r < mpx::mpi::size(); ++r)
    serving.insert(r);
  EXPECT_EQ(seen, serving);
}

TEST(MpiPool, ACrashAHangAndAThrowFailAlone) {
  mpx::PoolOptions options;
  options.timeout = std::chrono::seconds(1);
  mpx::mpi::Pool pool(2, options);
  auto crashed = pool.apply_async(crash, 0);
  auto hung = pool.apply_async(hang, 0);
  auto threw = pool.apply_async(throws, 0);
  std::vector<mpx::Future<int>> fine;
  for (int i = 0; i < 200; ++i)
    fine.push_back(pool.apply_async(square, i));
  EXPECT_THROW(crashed.get(), mpx::WorkerLost);
  EXPECT_THROW(hung.get(), mpx::TimeoutError);
  EXPECT_THROW(threw.get(), std::invalid_argument);
  for (int i = 0; i < 200; ++i)
    EXPECT_EQ(fine[static_cast<std::size_t>(i)].get(), i * i);
  EXPECT_EQ(pool.apply(square, 12), 144);  // the ranks' pools replaced their workers
}

// Tiny tasks run in batches on a busy rank; a crash or an exception in one still fails
// that task alone (a batch whose worker died runs again task by task).
int crash_at_1500(int x) {
  if (x == 1500) ::raise(SIGSEGV);
  if (x == 1700) throw std::out_of_range("1700");
  return x + 1;
}

TEST(MpiPool, TinyTasksFailAloneInBatches) {
  mpx::mpi::Pool pool(2);
  std::vector<mpx::Future<int>> futures;
  for (int i = 0; i < 4000; ++i)
    futures.push_back(pool.apply_async(crash_at_1500, i));
  for (int i = 0; i < 4000; ++i) {
    auto& f = futures[static_cast<std::size_t>(i)];
    if (i == 1500) {
      EXPECT_THROW(f.get(), mpx::WorkerLost);
    } else if (i == 1700) {
      EXPECT_THROW(f.get(), std::out_of_range);
    } else {
      ASSERT_EQ(f.get(), i + 1);
    }
  }
}

TEST(MpiPool, InitializerRunsInEveryWorkerOfEveryRank) {
  mpx::PoolOptions options;
  options.initializer(remember, 42);
  mpx::mpi::Pool pool(2, options);
  for (int v : pool.map(initialized_with, iota(200), 1))
    ASSERT_EQ(v, 42);
}

// The driver has threads (its communication thread): spawn is the start method it should
// use, and mpx::mpi::init lets a spawned child run its target, not join the job.
TEST(MpiDriver, SpawnsAndForkserversChildren) {
  for (const char* method : {"spawn", "forkserver"}) {
    mpx::Process p = mpx::get_context(method).Process(exit_with, 7);
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 7) << method;
  }
}

// A rank's pool starts its workers as the driver's pool asks: a rank is an MPI process
// with threads of its own, where spawn is what a careful program asks for.
TEST(MpiPool, EveryRankUsesTheContextAsked) {
  for (const char* method : {"spawn", "forkserver"}) {
    mpx::PoolOptions options;
    options.context = mpx::get_context(method);
    options.initializer(remember, 7);
    mpx::mpi::Pool pool(1, options);
    const std::string prefix =
        std::string(method) == "spawn" ? "SpawnPoolWorker-" : "ForkServerPoolWorker-";
    std::set<int> ranks;
    for (const auto& [rank, name, init] : pool.map(who, iota(200), 1)) {
      ranks.insert(rank);
      EXPECT_EQ(name.rfind(prefix, 0), 0u) << method << ": " << name;
      EXPECT_EQ(init, 7) << method;
    }
    EXPECT_EQ(ranks.size(), static_cast<std::size_t>(mpx::mpi::size() - 1)) << method;
    EXPECT_FALSE(ranks.count(0)) << method;
  }
}

TEST(MpiPool, TheDriverRunsTasksWhenAsked) {
  mpx::mpi::Pool pool(1, {}, mpx::mpi::RankOptions{true});
  EXPECT_EQ(pool.processes(), static_cast<std::size_t>(mpx::mpi::size()));
  std::set<int> seen;
  for (int r : pool.map(rank_of, iota(300), 1))
    seen.insert(r);
  EXPECT_TRUE(seen.count(0));
}

// A rank whose tasks are ten times slower takes about a tenth as many: ranks pull work
// as they finish it (a static split would give each rank the same number).
TEST(MpiPool, SlowRanksTakeFewerTasks) {
  if (mpx::mpi::size() < 3) GTEST_SKIP() << "needs two serving ranks";
  mpx::mpi::Pool pool(2);
  std::map<int, int> per_rank;
  for (int r : pool.map(uneven, iota(100 * (mpx::mpi::size() - 1)), 1))
    ++per_rank[r];
  const int slow = per_rank[1];
  for (int r = 2; r < mpx::mpi::size(); ++r)
    EXPECT_GE(per_rank[r], 3 * slow) << "rank " << r << " vs the slow rank 1";
}

}  // namespace

int main(int argc, char** argv) {
  mpx::mpi::init(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
