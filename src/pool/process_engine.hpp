// src/pool/process_engine.hpp — the engine of process workers (Pool, ProcessPoolExecutor):
// one class, ProcessImpl, whose parts live in several files:
//   process_engine.cpp  life of the engine; the submitting side
//   dispatch.cpp        handing tasks to workers' inboxes, rebalancing, waking workers
//   collector.cpp       reading results: the collector role callers take, matching frames
//                       with tasks, delivering outcomes
//   supervisor.cpp      the supervisor thread's loop: callbacks, timeouts, sleeping
//   restarts.cpp        workers' lives: spawning through the zygote, deaths, restarts
// The worker's side and the zygote: src/pool/pool_worker.{hpp,cpp}; the zygote of a
// spawn or forkserver pool: src/pool/zygote_spawn.cpp.
//
// Process workers have a pair of shared-memory byte rings each (src/pool/pool_worker.hpp).
// The task path has no hop through a thread of the pool:
// - Submitting: the submitting thread writes the task frame straight into the inbox of
//   a worker with room (under the engine's lock) and records it in that worker's
//   `assigned` list. Tasks beyond the workers' queue depth wait in `pending`. Once
//   `pending` is empty, a task queued behind another in a busy worker's inbox is taken
//   back for an idle worker (rebalance(); WorkerSlot::claim settles the race).
// - Results: a thread that waits for a result (Future::wait/result/get, map, imap)
//   becomes the collector (one at a time; the others wait on their own futures and are
//   told when the role is free): it drains the outboxes, completes the futures it finds
//   and refills the workers that made room. It spins a bounded time, then sleeps on a
//   futex the workers ring after each result. Sinks with user callbacks are handed to
//   the supervisor, so callbacks run on the pool's thread as in Python.
// - The supervisor thread owns the rest: deaths (the zygote reports them), per-task
//   timeouts, restarts, redispatch of a dead worker's unstarted tasks, lazy input
//   (feeders), callbacks, and reading results while no caller collects. It sleeps in
//   poll() while a caller collects. Workers ring it (an eventfd) only when no caller
//   collects; a collector that stops looks at the outboxes and rings it for what it
//   left (store-flag, fence, check on both sides: no lost wake-up).
// Locks: read_mutex_ (reading outboxes) before `mutex` (queues, slots, inbox writes).
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mpx/detail/pool_task.hpp"
#include "mpx/detail/waiter.hpp"
#include "pool/engine_impl.hpp"
#include "pool/pool_worker.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"

namespace mpx::detail {

// Wakes the sleepers of `word` after the state it guards changed; costs no atomic
// read-modify-write when nobody sleeps (the fence pairs with the sleeper's
// register-then-check in wait_until()).
inline void wake_sleepers(WaitWord& word) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (word.sleepers.load(std::memory_order_seq_cst) != 0) notify(word);
}

class ProcessImpl;

// Lets the threads that wait for a pool's results read them (see the top of this file).
// One of them at a time holds the role of collector; the others wait on their own
// futures and are notified when the role is free.
class ProcessCollector final : public Collector {
 public:
  // `shareable`: the page is a memfd's, for a zygote that is not a fork (take_fd()).
  explicit ProcessCollector(bool shareable) {
    static_assert(sizeof(PoolHeader) <= kPage);
    if (shareable) {
      page_fd_ = sys::memfd("mpx-pool-header", kPage);
      page_ = sys::map_shared(page_fd_.get(), kPage);
    } else {
      page_ = sys::map_anonymous_shared(kPage);
    }
    new (page_.bytes()) PoolHeader();
  }
  PoolHeader* header() const noexcept { return reinterpret_cast<PoolHeader*>(page_.bytes()); }
  // The memfd of a shareable page (then closed here: the zygote keeps its copy).
  sys::Fd take_fd() noexcept { return std::move(page_fd_); }
  static constexpr std::size_t kPage = 4096;

  bool wait(WaitWord& word, ReadyRef ready, const Deadline& deadline) override;
  void poke() noexcept override;

  void attach(ProcessImpl* impl) {
    std::lock_guard lock(mutex_);
    impl_ = impl;
  }
  // Later waits are plain waits; waits for the collector of the moment to stop (it
  // does once its own result is in: all are, when the pool is gone).
  void detach() {
    std::unique_lock lock(mutex_);
    impl_ = nullptr;
    released_.wait(lock, [&] { return !role_.load(std::memory_order_relaxed); });
  }

 private:
  // How long a collector spins on the outboxes before it sleeps.
  static constexpr int64_t kSpinNs = 50'000;
  static constexpr int64_t kYieldAfterNs = 5'000;
  enum class Role { kTaken, kBusy, kDetached };
  Role take_role(ProcessImpl*& impl);
  void give_role(ProcessImpl* impl);
  bool collect(ProcessImpl& impl, ReadyRef ready, const Deadline& deadline);

  std::mutex mutex_;
  std::condition_variable released_;
  ProcessImpl* impl_ = nullptr;
  std::atomic<bool> role_{false};
  std::vector<WaitWord*> waiting_;  // of threads waiting while another collects
  sys::Mapping page_;
  sys::Fd page_fd_;
};

class ProcessImpl final : public Engine::Impl {
 public:
  // process_engine.cpp
  explicit ProcessImpl(EngineOptions opts);
  ~ProcessImpl() override;
  void wake() noexcept override;
  void join_workers() override;
  std::vector<pid_t> pids() const override;
  // Tasks were queued (lock held): hand them to workers with room at once, from this
  // thread. The rest wait for room, made by whoever reads results.
  void submitted(std::unique_lock<std::mutex>& lock) override;
  bool take_now(Task& task) override;
  bool take_written(Task& task, std::size_t size, Engine::ArgsWriter write, void* ctx) override;
  void release_started_args() noexcept override;

  // Tasks take long enough that spinning for their results only takes a CPU from the
  // workers: the next result is more than a wake-up away, and the worker that writes
  // it does not wait for the reader.
  bool long_tasks() const noexcept {
    return avg_task_ns_.load(std::memory_order_relaxed) >= kShortTaskNs;
  }
  // Whether some outbox has bytes (a hint: no lock).
  // While a collector spins: the next results' lines (ByteRing::prefetch_next()).
  void prefetch_results() const noexcept {
    for (std::size_t i = 0; i < slots_.size(); ++i)
      pool_->slot(i).outbox.prefetch_next();
  }
  bool results_readable() const noexcept {
    for (std::size_t i = 0; i < slots_.size(); ++i)
      if (pool_->slot(i).outbox.readable() != 0) return true;
    return false;
  }

  // collector.cpp
  // Reads what the workers wrote and completes those tasks, refilling the workers that
  // made room. Sinks with callbacks go to the supervisor's run_handoffs(), which a
  // caller (not on_supervisor) rings. `deadline`: how long to wait for another reader.
  // `if_free`: only if no other thread reads, nor this one further up its stack (a done
  // callback that submits). Returns whether it read anything.
  bool collect(bool on_supervisor, bool if_free = false,
               const Deadline& deadline = Deadline::never());
  void deliver();
  // The collector stops collecting: results it left in an outbox go to the supervisor,
  // and queued tasks too (while a caller collects, the supervisor leaves them to it).
  void collector_leaving() noexcept;

 private:
  struct Assigned {
    uint64_t id;
    uint32_t seq;  // its frame's number in this worker's inbox (WorkerSlot::claim)
    Task task;
    int64_t dispatched_ns;
    // A large frame written whole and in one piece: its worker reads the body in place
    // (kInPlaceFrame), where it stays until the call returns, so task.args went back
    // for reuse at once (a map of a million ints faulted in a fresh 500 KB buffer for
    // most of its chunks) and is copied back from there should another worker need it
    // (take_args()). Its position in the inbox, and its size (0: not so).
    uint64_t body_at = 0;
    std::size_t body_size = 0;
  };
  struct Outgoing {
    FrameHeader header;
    const ByteVector* body;
  };
  struct SlotState {
    pid_t pid = 0;  // 0: no worker (being spawned or dead)
    bool spawning = false;
    bool init_ok = false;
    std::size_t given = 0;                 // tasks handed to this worker over its life
    uint32_t seq = 0;                      // of the last frame for its inbox (FrameHeader::seq)
    const TaskSink* last_group = nullptr;  // that frame's group (FrameFlags), if any
    bool closed = false;       // tasks were taken back from it: it gets none until it passed them
    uint64_t last_result = 0;  // when it answered last: results_matched_ then
    uint64_t timed_out = 0;    // id of the task it was killed for
    std::deque<Assigned> assigned;
    // Frames being written to its inbox (they did not fit at once).
    std::deque<Outgoing> out;
    std::size_t out_offset = 0;
    bool stop_sent = false;  // it was asked to leave (kFrameStop)
    // Restarts (restarts.cpp): when the next worker is due (0: none waits), how many
    // workers in a row died or failed to fork here before finishing a task, and whether
    // the present one finished one.
    int64_t restart_ns = 0;
    unsigned failures = 0;
    bool worked = false;
    bool written = false;  // assign() wrote a frame that wake_assigned() has not rung for
    bool wake = false;     // wake_assigned(): it sleeps and must be woken
  };
  // The frame being read from a worker's outbox (under read_mutex_).
  struct ReadState {
    FrameHeader header{};
    std::size_t header_got = 0;
    ByteVector body;
    std::size_t body_got = 0;
    // A large result read straight to its sink's place (TaskSink::result_place): its
    // first place.head bytes go to `body`, the rest to place.rest. `sink` keeps the
    // place alive.
    ResultPlace place;
    std::shared_ptr<TaskSink> sink;
  };
  struct Frame {
    std::size_t slot;
    FrameHeader header;
    ByteVector body;
    bool placed = false;  // ReadState::place: `body` holds the head only
  };
  // A task's outcome, to hand to its sink outside the engine's lock.
  struct Delivery {
    std::shared_ptr<TaskSink> sink;
    std::size_t tag = 0;
    uint32_t kind = 0;  // kFrameResult or kFrameError (body); 0: `error`
    ByteVector body;
    std::exception_ptr error;
    bool placed = false;  // Frame::placed
    void run() noexcept {
      if (!sink) return;
      if (kind == kFrameResult && placed) {
        const TaskResult one{tag, body, true};
        sink->task_results(std::span(&one, 1));
      } else if (kind == kFrameResult) {
        sink->task_result(tag, body);
      } else if (kind == kFrameError) {
        sink->task_failed(tag, decode_exception(body));
      } else {
        sink->task_failed(tag, error);
      }
    }
    void abandon() noexcept {
      if (sink) sink->task_abandoned(tag);
    }
  };

  // Tasks handed to one worker at once. Short tasks get a deep queue, so that a worker
  // finds its next task without waiting for the parent (a sleeping worker costs a
  // wake-up per task); long ones a shallow one, so that no worker sits on tasks another
  // idle worker could run.
  static constexpr std::size_t kShallow = 2;
  static constexpr std::size_t kShallowGroup = 4;
  static constexpr std::size_t kDeep = 64;
  static constexpr int64_t kShortTaskNs = 200'000;
  // A long task of a group (a map's chunk) gets a deeper queue: its worker then wakes the
  // collector once per few results, not once per result (FrameFlags), and an
  // idle worker takes queued tasks back (rebalance()). Futures' tasks keep a shallow one:
  // a task handed to a worker counts as running and can no longer be cancelled.
  std::size_t depth(bool of_group) const noexcept {
    if (!long_tasks()) return kDeep;
    return of_group ? kShallowGroup : kShallow;
  }
  // How long tasks take (an exponential moving average of the calls' times, which the
  // workers report in their result frames). Lock held. Measured here, from dispatch or
  // the worker's previous result to reading the result, it took in the wait for a
  // reader that shared its CPU: one reader 2 ms late turned a burst of 0.2 us calls
  // into "long tasks" (queues two deep, no spinning) several times per 10k calls.
  void record_task_time(uint64_t took_ns) noexcept {
    const auto took = static_cast<int64_t>(std::min<uint64_t>(took_ns, uint64_t{1} << 40));
    const int64_t avg = avg_task_ns_.load(std::memory_order_relaxed);
    avg_task_ns_.store(avg + (took - avg) / 8, std::memory_order_relaxed);
  }

  // supervisor.cpp: the supervisor thread's loop and what it alone does.
  void supervise();
  bool run_handoffs();
  bool finished();
  void check_timeouts();
  int next_timeout_ms();
  void sleep();
  // Whether a worker reopened since the last look (PoolHeader::reopened).
  bool reopened() noexcept {
    return header_->reopened.load(std::memory_order_relaxed) != 0 &&
           header_->reopened.exchange(0, std::memory_order_acq_rel) != 0;
  }

  // dispatch.cpp: handing tasks to workers.
  long pick(bool of_group) noexcept;
  bool has_room(std::size_t i, bool of_group) noexcept;
  bool rebalance();
  bool take_back(std::size_t i) noexcept;
  bool fill(std::unique_lock<std::mutex>& lock, bool use_feeders);
  void wake_assigned() noexcept;
  void wake_elsewhere(std::size_t i, cpu_set_t& taken, int here) noexcept;
  void assign(std::size_t i, Task task, int64_t now, bool of_group);
  FrameHeader new_frame(std::size_t i, const Task& task, std::size_t size, bool of_group);
  long slot_now(const Task& task, bool& of_group);
  Assigned& record(std::size_t i, const FrameHeader& h, Task task, int64_t now);
  void mark_written(std::size_t i, const FrameHeader& h) noexcept;
  void drop_outgoing(SlotState& s) noexcept;
  bool take_args(Assigned& a, ByteVector& buffer) noexcept;
  bool pump(std::size_t i);
  static bool in_one_piece(const ByteRing& inbox, std::size_t size) noexcept;
  bool write_frame(std::size_t i, const FrameHeader& h, Assigned& a);
  void mark_in_place(Assigned& a, const ByteRing& inbox) noexcept;
  bool dispatch();
  // Whether a task is of a group (FrameFlags): its sink needs its tasks' results only all
  // together.
  static bool grouped(const Task& t) noexcept { return t.sink && t.sink->whole(); }
  // Whether the next queued task is of a group (lock held).
  bool next_grouped() const noexcept { return !pending.empty() && grouped(pending.front()); }
  // Whether dispatch() may find anything to do, read without the lock: the counts are
  // exact whenever the lock is free, and sleep() looks again under the lock.
  bool may_dispatch() const noexcept {
    return pending_count.load(std::memory_order_relaxed) != 0 || dispatch_on_event();
  }
  // Lazy input or frames that did not fit: what the supervisor dispatches even while a
  // caller collects.
  bool dispatch_on_event() const noexcept {
    return feeder_count.load(std::memory_order_relaxed) != 0 ||
           outgoing_.load(std::memory_order_relaxed) != 0;
  }

  // collector.cpp: reading frames.
  // `places`: large results may go straight to their sinks' places (not with the
  // engine's lock held).
  bool read_frames(std::size_t i, std::vector<Frame>& out, bool places = true);
  bool find_place(std::size_t i, ReadState& r);
  void recycle(ByteVector& body);
  bool match(Frame& f, std::vector<Delivery>& out);
  static constexpr std::size_t kLargeBody = std::size_t{64} << 10;

  // restarts.cpp: workers' lives.
  void spawn(std::size_t i);
  void send_zygote(ZygoteMessage m);
  void zygote_gone();
  bool read_zygote();
  void worker_exited(std::size_t i, pid_t pid, int status);
  void restart_later(std::size_t i, int64_t now);
  void start_due_workers();
  void fail_if_no_worker();
  int next_restart_ms();
  void start_workers();
  void wait_zygote(int timeout_ms);
  void let_workers_leave();
  void stop_zygote();
  void shutdown();
  // Restarts back off: a worker that died or failed to fork before finishing a task is
  // replaced at once the first time, then after 10 ms, doubling up to 1 s, so that a
  // crash loop (an outside killer, an initializer that crashes, fork failing) does not
  // spin. Queued tasks fail only when no worker could exist for kNoWorkerNs.
  static constexpr int64_t kBackoffNs = 10'000'000;
  static constexpr int64_t kMaxBackoffNs = 1'000'000'000;
  static constexpr int64_t kNoWorkerNs = 5'000'000'000;
  // How long close() + join() wait for idle workers to flush and exit before the zygote
  // kills them.
  static constexpr int64_t kLeaveGraceNs = 10'000'000'000;

  PoolHeader* header_ = nullptr;
  std::shared_ptr<ProcessCollector> process_collector_;
  std::unique_ptr<WorkerShared> pool_;
  sys::Fd doorbell_;
  Zygote zygote_;
  // Under `mutex`:
  std::vector<SlotState> slots_;
  std::deque<Delivery> handoff_;          // collected by callers, for the supervisor to complete
  std::atomic<std::size_t> handoffs_{0};  // handoff_.size(), readable without the lock
  std::atomic<std::size_t> outgoing_{0};  // frames in the slots' `out`, likewise
  uint64_t next_id_ = 0;
  uint64_t results_matched_ = 0;  // match(): results so far
  int init_failures_ = 0;
  // Written under `mutex`, read anywhere. Unknown at first: shallow queues.
  std::atomic<int64_t> avg_task_ns_{kShortTaskNs};
  bool zygote_lost_ = false;
  bool leaving_ = false;                   // the workers are told to leave: none is started again
  int64_t no_worker_since_ns_ = 0;         // no worker alive, and a fork failed, since (0: not so)
  int fork_error_ = 0;                     // the last failed fork's (ZygoteMessage::status)
  std::atomic<bool> restarts_due_{false};  // start_due_workers() has work (or may)
  // Under read_mutex_ (taken before `mutex`):
  std::mutex read_mutex_;
  std::atomic<std::thread::id> reader_{};  // the thread that holds read_mutex_ (in collect())
  std::vector<ReadState> reads_;
  std::vector<Frame> frames_;
  std::vector<Delivery> deliveries_;
  std::vector<TaskResult> results_;       // deliver()
  std::vector<ByteVector> spare_bodies_;  // see recycle()
  std::size_t spare_bytes_ = 0;
  // The supervisor thread only.
  std::thread supervisor_;
};

}  // namespace mpx::detail
