// src/mpi/wire.hpp — what the ranks of an MPI pool say to each other, and the pieces both
// sides share: the messages' layout, the communication thread's sends and its gentle
// idle wait, and Server, the local pool a rank runs a driver's pool's tasks in.
//
// Every message carries its kind as its MPI tag and starts with the pool's id (u64):
//   driver -> rank  kOpen      workers, maxtasksperchild, timeout ns (or kNoTimeout),
//                              initializer address (0: none), its arguments,
//                              run_batch's address, start method (StartMethod's value:
//                              the driver's default when the pool named none)
//                   kTasks     records {task id, entry address, size, args}
//                   kClose     close the rank's pool once its tasks are done
//                   kTerminate stop it now (its tasks end abandoned)
//                   kShutdown  (no pool: id 0) the driver's main ended; finalize, exit
//   rank -> driver  kOpened    workers (0: the pool could not start), error text
//                   kResults   records {task id, status, size, bytes}
//                   kClosed    the rank's pool is joined (after its last kResults)
// Addresses are the driver's (mpx/detail/function_id.hpp translates them): a rank adopts
// its table, and so do its pools' workers (EngineOptions::task_modules).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mpx/detail/pool_task.hpp"
#include "mpx/errors.hpp"

namespace mpx::mpi::detail {

using mpx::detail::ByteVector;

enum Kind : int {
  kOpen = 1,
  kOpened,
  kTasks,
  kResults,
  kClose,
  kTerminate,
  kClosed,
  kShutdown,
};
// kFailed: encode_exception's bytes; kLost: a WorkerLost's pid and status (u64 each);
// kBroken: a BrokenPool's message.
enum Status : std::uint64_t { kOk = 0, kFailed, kAbandoned, kLost, kBroken };
inline constexpr std::uint64_t kNoTimeout = ~std::uint64_t{0};

inline void put(ByteVector& out, std::uint64_t v) {
  const std::size_t at = out.size();
  out.resize(at + sizeof v);
  std::memcpy(out.data() + at, &v, sizeof v);
}
inline void put(ByteVector& out, std::span<const std::byte> bytes) {
  put(out, bytes.size());
  out.insert(out.end(), bytes.begin(), bytes.end());
}

// Reads a message; a short one throws DecodeError (a bug, or another program).
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool done() const noexcept { return in_.empty(); }
  std::uint64_t u64() {
    std::uint64_t v;
    need(sizeof v);
    std::memcpy(&v, in_.data(), sizeof v);
    in_ = in_.subspan(sizeof v);
    return v;
  }
  std::span<const std::byte> bytes() {
    const std::uint64_t n = u64();
    need(n);
    auto b = in_.first(static_cast<std::size_t>(n));
    in_ = in_.subspan(static_cast<std::size_t>(n));
    return b;
  }

 private:
  void need(std::uint64_t n) const {
    if (in_.size() < n) throw DecodeError("mpx: a truncated message between MPI ranks");
  }
  std::span<const std::byte> in_;
};

// Sleeps while nothing happens, a little longer each time, and wakes at once when
// poked: the communication thread polls MPI, which has no way to wake a thread, and a
// rank that waits in MPI burns a core. While tasks are out (`active`) a message is due
// soon: the pause stays under 100 us for the first 20 ms without one; otherwise (and
// for long tasks, after that) it grows to a millisecond.
class Idle {
 public:
  void poke() noexcept {
    if (poked_.exchange(true, std::memory_order_acq_rel)) return;
    std::lock_guard lock(mutex_);
    cv_.notify_one();
  }
  // After a round that did something.
  void busy() noexcept {
    rounds_ = 0;
    slept_us_ = 0;
  }
  void wait(bool active) {
    ++rounds_;
    if (poked_.exchange(false, std::memory_order_acq_rel)) return;
    if (rounds_ < kSpins) return;
    const bool soon = active && slept_us_ < kActiveMicros;
    const int most = soon ? kActivePauseMicros : kIdlePauseMicros;
    const unsigned step = std::min(rounds_ - kSpins, 8u);
    const int pause = std::min(10 << step, most);
    slept_us_ += pause;
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, std::chrono::microseconds(pause),
                 [&] { return poked_.load(std::memory_order_acquire); });
    poked_.store(false, std::memory_order_release);
  }

 private:
  static constexpr unsigned kSpins = 64;
  static constexpr int kActivePauseMicros = 100;
  static constexpr int kActiveMicros = 20000;
  static constexpr int kIdlePauseMicros = 1000;
  std::atomic<bool> poked_{false};
  unsigned rounds_ = 0;
  int slept_us_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
};

// Non-blocking sends, their buffers kept until MPI is done with them (src/mpi/job.cpp).
class Sender {
 public:
  Sender();
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;
  ~Sender();
  void send(int rank, Kind kind, ByteVector message);
  // Frees the buffers of finished sends; true if any finished.
  bool progress();
  // Waits for every send (job end).
  void flush();
  bool idle() const noexcept { return sends_.empty(); }

 private:
  struct Pending;
  std::deque<std::unique_ptr<Pending>> sends_;
};

// A message received: its source rank, kind and bytes.
struct Message {
  int source = 0;
  Kind kind = kOpen;
  ByteVector bytes;
};
// The next message waiting, if any (MPI_Iprobe, then its receive).
std::optional<Message> poll_message();

// Where a rank (or the driver, when it runs tasks) runs one driver pool's tasks: a local
// process pool whose outcomes queue here until the communication thread sends them
// (src/mpi/server.cpp; tiny tasks go to workers in batches).
class Server {
 public:
  // `options.initializer` is already this process's address; task entries are not
  // (the workers translate them), nor is `batch_entry`, run_batch's address as the
  // driver sent it.
  Server(mpx::detail::EngineOptions options, Idle& idle, std::uint64_t batch_entry);
  ~Server();
  std::size_t workers() const noexcept { return engine_.workers(); }
  // Decodes a kTasks message's records (after the pool id) and queues them.
  void submit(Reader& records);
  // The driver's own server: queues one task (its entry as is), then flush().
  void add(std::uint64_t id, std::uint64_t entry, ByteVector args);
  void flush();
  // Outcomes since the last call, as kResults records (appended to `out`).
  bool take_results(ByteVector& out);
  // Whether tasks given to it have no outcome yet.
  bool busy() const noexcept;
  void close() { engine_.close(); }
  void terminate() { engine_.terminate(); }
  void join() { engine_.join(); }

 private:
  class Sink;
  struct Queued;
  mpx::detail::Task single(Queued& q);
  std::uint64_t batch_entry_;  // 0: no batches
  std::shared_ptr<Sink> sink_;
  mpx::detail::Engine engine_;
  std::vector<Queued> queued_;
};

// A batch of tasks in one worker call: records {entry, args} in, {status, bytes} out.
void run_batch(std::span<const std::byte> args, ByteVector& out);

// The job (src/mpi/job.cpp).
int my_rank() noexcept;
int ranks() noexcept;
bool initialized() noexcept;
// The driver's communication thread, which the engines of its pools talk to
// (src/mpi/driver.cpp); started by init on rank 0, stopped at exit.
void start_driver();
void stop_driver();
// Serves the driver until it says kShutdown (ranks other than 0).
void serve();

}  // namespace mpx::mpi::detail
