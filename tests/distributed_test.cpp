// The distributed example as a test: a task_master and three task_worker programs
// (separate executables, as on separate machines) on 127.0.0.1; one worker is killed
// with SIGKILL mid-run, and every task's result still arrives (the master re-queues
// the lost task once its lease runs out).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <string>
#include <vector>

#include "mpx/subprocess.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
namespace sp = mpx::subprocess;

#if defined(MPX_TASK_MASTER) && defined(MPX_TASK_WORKER)

std::string chomp(std::string s) {
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

TEST(Distributed, MasterAndThreeWorkersSurviveAKilledWorker) {
  const int tasks = 60;
  sp::Popen master({MPX_TASK_MASTER, "--address", "127.0.0.1:0", "--authkey", "test key", "--tasks",
                    std::to_string(tasks), "--lease-ms", "1000"},
                   {.stdout = sp::PIPE});
  mpx_test::Watchdog master_dog(120s, "task_master",
                                [pid = master.pid()] { ::kill(pid, SIGKILL); });
  const std::string first = chomp(master.stdout().readline());
  ASSERT_EQ(first.rfind("address: ", 0), 0u) << first;
  const std::string address = first.substr(9);
  std::vector<sp::Popen> workers;
  for (int i = 0; i < 3; ++i)
    workers.emplace_back(
        sp::Args{MPX_TASK_WORKER, "--address", address, "--authkey", "test key", "--work-ms", "30"},
        sp::PopenOptions{.stdout = sp::DEVNULL});
  mpx_test::Watchdog worker_dog(120s, "task_worker", [&workers] {
    for (auto& w : workers)
      ::kill(w.pid(), SIGKILL);
  });

  // Once a few results are in, kill the first worker (most likely mid-task).
  std::vector<std::string> lines;
  int results = 0;
  std::string last;
  for (std::string line; !(line = master.stdout().readline()).empty();) {
    line = chomp(line);
    lines.push_back(line);
    if (line.rfind("result ", 0) == 0 && ++results == 5) workers[0].kill();
    last = line;
  }
  EXPECT_EQ(master.wait(), 0);
  EXPECT_EQ(last.rfind("done: " + std::to_string(tasks) + " results", 0), 0u) << last;
  EXPECT_EQ(results, tasks);  // each task's result once, the killed worker's too
  EXPECT_EQ(workers[0].wait(), -SIGKILL);
  EXPECT_EQ(workers[1].wait(), 0);  // saw the master go, and stopped
  EXPECT_EQ(workers[2].wait(), 0);
}

TEST(Distributed, WorkerWithAWrongKeyIsRefused) {
  sp::Popen master({MPX_TASK_MASTER, "--tasks", "1"}, {.stdout = sp::PIPE});
  mpx_test::Watchdog master_dog(60s, "task_master", [pid = master.pid()] { ::kill(pid, SIGKILL); });
  const std::string address = chomp(master.stdout().readline()).substr(9);
  sp::CompletedProcess worker =
      sp::run({MPX_TASK_WORKER, "--address", address, "--authkey", "wrong"},
              {.capture_output = true, .timeout = std::chrono::duration<double>(60)});
  EXPECT_NE(worker.returncode, 0);
  EXPECT_NE(worker.stderr.find("AuthenticationError"), std::string::npos) << worker.stderr;
  master.kill();
  master.wait();
}

#else
TEST(Distributed, NeedsTheExamples) {
  GTEST_SKIP() << "built without MPX_BUILD_EXAMPLES: the task_master/task_worker programs";
}
#endif

}  // namespace
