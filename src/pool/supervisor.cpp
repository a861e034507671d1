// The process pool's supervisor thread (src/pool/process_engine.hpp): its loop, the
// callbacks callers handed to it, per-task timeouts, when the pool may stop, and how it
// sleeps (poll on its eventfd doorbell and the zygote's socket).
#include <poll.h>
#include <unistd.h>

#include <algorithm>

#include "pool/process_engine.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

void ProcessImpl::supervise() {
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
    start_due_workers();
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

// Completes the sinks with callbacks that callers collected (on this thread, as
// Python runs callbacks on the pool's result thread).
bool ProcessImpl::run_handoffs() {
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
bool ProcessImpl::finished() {
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

void ProcessImpl::check_timeouts() {
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
int ProcessImpl::next_timeout_ms() {
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

void ProcessImpl::sleep() {
  header_->supervisor_sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Results count only while no caller collects them (a caller that stops
  // collecting rings us if it left some); queued tasks only if some worker can take
  // one (a supervisor must not spin while every worker is busy with a long task), and
  // only lazy input while a caller collects (it refills the workers).
  const bool collecting = header_->collecting.load(std::memory_order_seq_cst) != 0;
  bool ready =
      (!collecting && results_readable()) || header_->reopened.load(std::memory_order_seq_cst) != 0;
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
    const int restart_ms = next_restart_ms();
    if (restart_ms >= 0 && (timeout_ms < 0 || restart_ms < timeout_ms)) timeout_ms = restart_ms;
  }
  if (!ready) {
    pollfd fds[2] = {{doorbell_.get(), POLLIN, 0}, {zygote_.socket.get(), POLLIN, 0}};
    sys::call_raw("poll", [&] { return ::poll(fds, 2, timeout_ms); });
  }
  uint64_t count;
  [[maybe_unused]] auto n = ::read(doorbell_.get(), &count, sizeof count);
  header_->supervisor_sleeping.store(0, std::memory_order_seq_cst);
}

}  // namespace mpx::detail
