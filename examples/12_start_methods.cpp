// 12 — Start methods: fork, spawn and forkserver (Python: multiprocessing.get_context).
//
//   import multiprocessing as mp
//   def f(name, method): print('hello', name, 'by', method)
//   if __name__ == '__main__':
//       for method in mp.get_all_start_methods():
//           p = mp.get_context(method).Process(target=f, args=('bob', method))
//           p.start(); p.join()
//
// A spawned child is a fresh run of this program: mpx::init, first in main, runs its
// target there. It inherits no lock that another thread of the parent held (fork does).
//
// expect: hello bob by fork
// expect: hello bob by spawn
// expect: hello bob by forkserver
// expect: start method: spawn
#include <cstdio>
#include <string>

#include "mpx/context.hpp"

void f(std::string name, std::string method) {
  std::printf("hello %s by %s\n", name.c_str(), method.c_str());
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // Python's `if __name__ == '__main__':`

  for (const std::string& method : mpx::get_all_start_methods()) {
    mpx::Process p = mpx::get_context(method).Process(f, std::string("bob"), method);
    p.start();
    p.join();
  }

  // The program's start method, for every Process that names none.
  mpx::set_start_method("spawn");
  mpx::Process p(f, std::string("bob"), std::string("the default, now"));
  p.start();
  p.join();
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
