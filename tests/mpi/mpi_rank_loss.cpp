// A task on rank 1 kills its whole rank: SIGKILL to the rank's own process (its pool's
// supervisor), not just the worker that runs the task. MPI has no usable fault tolerance,
// so the job must end (not hang), saying which rank was lost, and leave no process
// behind; tests/mpi/rank_loss.sh runs this under mpirun -np 3 and checks all three.
// Exits 3 if the driver ever gets every result (the lost rank's cannot arrive).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "mpx/mpi.hpp"

namespace {

// Set while each rank's process starts; its pool's workers are forked from it, so in a
// worker this is the pid of the rank's supervisor.
const pid_t g_rank_pid = ::getpid();

int lose_rank_1(int x) {
  if (mpx::mpi::rank() == 1 && ::getpid() != g_rank_pid) ::kill(g_rank_pid, SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  mpx::mpi::init(argc, argv);
  mpx::mpi::ProcessPoolExecutor ex(1);
  std::vector<mpx::Future<int>> futures;
  for (int i = 0; i < 64; ++i)
    futures.push_back(ex.submit(lose_rank_1, i));
  for (auto& f : futures)
    f.result();
  std::printf("the driver got every result: rank 1 was not lost\n");
  return 3;
}
