// bench/boost_ipc.cpp — the Boost.Interprocess column, where Boost has the same thing.
//
// usage: mpx-bench-boost <workload>   (one warm-up + one measured repetition, one RESULT line)
//   pipe_roundtrip_64b   ping-pong over two message_queues of depth 1          us/roundtrip
//   queue_int_1to1       message_queue of int, depth 1024, producer -> consumer  items/s
//   queue_64b_1to1       message_queue of 64-byte messages, depth 1024            items/s
//   queue_1mib_1to1      message_queue of 1 MiB messages, depth 8                 GB/s
//   lock_counter_2proc   interprocess_mutex, 2 processes incrementing a counter   incr/s
//   queue_4to4           message_queue of int, depth 1024, 4 producers -> 4 consumers items/s
// The queues are named POSIX shared memory (/dev/shm/mpx-bench-<pid>-*), removed at exit;
// the child opens them by name, as an unrelated process would.
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>

#include <atomic>
#include <vector>

#include "bench_util.hpp"

namespace {

namespace bip = boost::interprocess;
using bench::now_s;

std::string queue_name(const char* tag) {
  return "mpx-bench-" + std::to_string(getpid()) + "-" + tag;
}

// Removes the named queues on every way out of the measuring function.
struct QueueNames {
  std::vector<std::string> names;
  ~QueueNames() {
    for (const auto& n : names)
      bip::message_queue::remove(n.c_str());
  }
};

void pipe_roundtrip_64b() {
  constexpr long kWarm = 300, kN = 3000;
  QueueNames q{{queue_name("ping"), queue_name("pong")}};
  bip::message_queue ping(bip::create_only, q.names[0].c_str(), 1, 64);
  bip::message_queue pong(bip::create_only, q.names[1].c_str(), 1, 64);
  pid_t child = bench::fork_child([&] {
    bip::message_queue in(bip::open_only, q.names[0].c_str());
    bip::message_queue out(bip::open_only, q.names[1].c_str());
    char buf[64];
    std::size_t got = 0;
    unsigned prio = 0;
    for (long i = 0; i < kWarm + kN; ++i) {
      in.receive(buf, sizeof buf, got, prio);
      out.send(buf, got, 0);
    }
  });
  char msg[64] = {}, back[64] = {};
  std::size_t got = 0;
  unsigned prio = 0;
  auto round_trip = [&] {
    ping.send(msg, sizeof msg, 0);
    pong.receive(back, sizeof back, got, prio);
  };
  const double us = bench::us_per_call(round_trip, kN, kWarm);
  bench::reap(child);
  bench::result("pipe_roundtrip_64b", us, "us/roundtrip");
}

double queue_rate(std::size_t size, std::size_t depth, long warm, long count) {
  QueueNames q{{queue_name("queue")}};
  bip::message_queue queue(bip::create_only, q.names[0].c_str(), depth, size);
  pid_t child = bench::fork_child([&] {
    bip::message_queue out(bip::open_only, q.names[0].c_str());
    std::vector<char> item(size, 'x');
    for (long i = 0; i < warm + count; ++i)
      out.send(item.data(), size, 0);
  });
  std::vector<char> item(size);
  std::size_t got = 0;
  unsigned prio = 0;
  for (long i = 0; i < warm; ++i)
    queue.receive(item.data(), size, got, prio);
  double t0 = now_s();
  for (long i = 0; i < count; ++i)
    queue.receive(item.data(), size, got, prio);
  double t = now_s() - t0;
  bench::reap(child);
  return static_cast<double>(count) / t;
}

void queue_int_1to1() {
  bench::result("queue_int_1to1", queue_rate(sizeof(int), 1024, 30000, 300000), "items/s");
}
void queue_64b_1to1() {
  bench::result("queue_64b_1to1", queue_rate(64, 1024, 30000, 300000), "items/s");
}
void queue_1mib_1to1() {
  double rate = queue_rate(1u << 20, 8, 50, 500);
  bench::result("queue_1mib_1to1", rate * (1u << 20) / 1e9, "GB/s");
}

// The children use the queue the parent created (its mapping is inherited across fork).
void queue_4to4() {
  QueueNames q{{queue_name("queue4")}};
  bip::message_queue queue(bip::create_only, q.names[0].c_str(), 1024, sizeof(int));
  auto put = [&](long i) {
    int v = static_cast<int>(i);
    queue.send(&v, sizeof v, 0);
  };
  auto get = [&] {
    int v = 0;
    std::size_t got = 0;
    unsigned prio = 0;
    queue.receive(&v, sizeof v, got, prio);
  };
  bench::many_to_many_rate(4, 4, 5000, put, get);
  bench::result("queue_4to4", bench::many_to_many_rate(4, 4, 50000, put, get), "items/s");
}

struct Counter {
  bip::interprocess_mutex mutex;
  std::atomic<int> go{0};
  alignas(64) long value = 0;
};

double counter_rate(Counter* c, long per_process) {
  c->value = 0;
  c->go.store(0);
  pid_t kids[2];
  for (pid_t& kid : kids) {
    kid = bench::fork_child([c, per_process] {
      while (c->go.load(std::memory_order_acquire) == 0)
        sched_yield();
      for (long i = 0; i < per_process; ++i) {
        bip::scoped_lock<bip::interprocess_mutex> lock(c->mutex);
        ++c->value;
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
  // interprocess_mutex is a process-shared pthread mutex: an anonymous shared mapping
  // inherited across fork is enough (no named segment needed).
  auto* c = bench::shared_new<Counter>();
  counter_rate(c, 200000);
  bench::result("lock_counter_2proc", counter_rate(c, 2000000), "incr/s");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc == 2 ? argv[1] : "";
  struct Entry {
    const char* name;
    void (*run)();
  };
  const Entry entries[] = {
      {"pipe_roundtrip_64b", pipe_roundtrip_64b}, {"queue_int_1to1", queue_int_1to1},
      {"queue_64b_1to1", queue_64b_1to1},         {"queue_1mib_1to1", queue_1mib_1to1},
      {"lock_counter_2proc", lock_counter_2proc}, {"queue_4to4", queue_4to4},
  };
  for (const Entry& e : entries) {
    if (which == e.name) {
      try {
        e.run();
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "%s: %s\n", e.name, ex.what());
        return 1;
      }
      return 0;
    }
  }
  std::fprintf(stderr, "usage: %s <workload>; workloads:", argv[0]);
  for (const Entry& e : entries)
    std::fprintf(stderr, " %s", e.name);
  std::fprintf(stderr, "\n");
  return 2;
}
