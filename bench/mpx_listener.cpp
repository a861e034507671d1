// bench/mpx_listener.cpp — mpx::Listener/Client and manager proxies.
//   listener_roundtrip_64b      a 64-byte message there and back between two processes
//                               over a Listener/Client connection, Unix socket address,
//                               with an authkey (so: moved to shared memory) (us/roundtrip)
//   listener_roundtrip_64b_tcp  the same over TCP loopback (us/roundtrip)
//   manager_dict_get            a local SyncManager's DictProxy get(), one at a time
//                               (us/op)
//   manager_queue_1to1          one producer process puts ints into a manager Queue,
//                               this process gets them (items/s)
#include <string>

#include "mpx/listener.hpp"
#include "mpx/managers.hpp"
#include "mpx_bench.hpp"

namespace {

void listener_roundtrip(benchmark::State& state, const std::string& address) {
  mpx::Listener listener(address, "", 1, "bench key");
  pid_t pid = bench::fork_child([&listener] {
    mpx::Connection c = mpx::Client(listener.address(), "", std::string("bench key"));
    bench::echo_until_eof(c);
  });
  mpx::Connection c = listener.accept();
  bench::report_roundtrips_64b(state, c, 2000);
  c.close();
  bench::reap(pid);
}

void listener_roundtrip_64b(benchmark::State& state) {
  listener_roundtrip(state, "");
}
BENCHMARK(listener_roundtrip_64b)->Iterations(20000)->UseRealTime()->Unit(benchmark::kMicrosecond);

void listener_roundtrip_64b_tcp(benchmark::State& state) {
  listener_roundtrip(state, "127.0.0.1:0");
}
BENCHMARK(listener_roundtrip_64b_tcp)
    ->Iterations(20000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void manager_dict_get(benchmark::State& state) {
  mpx::SyncManager manager;
  manager.start();
  auto d = manager.dict<std::string, int>();
  d.setitem("k", 1);
  int sum = 0;
  bench::report_us_per_call(state, [&] { sum += d.get("k").value_or(0); });
  if (sum == 0) state.SkipWithError("no value came back");
}
BENCHMARK(manager_dict_get)->Iterations(10000)->UseRealTime()->Unit(benchmark::kMicrosecond);

void manager_queue_1to1(benchmark::State& state) {
  constexpr long kWarm = 200;
  const long count = static_cast<long>(state.max_iterations);
  mpx::SyncManager manager;
  manager.start();
  auto q = manager.Queue<int>();
  pid_t pid = bench::fork_child([q, count]() mutable {
    for (long i = 0; i < kWarm + count; ++i)
      q.put(1);
  });
  for (long i = 0; i < kWarm; ++i)
    (void)q.get();
  double t0 = bench::now_s();
  long sum = 0;
  for (auto _ : state)
    sum += q.get();
  double t = bench::now_s() - t0;
  bench::reap(pid);
  if (sum != count) state.SkipWithError("items were lost");
  bench::report(state, static_cast<double>(count) / t, "items/s");
}
BENCHMARK(manager_queue_1to1)->Iterations(5000)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
