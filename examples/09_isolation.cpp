// 09 — isolation: a task that crashes, hangs or throws fails alone.
//
// In Python, a worker killed by a segfault makes Pool.map hang forever and breaks a
// ProcessPoolExecutor for good. In mpx the task's future fails with WorkerLost (naming
// the worker and the signal), a new worker takes the dead one's place, and everything
// else carries on. A per-task timeout kills a hung task's worker.
//
// expect: crash: worker process [0-9]+ was lost: (killed by signal (11|6) \(SIG|exited)
// expect: hang: task ran past the pool's timeout
// expect: throw: std::out_of_range: index 10
// expect: custom: .*ParseError: bad input \(in process [0-9]+\)
// expect: the pool carries on: 0 1 4 9 16
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/pool.hpp"

using namespace std::chrono_literals;

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// (Under AddressSanitizer the worker dies by SIGABRT or exits: ASan catches the SIGSEGV.)
int buggy_plugin(int) {
  ::raise(SIGSEGV);  // stands for a null-pointer dereference in third-party code
  return 0;
}
int hangs(int) {
  for (;;)
    std::this_thread::sleep_for(1s);
}
int out_of_range(int i) {
  return std::vector<int>(3).at(static_cast<std::size_t>(i)), 0;
}
int parse(int) {
  throw ParseError("bad input");
}
int square(int x) {
  return x * x;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  mpx::PoolOptions options;
  options.timeout = 2s;  // per task (generous: a loaded or sanitized machine is slow)
  mpx::Pool pool(2, options);

  try {
    pool.apply(buggy_plugin, 0);
  } catch (const mpx::WorkerLost& e) {
    std::printf("crash: %s\n", e.what());
  }
  try {
    pool.apply(hangs, 0);
  } catch (const mpx::TimeoutError& e) {
    std::printf("hang: %s\n", e.what());
  }
  try {
    pool.apply(out_of_range, 10);
  } catch (const std::out_of_range& e) {  // standard exceptions keep their type
    std::printf("throw: std::out_of_range: index 10 (%s)\n", e.what());
  }
  try {
    pool.apply(parse, 0);
  } catch (const mpx::RemoteError& e) {  // others arrive as RemoteError
    std::printf("custom: %s\n", e.what());
  }
  std::printf("the pool carries on:");
  for (int r : pool.map(square, std::vector{0, 1, 2, 3, 4}))
    std::printf(" %d", r);
  std::printf("\n");
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
