// Process workers' lives (src/pool/process_engine.hpp): what happens when a worker is
// spawned (through the zygote), when one dies (the task it ran fails with WorkerLost or
// TimeoutError, its queued tasks go back to the front of the queue, a new worker takes
// its place), and when the pool stops (the zygote kills and reaps the workers).
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <string>
#include <system_error>

#include "pool/process_engine.hpp"
#include "process/start_methods.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

// Lock held.
void ProcessImpl::spawn(std::size_t i) {
  slots_[i].restart_ns = 0;
  if (terminating || broken || leaving_) return;
  slots_[i].spawning = true;
  send_zygote({kZygoteSpawn, static_cast<uint32_t>(i), 0, next_child_number()});
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
      if (m.pid <= 0) {  // fork failed: again later; the live workers go on
        s.spawning = false;
        fork_error_ = m.status;
        if (no_worker_since_ns_ == 0 && std::none_of(slots_.begin(), slots_.end(),
                                                     [](const SlotState& t) { return t.pid > 0; }))
          no_worker_since_ns_ = monotonic_ns();
        restarts_due_.store(true, std::memory_order_relaxed);
        restart_later(m.slot, monotonic_ns());
        continue;
      }
      no_worker_since_ns_ = 0;
      s.pid = m.pid;
      s.worked = false;
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
    // What it wrote before it died still counts: all of it (read_frames() stops after a
    // large frame), so that the task it held is the first not answered, and those
    // after it are the ones it had not started.
    frames_.clear();
    while (read_frames(i, frames_, false)) {
    }
    const int64_t now = monotonic_ns();
    for (auto& f : frames_)
      match(f, done);
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
        s.worked = true;  // its task's doing: no crash loop
        done.push_back({std::move(a.task.sink), a.task.tag, 0, {}, error});
      }
      // Tasks it had not started go back to the front of the queue, in order, with their
      // bytes from its inbox where it was to read them in place (they are still there).
      for (auto it = s.assigned.rbegin(); it != s.assigned.rend(); ++it) {
        ByteVector args;
        if (it->body_size != 0 && !take_args(*it, args)) {
          done.push_back({std::move(it->task.sink),
                          it->task.tag,
                          0,
                          {},
                          std::make_exception_ptr(std::bad_alloc()),
                          false});
          continue;
        }
        if (!args.empty()) {
          ring_copy_out(slot.inbox.data, ByteRing::kCapacity, it->body_at, args.data(),
                        it->body_size);
          it->task.args = std::move(args);
        }
        pending.push_front(std::move(it->task));
      }
      pending_count.store(pending.size(), std::memory_order_relaxed);
      s.assigned.clear();
    }
    // Only a death inside the initializer counts toward breaking the pool: one killed
    // from outside is replaced (its task fails with WorkerLost), with restart_later()'s
    // backoff.
    const bool died_in_init =
        options.initializer && slot.in_init.load(std::memory_order_acquire) != 0;
    s.pid = 0;
    drop_outgoing(s);
    reads_[i] = ReadState{};
    slot.reset();
    if (died_in_init && ++init_failures_ >= 3 && !broken) {
      set_broken(std::make_exception_ptr(
          BrokenPool(std::string("workers keep dying in their initializer (last: ") +
                     WorkerLost(pid, status).what() + ")")));
    }
    if (s.worked) {
      s.failures = 0;
      spawn(i);
    } else {
      restart_later(i, now);
    }
    fill(lock, true);  // its queued tasks to the other workers
  }
  for (auto& d : done)
    d.run();
}

// Replaces worker i, which died or failed to fork before finishing a task: at once the
// first time, then after a delay that doubles with each such failure in a row (lock
// held).
void ProcessImpl::restart_later(std::size_t i, int64_t now) {
  SlotState& s = slots_[i];
  const unsigned n = s.failures++;
  if (n == 0) {
    spawn(i);
    return;
  }
  const int64_t delay = kBackoffNs << std::min(n - 1, 7u);
  s.restart_ns = now + std::min(delay, kMaxBackoffNs);
  restarts_due_.store(true, std::memory_order_relaxed);
}

// Starts the workers whose restart is due, and fails queued tasks if no worker can
// exist (the supervisor's loop, when restart_later() or a failed fork raised
// restarts_due_).
void ProcessImpl::start_due_workers() {
  if (!restarts_due_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(mutex);
  const int64_t now = monotonic_ns();
  bool waiting = no_worker_since_ns_ != 0;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    SlotState& s = slots_[i];
    if (s.restart_ns != 0 && now >= s.restart_ns) spawn(i);
    waiting = waiting || s.restart_ns != 0;
  }
  fail_if_no_worker();
  if (!waiting) restarts_due_.store(false, std::memory_order_relaxed);
}

// Milliseconds until the next restart is due (-1: none), or until queued tasks fail for
// want of any worker (lock held).
int ProcessImpl::next_restart_ms() {
  int64_t best = -1;
  auto consider = [&](int64_t at) {
    if (at != 0 && (best < 0 || at < best)) best = at;
  };
  for (const auto& s : slots_)
    consider(s.restart_ns);
  if (no_worker_since_ns_ != 0) consider(no_worker_since_ns_ + kNoWorkerNs);
  if (best < 0) return -1;
  const int64_t left = std::max<int64_t>(best - monotonic_ns(), 0);
  return static_cast<int>((left + 999'999) / 1'000'000);
}

// No worker could exist for kNoWorkerNs (forks keep failing): the queued tasks fail
// rather than wait for ever; later ones too while it lasts (lock held on entry and exit).
void ProcessImpl::fail_if_no_worker() {
  if (no_worker_since_ns_ == 0 || pending.empty() ||
      monotonic_ns() - no_worker_since_ns_ < kNoWorkerNs)
    return;
  const int err = fork_error_ < 0 ? -fork_error_ : fork_error_;
  const std::string what =
      std::string("no worker could be started for ") + std::to_string(kNoWorkerNs / 1'000'000'000) +
      " s: " + (fork_error_ < 0 ? "pidfd_open" : "fork") +
      " failed: " + std::system_category().message(err) + " (errno " + std::to_string(err) + ")";
  std::vector<Task> failed(std::make_move_iterator(pending.begin()),
                           std::make_move_iterator(pending.end()));
  pending.clear();
  pending_count.store(0, std::memory_order_relaxed);
  const auto error = std::make_exception_ptr(BrokenPool(what));
  for (auto& t : failed)
    if (t.sink) handoff_.push_back({std::move(t.sink), t.tag, 0, {}, error});
  handoffs_.store(handoff_.size(), std::memory_order_release);
}

// The zygote kills and reaps its workers, then exits; it is reaped here. Stop is
// explicit: other processes forked later (another pool's zygote) may hold a copy of our
// end of the socket, so its closing is no signal. (EOF is how the zygote learns that the
// pool's process died.)
void ProcessImpl::stop_zygote() {
  {
    std::lock_guard lock(mutex);
    send_zygote({kZygoteStop, 0, 0, 0});
  }
  zygote_.socket.reset();
  int status = 0;
  sys::call_raw("waitpid", [&] { return ::waitpid(zygote_.pid, &status, 0); });
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
  stop_zygote();
  std::lock_guard lock(mutex);
  for (auto& s : slots_)
    s.pid = 0;
}

}  // namespace mpx::detail
