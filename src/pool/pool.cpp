// The worker engine behind Pool, ThreadPool and the executors (mpx/detail/pool_task.hpp).
//
// Thread workers pop tasks from the shared queue themselves.
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
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cxxabi.h>
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <typeinfo>

#include "mpx/detail/pool_task.hpp"
#include "mpx/detail/waiter.hpp"
#include "mpx/errors.hpp"
#include "pool/pool_worker.hpp"
#include "pool/state_memory.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

std::size_t cpu_count() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<std::size_t>(n);
  }
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<std::size_t>(n) : 1;
}

void prefault(void* p, std::size_t bytes) noexcept {
  sys::prefault(p, bytes);
}

void reserve_prefaulted(ByteVector& v, std::size_t n) {
  if (n <= v.capacity()) return;
  v.reserve(n);
  if (n >= kPrefaultBytes) prefault(v.data() + v.size(), n - v.size());
}

// ---------------------------------------------------------------------------
// Exceptions across the process boundary.

namespace {

enum ExceptionCode : uint32_t {
  kRemote = 0,
  kRuntimeError,
  kLogicError,
  kInvalidArgument,
  kOutOfRange,
  kLengthError,
  kDomainError,
  kRangeError,
  kOverflowError,
  kUnderflowError,
  kBadAlloc,
  kMpxError,
  kMpxTimeoutError,
  kMpxValueError,
  kMpxInvalidStateError,
  kMpxDecodeError,
  kMpxUsageError,
};

std::string demangle(const char* name) {
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string result = status == 0 && out ? out : name;
  std::free(out);
  return result;
}

void put_u32(ByteVector& out, uint32_t v) {
  auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}
void put_string(ByteVector& out, const std::string& s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}
uint32_t get_u32(std::span<const std::byte>& in) {
  uint32_t v = 0;
  if (in.size() < sizeof v) throw DecodeError("truncated exception record");
  std::memcpy(&v, in.data(), sizeof v);
  in = in.subspan(sizeof v);
  return v;
}
std::string get_string(std::span<const std::byte>& in) {
  uint32_t n = get_u32(in);
  if (in.size() < n) throw DecodeError("truncated exception record");
  std::string s(reinterpret_cast<const char*>(in.data()), n);
  in = in.subspan(n);
  return s;
}

}  // namespace

void encode_exception(std::exception_ptr error, ByteVector& out) {
  uint32_t code = kRemote;
  std::string type = "unknown exception";
  std::string message;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    const std::type_info& t = typeid(e);
    type = demangle(t.name());
    message = e.what();
    if (t == typeid(std::runtime_error))
      code = kRuntimeError;
    else if (t == typeid(std::logic_error))
      code = kLogicError;
    else if (t == typeid(std::invalid_argument))
      code = kInvalidArgument;
    else if (t == typeid(std::out_of_range))
      code = kOutOfRange;
    else if (t == typeid(std::length_error))
      code = kLengthError;
    else if (t == typeid(std::domain_error))
      code = kDomainError;
    else if (t == typeid(std::range_error))
      code = kRangeError;
    else if (t == typeid(std::overflow_error))
      code = kOverflowError;
    else if (t == typeid(std::underflow_error))
      code = kUnderflowError;
    else if (t == typeid(std::bad_alloc))
      code = kBadAlloc;
    else if (t == typeid(mpx::Error))
      code = kMpxError;
    else if (t == typeid(mpx::TimeoutError))
      code = kMpxTimeoutError;
    else if (t == typeid(mpx::ValueError))
      code = kMpxValueError;
    else if (t == typeid(mpx::InvalidStateError))
      code = kMpxInvalidStateError;
    else if (t == typeid(mpx::DecodeError))
      code = kMpxDecodeError;
    else if (t == typeid(mpx::UsageError))
      code = kMpxUsageError;
  } catch (...) {
  }
  put_u32(out, code);
  put_u32(out, static_cast<uint32_t>(::getpid()));
  put_string(out, type);
  put_string(out, message);
}

std::exception_ptr decode_exception(std::span<const std::byte> bytes) {
  try {
    uint32_t code = get_u32(bytes);
    auto pid = static_cast<pid_t>(get_u32(bytes));
    std::string type = get_string(bytes);
    std::string msg = get_string(bytes);
    switch (code) {
      case kRuntimeError:
        return std::make_exception_ptr(std::runtime_error(msg));
      case kLogicError:
        return std::make_exception_ptr(std::logic_error(msg));
      case kInvalidArgument:
        return std::make_exception_ptr(std::invalid_argument(msg));
      case kOutOfRange:
        return std::make_exception_ptr(std::out_of_range(msg));
      case kLengthError:
        return std::make_exception_ptr(std::length_error(msg));
      case kDomainError:
        return std::make_exception_ptr(std::domain_error(msg));
      case kRangeError:
        return std::make_exception_ptr(std::range_error(msg));
      case kOverflowError:
        return std::make_exception_ptr(std::overflow_error(msg));
      case kUnderflowError:
        return std::make_exception_ptr(std::underflow_error(msg));
      case kBadAlloc:
        return std::make_exception_ptr(std::bad_alloc());
      case kMpxError:
        return std::make_exception_ptr(mpx::Error(msg));
      case kMpxTimeoutError:
        return std::make_exception_ptr(mpx::TimeoutError(msg));
      case kMpxValueError:
        return std::make_exception_ptr(mpx::ValueError(msg));
      case kMpxInvalidStateError:
        return std::make_exception_ptr(mpx::InvalidStateError(msg));
      case kMpxDecodeError:
        return std::make_exception_ptr(mpx::DecodeError(msg));
      case kMpxUsageError:
        return std::make_exception_ptr(mpx::UsageError(msg));
      default:
        return std::make_exception_ptr(RemoteError(type, msg, pid));
    }
  } catch (...) {
    return std::current_exception();
  }
}

// Takes an engine lock, trying for a moment before it sleeps: the engine's threads hold
// it for short stretches, and a thread that sleeps on it pays a context switch, and its
// holder a wake-up call, for each (a tenth of a small task's cost, measured). Not on a
// single CPU, where the holder cannot run meanwhile.
std::unique_lock<std::mutex> lock_soon(std::mutex& m) {
  if (spin_until([&] { return m.try_lock(); }, spin_limit() == 0 ? 1 : 64))
    return std::unique_lock(m, std::adopt_lock);
  return std::unique_lock(m);
}

// ---------------------------------------------------------------------------
// The part shared by both kinds of workers: the queue of tasks not yet handed out.

struct Engine::Impl {
  explicit Impl(EngineOptions opts) : options(std::move(opts)) {
    if (options.workers == 0) options.workers = cpu_count();
  }
  virtual ~Impl() = default;
  virtual void wake() noexcept = 0;
  // Waits for the workers to stop (after close or terminate).
  virtual void join_workers() = 0;
  virtual std::vector<pid_t> pids() const { return {}; }
  // Tasks were queued (lock held on entry, released on return).
  virtual void submitted(std::unique_lock<std::mutex>& lock) {
    lock.unlock();
    wake();
  }

  void check_open() const {
    if (broken) std::rethrow_exception(broken);
    if (closed) throw InvalidStateError("pool is not running (closed or terminated)");
  }

  // Keeps the argument buffer of a task that no longer needs it (lock held; see
  // Engine::submit) for a later one: a chunksize-1 map allocated one per task in the
  // caller and freed it in whichever thread read the result, and a map of a million
  // ints faulted in a fresh 500 KB buffer for each of its chunks. Small buffers are
  // kept by number, large ones within a budget of bytes.
  void recycle_args(ByteVector& args) noexcept {
    const std::size_t bytes = args.capacity();
    if (bytes == 0 || spare_args.size() >= kSpares) return;
    if (bytes > kSmallSpareBytes && spare_large_bytes + bytes > kLargeSpareBytes) return;
    try {
      if (spare_args.capacity() == 0) spare_args.reserve(kSpares);
      spare_args.push_back(std::move(args));
      if (bytes > kSmallSpareBytes) spare_large_bytes += bytes;
    } catch (const std::bad_alloc&) {
    }
  }
  // The buffer last kept, or none (lock held).
  ByteVector take_spare() noexcept {
    if (spare_args.empty()) return {};
    ByteVector b = std::move(spare_args.back());
    spare_args.pop_back();
    if (b.capacity() > kSmallSpareBytes) spare_large_bytes -= b.capacity();
    return b;
  }
  // Process pools: the arguments of tasks that workers started go to recycle_args()
  // (lock held); a task is sent again only if its worker died before starting it.
  virtual void release_started_args() noexcept {}

  // Pops the next task to run, pulling from feeders when the queue runs low.
  // Lock held on entry and exit; released while a feeder runs.
  std::optional<Task> pop(std::unique_lock<std::mutex>& lock, bool use_feeders = true) {
    // Round robin over the ready feeders, so that an endless one starves nobody.
    std::size_t tries = feeders.size();
    while (use_feeders && pending.size() < low_water() && !feeders.empty() && tries-- > 0) {
      auto feeder = feeders.front();
      feeders.erase(feeders.begin());
      if (!closed && !feeder->ready()) {
        feeders.push_back(std::move(feeder));
        continue;
      }
      lock.unlock();
      auto task = feeder->next();
      lock.lock();
      if (task) {
        pending.push_back(std::move(*task));
        feeders.push_back(std::move(feeder));
        tries = feeders.size();
      } else {
        lock.unlock();
        feeder.reset();  // may run its destructor: not under our lock
        lock.lock();
      }
    }
    feeder_count.store(feeders.size(), std::memory_order_relaxed);
    if (pending.empty()) return std::nullopt;
    Task t = std::move(pending.front());
    pending.pop_front();
    pending_count.store(pending.size(), std::memory_order_relaxed);
    return t;
  }
  std::size_t low_water() const noexcept { return 2 * options.workers; }
  bool has_work() const noexcept { return !pending.empty() || has_lazy_work(); }
  // A feeder that may produce now.
  bool has_lazy_work() const noexcept {
    for (const auto& f : feeders)
      if (closed || f->ready()) return true;
    return false;
  }

  // Takes everything still queued (lock held).
  // The caller drops `dropped_feeders` after releasing the lock.
  std::vector<Task> take_pending(std::vector<std::shared_ptr<Feeder>>& dropped_feeders) {
    std::vector<Task> out(std::make_move_iterator(pending.begin()),
                          std::make_move_iterator(pending.end()));
    pending.clear();
    dropped_feeders = std::move(feeders);
    feeders.clear();
    pending_count.store(0, std::memory_order_relaxed);
    feeder_count.store(0, std::memory_order_relaxed);
    return out;
  }

  EngineOptions options;
  StateMemoryHandle state_memory{StateMemory::create()};  // the pool's future states
  mutable std::mutex mutex;
  std::pmr::deque<Task> pending{state_memory.get()};  // its nodes too: as many as futures
  static constexpr std::size_t kSpares = 4096;
  static constexpr std::size_t kSmallSpareBytes = 256;
  static constexpr std::size_t kLargeSpareBytes = std::size_t{4} << 20;
  std::vector<ByteVector> spare_args;  // recycle_args()
  std::size_t spare_large_bytes = 0;   // of those over kSmallSpareBytes
  std::vector<std::shared_ptr<Feeder>> feeders;
  std::atomic<std::size_t> pending_count{0};  // pending.size(), or more (a hint)
  std::atomic<std::size_t> feeder_count{0};   // feeders.size() once the lock is free
  bool closed = false;
  bool terminating = false;
  bool joined = false;
  std::exception_ptr broken;
  // Raised with closed, terminating or broken (lock held): a supervisor that polls does
  // not take the lock to learn that there is nothing to stop for.
  std::atomic<bool> stopping{false};
  // The first failure that breaks the pool (lock held).
  void set_broken(std::exception_ptr error) {
    if (!broken) broken = std::move(error);
    stopping.store(true, std::memory_order_release);
  }
  std::shared_ptr<Collector> collector;  // process pools
};

namespace {

void abandon_all(std::vector<Task>& tasks) noexcept {
  for (auto& t : tasks)
    if (t.sink) t.sink->task_abandoned(t.tag);
}

// ---------------------------------------------------------------------------
// Thread workers.

class ThreadImpl final : public Engine::Impl {
 public:
  explicit ThreadImpl(EngineOptions opts) : Impl(std::move(opts)) {
    threads_.reserve(options.workers);
    for (std::size_t i = 0; i < options.workers; ++i)
      threads_.emplace_back([this] { loop(); });
  }
  ~ThreadImpl() override {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

  void wake() noexcept override {
    { std::lock_guard lock(mutex); }
    cv_.notify_all();
  }
  void join_workers() override {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

 private:
  void loop() {
    if (options.thread_initializer) {
      try {
        options.thread_initializer();
      } catch (...) {
        auto error = std::current_exception();
        std::vector<std::shared_ptr<Feeder>> dropped_feeders;
        std::vector<Task> dropped;
        {
          std::lock_guard lock(mutex);
          set_broken(std::make_exception_ptr(
              BrokenPool("a worker's initializer failed: " + describe(error))));
          dropped = take_pending(dropped_feeders);
        }
        for (auto& t : dropped)
          if (t.sink) t.sink->task_failed(t.tag, broken);
        cv_.notify_all();
        return;
      }
    }
    std::unique_lock lock(mutex);
    for (;;) {
      if (terminating) return;
      if (auto task = pop(lock)) {
        lock.unlock();
        if (task->sink && !task->sink->task_running(task->tag)) {
          lock.lock();
          continue;
        }
        (*task->run)();
        task.reset();
        lock.lock();
        continue;
      }
      if (closed || broken) return;
      // Spin briefly before sleeping: a thread pool's round trip is dominated by the
      // wake-up otherwise.
      lock.unlock();
      spin_until([this] { return pending_count.load(std::memory_order_relaxed) != 0; },
                 spin_limit());
      lock.lock();
      if (has_work() || closed || terminating) continue;
      cv_.wait(lock);
    }
  }

  static std::string describe(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return x.what();
    } catch (...) {
      return "unknown exception";
    }
  }

  std::condition_variable cv_;
  std::vector<std::thread> threads_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Process workers.

namespace {

// Wakes the sleepers of `word` after the state it guards changed; costs no atomic
// read-modify-write when nobody sleeps (the fence pairs with the sleeper's
// register-then-check in wait_until()).
void wake_sleepers(WaitWord& word) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (word.sleepers.load(std::memory_order_seq_cst) != 0) notify(word);
}

class ProcessImpl;

// Lets the threads that wait for a pool's results read them (see the top of this file).
// One of them at a time holds the role of collector; the others wait on their own
// futures and are notified when the role is free.
class ProcessCollector final : public Collector {
 public:
  ProcessCollector() : page_(sys::map_anonymous_shared(kPage)) {
    static_assert(sizeof(PoolHeader) <= kPage);
    new (page_.bytes()) PoolHeader();
  }
  PoolHeader* header() const noexcept { return reinterpret_cast<PoolHeader*>(page_.bytes()); }

  bool wait(WaitWord& word, ReadyRef ready, const Deadline& deadline) override;
  void poke() noexcept override { wake_sleepers(header()->results); }

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
  static constexpr std::size_t kPage = 4096;
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
};

class ProcessImpl final : public Engine::Impl {
 public:
  explicit ProcessImpl(EngineOptions opts) : Impl(std::move(opts)) {
    auto shared_collector = std::make_shared<ProcessCollector>();
    header_ = shared_collector->header();
    pool_ = std::make_unique<WorkerShared>(options.workers, header_);
    doorbell_ =
        sys::Fd(sys::call("eventfd", [] { return ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }));
    pool_->doorbell = doorbell_.get();
    slots_ = std::vector<SlotState>(options.workers);  // built in place: a slot cannot be copied
    reads_.resize(options.workers);
    // The zygote is forked now, before the supervisor thread exists.
    zygote_ = start_zygote(*pool_, options);
    shared_collector->attach(this);
    process_collector_ = shared_collector;
    collector = std::move(shared_collector);
    supervisor_ = std::thread([this] { supervise(); });
  }

  ~ProcessImpl() override {
    if (supervisor_.joinable()) supervisor_.join();
    process_collector_->detach();
  }

  void wake() noexcept override {
    std::atomic_thread_fence(std::memory_order_seq_cst);  // see WorkerLoop::results_written
    header_->ring_supervisor(doorbell_.get());
  }
  void join_workers() override {
    if (supervisor_.joinable()) supervisor_.join();
  }
  std::vector<pid_t> pids() const override {
    std::lock_guard lock(mutex);
    std::vector<pid_t> out;
    for (const auto& s : slots_)
      if (s.pid > 0) out.push_back(s.pid);
    return out;
  }

  // Tasks were queued (lock held): hand them to workers with room at once, from this
  // thread. The rest wait for room, made by whoever reads results.
  void submitted(std::unique_lock<std::mutex>& lock) override {
    fill(lock, false);
    // The supervisor must see: a frame that did not fit, a task whose timeout it must
    // watch, queued tasks that no result will make room for (no worker has any).
    bool need = options.timeout.has_value();
    bool busy = false;
    for (const auto& s : slots_) {
      if (!s.out.empty()) need = true;
      if (!s.assigned.empty()) busy = true;
    }
    if (!pending.empty() && !busy) need = true;
    const bool backlog = !pending.empty();
    lock.unlock();
    if (need) wake();
    // No worker had room, and room comes with results: read them here unless a caller
    // collects or another thread reads. Left to the supervisor, a burst of submits on
    // two CPUs stalled: woken onto this thread's CPU, it waited for the burst to end
    // (2-3 ms) while the workers, their inboxes full of unread results, slept.
    if (backlog && header_->collecting.load(std::memory_order_relaxed) == 0) {
      try {
        collect(false, true);
      } catch (...) {  // the supervisor reads them
      }
    }
  }

  void release_started_args() noexcept override {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      SlotState& s = slots_[i];
      if (s.pid <= 0 || s.assigned.empty()) continue;
      // A worker runs its tasks in order, each after reading all of its frame.
      Assigned& a = s.assigned.front();
      if (a.task.args.capacity() != 0 &&
          pool_->slot(i).current.load(std::memory_order_acquire) == a.id)
        recycle_args(a.task.args);
    }
  }

  // Whether some outbox has bytes (a hint: no lock).
  // Tasks take long enough that spinning for their results only takes a CPU from the
  // workers: the next result is more than a wake-up away, and the worker that writes
  // it does not wait for the reader.
  bool long_tasks() const noexcept {
    return avg_task_ns_.load(std::memory_order_relaxed) >= kShortTaskNs;
  }
  bool results_readable() const noexcept {
    for (std::size_t i = 0; i < slots_.size(); ++i)
      if (pool_->slot(i).outbox.readable() != 0) return true;
    return false;
  }

  // Reads what the workers wrote and completes those tasks, refilling the workers that
  // made room. A caller (not on_supervisor) hands sinks with callbacks to the
  // supervisor. `if_free`: only if no other thread reads, nor this one further up its
  // stack (a done callback that submits). Returns whether it read anything.
  bool collect(bool on_supervisor, bool if_free = false) {
    if (!results_readable()) return false;
    std::unique_lock read_lock(read_mutex_, std::defer_lock);
    if (!if_free) {
      read_lock.lock();
    } else if (reader_.load(std::memory_order_relaxed) == std::this_thread::get_id() ||
               !read_lock.try_lock()) {
      return false;
    }
    struct Reading {
      std::atomic<std::thread::id>& reader;
      ~Reading() { reader.store(std::thread::id(), std::memory_order_relaxed); }
    } reading{reader_};
    reader_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    frames_.clear();
    bool progress = false;
    for (std::size_t i = 0; i < slots_.size(); ++i)
      progress |= read_frames(i, frames_);
    if (frames_.empty()) return progress;
    bool handed_off = false;
    {
      auto lock = lock_soon(mutex);
      const int64_t now = monotonic_ns();  // one clock read for all these results
      for (auto& f : frames_)
        handed_off |= match(f, deliveries_, on_supervisor, now);
      fill(lock, true);
    }
    if (handed_off) wake();
    deliver();
    return true;
  }

  // Runs deliveries_ (read_mutex_ held). A run of results for one sink (a map's chunks)
  // goes to it in one call: MapState then takes its lock and wakes its waiters once, not
  // once per chunk.
  void deliver() {
    for (std::size_t k = 0; k < deliveries_.size();) {
      Delivery& d = deliveries_[k];
      std::size_t end = k + 1;
      if (d.sink && d.kind == kFrameResult) {
        while (end < deliveries_.size() && deliveries_[end].sink == d.sink &&
               deliveries_[end].kind == kFrameResult)
          ++end;
      }
      if (end - k == 1) {
        d.run();
      } else {
        results_.clear();
        for (std::size_t j = k; j < end; ++j)
          results_.push_back({deliveries_[j].tag, deliveries_[j].body});
        d.sink->task_results(results_);
      }
      for (; k < end; ++k)
        recycle(deliveries_[k].body);
    }
    deliveries_.clear();
  }

  // The collector stops collecting: results it left in an outbox go to the supervisor,
  // and queued tasks too (while a caller collects, the supervisor leaves them to it).
  void collector_leaving() noexcept {
    header_->collecting.store(0, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (results_readable() || pending_count.load(std::memory_order_relaxed) != 0) wake();
  }

 private:
  struct Assigned {
    uint64_t id;
    uint32_t seq;  // its frame's number in this worker's inbox (WorkerSlot::claim)
    Task task;
    int64_t dispatched_ns;
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
    bool closed = false;  // tasks were taken back from it: it gets none until it passed them
    int64_t last_result_ns = 0;
    uint64_t timed_out = 0;  // id of the task it was killed for
    std::deque<Assigned> assigned;
    // Frames being written to its inbox (they did not fit at once).
    std::deque<Outgoing> out;
    std::size_t out_offset = 0;
    bool written = false;  // assign() wrote a frame that wake_assigned() has not rung for
    bool wake = false;     // wake_assigned(): it sleeps and must be woken
  };
  // The frame being read from a worker's outbox (under read_mutex_).
  struct ReadState {
    FrameHeader header{};
    std::size_t header_got = 0;
    ByteVector body;
    std::size_t body_got = 0;
  };
  struct Frame {
    std::size_t slot;
    FrameHeader header;
    ByteVector body;
  };
  // A task's outcome, to hand to its sink outside the engine's lock.
  struct Delivery {
    std::shared_ptr<TaskSink> sink;
    std::size_t tag = 0;
    uint32_t kind = 0;  // kFrameResult or kFrameError (body); 0: `error`
    ByteVector body;
    std::exception_ptr error;
    void run() noexcept {
      if (!sink) return;
      if (kind == kFrameResult) {
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

  void supervise() {
    {
      std::lock_guard lock(mutex);
      for (std::size_t i = 0; i < slots_.size(); ++i)
        spawn(i);
    }
    bool woken = true;
    for (;;) {
      bool progress = read_zygote();
      progress |= run_handoffs();
      // A caller that collects reads the results; the supervisor only when none does.
      bool collecting = header_->collecting.load(std::memory_order_acquire) != 0;
      if (!collecting) progress |= collect(true);
      // A caller that collects also refills the workers that made room (each result
      // does): the supervisor then dispatches only when rung (a worker came up or
      // reopened, a task nobody could take), for lazy input, or for a frame that did
      // not fit. Dispatching whenever it saw room, it took the engine's lock after
      // nearly every task alongside the collector: 10k futures' results cost twice the
      // CPU on two CPUs.
      if (reopened() || (collecting ? woken || dispatch_on_event() : may_dispatch()))
        progress |= dispatch();
      woken = false;
      check_timeouts();
      if (finished()) break;
      if (progress) continue;
      // Sleeps at once: nobody waits on this thread. It used to poll for 30 us first, for
      // results no caller collects; since callers and submitters read results themselves
      // that took CPU from them and the workers (on two CPUs, 10k futures 4-9% slower,
      // a chunksize-1 map 4%), and a result only a callback waits for came no sooner.
      sleep();
      woken = true;
    }
    shutdown();
  }

  // Whether a worker reopened since the last look (PoolHeader::reopened).
  bool reopened() noexcept {
    return header_->reopened.load(std::memory_order_relaxed) != 0 &&
           header_->reopened.exchange(0, std::memory_order_acq_rel) != 0;
  }

  // Completes the sinks with callbacks that callers collected (on this thread, as
  // Python runs callbacks on the pool's result thread).
  bool run_handoffs() {
    if (handoffs_.load(std::memory_order_acquire) == 0) return false;  // a hand-off wakes us
    std::deque<Delivery> ready;
    {
      std::lock_guard lock(mutex);
      ready.swap(handoff_);
      handoffs_.store(0, std::memory_order_relaxed);
    }
    for (auto& d : ready)
      d.run();
    return !ready.empty();
  }

  // Whether the loop may stop (closed and nothing left, or terminating).
  bool finished() {
    if (!stopping.load(std::memory_order_acquire)) return false;  // not closed nor broken
    std::vector<std::shared_ptr<Feeder>> dropped_feeders;         // dropped after the lock
    std::unique_lock lock(mutex);
    if (terminating || broken) {
      auto dropped = take_pending(dropped_feeders);
      std::vector<Delivery> started;  // to abandon or fail
      for (auto& s : slots_) {
        for (auto& a : s.assigned)
          started.push_back({std::move(a.task.sink), a.task.tag});
        s.assigned.clear();
        drop_outgoing(s);
      }
      std::deque<Delivery> ready;
      ready.swap(handoff_);
      handoffs_.store(0, std::memory_order_relaxed);
      bool stop = terminating || closed;
      auto error = broken;
      lock.unlock();
      if (terminating) {
        abandon_all(dropped);
        for (auto& d : started)
          d.abandon();
        for (auto& d : ready)
          d.abandon();
      } else {
        for (auto& t : dropped)
          if (t.sink) t.sink->task_failed(t.tag, error);
        for (auto& d : started) {
          d.error = error;
          d.run();
        }
        for (auto& d : ready)
          d.run();
      }
      return stop;
    }
    if (!closed || has_work() || !handoff_.empty()) return false;
    for (auto& s : slots_)
      if (!s.assigned.empty()) return false;
    return true;
  }

  // A live worker with room for another task (of a group or not: depth()), preferring
  // the least loaded, then the one that answered last (likely still spinning, not
  // asleep). -1 if none. Lock held.
  long pick(bool of_group) noexcept {
    long best = -1;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const SlotState& s = slots_[i];
      if (!has_room(i, of_group)) continue;
      if (best >= 0) {
        const SlotState& b = slots_[static_cast<std::size_t>(best)];
        if (s.assigned.size() > b.assigned.size()) continue;
        if (s.assigned.size() == b.assigned.size() && s.last_result_ns <= b.last_result_ns)
          continue;
      }
      best = static_cast<long>(i);
    }
    return best;
  }

  // Whether worker i may be given another task (lock held).
  bool has_room(std::size_t i, bool of_group) noexcept {
    SlotState& s = slots_[i];
    if (s.pid <= 0 || s.assigned.size() >= depth(of_group)) return false;
    if (options.maxtasksperchild != 0 && s.given >= options.maxtasksperchild) return false;
    if (s.closed) {  // until the worker has passed the tasks taken back from it
      if ((pool_->slot(i).claim.load(std::memory_order_acquire) >> 32) != 0) return false;
      s.closed = false;
    }
    return true;
  }
  // Whether a task is of a group (FrameFlags): its sink needs its tasks' results only all
  // together.
  static bool grouped(const Task& t) noexcept { return t.sink && t.sink->whole(); }
  // Whether the next queued task is of a group (lock held).
  bool next_grouped() const noexcept { return !pending.empty() && grouped(pending.front()); }

  // When nothing else is queued, hands tasks queued behind another in a busy worker's
  // inbox to idle workers, the last queued first: a task must not wait behind a long one
  // while another worker idles (a map of 400, 40, 400 and 40 ms sleeps took 0.8 s on two
  // workers instead of 0.44: Python's workers pull from one shared queue). A task is
  // taken back only whole in the inbox and not yet taken by its worker
  // (WorkerSlot::claim). Lock held. Returns whether it moved any.
  bool rebalance() {
    bool moved = false;
    for (;;) {
      long idle = -1, busy = -1;
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        const SlotState& s = slots_[i];
        if (s.assigned.empty()) {
          if (idle < 0 && has_room(i, false)) idle = static_cast<long>(i);
        } else if (s.pid > 0 && s.assigned.size() >= 2 && s.out.empty() &&
                   (busy < 0 ||
                    s.assigned.size() > slots_[static_cast<std::size_t>(busy)].assigned.size())) {
          busy = static_cast<long>(i);
        }
      }
      if (idle < 0 || busy < 0 || !take_back(static_cast<std::size_t>(busy))) return moved;
      SlotState& from = slots_[static_cast<std::size_t>(busy)];
      Task task = std::move(from.assigned.back().task);
      from.assigned.pop_back();
      from.closed = true;
      --from.given;  // it counts toward maxtasksperchild no more (nor in the worker)
      const bool of_group = grouped(task);
      assign(static_cast<std::size_t>(idle), std::move(task), monotonic_ns(), of_group);
      moved = true;
    }
  }
  // Takes the last task of worker i's inbox back unless the worker reached it
  // (WorkerSlot::claim). Lock held.
  bool take_back(std::size_t i) noexcept {
    const uint32_t seq = slots_[i].assigned.back().seq;
    std::atomic<uint64_t>& claim = pool_->slot(i).claim;
    uint64_t c = claim.load(std::memory_order_acquire);
    for (;;) {
      const auto passed = static_cast<uint32_t>(c);
      if (static_cast<int32_t>(seq - passed) <= 0) return false;
      // The tasks taken back before are after this one: from `seq` on, all are.
      if (claim.compare_exchange_weak(c, (uint64_t{seq} << 32) | passed, std::memory_order_acq_rel))
        return true;
    }
  }

  // Hands queued tasks (and, with use_feeders, lazily produced ones) to workers with
  // room. Lock held; released while a feeder produces. Returns whether it handed out
  // any.
  bool fill(std::unique_lock<std::mutex>& lock, bool use_feeders) {
    bool progress = false;
    int64_t now = 0;  // one clock read per run of queued tasks
    while (!broken && !terminating && (!pending.empty() || (use_feeders && !feeders.empty()))) {
      if (pick(next_grouped()) < 0) break;
      if (use_feeders && !feeders.empty()) wake_assigned();  // pop() may run one unlocked
      std::optional<Task> task = pop(lock, use_feeders);
      if (!task) break;
      const bool of_group = grouped(*task);
      long i = pick(of_group);  // the lock may have been released
      if (i < 0 || broken || terminating) {
        pending.push_front(std::move(*task));
        pending_count.store(pending.size(), std::memory_order_relaxed);
        break;
      }
      if (task->sink && !task->sink->task_running(task->tag)) continue;
      // A feeder (run by pop, unlocked) may have taken its time: read the clock again.
      if (now == 0 || (use_feeders && !feeders.empty())) now = monotonic_ns();
      assign(static_cast<std::size_t>(i), std::move(*task), now, of_group);
      progress = true;
    }
    if (pending.empty() && feeders.empty() && !broken && !terminating) progress |= rebalance();
    wake_assigned();
    return progress;
  }

  // Wakes the workers whose inboxes assign() wrote to (lock held): once per fill(), not
  // per task. The fence waits until the frames' stores reach the cache lines the workers
  // read: per task, that was two thirds of fill()'s time in a chunksize-1 map, whose
  // caller it slowed down; a run of frames lets the misses overlap.
  // One sleeping worker is left to the kernel. Of several, each is woken where it fell
  // asleep unless another worker runs or was just woken there, or this thread runs there
  // (the kernel then moves it to a CPU that looks idle: where it sent the previous one);
  // then wake_elsewhere().
  void wake_assigned() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);  // as in wake_sleepers()
    std::size_t sleeping = 0;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      SlotState& s = slots_[i];
      s.wake = s.written && pool_->slot(i).inbox.word.sleepers.load(std::memory_order_seq_cst) != 0;
      s.written = false;
      if (s.wake) ++sleeping;
    }
    cpu_set_t taken;  // CPUs where a worker runs or was just woken
    int here = -1;    // this thread's CPU
    if (sleeping > 1) {
      CPU_ZERO(&taken);
      for (std::size_t j = 0; j < slots_.size(); ++j)
        if (const int c = pool_->slot(j).cpu.load(std::memory_order_relaxed);
            c >= 0 && c < CPU_SETSIZE)
          CPU_SET(c, &taken);
      here = ::sched_getcpu();
    }
    for (std::size_t i = 0; i < slots_.size() && sleeping != 0; ++i) {
      if (!slots_[i].wake) continue;
      slots_[i].wake = false;
      WaitWord& word = pool_->slot(i).inbox.word;
      const int last = pool_->slot(i).sleep_cpu.load(std::memory_order_relaxed);
      if (sleeping == 1 || last < 0 || last >= CPU_SETSIZE) {
        notify(word);
      } else if (CPU_ISSET(last, &taken) || last == here) {
        wake_elsewhere(i, taken, here);
      } else {
        notify(word);
        CPU_SET(last, &taken);
      }
    }
  }
  // Wakes worker i with the CPUs in `taken` and `here` (where the waking thread runs) out
  // of its affinity mask for the wake-up, or only those in `taken` when no other is
  // allowed; adds where it goes to `taken` when that is one CPU. The kernel had woken two
  // workers that slept on one CPU (every wait in a worker spins first, so the workers
  // fall asleep where they spun together) both onto the one idle CPU (it still looked
  // idle for the second: the first was not yet running there), and the second waited
  // 2-10 ms there for the load balancer: a CPU-bound map on two CPUs lost 2-5%. The mask
  // is put back at once: that moves no queued task.
  void wake_elsewhere(std::size_t i, cpu_set_t& taken, int here) noexcept {
    const pid_t pid = slots_[i].pid;
    WaitWord& word = pool_->slot(i).inbox.word;
    auto wake = [&](const cpu_set_t& others) {
      notify(word);
      if (CPU_COUNT(&others) == 1) CPU_OR(&taken, &taken, &others);
    };
    cpu_set_t avoid = taken;
    if (here >= 0 && here < CPU_SETSIZE) CPU_SET(here, &avoid);
    if (pid > 0 && (with_cpus_avoided(pid, avoid, wake) || with_cpus_avoided(pid, taken, wake)))
      return;
    notify(word);
  }

  // Writes a task into worker i's inbox (lock held); the caller wakes it (wake_assigned()).
  // `of_group`: grouped(task), which the caller knew already.
  void assign(std::size_t i, Task task, int64_t now, bool of_group) {
    SlotState& s = slots_[i];
    uint64_t id = ++next_id_;
    if (++s.seq == 0) s.seq = 1;  // 0 is never a frame's (WorkerSlot::claim)
    FrameHeader h{};
    h.kind = kFrameTask;
    h.seq = s.seq;
    h.task_id = id;
    h.entry = reinterpret_cast<uint64_t>(task.entry);
    h.size = task.args.size();
    // Its group: its sink, which lives at least as long as the results held back for it
    // (no other sink can have the same address meanwhile).
    const TaskSink* group = of_group ? task.sink.get() : nullptr;
    if (group) h.flags = group == s.last_group ? kFrameGrouped | kFrameSameGroup : kFrameGrouped;
    s.last_group = group;
    s.assigned.push_back({id, s.seq, std::move(task), now});
    ++s.given;
    // The body is written straight from the task's bytes: deque elements stay put,
    // and a task leaves `assigned` only after its frame was written (its result
    // comes after) or when the worker is gone (then `out` is cleared too).
    const ByteVector& body = s.assigned.back().task.args;
    WorkerSlot& slot = pool_->slot(i);
    if (s.out.empty() && slot.inbox.write_frame(reinterpret_cast<const std::byte*>(&h), sizeof h,
                                                body.data(), body.size())) {
      slot.last_seq.store(h.seq, std::memory_order_release);
      s.written = true;  // the caller wakes the worker (wake_assigned())
      return;
    }
    s.out.push_back({h, &body});
    outgoing_.fetch_add(1, std::memory_order_relaxed);
    pump(i);
  }

  // Forgets the frames not yet written to a slot's inbox (lock held).
  void drop_outgoing(SlotState& s) noexcept {
    outgoing_.fetch_sub(s.out.size(), std::memory_order_relaxed);
    s.out.clear();
    s.out_offset = 0;
  }

  // Writes what fits of worker i's outgoing frames (lock held). Returns whether it
  // wrote anything.
  bool pump(std::size_t i) {
    SlotState& s = slots_[i];
    WorkerSlot& slot = pool_->slot(i);
    bool wrote = false;
    for (;;) {
      while (!s.out.empty()) {
        Outgoing& f = s.out.front();
        constexpr std::size_t kHeader = sizeof(FrameHeader);
        std::size_t total = kHeader + f.body->size();
        std::size_t n;
        if (s.out_offset < kHeader) {
          n = slot.inbox.write(reinterpret_cast<const std::byte*>(&f.header) + s.out_offset,
                               kHeader - s.out_offset);
        } else {
          n = slot.inbox.write(f.body->data() + (s.out_offset - kHeader), total - s.out_offset);
        }
        if (n == 0) break;
        wrote = true;
        s.out_offset += n;
        if (s.out_offset == total) {
          slot.last_seq.store(f.header.seq, std::memory_order_release);
          s.out.pop_front();
          outgoing_.fetch_sub(1, std::memory_order_relaxed);
          s.out_offset = 0;
        }
      }
      if (s.out.empty()) {
        slot.writer_waiting.store(0, std::memory_order_relaxed);
        break;
      }
      // Full: the worker rings the supervisor once it read (Dekker with inbox_read()).
      slot.writer_waiting.store(1, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (slot.inbox.writable() == 0) break;
    }
    if (wrote) wake_sleepers(slot.inbox.word);
    return wrote;
  }

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

  bool dispatch() {
    auto lock = lock_soon(mutex);
    bool progress = false;
    for (std::size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].pid > 0 && !slots_[i].out.empty()) progress |= pump(i);
    progress |= fill(lock, true);
    return progress;
  }

  // Reads the complete frames in worker i's outbox (read_mutex_ held).
  bool read_frames(std::size_t i, std::vector<Frame>& out) {
    ReadState& r = reads_[i];
    ByteRing& ring = pool_->slot(i).outbox;
    bool progress = false;
    for (;;) {
      if (r.header_got < sizeof(FrameHeader)) {
        std::size_t n = ring.read(reinterpret_cast<std::byte*>(&r.header) + r.header_got,
                                  sizeof(FrameHeader) - r.header_got);
        if (n == 0) break;
        progress = true;
        r.header_got += n;
        if (r.header_got < sizeof(FrameHeader)) continue;
        if (r.body.capacity() == 0 && !spare_bodies_.empty()) {
          r.body = std::move(spare_bodies_.back());
          spare_bodies_.pop_back();
          spare_bytes_ -= r.body.capacity();
        }
        reserve_prefaulted(r.body, r.header.size);
        r.body.resize(r.header.size);
        r.body_got = 0;
      }
      if (r.body_got < r.body.size()) {
        std::size_t n = ring.read(r.body.data() + r.body_got, r.body.size() - r.body_got);
        if (n == 0) break;
        progress = true;
        r.body_got += n;
        if (r.body_got < r.body.size()) continue;
      }
      r.header_got = 0;
      const bool large = r.body.size() >= kLargeBody;
      out.push_back({i, r.header, std::move(r.body)});
      r.body = ByteVector();
      // A large body is delivered (and its buffer recycled) before the next is read:
      // the next one then reuses that memory instead of faulting in its own (a map of
      // a million ints: eight 500 KB results, 1000 page faults at microseconds each).
      if (large) break;
    }
    if (progress) wake_sleepers(ring.word);  // it may wait for room
    return progress;
  }
  static constexpr std::size_t kLargeBody = std::size_t{64} << 10;

  // Keeps a delivered body's buffer for a later frame (read_mutex_ held): memory the
  // process touched before costs no page faults.
  void recycle(ByteVector& body) {
    constexpr std::size_t kSpareBytes = std::size_t{4} << 20;
    constexpr std::size_t kSpareBodies = 64;
    if (body.capacity() == 0 || spare_bodies_.size() >= kSpareBodies ||
        spare_bytes_ + body.capacity() > kSpareBytes)
      return;
    body.clear();
    spare_bytes_ += body.capacity();
    spare_bodies_.push_back(std::move(body));
  }

  // Matches a frame with its task (lock held): the outcome goes to `out`, or to the
  // supervisor's hand-off queue (returns true then).
  bool match(Frame& f, std::vector<Delivery>& out, bool on_supervisor, int64_t now) {
    SlotState& s = slots_[f.slot];
    switch (f.header.kind) {
      case kFrameInitOk:
        s.init_ok = true;
        init_failures_ = 0;
        return false;
      case kFrameInitError: {
        std::string what = "a worker's initializer failed";
        try {
          std::rethrow_exception(decode_exception(f.body));
        } catch (const std::exception& e) {
          what += std::string(": ") + e.what();
        } catch (...) {
        }
        set_broken(std::make_exception_ptr(BrokenPool(what)));
        return true;  // the supervisor must see it
      }
      case kFrameResult:
      case kFrameError: {
        if (s.assigned.empty() || s.assigned.front().id != f.header.task_id) return false;
        Assigned a = std::move(s.assigned.front());
        s.last_result_ns = now;
        record_task_time(f.header.entry);
        s.assigned.pop_front();
        recycle_args(a.task.args);
        Delivery d{std::move(a.task.sink), a.task.tag, f.header.kind, std::move(f.body), nullptr};
        if (!on_supervisor && d.sink && d.sink->has_callbacks()) {
          handoff_.push_back(std::move(d));
          handoffs_.store(handoff_.size(), std::memory_order_release);
          return true;
        }
        out.push_back(std::move(d));
        return false;
      }
      default:
        return false;
    }
  }

  void check_timeouts() {
    if (!options.timeout) return;
    collect(true);  // a result that just arrived is not a timeout
    int64_t now = monotonic_ns();
    int64_t limit = options.timeout->count();
    std::lock_guard lock(mutex);
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      SlotState& s = slots_[i];
      if (s.pid <= 0 || s.assigned.empty()) continue;
      WorkerSlot& slot = pool_->slot(i);
      uint64_t current = slot.current.load(std::memory_order_acquire);
      if (current == 0 || current != s.assigned.front().id || s.timed_out == current) continue;
      int64_t started = slot.started_ns.load(std::memory_order_acquire);
      if (now - started >= limit) {
        s.timed_out = current;
        send_zygote({kZygoteKill, static_cast<uint32_t>(i), s.pid, 0});
      }
    }
  }

  // Milliseconds until the next possible timeout, -1 if none (lock held).
  int next_timeout_ms() {
    if (!options.timeout) return -1;
    int64_t now = monotonic_ns();
    int64_t best = -1;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      SlotState& s = slots_[i];
      if (s.pid <= 0 || s.assigned.empty() || s.timed_out == s.assigned.front().id) continue;
      // A task starts after it was handed out: dispatch time bounds its deadline below.
      WorkerSlot& slot = pool_->slot(i);
      int64_t start = s.assigned.front().dispatched_ns;
      if (slot.current.load(std::memory_order_acquire) == s.assigned.front().id)
        start = std::max(start, slot.started_ns.load(std::memory_order_acquire));
      int64_t left = start + options.timeout->count() - now;
      if (left < 0) left = 0;
      if (best < 0 || left < best) best = left;
    }
    if (best < 0) return -1;
    return static_cast<int>(std::min<int64_t>((best + 999'999) / 1'000'000, 1'000'000));
  }

  void sleep() {
    header_->supervisor_sleeping.store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Results count only while no caller collects them (a caller that stops
    // collecting rings us if it left some); queued tasks only if some worker can take
    // one (a supervisor must not spin while every worker is busy with a long task), and
    // only lazy input while a caller collects (it refills the workers).
    const bool collecting = header_->collecting.load(std::memory_order_seq_cst) != 0;
    bool ready = (!collecting && results_readable()) ||
                 header_->reopened.load(std::memory_order_seq_cst) != 0;
    int timeout_ms = -1;
    {
      std::unique_lock lock(mutex);
      if (!ready) {
        const bool work = collecting ? has_lazy_work() : has_work();
        ready = terminating || !handoff_.empty() || (work && pick(next_grouped()) >= 0);
        for (std::size_t i = 0; i < slots_.size() && !ready; ++i)
          if (slots_[i].pid > 0 && !slots_[i].out.empty() && pool_->slot(i).inbox.writable() != 0)
            ready = true;
        bool idle_closed = closed && !has_work();
        for (auto& s : slots_)
          idle_closed = idle_closed && s.assigned.empty();
        ready = ready || idle_closed;
      }
      timeout_ms = next_timeout_ms();
    }
    if (!ready) {
      pollfd fds[2] = {{doorbell_.get(), POLLIN, 0}, {zygote_.socket.get(), POLLIN, 0}};
      sys::call_raw("poll", [&] { return ::poll(fds, 2, timeout_ms); });
    }
    uint64_t count;
    [[maybe_unused]] auto n = ::read(doorbell_.get(), &count, sizeof count);
    header_->supervisor_sleeping.store(0, std::memory_order_seq_cst);
  }

  // Lock held.
  void spawn(std::size_t i) {
    slots_[i].spawning = true;
    send_zygote({kZygoteSpawn, static_cast<uint32_t>(i), 0, 0});
  }

  void send_zygote(ZygoteMessage m) {
    if (zygote_lost_) return;
    auto n = ::send(zygote_.socket.get(), &m, sizeof m, MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(sizeof m)) zygote_gone();
  }

  void zygote_gone() {
    if (zygote_lost_) return;
    zygote_lost_ = true;
    set_broken(std::make_exception_ptr(BrokenPool("the pool's zygote process died")));
  }

  bool read_zygote() {
    bool progress = false;
    for (;;) {
      ZygoteMessage m{};
      ssize_t n = ::recv(zygote_.socket.get(), &m, sizeof m, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
      if (n <= 0) {
        std::lock_guard lock(mutex);
        zygote_gone();
        break;
      }
      progress = true;
      if (m.slot >= slots_.size()) continue;
      if (m.kind == kZygoteSpawned) {
        std::unique_lock lock(mutex);
        SlotState& s = slots_[m.slot];
        if (m.pid <= 0) {  // fork failed
          s.spawning = false;
          set_broken(std::make_exception_ptr(BrokenPool("the zygote could not fork a worker")));
          continue;
        }
        s.pid = m.pid;
        s.spawning = false;
        s.init_ok = false;
        s.given = 0;
        s.seq = 0;
        s.last_group = nullptr;
        s.closed = false;
        s.timed_out = 0;
        // Tasks may wait for it: queued ones, or ones queued behind another worker's
        // (a pool's first tasks all go to the worker that started first).
        fill(lock, true);
      } else if (m.kind == kZygoteExited) {
        worker_exited(m.slot, m.pid, m.status);
      }
    }
    return progress;
  }

  void worker_exited(std::size_t i, pid_t pid, int status) {
    std::vector<Delivery> done;
    {
      std::lock_guard read_lock(read_mutex_);
      std::unique_lock lock(mutex);
      SlotState& s = slots_[i];
      if (s.pid != pid) return;
      // What it wrote before it died still counts.
      frames_.clear();
      read_frames(i, frames_);
      const int64_t now = monotonic_ns();
      for (auto& f : frames_)
        match(f, done, true, now);
      frames_.clear();
      WorkerSlot& slot = pool_->slot(i);
      if (!s.assigned.empty()) {
        uint64_t current = slot.current.load(std::memory_order_acquire);
        if (current == s.assigned.front().id) {
          Assigned a = std::move(s.assigned.front());
          s.assigned.pop_front();
          std::exception_ptr error;
          if (s.timed_out == a.id) {
            error = std::make_exception_ptr(
                TimeoutError("task ran past the pool's timeout; its worker " + std::to_string(pid) +
                             " was killed"));
          } else {
            error = std::make_exception_ptr(WorkerLost(pid, status));
          }
          done.push_back({std::move(a.task.sink), a.task.tag, 0, {}, error});
        }
        // Tasks it had not started go back to the front of the queue, in order.
        for (auto it = s.assigned.rbegin(); it != s.assigned.rend(); ++it)
          pending.push_front(std::move(it->task));
        pending_count.store(pending.size(), std::memory_order_relaxed);
        s.assigned.clear();
      }
      bool died_in_init = !s.init_ok;
      s.pid = 0;
      drop_outgoing(s);
      reads_[i] = ReadState{};
      slot.reset();
      if (died_in_init && ++init_failures_ >= 3 && !broken) {
        set_broken(std::make_exception_ptr(BrokenPool(
            std::string("workers keep dying before finishing their initializer (last: ") +
            WorkerLost(pid, status).what() + ")")));
      }
      if (!terminating && !broken) spawn(i);
      fill(lock, true);  // its queued tasks to the other workers
    }
    for (auto& d : done)
      d.run();
  }

  void shutdown() {
    // Stop is explicit: other processes forked later (another pool's zygote) may hold
    // a copy of our end of the socket, so its closing is no signal. (EOF is how the
    // zygote learns that the pool's process died.)
    {
      std::lock_guard lock(mutex);
      send_zygote({kZygoteStop, 0, 0, 0});
    }
    zygote_.socket.reset();
    int status = 0;
    sys::call_raw("waitpid", [&] { return ::waitpid(zygote_.pid, &status, 0); });
    std::lock_guard lock(mutex);
    for (auto& s : slots_)
      s.pid = 0;
  }

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
  int init_failures_ = 0;
  // Written under `mutex`, read anywhere. Unknown at first: shallow queues.
  std::atomic<int64_t> avg_task_ns_{kShortTaskNs};
  bool zygote_lost_ = false;
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

ProcessCollector::Role ProcessCollector::take_role(ProcessImpl*& impl) {
  std::lock_guard lock(mutex_);
  if (!impl_) return Role::kDetached;
  if (role_.load(std::memory_order_relaxed)) return Role::kBusy;
  role_.store(true, std::memory_order_seq_cst);
  header()->collecting.store(1, std::memory_order_seq_cst);
  impl = impl_;
  return Role::kTaken;
}

void ProcessCollector::give_role(ProcessImpl* impl) {
  impl->collector_leaving();  // alive: detach() waits for role_ to drop
  std::lock_guard lock(mutex_);
  role_.store(false, std::memory_order_seq_cst);
  for (WaitWord* w : waiting_)
    notify(*w);
  released_.notify_all();
}

bool ProcessCollector::collect(ProcessImpl& impl, ReadyRef ready, const Deadline& deadline) {
  // Spinning pays only while results come within microseconds. Asked again after every
  // result: a caller that entered while tasks were short and spun on through a map of
  // long ones held a CPU the workers needed, yielding it for a time slice at a time,
  // while the other workers' results waited for it (a CPU-bound map lost 5-10%).
  auto spinning = [&] { return spin_limit() != 0 && !impl.long_tasks(); };
  bool spin = spinning();
  int64_t idle_since = monotonic_ns();
  WaitWord& results = header()->results;
  // Where this thread spins, for the workers (-1 while it sleeps or is gone): a worker
  // that finds itself there gets out of the way.
  std::atomic<int32_t>& cpu = header()->collector_cpu;
  struct Gone {
    std::atomic<int32_t>& cpu;
    ~Gone() { cpu.store(-1, std::memory_order_relaxed); }
  } gone{cpu};
  if (spin) cpu.store(::sched_getcpu(), std::memory_order_relaxed);
  for (unsigned i = 1;; ++i) {
    if (ready()) return true;
    if (impl.collect(false)) {
      idle_since = monotonic_ns();
      if (spin && !spinning()) {
        spin = false;
        cpu.store(-1, std::memory_order_relaxed);
      }
      continue;
    }
    if (spin && i % 32 != 0) {
      cpu_relax();
      continue;
    }
    if (deadline.expired()) return ready();
    if (spin) {
      int64_t spun = monotonic_ns() - idle_since;
      if (spun < kSpinNs) {
        // Past a few microseconds, let a worker that shares this CPU run (when the
        // machine is oversubscribed); otherwise this returns at once. (A worker that
        // finds this thread on its CPU yields at once and moves: pool_worker.cpp.)
        if (spun > kYieldAfterNs) ::sched_yield();
        continue;
      }
    }
    // Sleep until a worker writes a result or someone completes a future (poke()).
    cpu.store(-1, std::memory_order_relaxed);
    sleep_until(
        results, [&] { return ready() || impl.results_readable(); }, deadline);
    spin = spinning();
    if (spin) cpu.store(::sched_getcpu(), std::memory_order_relaxed);
    idle_since = monotonic_ns();
  }
}

bool ProcessCollector::wait(WaitWord& word, ReadyRef ready, const Deadline& deadline) {
  bool registered = false;
  bool result = false;
  for (;;) {
    if (ready()) {
      result = true;
      break;
    }
    ProcessImpl* impl = nullptr;
    Role role = take_role(impl);
    if (role == Role::kTaken) {
      result = collect(*impl, ready, deadline);
      give_role(impl);
      break;
    }
    if (role == Role::kDetached) {
      result = wait_until(word, ready, deadline);
      break;
    }
    // Another thread collects: wait for our result or for the role to be free.
    if (!registered) {
      std::lock_guard lock(mutex_);
      waiting_.push_back(&word);
      registered = true;
    }
    auto ready_or_free = [&] { return ready() || !role_.load(std::memory_order_seq_cst); };
    wait_until(word, ready_or_free, deadline);
    if (ready()) {
      result = true;
      break;
    }
    if (deadline.expired()) break;
  }
  if (registered) {
    std::lock_guard lock(mutex_);
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), &word));
  }
  return result;
}

}  // namespace

// ---------------------------------------------------------------------------

void EngineWaker::wake() const noexcept {
  std::lock_guard lock(mutex_);
  if (impl_) static_cast<Engine::Impl*>(impl_)->wake();
}

Engine::Engine(EngineOptions options) : waker_(std::make_shared<EngineWaker>()) {
  if (options.processes) {
    impl_ = std::make_unique<ProcessImpl>(std::move(options));
  } else {
    impl_ = std::make_unique<ThreadImpl>(std::move(options));
  }
  waker_->impl_ = impl_.get();
}

Engine::~Engine() {
  try {
    if (!impl_->joined) {
      terminate();
      join();
    }
  } catch (...) {
  }
  std::lock_guard lock(waker_->mutex_);
  waker_->impl_ = nullptr;
}

void Engine::submit(Task task, ByteVector* spare) {
  auto lock = lock_soon(impl_->mutex);
  impl_->check_open();
  impl_->pending.push_back(std::move(task));
  if (spare && spare->capacity() == 0) *spare = impl_->take_spare();
  impl_->pending_count.store(impl_->pending.size(), std::memory_order_relaxed);
  impl_->submitted(lock);
}

void Engine::submit(std::vector<Task>& tasks, std::vector<ByteVector>* spares) {
  auto lock = lock_soon(impl_->mutex);
  impl_->check_open();
  const std::size_t n = tasks.size();
  for (auto& t : tasks)
    impl_->pending.push_back(std::move(t));
  tasks.clear();
  impl_->pending_count.store(impl_->pending.size(), std::memory_order_relaxed);
  impl_->submitted(lock);
  if (!spares) return;
  // After submitted(): the tasks' frames are written then, and workers may have
  // started earlier ones, whose buffers the caller can then encode its next tasks into.
  lock.lock();
  impl_->release_started_args();
  for (std::size_t k = 0; k < n && !impl_->spare_args.empty(); ++k)
    spares->push_back(impl_->take_spare());
}

void Engine::submit(std::shared_ptr<Feeder> feeder) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->check_open();
    impl_->feeders.push_back(std::move(feeder));
    impl_->feeder_count.store(impl_->feeders.size(), std::memory_order_relaxed);
    impl_->pending_count.fetch_add(1, std::memory_order_relaxed);  // a hint to wake up
  }
  impl_->wake();
}

void Engine::cancel_pending() {
  std::vector<std::shared_ptr<Feeder>> dropped_feeders;
  std::vector<Task> dropped;
  {
    std::lock_guard lock(impl_->mutex);
    dropped = impl_->take_pending(dropped_feeders);
  }
  abandon_all(dropped);
  impl_->wake();
}

void Engine::close() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->closed = true;
    impl_->stopping.store(true, std::memory_order_release);
  }
  impl_->wake();
}

void Engine::terminate() {
  std::vector<std::shared_ptr<Feeder>> dropped_feeders;
  std::vector<Task> dropped;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->closed = true;
    impl_->terminating = true;
    impl_->stopping.store(true, std::memory_order_release);
    dropped = impl_->take_pending(dropped_feeders);
  }
  abandon_all(dropped);
  impl_->wake();
}

void Engine::join() {
  {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->closed) throw InvalidStateError("join() before close() or terminate()");
  }
  impl_->join_workers();
  impl_->joined = true;
}

std::size_t Engine::workers() const noexcept {
  return impl_->options.workers;
}
bool Engine::processes() const noexcept {
  return impl_->options.processes;
}
std::pmr::memory_resource* Engine::state_memory() const noexcept {
  return impl_->state_memory.get();
}
const std::shared_ptr<Collector>& Engine::collector() const noexcept {
  return impl_->collector;
}
std::vector<pid_t> Engine::pids() const {
  return impl_->pids();
}

}  // namespace mpx::detail
