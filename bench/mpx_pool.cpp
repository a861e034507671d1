// bench/mpx_pool.cpp — mpx::Pool and mpx::ProcessPoolExecutor (process workers).
//   pool_map_1m_auto       Pool(2).map(square, 0..1M), default chunksize   us/task
//   pool_map_chunk1_100k   Pool(2).map(square, 0..100k, chunksize 1)       us/task
//   apply_async_roundtrip  Pool(2).apply_async(square, i).get(), one at a time   us
//   executor_submit_10k    ProcessPoolExecutor(2): 10k submit, then every result  us/task
//   cpu_primes_speedup     primes below 2M in 10k-number tasks: serial time / time on
//                          Pool(cpu_count()).map(chunksize 1)                    x
//   idle_worker_rss        private resident memory of an idle worker of a warmed-up
//                          Pool(2) (the largest of the workers)                  MiB
// Pools are built and warmed up before the clock starts, as on the Python side.
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <ranges>
#include <thread>
#include <vector>

#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "mpx/process.hpp"
#include "mpx_bench.hpp"

namespace {

int square(int x) {
  return x * x;
}

long count_chunk(long lo) {
  return bench::count_primes(lo, std::min(lo + bench::kPrimeChunk, bench::kPrimeLimit));
}

template <class Run>
double us_per_task(Run run, int n) {
  run(std::max(n / 10, 10));  // warm-up: workers started and primed
  double t0 = bench::now_s();
  run(n);
  return (bench::now_s() - t0) / n * 1e6;
}

void pool_map_1m_auto(benchmark::State& state) {
  mpx::Pool pool(2);
  double us = 0;
  for (auto _ : state) {
    us = us_per_task(
        [&](int n) {
          auto r = pool.map(square, std::views::iota(0, n));
          if (static_cast<int>(r.size()) != n || r.back() != (n - 1) * (n - 1))
            bench::die("wrong map result");
        },
        1000000);
  }
  bench::report(state, us, "us/task");
}
BENCHMARK(pool_map_1m_auto)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void pool_map_chunk1_100k(benchmark::State& state) {
  mpx::Pool pool(2);
  double us = 0;
  for (auto _ : state) {
    us = us_per_task(
        [&](int n) {
          auto r = pool.map(square, std::views::iota(0, n), 1);
          if (static_cast<int>(r.size()) != n) bench::die("wrong map result");
        },
        100000);
  }
  bench::report(state, us, "us/task");
}
BENCHMARK(pool_map_chunk1_100k)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void apply_async_roundtrip(benchmark::State& state) {
  mpx::Pool pool(2);
  double us = 0;
  for (auto _ : state) {
    us = us_per_task(
        [&](int n) {
          for (int i = 0; i < n; ++i) {
            if (pool.apply_async(square, i).get() != i * i) bench::die("wrong result");
          }
        },
        2000);
  }
  bench::report(state, us, "us");
}
BENCHMARK(apply_async_roundtrip)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void executor_submit_10k(benchmark::State& state) {
  mpx::ProcessPoolExecutor ex(2);
  double us = 0;
  for (auto _ : state) {
    us = us_per_task(
        [&](int n) {
          std::vector<mpx::Future<int>> futures;
          futures.reserve(static_cast<std::size_t>(n));
          for (int i = 0; i < n; ++i)
            futures.push_back(ex.submit(square, i));
          for (auto& f : futures)
            benchmark::DoNotOptimize(f.result());
        },
        10000);
  }
  bench::report(state, us, "us/task");
}
BENCHMARK(executor_submit_10k)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void cpu_primes_speedup(benchmark::State& state) {
  int cpus = mpx::cpu_count();
  std::vector<long> starts;
  for (long lo = 0; lo < bench::kPrimeLimit; lo += bench::kPrimeChunk)
    starts.push_back(lo);
  mpx::Pool pool(static_cast<std::size_t>(cpus));
  pool.map(square, std::views::iota(0, 4 * cpus), 1);  // workers started
  double t_serial = 0, t_parallel = 0;
  for (auto _ : state) {
    double t0 = bench::now_s();
    long serial = 0;
    for (long lo : starts)
      serial += count_chunk(lo);
    t_serial = bench::now_s() - t0;
    t0 = bench::now_s();
    auto counts = pool.map(count_chunk, starts, 1);
    t_parallel = bench::now_s() - t0;
    long parallel = 0;
    for (long c : counts)
      parallel += c;
    if (serial != bench::kPrimesBelow2M || parallel != serial) bench::die("wrong prime count");
  }
  state.counters["serial"] = t_serial;
  state.counters["parallel"] = t_parallel;
  state.counters["workers"] = cpus;
  bench::report(state, t_serial / t_parallel, "x");
}
BENCHMARK(cpu_primes_speedup)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

pid_t parent_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');
  if (close == std::string::npos) return -1;
  char st = 0;
  int ppid = -1;
  if (std::sscanf(line.c_str() + close + 1, " %c %d", &st, &ppid) != 2) return -1;
  return ppid;
}

void idle_worker_rss(benchmark::State& state) {
  mpx::Pool pool(2);
  pool.map(square, std::views::iota(0, 1000));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // workers back to idle
  double worst = -1;
  pid_t zygote = -1;
  for (auto _ : state) {
    for (pid_t pid : pool.pids()) {
      worst = std::max(worst, bench::private_rss_mib(pid));
      zygote = parent_of(pid);
    }
  }
  if (worst < 0) state.SkipWithError("cannot read /proc/<worker>/smaps_rollup");
  if (zygote > 0 && zygote != getpid()) state.counters["zygote"] = bench::private_rss_mib(zygote);
  bench::report(state, worst, "MiB");
}
BENCHMARK(idle_worker_rss)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
