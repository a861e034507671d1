// 11 — the tutorials' first Pool example: workers that print.
//
//   def worker_function(x):                     void worker_function(int x) {
//       print(f"worker {x}")                      std::printf("worker %d\n", x);
//                                               }
//   with Pool(3) as pool:                       mpx::Pool pool(3);
//       pool.map(worker_function, range(6))     pool.map(worker_function, xs);
//
// What a worker prints reaches stdout even when it is a pipe or a file (`./app | cat`):
// the workers flush their stdio when they leave (close + join, the pool's destructor,
// maxtasksperchild), as Python's do.
//
// expect: worker 0
// expect: worker 1
// expect: worker 2
// expect: worker 3
// expect: worker 4
// expect: worker 5
// expect: done
#include <cstdio>
#include <string_view>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/pool.hpp"

void worker_function(int x) {
  std::printf("worker %d\n", x);
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  {
    mpx::Pool pool(3);
    pool.map(worker_function, std::vector{0, 1, 2, 3, 4, 5});
  }  // close + join: the workers flush and exit
  std::printf("done\n");
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
