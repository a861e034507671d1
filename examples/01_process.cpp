// 01 — Process: run a function in a child process (Python: multiprocessing.Process).
//
//   from multiprocessing import Process
//   def f(name): print('hello', name)
//   p = Process(target=f, args=('bob',)); p.start(); p.join()
//
// expect: hello bob from Process-1
// expect: exitcodes: 0 3 1 -15
#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

#include "mpx/context.hpp"
#include "mpx/process.hpp"

void f(const std::string& name) {
  std::printf("hello %s from %s\n", name.c_str(), mpx::current_process().name().c_str());
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  mpx::Process p(f, std::string("bob"));
  p.start();
  p.join();

  // Exit codes as in Python: 0 on return, N for exit(N), 1 for an uncaught exception
  // (printed on the child's stderr), -N when killed by signal N.
  mpx::Process exits([] { mpx::exit(3); });
  mpx::Process throws([] { throw std::runtime_error("this is printed on stderr"); });
  mpx::Process sleeps(mpx::ProcessOptions{.name = "sleeper", .daemon = true}, [] {
    for (;;)
      ::pause();
  });
  exits.start();
  throws.start();
  sleeps.start();
  sleeps.terminate();
  for (mpx::Process* c : {&exits, &throws, &sleeps})
    c->join();
  std::printf("exitcodes: %d %d %d %d\n", *p.exitcode(), *exits.exitcode(), *throws.exitcode(),
              *sleeps.exitcode());
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
