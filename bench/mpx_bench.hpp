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

}  // namespace bench
