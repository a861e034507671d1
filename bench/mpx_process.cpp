// bench/mpx_process.cpp — mpx::Process.
//   process_start_join   Process([]{}) then start() and join(): a child that does nothing
//                        (us/op)
#include "mpx/process.hpp"
#include "mpx_bench.hpp"

namespace {

void process_start_join(benchmark::State& state) {
  auto once = [] {
    mpx::Process p([] {});
    p.start();
    p.join();
    if (p.exitcode() != 0) bench::die("child failed");
  };
  bench::report_us_per_call(state, once);
}
BENCHMARK(process_start_join)->Iterations(300)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
