// mpi/spread_work — the tutorials' "spread the work over several machines": a CPU-bound
// map over every core of every host of an MPI job, with the same Pool as on one machine.
//
//   one machine:    mpirun -np 3 ./example_mpi_spread_work
//   several hosts:  mpirun --hostfile hosts -np 9 ./example_mpi_spread_work  (docs/mpi.md)
//
// Python (mpi4py.futures, `mpiexec -n 3 python -m mpi4py.futures spread_work.py`):
//
//   with MPIPoolExecutor() as ex:               mpx::mpi::init(argc, argv);
//       counts = ex.map(primes_in, range(64))   mpx::mpi::Pool pool;
//       print(sum(counts))                      auto counts = pool.map(primes_in, blocks);
//
// Rank 0 runs main; every other rank serves tasks in a local pool of its own (one worker
// per core), so a task that crashes fails alone. Ranks take blocks as they finish them:
// a faster host takes more.
//
// expect: primes below 3200000: 230209
// expect: blocks done by rank 1: [0-9]+
// expect: every block done by a serving rank: yes
#include <cstdio>
#include <map>
#include <numeric>
#include <utility>
#include <vector>

#include "mpx/mpi.hpp"

constexpr long kBlock = 50000;

// Primes in one block of kBlock numbers, by trial division (CPU only), and who counted.
std::pair<long, int> primes_in(long block) {
  long count = 0;
  for (long n = std::max(2L, block * kBlock); n < (block + 1) * kBlock; ++n) {
    bool prime = true;
    for (long d = 2; d * d <= n; ++d)
      if (n % d == 0) {
        prime = false;
        break;
      }
    count += prime;
  }
  return {count, mpx::mpi::rank()};
}

int main(int argc, char** argv) {
  mpx::mpi::init(argc, argv);  // ranks other than 0 serve from here on

  mpx::mpi::Pool pool;  // every serving rank, cpu_count() workers each
  std::vector<long> blocks(64);
  std::iota(blocks.begin(), blocks.end(), 0L);
  long total = 0;
  std::map<int, int> per_rank;
  for (auto [count, rank] : pool.map(primes_in, blocks, 1)) {
    total += count;
    ++per_rank[rank];
  }
  std::printf("primes below %ld: %ld\n", 64 * kBlock, total);
  bool all_served = true;
  for (auto [rank, n] : per_rank) {
    std::printf("blocks done by rank %d: %d (host %s)\n", rank, n, mpx::mpi::host(rank).c_str());
    all_served = all_served && rank != 0;
  }
  std::printf("every block done by a serving rank: %s\n", all_served ? "yes" : "no");
}
