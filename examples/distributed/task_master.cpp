// task_master — serves a task queue and a result queue on TCP with an authkey (Python's
// remote-manager pattern: multiprocessing.managers.BaseManager with register()), hands
// out tasks and collects one result per task from any number of task_worker programs,
// started separately on this or other machines.
//
//   host A:  task_master --address 0.0.0.0:50000 --authkey secret --tasks 100
//   host B:  task_worker --address A:50000 --authkey secret     (as many as you like)
//
// A worker that dies mid-task (killed, its machine lost) loses the task it held: the
// master re-queues, once the task queue has drained, every task whose result has not
// come within --lease-ms of its last queueing, and drops duplicate results. So each task's result
// arrives exactly once as long as one worker lives. Prints "address: HOST:PORT" once listening,
// "result ID" per result, and "done: N results, R re-queued" at the end.
#include <chrono>
#include <cstdio>
#include <map>
#include <string>

#include "mpx/managers.hpp"
#include "task.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using distributed::Result;
using distributed::Task;

int main(int argc, char** argv) {
  const std::string address = distributed::option(argc, argv, "address", "127.0.0.1:0");
  const std::string authkey = distributed::option(argc, argv, "authkey", "secret");
  const int tasks = std::stoi(distributed::option(argc, argv, "tasks", "50"));
  const auto lease =
      std::chrono::milliseconds(std::stoi(distributed::option(argc, argv, "lease-ms", "2000")));

  mpx::BaseManager manager(address, authkey);
  manager.register_<mpx::QueueProxy<Task>>("tasks");
  manager.register_<mpx::QueueProxy<Result>>("results");
  manager.start();
  std::printf("address: %s\n", manager.address().c_str());
  std::fflush(stdout);

  auto task_queue = manager.get<mpx::QueueProxy<Task>>("tasks");
  auto result_queue = manager.get<mpx::QueueProxy<Result>>("results");
  std::map<std::int64_t, Clock::time_point> pending;  // task id -> when handed out
  for (int i = 0; i < tasks; ++i) {
    task_queue.put(Task{i, 1000 + i});
    pending[i] = Clock::now();
  }
  int requeued = 0;
  int received = 0;
  const auto give_up = Clock::now() + 300s;
  while (!pending.empty() && Clock::now() < give_up) {
    try {
      const Result r = result_queue.get(true, 200ms);
      auto it = pending.find(r.id);
      if (it == pending.end()) continue;  // a duplicate of a re-queued task
      const std::int64_t n = 1000 + r.id;
      if (r.value != n * (n + 1) * (2 * n + 1) / 6) {
        std::printf("wrong result for task %lld\n", static_cast<long long>(r.id));
        return 1;
      }
      pending.erase(it);
      ++received;
      std::printf("result %lld from %d\n", static_cast<long long>(r.id),
                  static_cast<int>(r.worker));
      std::fflush(stdout);
    } catch (const mpx::Empty&) {
    }
    // Tasks whose lease ran out: lost with a worker (or very slow); hand them out again.
    // Only when the queue is drained, so a queue of unstarted tasks does not count.
    if (task_queue.empty()) {
      for (auto& [id, since] : pending) {
        if (Clock::now() - since < lease) continue;
        task_queue.put(Task{id, 1000 + id});
        since = Clock::now();
        ++requeued;
      }
    }
  }
  std::printf("done: %d results, %d re-queued\n", received, requeued);
  manager.shutdown();  // workers see the server go and stop
  return pending.empty() ? 0 : 1;
}
