// bench/mpx_subprocess.cpp — mpx::subprocess.
//   subprocess_run_true      run({"/bin/true"}): spawn a program and wait for it (us/op)
//   subprocess_pipe_256mib   256 MiB through cat: Popen + communicate(input), the
//                            output read back whole (GB/s of input)
#include <string>

#include "mpx/subprocess.hpp"
#include "mpx_bench.hpp"

namespace {

namespace sp = mpx::subprocess;

void subprocess_run_true(benchmark::State& state) {
  auto once = [] {
    if (sp::run({"/bin/true"}).returncode != 0) bench::die("/bin/true failed");
  };
  bench::report_us_per_call(state, once);
}
BENCHMARK(subprocess_run_true)->Iterations(300)->UseRealTime()->Unit(benchmark::kMicrosecond);

double through_cat(const std::string& input) {
  double t0 = bench::now_s();
  sp::Popen p({"cat"}, {.stdin = sp::PIPE, .stdout = sp::PIPE});
  auto [out, err] = p.communicate(input);
  double t = bench::now_s() - t0;
  if (p.returncode() != 0 || out.size() != input.size() || out.back() != input.back())
    bench::die("cat returned something else");
  return static_cast<double>(input.size()) / t / 1e9;
}

void subprocess_pipe_256mib(benchmark::State& state) {
  const std::string input(std::size_t{256} << 20, 'x');
  through_cat(input.substr(0, std::size_t{16} << 20));  // warm-up
  double rate = 0;
  for (auto _ : state)
    rate = through_cat(input);
  bench::report(state, rate, "GB/s");
}
BENCHMARK(subprocess_pipe_256mib)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
