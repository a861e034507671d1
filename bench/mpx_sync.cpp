// bench/mpx_sync.cpp — mpx::Lock and mpx::Value.
//   lock_counter_2proc   2 processes increment a counter in shared memory, each increment
//                        under an mpx::Lock (std::lock_guard); increments/s. Extra figure
//                        value_with_lock: the same with mpx::Value<long>::with_lock (its
//                        default RLock), the way Python's Value.get_lock() is used.
#include <atomic>
#include <mutex>

#include "mpx/sharedctypes.hpp"
#include "mpx/synchronize.hpp"
#include "mpx_bench.hpp"

namespace {

// Runs body(per_process) in 2 forked processes released together; returns increments/s.
template <class Body>
double two_process_rate(long per_process, Body body) {
  mpx::RawValue<int> go(0);
  pid_t kids[2];
  for (pid_t& kid : kids) {
    kid = bench::fork_child([&] {
      std::atomic_ref<int> flag(*go);
      while (flag.load(std::memory_order_acquire) == 0)
        sched_yield();
      body(per_process);
    });
  }
  double t0 = bench::now_s();
  std::atomic_ref<int>(*go).store(1, std::memory_order_release);
  for (pid_t kid : kids)
    bench::reap(kid);
  return 2.0 * static_cast<double>(per_process) / (bench::now_s() - t0);
}

void lock_counter_2proc(benchmark::State& state) {
  constexpr long kPerProcess = 2000000;
  mpx::Lock lock;
  mpx::RawValue<long> counter(0);
  auto with_lock = [&](long n) {
    for (long i = 0; i < n; ++i) {
      std::lock_guard guard(lock);
      ++*counter;
    }
  };
  two_process_rate(kPerProcess / 10, with_lock);  // warm-up
  counter.set(0);
  double rate = 0;
  for (auto _ : state)
    rate = two_process_rate(kPerProcess, with_lock);
  if (counter.value() != 2 * kPerProcess) state.SkipWithError("lost updates");

  mpx::Value<long> value(0);
  constexpr long kValuePerProcess = 500000;
  double value_rate = two_process_rate(kValuePerProcess, [&](long n) {
    for (long i = 0; i < n; ++i)
      value.with_lock([](long& v) { ++v; });
  });
  if (value.value() != 2 * kValuePerProcess) state.SkipWithError("lost updates (Value)");
  state.counters["value_with_lock"] = value_rate;
  bench::report(state, rate, "incr/s");
}
BENCHMARK(lock_counter_2proc)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
