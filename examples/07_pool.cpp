// 07 — a process Pool: Python's multiprocessing.Pool, line by line.
//
//   with Pool(4) as pool:                       mpx::Pool pool(4);
//       pool.map(square, range(10))             pool.map(square, std::views::iota(0, 10));
//       pool.apply_async(square, (7,)).get()    pool.apply_async(square, 7).get();
//       for r in pool.imap(square, count()):    for (int r : pool.imap(square,
//       std::views::iota(0)))
//
// Functions given to a process pool must be portable (function pointers, captureless
// lambdas, function objects with serialize()); a capturing lambda does not compile.
//
// expect: map: 0 1 4 9 16 25 36 49 64 81
// expect: apply_async: 49
// expect: starmap: 3 7 11
// expect: imap over an endless range: 0 1 4 9 16
// expect: sum of squares below 1000: 332833500
#include <cstdio>
#include <ranges>
#include <string_view>
#include <tuple>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/pool.hpp"

int square(int x) {
  return x * x;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  mpx::Pool pool(4);

  std::printf("map:");
  for (int r : pool.map(square, std::views::iota(0, 10)))
    std::printf(" %d", r);
  std::printf("\n");

  mpx::AsyncResult<int> r = pool.apply_async(square, 7);
  std::printf("apply_async: %d\n", r.get());

  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  std::printf("starmap:");
  for (int s : pool.starmap([](int a, int b) { return a + b; }, pairs))
    std::printf(" %d", s);
  std::printf("\n");

  std::printf("imap over an endless range:");
  auto it = pool.imap(square, std::views::iota(0));
  for (int i = 0; i < 5; ++i)
    std::printf(" %d", *it.next());
  std::printf("\n");

  long long total = 0;
  for (int s : pool.imap_unordered(square, std::views::iota(0, 1000), 50))
    total += s;
  std::printf("sum of squares below 1000: %lld\n", total);

  // Unlike Python's with-block, leaving the scope finishes the submitted work (close +
  // join); terminate() drops it. The endless imap above must be dropped:
  pool.terminate();
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
