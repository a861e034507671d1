// mpx-bench-mpi — the MPI rows of `make bench` (bench/compare runs it under mpirun, one
// driver and three serving ranks; not Google Benchmark: ranks other than 0 never return
// from mpx::mpi::init). Prints "RESULT\t<workload>\t<value>\t<unit>" on rank 0.
//
//   mpx-bench-mpi mpi_farm_tiny mpx     100 000 tiny tasks, submit() one at a time, then
//                                       every result(): mpx::mpi::ProcessPoolExecutor
//   mpx-bench-mpi mpi_farm_tiny floor   the same through a raw MPI task farm in plain C++:
//                                       one task per message, one in flight per worker
//                                       rank (the floor); then 64 in flight per rank
//                                       (EXTRA floor_pipelined)
//   mpx-bench-mpi mpi_map_primes mpx    a CPU-bound map over every rank (mpx::mpi::Pool)
//   mpx-bench-mpi mpi_map_primes floor  the same map on one rank's local mpx::Pool
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "mpx/mpi.hpp"
#include "mpx/pool.hpp"

namespace {

constexpr int kTiny = 100000;
constexpr int kPrimeChunks = 96;
constexpr long kPrimeSpan = 20000;

long tiny(long x) {
  return x + 1;
}

// Primes in [k * kPrimeSpan, (k + 1) * kPrimeSpan), by trial division: CPU only.
long primes_in(long k) {
  long count = 0;
  for (long n = std::max(2L, k * kPrimeSpan); n < (k + 1) * kPrimeSpan; ++n) {
    bool prime = true;
    for (long d = 2; d * d <= n; ++d)
      if (n % d == 0) {
        prime = false;
        break;
      }
    count += prime;
  }
  return count;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void result(const char* workload, double value, const char* unit) {
  std::printf("RESULT\t%s\t%.6g\t%s\n", workload, value, unit);
}

int farm_mpx() {
  mpx::mpi::ProcessPoolExecutor ex(1);
  ex.submit(tiny, 0).result();  // the ranks' pools are up
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<mpx::Future<long>> futures;
  futures.reserve(kTiny);
  for (long i = 0; i < kTiny; ++i)
    futures.push_back(ex.submit(tiny, i));
  long sum = 0;
  for (auto& f : futures)
    sum += f.result();
  const double s = seconds_since(t0);
  if (sum != static_cast<long>(kTiny) * (kTiny + 1) / 2) return 1;
  result("mpi_farm_tiny", kTiny / s, "tasks/s");
  return 0;
}

// One timed raw farm on rank 0: `window` tasks in flight per worker rank, each task (a
// long) one message, each result one message. Returns tasks/s.
double farm_round(int size, int window, long& sum) {
  const auto t0 = std::chrono::steady_clock::now();
  long next = 0, done = 0;
  sum = 0;
  for (int w = 1; w < size; ++w)
    for (int k = 0; k < window && next < kTiny; ++k, ++next)
      MPI_Send(&next, 1, MPI_LONG, w, 0, MPI_COMM_WORLD);
  while (done < kTiny) {
    long r = 0;
    MPI_Status st;
    MPI_Recv(&r, 1, MPI_LONG, MPI_ANY_SOURCE, 0, MPI_COMM_WORLD, &st);
    sum += r;
    ++done;
    if (next < kTiny) {
      MPI_Send(&next, 1, MPI_LONG, st.MPI_SOURCE, 0, MPI_COMM_WORLD);
      ++next;
    }
  }
  return kTiny / seconds_since(t0);
}

// The floor (issue 25's "raw MPI task farm sending one task per message"): the textbook
// farm, one task in flight per worker rank, its next task sent when its result arrives.
// Printed too, as EXTRA floor_pipelined: the same farm keeping 64 tasks in flight per rank,
// which hides the message latency the way mpx's batching does.
int farm_floor(int argc, char** argv) {
  constexpr int kPipelined = 64;
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank != 0) {
    for (;;) {
      long x = 0;
      MPI_Recv(&x, 1, MPI_LONG, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (x < 0) break;
      long r = tiny(x);
      MPI_Send(&r, 1, MPI_LONG, 0, 0, MPI_COMM_WORLD);
    }
    MPI_Finalize();
    return 0;
  }
  long sum = 0, sum_pipelined = 0;
  const double textbook = farm_round(size, 1, sum);
  const double pipelined = farm_round(size, kPipelined, sum_pipelined);
  long stop = -1;
  for (int w = 1; w < size; ++w)
    MPI_Send(&stop, 1, MPI_LONG, w, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  const long want = static_cast<long>(kTiny) * (kTiny + 1) / 2;
  if (sum != want || sum_pipelined != want) return 1;
  result("mpi_farm_tiny", textbook, "tasks/s");
  std::printf("EXTRA\tfloor_pipelined\t%.6g\ttasks/s\n", pipelined);
  return 0;
}

template <class P>
int primes(P& pool) {
  std::vector<long> chunks(kPrimeChunks);
  std::iota(chunks.begin(), chunks.end(), 0L);
  pool.map(primes_in, std::vector<long>{0, 1});  // workers up
  const auto t0 = std::chrono::steady_clock::now();
  auto counts = pool.map(primes_in, chunks, 1);
  const double s = seconds_since(t0);
  if (std::accumulate(counts.begin(), counts.end(), 0L) <= 0) return 1;
  result("mpi_map_primes", s, "s");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s mpi_farm_tiny|mpi_map_primes mpx|floor\n", argv[0]);
    return 2;
  }
  const std::string workload = argv[1], impl = argv[2];
  if (workload == "mpi_farm_tiny" && impl == "floor") return farm_floor(argc, argv);
  if (workload == "mpi_map_primes" && impl == "floor") {
    mpx::Pool pool;  // one rank's cores
    return primes(pool);
  }
  mpx::mpi::init(argc, argv);
  if (workload == "mpi_farm_tiny") return farm_mpx();
  mpx::mpi::Pool pool;
  return primes(pool);
}
