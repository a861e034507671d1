// bench/floor.cpp — the raw OS floor of each workload, in plain C++ (no mpx, no Boost).
//
// usage: mpx-bench-floor <workload>
// Runs a warm-up, then one measured repetition, and prints one RESULT line (see
// bench_util.hpp); bench/compare calls it many times, interleaved with the other columns.
//
//   process_start_join   fork + _exit(0) + waitpid                              us/op
//   process_start_join_spawn  posix_spawn of mpx-bench-process, the binary mpx spawns
//                        (which exits at once) + waitpid                        us/op
//   process_start_join_forkserver  fork + _exit(0) + waitpid (a forkserver's floor) us/op
//   pipe_roundtrip_64b   64 B ping-pong through shared memory, spin then futex   us/roundtrip
//   queue_int_1to1       single-producer/single-consumer ring in shared memory  items/s
//   queue_64b_1to1       same ring, 64-byte items                                items/s
//   queue_1mib_1to1      same ring, 1 MiB items (copy in + copy out)             GB/s
//   lock_counter_2proc   2 processes increment a counter under a robust          incr/s
//                        process-shared pthread mutex
//   pool_map_1m_auto     x*x over 1M ints by 2 forked workers, halves in shared
//                        memory, gathered into a new vector                     us/task
//   cpu_primes_speedup   primes below 2M: serial time / time on N threads        x
//   idle_worker_rss      private resident memory of an idle forked child         MiB
//   subprocess_run_true  posix_spawn("/bin/true") + waitpid                      us/op
//   subprocess_pipe_256mib  256 MiB through cat: posix_spawn with two pipes, a poll(2)
//                        loop of non-blocking 1 MiB writes and reads into a buffer  GB/s
//   listener_roundtrip_64b  64 B ping-pong over a Unix socketpair, blocking
//                        send/recv                                          us/roundtrip
//   listener_roundtrip_64b_tcp  64 B ping-pong over TCP loopback (TCP_NODELAY)  us/roundtrip
//   memcpy_1mib          (reference) memcpy of 1 MiB blocks between 256 MiB buffers GB/s
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"

namespace {

using bench::now_s;

// ---------------------------------------------------------------------------------------
void process_start_join() {
  auto once = [] { bench::reap(bench::fork_child([] {})); };
  bench::result("process_start_join", bench::us_per_call(once, 300), "us/op");
}

constexpr const char* kExitAtOnce = "--exit-at-once";

// The binary that mpx's process_start_join_spawn spawns (itself): mpx-bench-process, next
// to this program. Spawning that one, not this smaller one, keeps the program's own
// loading (its libraries, its static initialisers) out of the gap, as issue 22 asks:
// "posix_spawn + waitpid of the same binary".
std::string mpx_process_binary() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) bench::die("readlink /proc/self/exe");
  std::string path(buf, static_cast<std::size_t>(n));
  path.resize(path.rfind('/') + 1);
  path += "mpx-bench-process";
  if (::access(path.c_str(), X_OK) != 0) bench::die("mpx-bench-process is not built");
  return path;
}

void process_start_join_spawn() {
  std::string self = mpx_process_binary();
  char marker[] = "--exit-at-once";
  char* argv[] = {self.data(), marker, nullptr};
  auto once = [&] {
    pid_t pid = 0;
    if (posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, environ) != 0)
      bench::die("posix_spawn");
    bench::reap(pid);
  };
  bench::result("process_start_join_spawn", bench::us_per_call(once, 300), "us/op");
}

void process_start_join_forkserver() {
  auto once = [] { bench::reap(bench::fork_child([] {})); };
  bench::result("process_start_join_forkserver", bench::us_per_call(once, 300), "us/op");
}

// ---------------------------------------------------------------------------------------
// Ping-pong: `turn` says whose move it is (0 parent, 1 child). A side waiting for its turn
// spins up to kSpins pauses, then sleeps on a process-shared futex after announcing it in
// its own `sleeping` flag; the other side issues FUTEX_WAKE only when that flag is set
// (Dekker-style seq_cst store/load pairs make the announcement and hand-over race-free).
struct PingPong {
  alignas(64) std::atomic<uint32_t> turn{0};
  alignas(64) std::atomic<uint32_t> sleeping[2]{};  // per side: about to sleep / asleep
  alignas(64) std::array<char, 64> msg{};
};

constexpr int kSpins = 4000;

void futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, expected, nullptr, nullptr, 0);
}
void futex_wake(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

void wait_turn(PingPong& p, uint32_t mine) {
  for (int i = 0; i < kSpins; ++i) {
    if (p.turn.load(std::memory_order_acquire) == mine) return;
    bench::cpu_relax();
  }
  for (;;) {
    p.sleeping[mine].store(1, std::memory_order_seq_cst);
    uint32_t now = p.turn.load(std::memory_order_seq_cst);
    if (now == mine) break;
    futex_wait(p.turn, now);
  }
  p.sleeping[mine].store(0, std::memory_order_relaxed);
}

void give_turn(PingPong& p, uint32_t theirs) {
  p.turn.store(theirs, std::memory_order_seq_cst);
  if (p.sleeping[theirs].load(std::memory_order_seq_cst) != 0) futex_wake(p.turn);
}

void pipe_roundtrip_64b() {
  constexpr long kWarm = 5000, kN = 50000;
  auto* p = bench::shared_new<PingPong>();
  pid_t child = bench::fork_child([p] {
    std::array<char, 64> buf{};
    for (long i = 0; i < kWarm + kN; ++i) {
      wait_turn(*p, 1);
      buf = p->msg;  // copy the message out, echo it back
      p->msg = buf;
      give_turn(*p, 0);
    }
  });
  std::array<char, 64> out{}, in{};
  out.fill('x');
  auto round_trip = [&] {
    p->msg = out;
    give_turn(*p, 1);
    wait_turn(*p, 0);
    in = p->msg;
  };
  const double us = bench::us_per_call(round_trip, kN, kWarm);
  bench::reap(child);
  if (in != out) bench::die("ping-pong corrupted the message");
  bench::result("pipe_roundtrip_64b", us, "us/roundtrip");
}

// ---------------------------------------------------------------------------------------
// SPSC ring of fixed-size slots in shared memory, busy-polling on both sides; each side
// caches the other's index and re-reads it only when the ring looks full/empty.
struct RingHeader {
  alignas(64) std::atomic<uint64_t> head{0};  // next slot to write (producer)
  alignas(64) std::atomic<uint64_t> tail{0};  // next slot to read (consumer)
};

template <std::size_t kSize>
double ring_rate(uint64_t depth, long warm, long count) {
  std::size_t bytes = sizeof(RingHeader) + depth * kSize;
  void* mem = bench::shared_bytes(bytes);
  auto* ring = new (mem) RingHeader();
  char* slots = static_cast<char*>(mem) + sizeof(RingHeader);
  uint64_t total = static_cast<uint64_t>(warm + count);
  pid_t child = bench::fork_child([&] {
    std::vector<char> src(kSize, 'x');
    uint64_t tail_seen = 0;
    for (uint64_t h = 0; h < total; ++h) {
      while (h - tail_seen >= depth) {
        tail_seen = ring->tail.load(std::memory_order_acquire);
        if (h - tail_seen >= depth) bench::cpu_relax();
      }
      std::memcpy(slots + (h % depth) * kSize, src.data(), kSize);
      ring->head.store(h + 1, std::memory_order_release);
    }
  });
  std::vector<char> dst(kSize);
  uint64_t t = 0, head_seen = 0;
  auto take = [&] {
    while (t == head_seen) {
      head_seen = ring->head.load(std::memory_order_acquire);
      if (t == head_seen) bench::cpu_relax();
    }
    std::memcpy(dst.data(), slots + (t % depth) * kSize, kSize);
    asm volatile("" ::"r"(dst.data()) : "memory");
    ring->tail.store(++t, std::memory_order_release);
  };
  for (long i = 0; i < warm; ++i)
    take();
  double t0 = now_s();
  for (long i = 0; i < count; ++i)
    take();
  double secs = now_s() - t0;
  bench::reap(child);
  munmap(mem, bytes);
  return static_cast<double>(count) / secs;
}

void queue_int_1to1() {
  bench::result("queue_int_1to1", ring_rate<sizeof(int)>(1024, 500000, 5000000), "items/s");
}
void queue_64b_1to1() {
  bench::result("queue_64b_1to1", ring_rate<64>(1024, 200000, 2000000), "items/s");
}
void queue_1mib_1to1() {
  double rate = ring_rate<(1u << 20)>(8, 100, 1000);
  bench::result("queue_1mib_1to1", rate * (1u << 20) / 1e9, "GB/s");
}

void memcpy_1mib() {
  constexpr std::size_t kBig = 256u << 20, kBlock = 1u << 20;
  std::vector<char> a(kBig, 1), b(kBig, 2);
  std::size_t off = 0;
  auto copy = [&] {
    std::memcpy(b.data() + off, a.data() + off, kBlock);
    asm volatile("" ::"r"(b.data()) : "memory");
    off = (off + kBlock) % kBig;
  };
  for (int i = 0; i < 256; ++i)
    copy();
  constexpr int kN = 2000;
  double t0 = now_s();
  for (int i = 0; i < kN; ++i)
    copy();
  bench::result("memcpy_1mib", kN * static_cast<double>(kBlock) / (now_s() - t0) / 1e9, "GB/s");
}

// ---------------------------------------------------------------------------------------
struct Counter {
  pthread_mutex_t mutex;
  std::atomic<int> go{0};
  alignas(64) long value = 0;
};

double robust_counter_rate(Counter* c, long per_process) {
  c->value = 0;
  c->go.store(0);
  pid_t kids[2];
  for (pid_t& kid : kids) {
    kid = bench::fork_child([c, per_process] {
      while (c->go.load(std::memory_order_acquire) == 0)
        sched_yield();
      for (long i = 0; i < per_process; ++i) {
        if (pthread_mutex_lock(&c->mutex) != 0) bench::die("pthread_mutex_lock");
        ++c->value;
        pthread_mutex_unlock(&c->mutex);
      }
    });
  }
  double t0 = now_s();
  c->go.store(1, std::memory_order_release);
  for (pid_t kid : kids)
    bench::reap(kid);
  double t = now_s() - t0;
  if (c->value != 2 * per_process) bench::die("lost updates");
  return 2.0 * static_cast<double>(per_process) / t;
}

void lock_counter_2proc() {
  auto* c = bench::shared_new<Counter>();
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&c->mutex, &attr);
  robust_counter_rate(c, 200000);  // warm-up
  bench::result("lock_counter_2proc", robust_counter_rate(c, 2000000), "incr/s");
}

// ---------------------------------------------------------------------------------------
// Pool.map's floor: two forked workers square their halves of the items in place, in
// memory shared with the parent (faulted in before they fork, as a pool's rings are) and
// handed over with the ping-pong's turns; the parent writes the items and gathers the
// results into a new vector, as a map returns them. No encoding, no chunks, no results
// read one by one: what is left is the work, the copies and two hand-overs each way.
struct MapHalf {
  PingPong turn;
  std::size_t begin = 0, end = 0;
};

int square_wrapping(int x) {
  return static_cast<int>(static_cast<unsigned>(x) * static_cast<unsigned>(x));
}

void pool_map_1m_auto() {
  constexpr std::size_t kWorkers = 2, kItems = 1000000;
  constexpr int kRuns = 2;  // a warm-up of a tenth of the items, then the measured one
  auto* items = static_cast<int*>(bench::shared_bytes(kItems * sizeof(int)));
  std::fill_n(items, kItems, 0);
  std::array<MapHalf*, kWorkers> halves{};
  std::array<pid_t, kWorkers> children{};
  for (std::size_t w = 0; w < kWorkers; ++w) {
    MapHalf* half = halves[w] = bench::shared_new<MapHalf>();
    children[w] = bench::fork_child([half, items] {
      for (int run = 0; run < kRuns; ++run) {
        wait_turn(half->turn, 1);
        for (std::size_t i = half->begin; i < half->end; ++i)
          items[i] = square_wrapping(items[i]);
        give_turn(half->turn, 0);
      }
    });
  }
  auto map = [&](std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
      items[i] = static_cast<int>(i);
    for (std::size_t w = 0; w < kWorkers; ++w) {
      halves[w]->begin = n * w / kWorkers;
      halves[w]->end = n * (w + 1) / kWorkers;
      give_turn(halves[w]->turn, 1);
    }
    for (MapHalf* half : halves)
      wait_turn(half->turn, 0);
    return std::vector<int>(items, items + n);
  };
  map(kItems / 10);
  double t0 = now_s();
  std::vector<int> r = map(kItems);
  double t = now_s() - t0;
  for (pid_t child : children)
    bench::reap(child);
  for (std::size_t i : {std::size_t{0}, kItems / 2 - 1, kItems / 2, kItems - 1}) {
    if (r[i] != square_wrapping(static_cast<int>(i))) bench::die("wrong map result");
  }
  bench::result("pool_map_1m_auto", t / kItems * 1e6, "us/task");
}

// ---------------------------------------------------------------------------------------
// Chunks are handed out one at a time from a shared counter (like a pool with chunksize 1).
long primes_on_threads(int n_threads) {
  std::atomic<long> next{0}, total{0};
  auto work = [&] {
    long mine = 0;
    for (;;) {
      long lo = next.fetch_add(bench::kPrimeChunk);
      if (lo >= bench::kPrimeLimit) break;
      mine += bench::count_primes(lo, std::min(lo + bench::kPrimeChunk, bench::kPrimeLimit));
    }
    total += mine;
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < n_threads; ++i)
    threads.emplace_back(work);
  work();
  for (auto& t : threads)
    t.join();
  return total.load();
}

void cpu_primes_speedup() {
  int cpus = bench::usable_cpus();
  double t0 = now_s();
  long serial = 0;
  for (long lo = 0; lo < bench::kPrimeLimit; lo += bench::kPrimeChunk) {
    serial += bench::count_primes(lo, std::min(lo + bench::kPrimeChunk, bench::kPrimeLimit));
  }
  double t_serial = now_s() - t0;
  t0 = now_s();
  long parallel = primes_on_threads(cpus);
  double t_parallel = now_s() - t0;
  if (serial != bench::kPrimesBelow2M || parallel != serial) bench::die("wrong prime count");
  std::printf("EXTRA\tserial\t%.6g\ts\nEXTRA\tparallel\t%.6g\ts\nEXTRA\tworkers\t%d\t\n", t_serial,
              t_parallel, cpus);
  bench::result("cpu_primes_speedup", t_serial / t_parallel, "x");
}

// ---------------------------------------------------------------------------------------
void idle_worker_rss() {
  int ready[2], quit[2];
  if (pipe(ready) != 0 || pipe(quit) != 0) bench::die("pipe");
  pid_t child = bench::fork_child([&] {
    close(quit[1]);
    char c = 1;
    if (write(ready[1], &c, 1) != 1) bench::die("write");
    if (read(quit[0], &c, 1) < 0) bench::die("read");  // idle until the parent closes quit
  });
  char c = 0;
  if (read(ready[0], &c, 1) != 1) bench::die("read");
  double mib = bench::private_rss_mib(child);
  close(quit[1]);
  bench::reap(child);
  bench::result("idle_worker_rss", mib, "MiB");
}

// ---------------------------------------------------------------------------------------
void subprocess_run_true() {
  auto once = [] {
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    pid_t pid;
    if (posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0)
      bench::die("posix_spawn");
    bench::reap(pid);
  };
  bench::result("subprocess_run_true", bench::us_per_call(once, 300), "us/op");
}

// cat's output is read into a buffer of the input's size, allocated before the spawn.
double through_cat(const std::vector<char>& input) {
  const std::size_t n = input.size();
  double t0 = now_s();
  int to[2], from[2];
  if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) bench::die("pipe2");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, to[0], 0);
  posix_spawn_file_actions_adddup2(&actions, from[1], 1);
  char* argv[] = {const_cast<char*>("cat"), nullptr};
  pid_t pid;
  if (posix_spawn(&pid, "/bin/cat", &actions, nullptr, argv, environ) != 0)
    bench::die("posix_spawn");
  posix_spawn_file_actions_destroy(&actions);
  close(to[0]);
  close(from[1]);
  fcntl(to[1], F_SETFL, O_NONBLOCK);
  std::unique_ptr<char[]> out(new char[n]);
  std::size_t written = 0, got = 0;
  bool writing = true;
  for (;;) {
    pollfd fds[2];
    nfds_t k = 0;
    if (writing) fds[k++] = pollfd{to[1], POLLOUT, 0};
    fds[k++] = pollfd{from[0], POLLIN, 0};
    if (poll(fds, k, -1) < 0) bench::die("poll");
    if (writing && fds[0].revents != 0) {
      ssize_t w = write(to[1], input.data() + written, std::min<std::size_t>(n - written, 1 << 20));
      if (w < 0 && errno != EAGAIN) bench::die("write");
      if (w > 0) written += static_cast<std::size_t>(w);
      if (written == n) {
        close(to[1]);
        writing = false;
      }
    }
    if (fds[k - 1].revents != 0) {
      ssize_t r = read(from[0], out.get() + got, n - got);
      if (r < 0) bench::die("read");
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
  }
  close(from[0]);
  bench::reap(pid);
  double t = now_s() - t0;
  if (got != n || out[n - 1] != input[n - 1]) bench::die("cat returned something else");
  return static_cast<double>(n) / t / 1e9;
}

void subprocess_pipe_256mib() {
  std::vector<char> input(std::size_t{256} << 20, 'x');
  through_cat(std::vector<char>(input.begin(), input.begin() + (16 << 20)));  // warm-up
  bench::result("subprocess_pipe_256mib", through_cat(input), "GB/s");
}

// Blocking 64-byte ping-pong between this process and a forked child over sockets a, b.
void socket_pingpong(const char* name, int a, int b) {
  constexpr long kWarm = 2000, kN = 20000;
  auto exact = [](int fd, char* p, bool send) {
    for (std::size_t done = 0; done < 64;) {
      ssize_t n =
          send ? ::send(fd, p + done, 64 - done, MSG_NOSIGNAL) : ::recv(fd, p + done, 64 - done, 0);
      if (n <= 0) bench::die("socket ping-pong failed");
      done += static_cast<std::size_t>(n);
    }
  };
  pid_t child = bench::fork_child([&] {
    ::close(a);
    std::array<char, 64> buf{};
    for (long i = 0; i < kWarm + kN; ++i) {
      exact(b, buf.data(), false);
      exact(b, buf.data(), true);
    }
  });
  ::close(b);
  std::array<char, 64> out{}, in{};
  out.fill('x');
  auto round_trip = [&] {
    exact(a, out.data(), true);
    exact(a, in.data(), false);
  };
  const double us = bench::us_per_call(round_trip, kN, kWarm);
  ::close(a);
  bench::reap(child);
  if (in != out) bench::die("ping-pong corrupted the message");
  bench::result(name, us, "us/roundtrip");
}

void listener_roundtrip_64b() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) bench::die("socketpair");
  socket_pingpong("listener_roundtrip_64b", fds[0], fds[1]);
}

void listener_roundtrip_64b_tcp() {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof in;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&in), &len) != 0)
    bench::die("tcp listen");
  int a = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(a, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0) bench::die("tcp connect");
  int b = ::accept(listener, nullptr, nullptr);
  ::close(listener);
  const int one = 1;
  ::setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  socket_pingpong("listener_roundtrip_64b_tcp", a, b);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc == 2 ? argv[1] : "";
  if (which == kExitAtOnce) return 0;  // a process_start_join_spawn child
  struct Entry {
    const char* name;
    void (*run)();
  };
  const Entry entries[] = {
      {"process_start_join", process_start_join},
      {"process_start_join_spawn", process_start_join_spawn},
      {"process_start_join_forkserver", process_start_join_forkserver},
      {"pipe_roundtrip_64b", pipe_roundtrip_64b},
      {"queue_int_1to1", queue_int_1to1},
      {"queue_64b_1to1", queue_64b_1to1},
      {"queue_1mib_1to1", queue_1mib_1to1},
      {"lock_counter_2proc", lock_counter_2proc},
      {"pool_map_1m_auto", pool_map_1m_auto},
      {"cpu_primes_speedup", cpu_primes_speedup},
      {"idle_worker_rss", idle_worker_rss},
      {"subprocess_run_true", subprocess_run_true},
      {"subprocess_pipe_256mib", subprocess_pipe_256mib},
      {"listener_roundtrip_64b", listener_roundtrip_64b},
      {"listener_roundtrip_64b_tcp", listener_roundtrip_64b_tcp},
      {"memcpy_1mib", memcpy_1mib},  // a reference, not a workload of bench/compare
  };
  for (const Entry& e : entries) {
    if (which == e.name) {
      e.run();
      return 0;
    }
  }
  std::fprintf(stderr, "usage: %s <workload>; workloads:", argv[0]);
  for (const Entry& e : entries)
    std::fprintf(stderr, " %s", e.name);
  std::fprintf(stderr, "\n");
  return 2;
}
