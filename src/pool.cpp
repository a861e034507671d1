// The worker engine behind Pool, ThreadPool and the executors (mpx/detail/pool_task.hpp).
//
// Thread workers pop tasks from the shared queue themselves. Process workers are fed
// by one supervisor thread per pool through a pair of shared-memory byte rings per
// worker (see src/worker.cpp); the supervisor also reads results, notices deaths and
// timeouts, and asks the zygote for replacements.
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
#include "pool_worker.hpp"
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

  void check_open() const {
    if (broken) std::rethrow_exception(broken);
    if (closed) throw InvalidStateError("pool is not running (closed or terminated)");
  }

  // Pops the next task to run, pulling from feeders when the queue runs low.
  // Lock held on entry and exit; released while a feeder runs.
  std::optional<Task> pop(std::unique_lock<std::mutex>& lock) {
    // Round robin over the ready feeders, so that an endless one starves nobody.
    std::size_t tries = feeders.size();
    while (pending.size() < low_water() && !feeders.empty() && tries-- > 0) {
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
    if (pending.empty()) return std::nullopt;
    Task t = std::move(pending.front());
    pending.pop_front();
    pending_count.store(pending.size(), std::memory_order_relaxed);
    return t;
  }
  std::size_t low_water() const noexcept { return 2 * options.workers; }
  bool has_work() const noexcept {
    if (!pending.empty()) return true;
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
    return out;
  }

  EngineOptions options;
  mutable std::mutex mutex;
  std::deque<Task> pending;
  std::vector<std::shared_ptr<Feeder>> feeders;
  std::atomic<std::size_t> pending_count{0};
  bool closed = false;
  bool terminating = false;
  bool joined = false;
  std::exception_ptr broken;
};

namespace {

void abandon_all(std::vector<Task>& tasks) noexcept {
  for (auto& t : tasks)
    if (t.sink) t.sink->abandon();
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
          if (!broken)
            broken = std::make_exception_ptr(
                BrokenPool("a worker's initializer failed: " + describe(error)));
          dropped = take_pending(dropped_feeders);
        }
        for (auto& t : dropped)
          if (t.sink) t.sink->set_exception(broken);
        cv_.notify_all();
        return;
      }
    }
    std::unique_lock lock(mutex);
    for (;;) {
      if (terminating) return;
      if (auto task = pop(lock)) {
        lock.unlock();
        if (task->sink && !task->sink->set_running()) {
          lock.lock();
          continue;
        }
        task->run();
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
// Process workers: the supervisor.

namespace {

int64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

class ProcessImpl final : public Engine::Impl {
 public:
  explicit ProcessImpl(EngineOptions opts) : Impl(std::move(opts)) {
    pool_ = std::make_unique<WorkerShared>(options.workers);
    doorbell_ =
        sys::Fd(sys::call("eventfd", [] { return ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }));
    pool_->doorbell = doorbell_.get();
    slots_.resize(options.workers);
    // The zygote is forked now, before the supervisor thread exists.
    zygote_ = start_zygote(*pool_, options);
    supervisor_ = std::thread([this] { supervise(); });
  }

  ~ProcessImpl() override {
    if (supervisor_.joinable()) supervisor_.join();
  }

  void wake() noexcept override {
    std::atomic_thread_fence(std::memory_order_seq_cst);  // see WorkerLoop::ring_supervisor
    if (pool_->header()->supervisor_sleeping.load(std::memory_order_seq_cst)) {
      uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(doorbell_.get(), &one, sizeof one);
    }
  }
  void join_workers() override {
    if (supervisor_.joinable()) supervisor_.join();
  }
  std::vector<pid_t> pids() const override {
    std::lock_guard lock(pids_mutex_);
    std::vector<pid_t> out;
    for (const auto& s : slots_)
      if (s.pid > 0) out.push_back(s.pid);
    return out;
  }

 private:
  struct Assigned {
    uint64_t id;
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
    std::size_t given = 0;  // tasks handed to this worker over its life
    int64_t last_result_ns = 0;
    uint64_t timed_out = 0;  // id of the task it was killed for
    std::deque<Assigned> assigned;
    // Frames being written to its inbox.
    std::deque<Outgoing> out;
    std::size_t out_offset = 0;
    // The frame being read from its outbox.
    FrameHeader in_header{};
    std::size_t in_header_got = 0;
    ByteVector in_body;
    std::size_t in_body_got = 0;
  };

  // Tasks handed to one worker at once. Short tasks get a deep queue, so that a worker
  // finds its next task without waiting for the supervisor (a sleeping worker costs a
  // wake-up per task); long ones a shallow one, so that no worker sits on tasks another
  // idle worker could run.
  // How long the supervisor polls for work before it sleeps (about what the waiter's
  // default spin of 2000 pauses takes).
  static constexpr int64_t kIdleSpinNs = 30'000;
  static constexpr std::size_t kShallow = 2;
  static constexpr std::size_t kDeep = 8;
  static constexpr int64_t kShortTaskNs = 200'000;
  std::size_t depth() const noexcept { return avg_task_ns_ < kShortTaskNs ? kDeep : kShallow; }
  // How long tasks take, from the later of dispatch and the previous result on the same
  // worker to their result (an exponential moving average).
  void record_service_time(SlotState& s, const Assigned& a) noexcept {
    int64_t now = monotonic_ns();
    int64_t from = std::max(a.dispatched_ns, s.last_result_ns);
    s.last_result_ns = now;
    int64_t took = now - from;
    avg_task_ns_ += (took - avg_task_ns_) / 8;
  }

  void supervise() {
    for (std::size_t i = 0; i < slots_.size(); ++i)
      spawn(i);
    int idle = 0;
    int64_t idle_since_ns = 0;
    for (;;) {
      bool progress = false;
      // The zygote's socket costs a system call: look at it when idle only now and
      // then (and always after sleeping).
      if (idle % 64 == 0) progress |= read_zygote();
      if (done_) break;
      progress |= dispatch();
      progress |= pump();
      check_timeouts();
      if (done_ || finished()) break;
      if (progress) {
        idle = 0;
        continue;
      }
      // Poll-spin for a bounded time before sleeping, as every wait in mpx does. The
      // bound is time, not iterations: one pass of this loop costs far more than a pause,
      // and a supervisor that spins after every result takes a CPU from the workers
      // (CPU-bound speedup 1.56x on 2 CPUs with a 2000-pass spin).
      if (idle++ == 0) idle_since_ns = monotonic_ns();
      if (spin_limit() != 0 && monotonic_ns() - idle_since_ns < kIdleSpinNs) {
        cpu_relax();
        continue;
      }
      idle = 0;
      sleep();
    }
    shutdown();
  }

  // Whether the loop may stop (closed and nothing left, or terminating).
  bool finished() {
    std::vector<std::shared_ptr<Feeder>> dropped_feeders;  // dropped after the lock
    std::unique_lock lock(mutex);
    if (terminating) {
      auto dropped = take_pending(dropped_feeders);
      lock.unlock();
      abandon_all(dropped);
      for (auto& s : slots_) {
        for (auto& a : s.assigned)
          if (a.task.sink) a.task.sink->abandon();
        s.assigned.clear();
      }
      return true;
    }
    if (broken) {
      auto dropped = take_pending(dropped_feeders);
      lock.unlock();
      for (auto& t : dropped)
        if (t.sink) t.sink->set_exception(broken);
      for (auto& s : slots_) {
        for (auto& a : s.assigned)
          if (a.task.sink) a.task.sink->set_exception(broken);
        s.assigned.clear();
      }
      lock.lock();
      return closed;
    }
    if (!closed || has_work()) return false;
    for (auto& s : slots_)
      if (!s.assigned.empty()) return false;
    return true;
  }

  bool dispatch() {
    bool progress = false;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      SlotState& s = slots_[i];
      while (s.pid > 0 && s.assigned.size() < depth() &&
             (options.maxtasksperchild == 0 || s.given < options.maxtasksperchild)) {
        if (pending_count.load(std::memory_order_relaxed) == 0) {
          std::lock_guard lock(mutex);
          if (feeders.empty() && pending.empty()) return progress;
        }
        std::optional<Task> task;
        {
          std::unique_lock lock(mutex);
          if (broken || terminating) return progress;
          task = pop(lock);
        }
        if (!task) return progress;
        if (task->sink && !task->sink->set_running()) continue;
        uint64_t id = ++next_id_;
        FrameHeader h{};
        h.kind = kFrameTask;
        h.task_id = id;
        h.entry = reinterpret_cast<uint64_t>(task->entry);
        h.size = task->args.size();
        s.assigned.push_back({id, std::move(*task), monotonic_ns()});
        // The body is written straight from the task's bytes: deque elements stay put,
        // and a task leaves `assigned` only after its frame was written (its result
        // comes after) or when the worker is gone (then `out` is cleared too).
        s.out.push_back({h, &s.assigned.back().task.args});
        ++s.given;
        progress = true;
      }
    }
    return progress;
  }

  // Moves bytes between the supervisor and the rings; delivers complete results.
  bool pump() {
    bool progress = false;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      SlotState& s = slots_[i];
      if (s.pid <= 0) continue;
      WorkerSlot& slot = pool_->slot(i);
      bool wrote = false;
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
          s.out.pop_front();
          s.out_offset = 0;
        }
      }
      if (wrote) {
        notify(slot.inbox.word);
        progress = true;
      }
      if (read_results(i)) progress = true;
    }
    return progress;
  }

  bool read_results(std::size_t i) {
    SlotState& s = slots_[i];
    WorkerSlot& slot = pool_->slot(i);
    bool progress = false;
    for (;;) {
      if (s.in_header_got < sizeof(FrameHeader)) {
        std::size_t n =
            slot.outbox.read(reinterpret_cast<std::byte*>(&s.in_header) + s.in_header_got,
                             sizeof(FrameHeader) - s.in_header_got);
        if (n == 0) break;
        progress = true;
        s.in_header_got += n;
        if (s.in_header_got < sizeof(FrameHeader)) continue;
        s.in_body.resize(s.in_header.size);
        s.in_body_got = 0;
      }
      if (s.in_body_got < s.in_body.size()) {
        std::size_t n =
            slot.outbox.read(s.in_body.data() + s.in_body_got, s.in_body.size() - s.in_body_got);
        if (n == 0) break;
        progress = true;
        s.in_body_got += n;
        if (s.in_body_got < s.in_body.size()) continue;
      }
      s.in_header_got = 0;
      deliver(i, s.in_header, s.in_body);
    }
    if (progress) notify(slot.outbox.word);
    return progress;
  }

  void deliver(std::size_t i, const FrameHeader& h, const ByteVector& body) {
    SlotState& s = slots_[i];
    switch (h.kind) {
      case kFrameInitOk:
        s.init_ok = true;
        init_failures_ = 0;
        return;
      case kFrameInitError: {
        std::string what = "a worker's initializer failed";
        try {
          std::rethrow_exception(decode_exception(body));
        } catch (const std::exception& e) {
          what += std::string(": ") + e.what();
        } catch (...) {
        }
        set_broken(std::make_exception_ptr(BrokenPool(what)));
        return;
      }
      case kFrameResult:
      case kFrameError: {
        if (s.assigned.empty() || s.assigned.front().id != h.task_id) return;  // not ours
        Assigned a = std::move(s.assigned.front());
        record_service_time(s, a);
        s.assigned.pop_front();
        if (!a.task.sink) return;
        if (h.kind == kFrameResult) {
          a.task.sink->set_result_bytes(body);
        } else {
          a.task.sink->set_exception(decode_exception(body));
        }
        return;
      }
      default:
        return;
    }
  }

  void set_broken(std::exception_ptr error) {
    std::lock_guard lock(mutex);
    if (!broken) broken = std::move(error);
  }

  void check_timeouts() {
    if (!options.timeout) return;
    int64_t now = monotonic_ns();
    int64_t limit = options.timeout->count();
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      SlotState& s = slots_[i];
      if (s.pid <= 0 || s.assigned.empty()) continue;
      WorkerSlot& slot = pool_->slot(i);
      read_results(i);  // a result that just arrived is not a timeout
      if (s.assigned.empty()) continue;
      uint64_t current = slot.current.load(std::memory_order_acquire);
      if (current == 0 || current != s.assigned.front().id || s.timed_out == current) continue;
      int64_t started = slot.started_ns.load(std::memory_order_acquire);
      if (now - started >= limit) {
        s.timed_out = current;
        send_zygote({kZygoteKill, static_cast<uint32_t>(i), s.pid, 0});
      }
    }
  }

  // Milliseconds until the next possible timeout, -1 if none.
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
    auto* header = pool_->header();
    header->supervisor_sleeping.store(1, std::memory_order_seq_cst);
    // Queued tasks only count if some worker can take one: a supervisor must not spin
    // while every worker is busy with a long task.
    bool ready = false;
    for (std::size_t i = 0; i < slots_.size() && !ready; ++i) {
      if (slots_[i].pid <= 0) continue;
      WorkerSlot& slot = pool_->slot(i);
      if (slot.outbox.readable() != 0) ready = true;
      if (!slots_[i].out.empty() && slot.inbox.writable() != 0) ready = true;
    }
    if (!ready) {
      std::unique_lock lock(mutex);
      bool can_dispatch = has_work();
      if (can_dispatch) {
        can_dispatch = false;
        for (auto& s : slots_)
          if (s.pid > 0 && s.assigned.size() < depth() &&
              (options.maxtasksperchild == 0 || s.given < options.maxtasksperchild))
            can_dispatch = true;
      }
      bool idle_closed = closed && !has_work();
      for (auto& s : slots_)
        idle_closed = idle_closed && s.assigned.empty();
      ready = can_dispatch || terminating || idle_closed;
    }
    if (!ready) {
      pollfd fds[2] = {{doorbell_.get(), POLLIN, 0}, {zygote_.socket.get(), POLLIN, 0}};
      sys::call_raw("poll", [&] { return ::poll(fds, 2, next_timeout_ms()); });
    }
    uint64_t count;
    [[maybe_unused]] auto n = ::read(doorbell_.get(), &count, sizeof count);
    header->supervisor_sleeping.store(0, std::memory_order_seq_cst);
  }

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
        zygote_gone();
        break;
      }
      progress = true;
      if (m.slot >= slots_.size()) continue;
      SlotState& s = slots_[m.slot];
      if (m.kind == kZygoteSpawned) {
        if (m.pid <= 0) {  // fork failed
          s.spawning = false;
          set_broken(std::make_exception_ptr(BrokenPool("the zygote could not fork a worker")));
          continue;
        }
        std::lock_guard lock(pids_mutex_);
        s.pid = m.pid;
        s.spawning = false;
        s.init_ok = false;
        s.given = 0;
        s.timed_out = 0;
      } else if (m.kind == kZygoteExited) {
        worker_exited(m.slot, m.pid, m.status);
      }
    }
    return progress;
  }

  void worker_exited(std::size_t i, pid_t pid, int status) {
    SlotState& s = slots_[i];
    if (s.pid != pid) return;
    read_results(i);  // what it wrote before it died still counts
    WorkerSlot& slot = pool_->slot(i);
    if (!s.assigned.empty()) {
      uint64_t current = slot.current.load(std::memory_order_acquire);
      if (current == s.assigned.front().id) {
        Assigned a = std::move(s.assigned.front());
        s.assigned.pop_front();
        if (a.task.sink) {
          if (s.timed_out == a.id) {
            a.task.sink->set_exception(std::make_exception_ptr(
                TimeoutError("task ran past the pool's timeout; its worker " + std::to_string(pid) +
                             " was killed")));
          } else {
            a.task.sink->set_exception(std::make_exception_ptr(WorkerLost(pid, status)));
          }
        }
      }
      // Tasks it had not started go back to the front of the queue, in order.
      std::lock_guard lock(mutex);
      for (auto it = s.assigned.rbegin(); it != s.assigned.rend(); ++it)
        pending.push_front(std::move(it->task));
      pending_count.store(pending.size(), std::memory_order_relaxed);
      s.assigned.clear();
    }
    bool died_in_init = !s.init_ok;
    {
      std::lock_guard lock(pids_mutex_);
      s.pid = 0;
    }
    s.out.clear();
    s.out_offset = 0;
    s.in_header_got = 0;
    s.in_body.clear();
    s.in_body_got = 0;
    slot.reset();
    if (died_in_init && ++init_failures_ >= 3) {
      set_broken(std::make_exception_ptr(
          BrokenPool(std::string("workers keep dying before finishing their initializer (last: ") +
                     WorkerLost(pid, status).what() + ")")));
    }
    std::lock_guard lock(mutex);
    if (!terminating && !broken) spawn(i);
  }

  void shutdown() {
    // Stop is explicit: other processes forked later (another pool's zygote) may hold
    // a copy of our end of the socket, so its closing is no signal. (EOF is how the
    // zygote learns that the pool's process died.)
    send_zygote({kZygoteStop, 0, 0, 0});
    zygote_.socket.reset();
    int status = 0;
    sys::call_raw("waitpid", [&] { return ::waitpid(zygote_.pid, &status, 0); });
    {
      std::lock_guard lock(pids_mutex_);
      for (auto& s : slots_)
        s.pid = 0;
    }
    done_ = true;
  }

  std::unique_ptr<WorkerShared> pool_;
  sys::Fd doorbell_;
  Zygote zygote_;
  std::vector<SlotState> slots_;
  mutable std::mutex pids_mutex_;
  std::thread supervisor_;
  uint64_t next_id_ = 0;
  int init_failures_ = 0;
  int64_t avg_task_ns_ = kShortTaskNs;  // unknown at first: shallow queues
  bool zygote_lost_ = false;
  bool done_ = false;
};

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

void Engine::submit(Task task) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->check_open();
    impl_->pending.push_back(std::move(task));
    impl_->pending_count.store(impl_->pending.size(), std::memory_order_relaxed);
  }
  impl_->wake();
}

void Engine::submit(std::vector<Task>& tasks) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->check_open();
    for (auto& t : tasks)
      impl_->pending.push_back(std::move(t));
    impl_->pending_count.store(impl_->pending.size(), std::memory_order_relaxed);
  }
  tasks.clear();
  impl_->wake();
}

void Engine::submit(std::shared_ptr<Feeder> feeder) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->check_open();
    impl_->feeders.push_back(std::move(feeder));
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
std::vector<pid_t> Engine::pids() const {
  return impl_->pids();
}

}  // namespace mpx::detail
