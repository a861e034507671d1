// Process workers' lives (src/pool/process_engine.hpp): what happens when a worker is
// spawned (through the zygote), when one dies (the task it ran fails with WorkerLost or
// TimeoutError, its queued tasks go back to the front of the queue, a new worker takes
// its place), and when the pool stops (the zygote kills and reaps the workers).
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <string>

#include "pool/process_engine.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

// Lock held.
void ProcessImpl::spawn(std::size_t i) {
  slots_[i].spawning = true;
  send_zygote({kZygoteSpawn, static_cast<uint32_t>(i), 0, 0});
}

void ProcessImpl::send_zygote(ZygoteMessage m) {
  if (zygote_lost_) return;
  auto n = ::send(zygote_.socket.get(), &m, sizeof m, MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(sizeof m)) zygote_gone();
}

void ProcessImpl::zygote_gone() {
  if (zygote_lost_) return;
  zygote_lost_ = true;
  set_broken(std::make_exception_ptr(BrokenPool("the pool's zygote process died")));
}

bool ProcessImpl::read_zygote() {
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
      s.stop_sent = false;
      // Tasks may wait for it: queued ones, or ones queued behind another worker's
      // (a pool's first tasks all go to the worker that started first).
      fill(lock, true);
    } else if (m.kind == kZygoteExited) {
      worker_exited(m.slot, m.pid, m.status);
    }
  }
  return progress;
}

void ProcessImpl::worker_exited(std::size_t i, pid_t pid, int status) {
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
      match(f, done, now);
    frames_.clear();
    WorkerSlot& slot = pool_->slot(i);
    if (!s.assigned.empty()) {
      uint64_t current = slot.current.load(std::memory_order_acquire);
      if (current == s.assigned.front().id) {
        Assigned a = std::move(s.assigned.front());
        s.assigned.pop_front();
        std::exception_ptr error;
        if (s.timed_out == a.id) {
          error =
              std::make_exception_ptr(TimeoutError("task ran past the pool's timeout; its worker " +
                                                   std::to_string(pid) + " was killed"));
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
      set_broken(std::make_exception_ptr(
          BrokenPool(std::string("workers keep dying before finishing their initializer (last: ") +
                     WorkerLost(pid, status).what() + ")")));
    }
    if (!terminating && !broken && !leaving_) spawn(i);
    fill(lock, true);  // its queued tasks to the other workers
  }
  for (auto& d : done)
    d.run();
}

// Starts every worker and waits until each is forked (from the constructor, before the
// supervisor thread exists): once the pool is built its workers exist, so that each
// runs its initializer even if close() comes at once, and a fresh pool hands tasks to
// workers as a warm one does (shutdown(cancel_futures) cancels the same tasks).
void ProcessImpl::start_workers() {
  {
    std::lock_guard lock(mutex);
    for (std::size_t i = 0; i < slots_.size(); ++i)
      spawn(i);
  }
  for (;;) {
    {
      std::lock_guard lock(mutex);
      if (zygote_lost_ ||
          std::none_of(slots_.begin(), slots_.end(), [](const SlotState& s) { return s.spawning; }))
        return;
    }
    wait_zygote(-1);
  }
}

// Waits up to timeout_ms (-1: no limit) for word from the zygote or the doorbell, and
// reads what the zygote said.
void ProcessImpl::wait_zygote(int timeout_ms) {
  pollfd fds[2] = {{zygote_.socket.get(), POLLIN, 0}, {doorbell_.get(), POLLIN, 0}};
  sys::call_raw("poll", [&] { return ::poll(fds, 2, timeout_ms); });
  uint64_t count;
  [[maybe_unused]] auto n = ::read(doorbell_.get(), &count, sizeof count);
  read_zygote();
}

// Close and join: the queued tasks are done. Each worker is asked to leave (a stop frame
// after its last task), flushes its stdio and exits; the zygote reports it gone. One
// still there after kLeaveGraceNs, or all of them if terminate() comes meanwhile, are
// killed by shutdown().
void ProcessImpl::let_workers_leave() {
  const int64_t until = monotonic_ns() + kLeaveGraceNs;
  for (;;) {
    bool waiting = false;
    bool unsent = false;
    {
      std::lock_guard lock(mutex);
      if (terminating || zygote_lost_) return;
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        SlotState& s = slots_[i];
        if (s.spawning) waiting = true;
        if (s.pid <= 0) continue;
        waiting = true;
        if (s.stop_sent) continue;
        FrameHeader h{};
        h.kind = kFrameStop;
        WorkerSlot& slot = pool_->slot(i);
        if (!slot.inbox.write_frame(reinterpret_cast<const std::byte*>(&h), sizeof h, nullptr, 0)) {
          unsent = true;  // tasks taken back from it still fill its inbox
          continue;
        }
        s.stop_sent = true;
        wake_sleepers(slot.inbox.word);
      }
    }
    if (!waiting) return;
    const int64_t left = until - monotonic_ns();
    if (left <= 0) return;
    wait_zygote(unsent ? 10 : static_cast<int>((left + 999'999) / 1'000'000));
  }
}

void ProcessImpl::shutdown() {
  bool graceful = false;
  {
    std::lock_guard lock(mutex);
    leaving_ = true;
    graceful = !terminating && !broken && !zygote_lost_;
  }
  if (graceful) let_workers_leave();
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

}  // namespace mpx::detail
