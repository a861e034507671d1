// mpx/mpi.hpp — the same Pool and ProcessPoolExecutor over the ranks of an MPI job
// (mpi4py.futures.MPIPoolExecutor for C++). Link mpx::mpx_mpi (built when CMake finds
// MPI). Launch with `mpirun -np N ./app` (a hostfile for several hosts: docs/mpi.md).
//
//   int square(int x) { return x * x; }
//   int main(int argc, char** argv) {
//     mpx::mpi::init(argc, argv);           // ranks 1..N-1 serve tasks and never return
//     mpx::mpi::ProcessPoolExecutor ex;     // every rank's CPUs
//     auto f = ex.submit(square, 7);        // f.result() == 49
//     for (int r : ex.map(square, std::vector{1, 2, 3})) use(r);
//   }                                       // the job ends cleanly with main
//
// Rank 0 (the driver) runs main. Every other rank is a supervisor: for each pool the
// driver builds, it runs a local mpx process pool (workers per rank: that rank's
// cpu_count() unless given) and serves the driver's tasks there. So a task that crashes
// fails alone with WorkerLost, one that runs past options.timeout with TimeoutError,
// one that throws with its exception, exactly as with mpx::Pool; the rank's pool
// replaces the worker and the MPI job never sees it. The loss of a whole rank (its host
// dies, the rank is killed) ends the job: MPI has no usable fault tolerance.
//
// Ranks pull tasks in proportion to how fast they finish them (credits), so a rank with
// more cores or faster tasks takes more, and none waits for a slower one; map keeps
// input order. Everything else is as in mpx/pool.hpp and mpx/futures.hpp: the same
// methods, Futures, as_completed, wait, progress bars, options (initializer: runs in
// every worker on every rank; timeout; maxtasksperchild; context: how every rank starts
// its workers, the driver's start method when none is given), and the same portable
// callables, which travel as offsets in their module: every rank must run the same
// binary (checked by init, which throws ProcessError naming the rank that differs).
//
// Threads: one thread per rank makes every MPI call (Open MPI hangs when several make
// blocking calls); an idle rank polls gently (at most every millisecond). Call init
// before any other thread starts; do not make MPI calls of your own.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "mpx/futures.hpp"
#include "mpx/pool.hpp"

namespace mpx::mpi {

// Starts MPI. On rank 0 returns; on every other rank serves the driver's pools until
// the driver's main returns (or calls exit), then exits the process with status 0
// without returning. Throws ProcessError (on rank 0) when a rank runs another binary.
// Calling it twice is harmless. Without mpirun, the program is a job of one rank.
// It does mpx::init's work too (mpx/context.hpp): the driver may start spawn and
// forkserver children.
void init(int& argc, char**& argv);
void init();

// This process's rank (0 on the driver; in a worker process, its supervisor's) and the
// number of ranks. Before init (and in a worker that is not a fork: spawn, forkserver)
// they come from the launcher's environment (Open MPI's OMPI_COMM_WORLD_RANK/SIZE,
// MPICH's PMI_RANK/SIZE); 0 and 1 without one.
int rank() noexcept;
int size() noexcept;
// The host a rank runs on (MPI_Get_processor_name), "" for an unknown rank.
std::string host(int rank);

// Where the tasks of an MPI pool run, beyond PoolOptions.
struct RankOptions {
  // Whether rank 0 (the driver) also runs tasks in a local pool of its own. By default
  // it does not: its cores drive the job (and a job of one rank runs them anyway).
  bool driver_runs_tasks = false;
};

namespace detail {
// The engine of an MPI pool (src/mpi/driver.cpp); throws InvalidStateError before init.
mpx::detail::Engine::Impl* make_engine(mpx::detail::EngineOptions options, RankOptions ranks);
// The front end's hook: builds that engine.
struct MakeEngine {
  RankOptions ranks;
  mpx::detail::Engine::Impl* operator()(mpx::detail::EngineOptions options) const {
    return make_engine(std::move(options), ranks);
  }
};
}  // namespace detail

// multiprocessing.Pool over the job's ranks: processes_per_rank workers on each serving
// rank (0: that rank's cpu_count()); processes() is the total over all ranks.
class Pool : public mpx::detail::BasicPool<mpx::detail::WorkerKind::kProcess> {
 public:
  explicit Pool(std::size_t processes_per_rank = 0, PoolOptions options = {},
                RankOptions ranks = {})
      : BasicPool(processes_per_rank, std::move(options), detail::MakeEngine{ranks}) {}
};

// concurrent.futures.ProcessPoolExecutor over the job's ranks (mpi4py.futures'
// MPIPoolExecutor): max_workers_per_rank as Pool's processes_per_rank.
class ProcessPoolExecutor : public mpx::detail::BasicExecutor<mpx::detail::WorkerKind::kProcess> {
 public:
  explicit ProcessPoolExecutor(std::size_t max_workers_per_rank = 0, PoolOptions options = {},
                               RankOptions ranks = {})
      : BasicExecutor(max_workers_per_rank, std::move(options), detail::MakeEngine{ranks}) {}
};

}  // namespace mpx::mpi
