// bench/mpx_process.cpp — mpx::Process.
//   process_start_join   Process([]{}) then start() and join(): a child that does nothing
//                        (us/op)
//   process_start_join_spawn       the same under the spawn start method (a function
//   process_start_join_forkserver  pointer target; the forkserver started before) (us/op)
#include <cstring>

#include "mpx/context.hpp"
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

void nothing() {}

void start_join_by(benchmark::State& state, const char* method) {
  const mpx::Context ctx = mpx::get_context(method);
  auto once = [&ctx] {
    mpx::Process p = ctx.Process(nothing);
    p.start();
    p.join();
    if (p.exitcode() != 0) bench::die("child failed");
  };
  bench::report_us_per_call(state, once);
}
void process_start_join_spawn(benchmark::State& state) {
  start_join_by(state, "spawn");
}
void process_start_join_forkserver(benchmark::State& state) {
  start_join_by(state, "forkserver");
}
BENCHMARK(process_start_join_spawn)->Iterations(300)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(process_start_join_forkserver)
    ->Iterations(300)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  // The spawn floor's child (bench/floor.cpp): this binary, loaded and gone at once.
  if (argc == 2 && std::strcmp(argv[1], "--exit-at-once") == 0) return 0;
  mpx::init(argc, argv);  // a spawned child runs its target here
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
