// bench/mpx_bench.hpp — glue between the mpx benchmark programs and bench/compare.
//
// Each mpx benchmark is a Google Benchmark function named exactly as its workload, run
// for a fixed number of iterations after its own warm-up. It times the measured part
// itself and reports the workload's figure as the user counter "value", with the unit as
// the label; bench/compare reads both from --benchmark_format=json. Other user counters
// are shown by bench/compare as extra figures.
#pragma once

#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <span>

#include "bench_util.hpp"
#include "mpx/connection.hpp"

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

// The child's half of a 64-byte round trip: echoes every message on c until the peer
// closes its end.
inline void echo_until_eof(mpx::Connection& c) {
  std::array<std::byte, 64> buf{};
  try {
    for (;;) {
      std::size_t n = c.recv_bytes_into(buf);
      c.send_bytes(std::span(buf).first(n));
    }
  } catch (const mpx::EOFError&) {
  }
}

// The parent's half: send_bytes + recv_bytes_into of 64 bytes on c, `warm` untimed, then
// one per iteration; reports microseconds per round trip.
inline void report_roundtrips_64b(benchmark::State& state, mpx::Connection& c, long warm) {
  std::array<std::byte, 64> msg{}, back{};
  msg.fill(std::byte{'x'});
  auto round_trip = [&] {
    c.send_bytes(msg);
    c.recv_bytes_into(back);
  };
  for (long i = 0; i < warm; ++i)
    round_trip();
  double t0 = now_s();
  for (auto _ : state)
    round_trip();
  double t = now_s() - t0;
  if (back != msg) state.SkipWithError("the message came back changed");
  report(state, t / static_cast<double>(state.iterations()) * 1e6, "us/roundtrip");
}

}  // namespace bench
