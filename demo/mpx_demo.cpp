// mpx-demo — processes or threads? Measured on this machine, in under 30 seconds.
//
//   make demo            (or: ./build/release/mpx-demo [--quick])
//
// 1. CPU-bound work (counting primes): serially, on a ThreadPool, on a process Pool.
// 2. I/O-bound work (tasks that mostly wait): serially, on threads, on processes.
// 3. Isolation: a process Pool given tasks that segfault, hang and throw carries on;
//    the same crash on a ThreadPool takes the whole program down.
// 4. Communication: a Queue between a producer and a consumer process, and a Pipe
//    ping-pong, with their rates.
// Then a table: which to pick when.
//
// Progress bars (mpx::progress) go to stderr when it is a terminal; the results go to
// stdout (a test, tests/demo_test.cpp, checks their shape with --quick).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <numeric>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpx/connection.hpp"
#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------
// Work functions. Process pools take plain functions (they are sent by reference).

long g_chunk = 50000;  // numbers per prime-counting task (set before any pool is built)
double g_load = 0;     // the 1-minute load average when the demo started

double load_average() {
  double load = 0;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = 0;
    std::fclose(f);
  }
  return load;
}

bool is_prime(long n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (long d = 3; d * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

// Primes in [lo, lo + g_chunk).
long count_chunk(long lo) {
  long c = 0;
  for (long n = lo; n < lo + g_chunk; ++n)
    c += is_prime(n) ? 1 : 0;
  return c;
}

// Stands for a network call or a disk read: the task waits, the CPU is idle.
int wait_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Task i of the isolation part: most succeed; a few crash, hang or throw.
int risky(int i) {
  switch (i) {
    case 3:
      ::raise(SIGSEGV);  // stands for a null-pointer dereference in a plugin
      return -1;
    case 6:
      for (;;)
        std::this_thread::sleep_for(1s);  // a deadlock, an endless loop
    case 9:
      throw std::out_of_range("record 9 has no field 'id'");
    case 10:
      throw ParseError("unexpected '}' at line 12");
    default:
      std::this_thread::sleep_for(20ms);
      return i * i;
  }
}

int square(int x) {
  return x * x;
}

// ---------------------------------------------------------------------------------------
struct Sizes {
  long prime_limit;
  int io_tasks;
  int io_ms;
  int io_workers;
  long queue_items;
  long round_trips;
};

std::string fmt_rate(double per_s) {
  char buf[64];
  if (per_s >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.1f M/s", per_s / 1e6);
  } else if (per_s >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.0f k/s", per_s / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f /s", per_s);
  }
  return buf;
}

void result_line(const char* label, double secs, double baseline) {
  std::printf("   %-22s %7.2f s   speedup %5.2fx\n", label, secs, baseline / secs);
  std::fflush(stdout);
}

// 1 ---------------------------------------------------------------------------------------
void cpu_bound(const Sizes& s, int cpus) {
  long tasks = s.prime_limit / g_chunk;
  std::printf("\n1. CPU-bound work: count the primes below %ld (%ld tasks of %ld numbers)\n",
              s.prime_limit, tasks, g_chunk);
  std::vector<long> starts(static_cast<std::size_t>(tasks));
  for (long i = 0; i < tasks; ++i)
    starts[static_cast<std::size_t>(i)] = i * g_chunk;

  long serial_count = 0;
  auto t0 = Clock::now();
  for (long lo : mpx::progress(starts, starts.size()))
    serial_count += count_chunk(lo);
  double serial = seconds_since(t0);
  result_line("serial (1 thread)", serial, serial);

  auto run_pool = [&](auto& pool, const std::string& label) {
    long count = 0;
    auto start = Clock::now();
    for (long c : mpx::progress(pool.imap_unordered(count_chunk, starts), starts.size()))
      count += c;
    double secs = seconds_since(start);
    if (count != serial_count) throw std::logic_error("the pools disagree on the count");
    result_line(label.c_str(), secs, serial);
    return secs;
  };
  mpx::ThreadPool threads(static_cast<std::size_t>(cpus));
  std::string tlabel = "ThreadPool(" + std::to_string(cpus) + ")";
  double t_threads = run_pool(threads, tlabel);
  mpx::Pool processes(static_cast<std::size_t>(cpus));
  processes.map(square, std::vector<int>(static_cast<std::size_t>(cpus)));  // workers up
  std::string plabel = "Pool(" + std::to_string(cpus) + ") processes";
  double t_procs = run_pool(processes, plabel);
  double best = std::min(t_threads, t_procs);
  std::printf(
      "   %ld primes. Both pools use all %d CPUs: C++ threads run in parallel (there is\n"
      "   no GIL), so for CPU-bound work a ThreadPool speeds up as well as a Pool.\n",
      serial_count, cpus);
  if (std::max(t_threads, t_procs) <= 1.15 * best) {
    std::printf("   Here they took about the same time (%.2f vs %.2f s).\n", t_threads, t_procs);
  } else {
    std::printf(
        "   Here %s took %.0f%% longer (%.2f vs %.2f s)%s\n",
        t_procs > t_threads ? "the processes" : "the threads",
        (std::max(t_threads, t_procs) / best - 1) * 100, t_threads, t_procs,
        t_procs > t_threads ? ":\n   every task and its result cross between processes." : ".");
  }
  if (serial / best < 0.75 * cpus && g_load > 0.5) {
    std::printf("   (Below %.1fx on %d CPUs: other programs were busy, see the load above.)\n",
                0.75 * cpus, cpus);
  }
}

// 2 ---------------------------------------------------------------------------------------
void io_bound(const Sizes& s) {
  std::printf("\n2. I/O-bound work: %d tasks that each wait %d ms (a network call, a disk read)\n",
              s.io_tasks, s.io_ms);
  std::vector<int> waits(static_cast<std::size_t>(s.io_tasks), s.io_ms);
  auto t0 = Clock::now();
  for (int ms : mpx::progress(waits, waits.size()))
    wait_ms(ms);
  double serial = seconds_since(t0);
  result_line("serial (1 thread)", serial, serial);

  auto run_pool = [&](auto make_pool, const std::string& label) {
    auto start = Clock::now();  // includes starting the workers: that is part of the cost
    {
      auto pool = make_pool();
      for (int r : mpx::progress(pool->imap_unordered(wait_ms, waits), waits.size()))
        (void)r;
    }
    double secs = seconds_since(start);
    result_line(label.c_str(), secs, serial);
    return secs;
  };
  auto n = static_cast<std::size_t>(s.io_workers);
  std::string w = std::to_string(s.io_workers);
  double t_threads =
      run_pool([n] { return std::make_unique<mpx::ThreadPool>(n); }, "ThreadPool(" + w + ")");
  double t_procs =
      run_pool([n] { return std::make_unique<mpx::Pool>(n); }, "Pool(" + w + ") processes");
  std::printf(
      "   Waiting uses no CPU, so %s workers help even on few CPUs. Threads start in\n"
      "   microseconds and share memory; a process per waiting task costs a fork and\n"
      "   memory (%.2f s vs %.2f s here, pool start-up included).\n",
      w.c_str(), t_threads, t_procs);
}

// 3 ---------------------------------------------------------------------------------------
std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const mpx::WorkerLost& x) {
    return std::string("WorkerLost: ") + x.what();
  } catch (const mpx::TimeoutError& x) {
    return std::string("TimeoutError: ") + x.what();
  } catch (const mpx::RemoteError& x) {
    return std::string("RemoteError: ") + x.what();
  } catch (const std::out_of_range& x) {
    return std::string("std::out_of_range: ") + x.what();
  } catch (const std::exception& x) {
    return std::string("std::exception: ") + x.what();
  }
}

void isolation(const Sizes& s) {
  constexpr int kTasks = 12;
  auto timeout = 1s;
  std::printf(
      "\n3. Isolation: a process Pool(2) with a 1 s timeout per task runs %d tasks;\n"
      "   task 3 segfaults, task 6 hangs, tasks 9 and 10 throw\n",
      kTasks);
  mpx::PoolOptions options;
  options.timeout = timeout;
  mpx::Pool pool(2, options);
  std::vector<mpx::Future<int>> futures;
  for (int i = 0; i < kTasks; ++i)
    futures.push_back(pool.apply_async(risky, i));
  int ok = 0, failed = 0;
  std::vector<std::string> lines;
  for (int i : mpx::progress(std::views::iota(0, kTasks), kTasks)) {
    {
      auto& f = futures[static_cast<std::size_t>(i)];
      f.wait();
      char buf[256];
      if (auto e = f.exception()) {
        ++failed;
        std::snprintf(buf, sizeof buf, "   task %2d  FAILED  %s", i, describe(e).c_str());
      } else {
        ++ok;
        std::snprintf(buf, sizeof buf, "   task %2d  ok      %d", i, f.result());
      }
      lines.emplace_back(buf);
    }
  }
  for (const auto& l : lines)
    std::printf("%s\n", l.c_str());
  std::printf("   %d of %d results arrived; %d failures, each reported by name.\n", ok, kTasks,
              failed);
  std::vector<int> after = pool.map(square, std::vector<int>{1, 2, 3, 4, 5});
  std::printf("   The pool keeps going: map(square, 1..5) =");
  for (int v : after)
    std::printf(" %d", v);
  std::printf("\n");

  // The same crash on a ThreadPool, run in a child process so that this demo survives it.
  mpx::Process doomed([] {
    mpx::ThreadPool threads(2);
    std::vector<mpx::Future<int>> fs;
    for (int i = 0; i < kTasks; ++i)
      fs.push_back(threads.apply_async(risky, i == 6 ? 0 : i));
    for (auto& f : fs)
      f.wait();
  });
  doomed.start();
  doomed.join(10s);
  if (doomed.is_alive()) doomed.kill(), doomed.join();
  int code = doomed.exitcode().value_or(0);
  std::printf(
      "   The same tasks on a ThreadPool: the program %s: the segfault in one\n"
      "   thread kills every thread, and a hung thread cannot be stopped at all.\n",
      code < 0
          ? ("died with signal " + std::to_string(-code) + (code == -SIGSEGV ? " (SIGSEGV)" : ""))
                .c_str()
          : ("ended with exit code " + std::to_string(code)).c_str());
  (void)s;
}

// 4 ---------------------------------------------------------------------------------------
void communication(const Sizes& s) {
  std::printf("\n4. Communication between processes\n");
  {
    mpx::Queue<long> q;
    long n = s.queue_items;
    mpx::Process producer([q, n]() mutable {
      for (long i = 0; i < n; ++i)
        q.put(i);
    });
    auto t0 = Clock::now();
    producer.start();
    long sum = 0;
    constexpr long kBlock = 1024;  // the bar steps once per block: no clock read per item
    for (long b : mpx::progress(std::views::iota(0L, (n + kBlock - 1) / kBlock),
                                static_cast<std::size_t>((n + kBlock - 1) / kBlock))) {
      for (long i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i)
        sum += q.get();
    }
    double secs = seconds_since(t0);
    producer.join();
    if (sum != n * (n - 1) / 2) throw std::logic_error("queue lost items");
    std::printf("   Queue<long>, producer process -> consumer: %ld items in %.2f s = %s\n", n, secs,
                fmt_rate(static_cast<double>(n) / secs).c_str());
  }
  {
    // As many round trips as fit in about a second (at most s.round_trips).
    auto [here, there] = mpx::Pipe();
    mpx::Process echo([&here = here, &there = there] {
      here.close();
      for (long v = there.recv<long>(); v >= 0; v = there.recv<long>())
        there.send(v + 1);
    });
    echo.start();
    there.close();
    auto t0 = Clock::now();
    long v = 0, n = 0;
    constexpr long kBlock = 1024;
    for (long b : mpx::progress(std::views::iota(0L, s.round_trips / kBlock),
                                static_cast<std::size_t>(s.round_trips / kBlock))) {
      (void)b;
      for (long i = 0; i < kBlock; ++i) {
        here.send(v);
        v = here.recv<long>();
      }
      n += kBlock;
      if (Clock::now() - t0 > 1s) break;
    }
    double secs = seconds_since(t0);
    here.send(-1L);
    echo.join();
    if (v != n) throw std::logic_error("ping-pong lost a message");
    std::printf("   Pipe ping-pong: %ld round trips in %.2f s = %.1f us each (%s)\n", n, secs,
                secs / static_cast<double>(n) * 1e6,
                fmt_rate(static_cast<double>(n) / secs).c_str());
  }
}

void which_to_pick() {
  std::printf(
      "\nWhich to pick when\n"
      "   work                                  pick                        why\n"
      "   CPU-bound, trusted code               ThreadPool (or Pool)        threads run in "
      "parallel in C++; no copies\n"
      "   CPU-bound, code that may crash/hang   Pool + timeout              a crash or hang fails "
      "one task, not the program\n"
      "   I/O-bound (waiting on network/disk)   ThreadPool, many workers    waiting threads are "
      "cheap\n"
      "   a non-thread-safe library, leaks      Pool + maxtasksperchild     each worker has its "
      "own globals; restarted\n"
      "   streams between stages                Queue / Pipe                shared-memory rings, "
      "no syscall when busy\n"
      "   porting Python multiprocessing        the same names              see "
      "docs/python_mapping.md\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  // The demo makes tasks segfault on purpose: no core files for those.
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);

  Sizes s = quick ? Sizes{400000, 40, 10, 20, 100000, 5000}
                  : Sizes{5000000, 100, 20, 50, 1000000, 200000};
  g_chunk = quick ? 20000 : 50000;
  int cpus = mpx::cpu_count();
  auto t0 = Clock::now();
  std::printf("mpx demo: processes or threads? Measured on this machine (%d CPUs)%s\n", cpus,
              quick ? " [--quick]" : "");
  g_load = load_average();
  if (g_load > 0.5) {
    std::printf(
        "Note: load average %.1f: other programs are running, so the figures below\n"
        "are lower than this machine can do when idle.\n",
        g_load);
  }
  try {
    cpu_bound(s, cpus);
    io_bound(s);
    isolation(s);
    communication(s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx-demo: %s\n", e.what());
    return 1;
  }
  which_to_pick();
  std::printf("\n(demo took %.1f s)\n", seconds_since(t0));
  return 0;
}
