// 06 — Queue and JoinableQueue: many producers and consumers (Python:
// multiprocessing.Queue, JoinableQueue).
//
//   from multiprocessing import Process, Queue
//   def f(q): q.put([42, None, 'hello'])
//   q = Queue(); p = Process(target=f, args=(q,)); p.start()
//   print(q.get()); p.join()
//
// A queue made before start() is shared with the children. put() is finished when it
// returns (there is no feeder thread), so nothing is lost when a child exits at once.
//
// expect: queue example done: hello from a child, sum of squares 338350
#include <cstdio>
#include <string>
#include <vector>

#include "mpx/process.hpp"
#include "mpx/queues.hpp"

int main() {
  mpx::Queue<std::string> q;
  mpx::Process p([&] { q.put("hello from a child"); });
  p.start();
  std::string greeting = q.get();
  p.join();
  std::printf("%s\n", greeting.c_str());

  // Two workers square numbers; the parent waits with join() until every task is done.
  mpx::JoinableQueue<int> tasks;
  mpx::Queue<long> results;
  std::vector<mpx::Process> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&] {
      for (;;) {
        int n = tasks.get();
        if (n > 0) results.put(static_cast<long>(n) * n);
        tasks.task_done();
        if (n == 0) break;  // the stop signal
      }
    });
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
}
