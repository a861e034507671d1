// task_worker — connects to a task_master by address and authkey, takes tasks from its
// task queue, computes, and puts results, until the master goes away. See task_master.
//
//   task_worker --address HOST:PORT --authkey secret [--work-ms 20]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "mpx/managers.hpp"
#include "task.hpp"

using namespace std::chrono_literals;
using distributed::Result;
using distributed::Task;

int main(int argc, char** argv) {
  const std::string address = distributed::option(argc, argv, "address", "127.0.0.1:50000");
  const std::string authkey = distributed::option(argc, argv, "authkey", "secret");
  const auto work =
      std::chrono::milliseconds(std::stoi(distributed::option(argc, argv, "work-ms", "20")));
  mpx::BaseManager manager(address, authkey);
  try {
    manager.connect();
  } catch (const mpx::AuthenticationError& e) {
    std::fprintf(stderr, "worker: AuthenticationError: %s\n", e.what());
    return 1;
  }
  auto tasks = manager.get<mpx::QueueProxy<Task>>("tasks");
  auto results = manager.get<mpx::QueueProxy<Result>>("results");
  int done = 0;
  try {
    for (;;) {
      Task t;
      try {
        t = tasks.get(true, 1s);
      } catch (const mpx::Empty&) {
        continue;
      }
      std::this_thread::sleep_for(work);  // stands for a longer computation
      results.put(Result{t.id, distributed::compute(t.n), ::getpid()});
      ++done;
    }
  } catch (const std::exception& e) {  // the master shut its server down
    std::printf("worker %d: %d tasks done; master gone (%s)\n", static_cast<int>(::getpid()), done,
                e.what());
  }
  return 0;
}
