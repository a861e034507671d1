// bench/mpx_pipe.cpp — mpx::Pipe / Connection.
//   pipe_roundtrip_64b   a 64-byte message there and back between two processes over a
//                        duplex Pipe(): send_bytes + recv_bytes_into on both sides
//                        (us/roundtrip)
#include <array>
#include <cstddef>
#include <span>

#include "mpx/connection.hpp"
#include "mpx_bench.hpp"

namespace {

void pipe_roundtrip_64b(benchmark::State& state) {
  constexpr long kWarm = 5000;
  auto [parent, child] = mpx::Pipe();
  pid_t pid = bench::fork_child([&parent = parent, &child = child] {
    parent.close();
    std::array<std::byte, 64> buf{};
    try {
      for (;;) {
        std::size_t n = child.recv_bytes_into(buf);
        child.send_bytes(std::span(buf).first(n));
      }
    } catch (const mpx::EOFError&) {
    }
  });
  child.close();
  std::array<std::byte, 64> msg{}, back{};
  msg.fill(std::byte{'x'});
  auto round_trip = [&] {
    parent.send_bytes(msg);
    parent.recv_bytes_into(back);
  };
  for (long i = 0; i < kWarm; ++i)
    round_trip();
  double t0 = bench::now_s();
  for (auto _ : state)
    round_trip();
  double t = bench::now_s() - t0;
  parent.close();
  bench::reap(pid);
  if (back != msg) state.SkipWithError("the message came back changed");
  bench::report(state, t / static_cast<double>(state.iterations()) * 1e6, "us/roundtrip");
}
BENCHMARK(pipe_roundtrip_64b)->Iterations(50000)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
