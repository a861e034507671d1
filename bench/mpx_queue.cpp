// bench/mpx_queue.cpp — mpx::Queue, one producer process -> one consumer process.
//   queue_int_1to1    Queue<int>                                  items/s
//   queue_64b_1to1    Queue<std::array<char, 64>> (a 64-byte record)  items/s
//   queue_1mib_1to1   Queue<std::vector<std::byte>> of 1 MiB items    GB/s
//   queue_4to4        Queue<int>, 4 producer processes -> 4 consumers  items/s
// Queues have their default capacity (what a user gets from `mpx::Queue<T> q;`); the
// 1 MiB workload also reports, as the extra figure capacity_16mib, a queue with a 16 MiB
// ring (room for 8+ items; Boost's message_queue in the Boost column holds 8).
// The producer puts back to back; the consumer times `count` gets after `warm` gets.
#include <array>
#include <cstddef>
#include <vector>

#include "mpx/queues.hpp"
#include "mpx_bench.hpp"

namespace {

template <class T>
double queue_rate(mpx::Queue<T>& q, const T& item, long warm, long count) {
  pid_t producer = bench::fork_child([&] {
    for (long i = 0; i < warm + count; ++i)
      q.put(item);
  });
  for (long i = 0; i < warm; ++i)
    q.get();
  double t0 = bench::now_s();
  for (long i = 0; i < count; ++i)
    benchmark::DoNotOptimize(q.get());
  double t = bench::now_s() - t0;
  bench::reap(producer);
  return static_cast<double>(count) / t;
}

void queue_int_1to1(benchmark::State& state) {
  mpx::Queue<int> q;
  double rate = 0;
  for (auto _ : state)
    rate = queue_rate(q, 12345, 500000, 5000000);
  bench::report(state, rate, "items/s");
}
BENCHMARK(queue_int_1to1)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void queue_64b_1to1(benchmark::State& state) {
  mpx::Queue<std::array<char, 64>> q;
  std::array<char, 64> item{};
  item.fill('x');
  double rate = 0;
  for (auto _ : state)
    rate = queue_rate(q, item, 200000, 2000000);
  bench::report(state, rate, "items/s");
}
BENCHMARK(queue_64b_1to1)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void queue_1mib_1to1(benchmark::State& state) {
  constexpr std::size_t kItem = 1u << 20;
  std::vector<std::byte> item(kItem, std::byte{'x'});
  double rate = 0;
  for (auto _ : state) {
    mpx::Queue<std::vector<std::byte>> q;
    rate = queue_rate(q, item, 50, 1000);
  }
  mpx::Queue<std::vector<std::byte>> roomy(0, 16 * kItem);
  double roomy_rate = queue_rate(roomy, item, 50, 1000);
  state.counters["capacity_16mib"] = roomy_rate * kItem / 1e9;
  bench::report(state, rate * kItem / 1e9, "GB/s");
}
BENCHMARK(queue_1mib_1to1)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// On 2 CPUs eight processes measure the queue under contention, not scaling.
void queue_4to4(benchmark::State& state) {
  mpx::Queue<int> q;
  double rate = 0;
  for (auto _ : state) {
    bench::many_to_many_rate(
        4, 4, 50000, [&](long i) { q.put(static_cast<int>(i)); },
        [&] { benchmark::DoNotOptimize(q.get()); });
    rate = bench::many_to_many_rate(
        4, 4, 500000, [&](long i) { q.put(static_cast<int>(i)); },
        [&] { benchmark::DoNotOptimize(q.get()); });
  }
  bench::report(state, rate, "items/s");
}
BENCHMARK(queue_4to4)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
