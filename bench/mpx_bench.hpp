// bench/mpx_bench.hpp — glue between the mpx benchmark programs and bench/compare.
//
// Each mpx benchmark is a Google Benchmark function named exactly as its workload, run
// for a fixed number of iterations after its own warm-up. It times the measured part
// itself and reports the workload's figure as the user counter "value", with the unit as
// the label; bench/compare reads both from --benchmark_format=json. Other user counters
// are shown by bench/compare as extra figures.
#pragma once

#include <benchmark/benchmark.h>

#include "bench_util.hpp"

namespace bench {

inline void report(benchmark::State& state, double value, const char* unit) {
  state.counters["value"] = value;
  state.SetLabel(unit);
}

// Reports the microseconds per call of once(), one call per iteration, after 20 untimed.
template <class F>
void report_us_per_call(benchmark::State& state, F&& once) {
  for (int i = 0; i < 20; ++i)
    once();
  double t0 = now_s();
  for (auto _ : state)
    once();
  double t = now_s() - t0;
  report(state, t / static_cast<double>(state.iterations()) * 1e6, "us/op");
}

}  // namespace bench
