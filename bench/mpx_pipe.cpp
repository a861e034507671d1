// bench/mpx_pipe.cpp — mpx::Pipe / Connection.
//   pipe_roundtrip_64b   a 64-byte message there and back between two processes over a
//                        duplex Pipe(): send_bytes + recv_bytes_into on both sides
//                        (us/roundtrip)
#include "mpx/connection.hpp"
#include "mpx_bench.hpp"

namespace {

void pipe_roundtrip_64b(benchmark::State& state) {
  auto [parent, child] = mpx::Pipe();
  pid_t pid = bench::fork_child([&parent = parent, &child = child] {
    parent.close();
    bench::echo_until_eof(child);
  });
  child.close();
  bench::report_roundtrips_64b(state, parent, 5000);
  parent.close();
  bench::reap(pid);
}
BENCHMARK(pipe_roundtrip_64b)->Iterations(50000)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
