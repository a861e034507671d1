// 08 — concurrent.futures: executors, futures, as_completed and wait.
//
// The choice between threads and processes is one word: ThreadPoolExecutor runs any
// callable on threads (I/O-bound work), ProcessPoolExecutor runs portable callables in
// worker processes (CPU-bound work, isolation).
//
// expect: submit: 42
// expect: as_completed: sum 385
// expect: wait: 10 done, 0 not done
// expect: map over two ranges: 10 40 90
// expect: threads took a capturing lambda: 105
// expect: callback saw 9
#include <cstdio>
#include <string_view>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/futures.hpp"

int square(int x) {
  return x * x;
}
int mul(int a, int b) {
  return a * b;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  mpx::ProcessPoolExecutor ex(2);

  mpx::Future<int> f = ex.submit(mul, 6, 7);
  std::printf("submit: %d\n", f.result());

  std::vector<mpx::Future<int>> fs;
  for (int i = 1; i <= 10; ++i)
    fs.push_back(ex.submit(square, i));
  int sum = 0;
  for (const auto& done : mpx::as_completed(fs))
    sum += done.result();
  std::printf("as_completed: sum %d\n", sum);

  auto [done, not_done] = mpx::wait(fs, mpx::ALL_COMPLETED);
  std::printf("wait: %zu done, %zu not done\n", done.size(), not_done.size());

  std::printf("map over two ranges:");
  for (int r : ex.map(mul, std::vector{1, 2, 3}, std::vector{10, 20, 30}))
    std::printf(" %d", r);
  std::printf("\n");

  mpx::ThreadPoolExecutor threads(4);
  int base = 100;
  auto g = threads.submit([&base](int x) { return base + x; }, 5);
  std::printf("threads took a capturing lambda: %d\n", g.result());

  auto h = ex.submit(square, 3);
  h.add_done_callback(
      [](const mpx::Future<int>& fut) { std::printf("callback saw %d\n", fut.result()); });
  h.result();
  ex.shutdown();  // runs the callback first if it had not run yet
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
