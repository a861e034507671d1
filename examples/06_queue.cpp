// 06 — Queue and JoinableQueue: many producers and consumers (Python:
// multiprocessing.Queue, JoinableQueue).
//
//   from multiprocessing import Process, Queue
//   def f(q): q.put([42, None, 'hello'])
//   q = Queue(); p = Process(target=f, args=(q,)); p.start()
//   print(q.get()); p.join()
//
// A queue handed to a Process is shared with the child, by any start method. put() is
// finished when it returns (there is no feeder thread), so nothing is lost when a child
// exits at once.
//
// expect: queue example done: hello from a child, sum of squares 338350
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"

void greet(mpx::Queue<std::string> q) {
  q.put("hello from a child");
}

// A worker: squares numbers until it gets 0, the stop signal.
void square_tasks(mpx::JoinableQueue<int> tasks, mpx::Queue<long> results) {
  for (;;) {
    int n = tasks.get();
    if (n > 0) results.put(static_cast<long>(n) * n);
    tasks.task_done();
    if (n == 0) break;
  }
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  mpx::Queue<std::string> q;
  mpx::Process p(greet, q);
  p.start();
  std::string greeting = q.get();
  p.join();
  std::printf("%s\n", greeting.c_str());

  // Two workers square numbers; the parent waits with join() until every task is done.
  mpx::JoinableQueue<int> tasks;
  mpx::Queue<long> results;
  std::vector<mpx::Process> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back(square_tasks, tasks, results);
    workers.back().start();
  }
  for (int n = 1; n <= 100; ++n)
    tasks.put(n);
  tasks.join();  // all 100 squared
  long sum = 0;
  while (!results.empty())
    sum += results.get();
  for (std::size_t i = 0; i < workers.size(); ++i)
    tasks.put(0);
  for (auto& w : workers)
    w.join();
  std::printf("queue example done: %s, sum of squares %ld\n", greeting.c_str(), sum);
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
