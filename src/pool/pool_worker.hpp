// src/pool/pool_worker.hpp — the private mechanism of process pools: the shared memory a
// pool shares with its workers, the zygote that forks them, and the worker loop.
//
// Layout: MAP_SHARED|MAP_ANONYMOUS regions made before the zygote is forked (so the
// zygote and every worker it forks inherit them): a header page (owned by the pool's
// collector, src/pool/collector.cpp) and one slot per worker. A slot has two
// single-producer single-consumer byte rings (ByteRing, src/ipc/byte_ring.hpp): the
// inbox (parent -> worker: task frames, written by whichever parent thread submits,
// under the pool's lock) and the outbox (worker -> parent: results, read by whichever
// parent thread collects), plus the id of the task the worker is running, so the
// supervisor knows exactly which task a dead worker held, and a claim word by which the
// parent takes a queued task back for an idle worker. Frames larger than a ring stream
// through it.
// A worker takes every queued task before it waits; then it spins a bounded time
// (never on one CPU) and sleeps on the inbox's futex. After a result it wakes the
// collecting caller (a futex in the header) or, when no caller collects, rings the
// supervisor's eventfd (deferred while it spins: a caller usually collects first). After
// a long task of a map it may hold that wake-up back while it runs the next task of the
// same map (FrameFlags).
#pragma once

#include <sched.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ipc/byte_ring.hpp"
#include "mpx/detail/pool_task.hpp"
#include "mpx/detail/waiter.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"

namespace mpx::detail {

// The clock of the pool's timestamps (WorkerSlot::started_ns, per-task timeouts, spins).
inline int64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct WorkerSlot {
  alignas(64) std::atomic<uint64_t> current{0};  // id of the task running, 0: none
  std::atomic<int64_t> started_ns{0};            // CLOCK_MONOTONIC when it started
  // Settles which side has a task of the inbox that the parent wants back for an idle
  // worker. Task frames are numbered per worker (FrameHeader::seq, from 1; 0 is never
  // used). Low half: the seq of the frame the worker passed last (ran or skipped); high
  // half: 0, or the first seq the parent took back (it takes back the last queued
  // tasks, one by one, and gives this worker nothing new until the worker has passed
  // them and reset the high half). Both sides change it by compare-and-swap, so exactly
  // one of them has each task (take_back() in dispatch.cpp, take() in the worker).
  std::atomic<uint64_t> claim{0};
  // Where the worker last began to spin for a task or woke up to one (-1: asleep); a hint.
  std::atomic<int32_t> cpu{-1};
  // Where it last fell asleep (-1: never): where the kernel likely wakes it; a hint.
  std::atomic<int32_t> sleep_cpu{-1};
  // 1 while the worker runs the pool's initializer: a death then counts toward the
  // guard against an initializer that keeps killing its workers (restarts.cpp).
  std::atomic<uint32_t> in_init{0};
  // The parent has bytes for the inbox that did not fit: the worker rings the
  // supervisor once it made room.
  alignas(64) std::atomic<uint32_t> writer_waiting{0};
  // The seq of the last task frame the parent wrote whole into the inbox: tells the
  // worker how many tasks it has queued. Written with every task, read after long ones
  // only: in a line of its own, not in the lines the worker writes or reads per task.
  alignas(64) std::atomic<uint32_t> last_seq{0};
  ByteRing inbox;
  ByteRing outbox;

  // Only when no worker uses the slot.
  void reset() noexcept {
    current.store(0);
    started_ns.store(0);
    claim.store(0);
    last_seq.store(0);
    cpu.store(-1);
    sleep_cpu.store(-1);
    in_init.store(0);
    writer_waiting.store(0);
    inbox.reset();
    outbox.reset();
  }
};

// In its own page, owned by the pool's collector (it outlives the pool with the futures
// that point at it).
struct PoolHeader {
  // A worker notifies it after writing a result, when someone sleeps on it: the thread
  // that collects results for the callers.
  alignas(64) WaitWord results;
  // A caller collects results (so the supervisor need not be rung for them), and where
  // it last began to spin for them (a hint).
  alignas(64) std::atomic<uint32_t> collecting{0};
  std::atomic<int32_t> collector_cpu{-1};
  alignas(64) std::atomic<uint32_t> supervisor_sleeping{0};
  // A worker passed the tasks taken back from it and may take new ones: the supervisor
  // looks for tasks for it (queued, or queued behind another worker's running one).
  std::atomic<uint32_t> reopened{0};

  // Wakes the supervisor if it sleeps or is about to, through `doorbell` (an eventfd).
  // Call after a seq_cst fence that follows the change it must see (Dekker with its
  // store-flag-then-check). The first to ring takes the flag: one write per sleep, not
  // one per caller (a loop of Future::result() calls rang it some 900 times per 10k
  // tasks, five times per wake-up).
  void ring_supervisor(int doorbell) noexcept {
    if (supervisor_sleeping.load(std::memory_order_seq_cst) == 0 ||
        supervisor_sleeping.exchange(0, std::memory_order_seq_cst) == 0)
      return;
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(doorbell, &one, sizeof one);
  }
};

// Runs `during(others)` while `pid` (0: the calling thread) may run only on `others`:
// the CPUs it may run on now, less those in `avoid`; then puts its mask back, which moves
// no queued or running task. Narrowing the mask moves the task at once if it runs on an
// avoided CPU, and places its wake-up if it sleeps. Returns false, without calling
// `during`, when that avoids no CPU or leaves none, or the mask cannot be read or set.
template <class F>
bool with_cpus_avoided(pid_t pid, const cpu_set_t& avoid, F&& during) noexcept {
  cpu_set_t allowed, out, others;
  if (::sched_getaffinity(pid, sizeof allowed, &allowed) != 0) return false;
  CPU_AND(&out, &avoid, &allowed);
  CPU_XOR(&others, &allowed, &out);  // allowed, less avoid
  if (CPU_COUNT(&out) == 0 || CPU_COUNT(&others) == 0 ||
      ::sched_setaffinity(pid, sizeof others, &others) != 0)
    return false;
  during(static_cast<const cpu_set_t&>(others));
  ::sched_setaffinity(pid, sizeof allowed, &allowed);
  return true;
}

enum FrameKind : uint16_t {
  kFrameTask = 1,
  kFrameInitOk,
  kFrameInitError,
  kFrameResult,
  kFrameError,
  kFrameStop,  // parent -> worker: no more tasks; flush stdio and exit (close, join)
  kFramePad,   // parent -> worker: `size` bytes to skip (PaddedFrames)
};

// Task frame flags. A task of a group (a map's chunks, whose results are needed only all
// together): its worker may hold back the wake-up for its result while the worker goes
// on with the next frame, if that one is of the same group, and its queue is not about
// to run dry.
enum FrameFlags : uint16_t {
  kFrameGrouped = 1,    // a task of a group
  kFrameSameGroup = 2,  // of the same group as the frame before it in this inbox
};

// A worker reads a task frame that is whole in its inbox and in one piece where it lies,
// not copied out first (nor into a buffer faulted in for it). The bytes of frames of
// this size and more (a map's large chunks) stay there until the call returns: the
// parent makes them start at the inbox's start rather than cross its end, after a
// kFramePad frame, when it can, and keeps no copy of them (Assigned::body_at).
inline constexpr std::size_t kInPlaceFrame = std::size_t{64} << 10;

// 32 bytes: 8 more per frame cost a chunksize-1 map 5%.
struct FrameHeader {
  uint16_t kind;   // FrameKind
  uint16_t flags;  // FrameFlags (task frames)
  uint32_t seq;    // task frames: numbered per worker from 1 (WorkerSlot::claim)
  uint64_t task_id;
  uint64_t entry;  // task frames: the Entry's address; results, errors: the call's time, ns
  uint64_t size;   // body bytes that follow
};
static_assert(sizeof(FrameHeader) == 32);

// The shared region of one pool.
class WorkerShared {
 public:
  // `shareable`: a memfd's (take_fd()), for a zygote that is not a fork.
  WorkerShared(std::size_t workers, PoolHeader* header, bool shareable = false);
  // In a zygote that is not a fork: the parent's region, mapped from its memfd.
  WorkerShared(std::size_t workers, PoolHeader* header, sys::Mapping map) noexcept
      : workers_(workers), header_(header), map_(std::move(map)) {}
  static std::size_t bytes_for(std::size_t workers) noexcept {
    return kSlotsOffset + workers * sizeof(WorkerSlot);
  }
  sys::Fd take_fd() noexcept { return std::move(fd_); }
  PoolHeader* header() const noexcept { return header_; }
  WorkerSlot& slot(std::size_t i) const noexcept {
    return reinterpret_cast<WorkerSlot*>(map_.bytes() + kSlotsOffset)[i];
  }
  std::size_t size() const noexcept { return workers_; }
  int doorbell = -1;  // eventfd the workers ring

 private:
  static constexpr std::size_t kSlotsOffset = 4096;
  std::size_t workers_;
  PoolHeader* header_;
  sys::Fd fd_;
  sys::Mapping map_;
};

enum ZygoteKind : uint32_t {
  kZygoteSpawn = 1,  // supervisor -> zygote: fork a worker for slot
  kZygoteKill,       // supervisor -> zygote: SIGKILL the worker pid of slot
  kZygoteSpawned,    // zygote -> supervisor: slot's worker is pid (pid <= 0: fork failed,
                     // status: fork's errno, or -errno of pidfd_open)
  kZygoteExited,     // zygote -> supervisor: slot's worker pid ended with status
  kZygoteStop,       // supervisor -> zygote: kill the workers, reap them, exit
};

struct ZygoteMessage {
  uint32_t kind;
  uint32_t slot;
  int32_t pid;
  // kZygoteExited: Process::exitcode() convention, N for exit(N), -N for signal N.
  // kZygoteSpawn: the worker's number (detail::next_child_number).
  int32_t status;
};

struct Zygote {
  pid_t pid = -1;
  sys::Fd socket;  // SOCK_SEQPACKET to the zygote; closing it stops the zygote
};

// Forks the zygote (from the calling thread). Throws std::system_error.
Zygote start_zygote(WorkerShared& shared, const EngineOptions& options);
// Starts the zygote by spawn or forkserver (src/pool/zygote_spawn.cpp): a new run of
// the program (mpx::init) that receives the pool's shared regions (`shared`'s memfd and
// `header`, the memfd of its PoolHeader's page), the doorbell, its socket and its setup.
// Throws InvalidStateError without mpx::init, std::system_error.
Zygote start_zygote_by(StartMethod method, WorkerShared& shared, sys::Fd header,
                       const EngineOptions& options);
// The zygote's loop (src/pool/pool_worker.cpp): forks workers on the pool's requests on
// `sock`. Never returns.
[[noreturn]] void zygote_main(int sock, WorkerShared& shared, const EngineOptions& options);

}  // namespace mpx::detail
