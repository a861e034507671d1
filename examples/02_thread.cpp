// 02 — Thread: the same interface on a thread (Python: threading.Thread). Switching
// between a thread and a process is a one-word change; threads share memory,
// processes do not.
//
// expect: thread: counter = 4000
// expect: process: counter = 0
#include <atomic>
#include <cstdio>
#include <string_view>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/process.hpp"
#include "mpx/thread.hpp"

std::atomic<int> counter{0};

void work() {
  for (int i = 0; i < 1000; ++i)
    counter.fetch_add(1);
}

template <class Worker>
void run(const char* kind) {
  counter = 0;
  std::vector<Worker> workers;
  for (int i = 0; i < 4; ++i)
    workers.emplace_back(work);
  for (auto& w : workers)
    w.start();
  for (auto& w : workers)
    w.join();
  // A thread changed this process's counter; a process changed its own copy.
  std::printf("%s: counter = %d\n", kind, counter.load());
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  run<mpx::Thread>("thread");
  run<mpx::Process>("process");
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
