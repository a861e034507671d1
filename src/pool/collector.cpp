// Reading process workers' results (src/pool/process_engine.hpp): the collector role that
// a caller waiting for a result takes (ProcessCollector: spin, then sleep on the results
// futex), reading frames from the outboxes, matching them with their tasks, and
// delivering outcomes to the sinks (callbacks go to the supervisor).
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "pool/process_engine.hpp"

namespace mpx::detail {

namespace {

// try_lock until the deadline, yielding, then napping 50 us between tries. Not a
// std::timed_mutex: GCC 12's try_lock_until(steady_clock) is pthread_mutex_clocklock,
// which ThreadSanitizer does not intercept (it then reports unlocks of unlocked
// mutexes). The reader holds the lock for short stretches, and only a timed wait for a
// result comes here while another thread reads.
// The collector whose role this thread holds, in ProcessCollector::collect() (null:
// none). Only that thread sleeps on the collector's results word.
thread_local const ProcessCollector* t_collecting = nullptr;

bool lock_until(std::unique_lock<std::mutex>& lock, const Deadline& deadline) {
  for (int tries = 0; !lock.try_lock(); ++tries) {
    if (deadline.expired()) return false;
    if (tries < 16)
      ::sched_yield();
    else
      std::this_thread::sleep_for(
          std::min<Deadline::Clock::duration>(deadline.remaining(), std::chrono::microseconds(50)));
  }
  return true;
}

}  // namespace

bool ProcessImpl::collect(bool on_supervisor, bool if_free, const Deadline& deadline) {
  if (!results_readable()) return false;
  std::unique_lock read_lock(read_mutex_, std::defer_lock);
  if (!if_free) {
    // A timed wait (Future::result(timeout)) waits for another reader no longer than its
    // deadline. Readers run no user callback under this lock; a result's decoding, at most.
    if (deadline.is_never()) {
      read_lock.lock();
    } else if (!lock_until(read_lock, deadline)) {
      return false;
    }
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
  // A caller collecting results soon clears `collecting` (collector_leaving()), a line
  // the workers just read: ask for it now, so that its store does not wait for it.
  if (!on_supervisor) prefetch_for_write(reinterpret_cast<const std::byte*>(&header_->collecting));
  bool handed_off = false;
  {
    auto lock = lock_soon(mutex);
    for (auto& f : frames_)
      handed_off |= match(f, deliveries_);
    fill(lock, true);
  }
  // Closed: the supervisor stops the workers once no task is left, which it cannot see
  // while it sleeps (they used to wait for ever after close() then get()).
  if (!on_supervisor && (handed_off || stopping.load(std::memory_order_acquire))) wake();
  deliver();
  return true;
}

// Runs deliveries_ (read_mutex_ held). A run of results for one sink (a map's chunks)
// goes to it in one call: MapState then takes its lock and wakes its waiters once, not
// once per chunk.
void ProcessImpl::deliver() {
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
        results_.push_back({deliveries_[j].tag, deliveries_[j].body, deliveries_[j].placed});
      d.sink->task_results(results_);
    }
    for (; k < end; ++k)
      recycle(deliveries_[k].body);
  }
  deliveries_.clear();
}

void ProcessImpl::collector_leaving() noexcept {
  header_->collecting.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the store, then the looks
  if (results_readable() || pending_count.load(std::memory_order_relaxed) != 0) wake();
}

// Reads the complete frames in worker i's outbox (read_mutex_ held).
bool ProcessImpl::read_frames(std::size_t i, std::vector<Frame>& out, bool places) {
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
      r.body_got = 0;
      if (r.header.kind != kFramePad) {
        if (r.body.capacity() == 0 && !spare_bodies_.empty()) {
          r.body = std::move(spare_bodies_.back());
          spare_bodies_.pop_back();
          spare_bytes_ -= r.body.capacity();
        }
        const bool placed = places && r.header.kind == kFrameResult &&
                            r.header.size >= kLargeBody && find_place(i, r);
        const std::size_t to_body = placed ? r.place.head : r.header.size;
        reserve_prefaulted(r.body, to_body);
        r.body.resize(to_body);
      }
    }
    if (r.header.kind == kFramePad) {  // a worker skipped to the outbox's start
      const std::size_t n = std::min(ring.readable(), r.header.size - r.body_got);
      ring.consume(n);
      if (n != 0) progress = true;
      r.body_got += n;
      if (r.body_got < r.header.size) break;
      r.header_got = 0;
      continue;
    }
    if (r.body_got < r.header.size) {
      // The head (or all) to the body, the rest to the sink's place.
      const bool to_body = r.body_got < r.body.size();
      std::byte* dst =
          to_body ? r.body.data() + r.body_got : r.place.rest + (r.body_got - r.body.size());
      const std::size_t want = to_body ? r.body.size() - r.body_got : r.header.size - r.body_got;
      std::size_t n = ring.read(dst, want);
      if (n == 0) break;
      progress = true;
      r.body_got += n;
      if (r.body_got < r.header.size) continue;
    }
    r.header_got = 0;
    const bool large = r.header.size >= kLargeBody;
    out.push_back({i, r.header, std::move(r.body), r.place.rest != nullptr});
    r.body = ByteVector();
    r.place = {};
    r.sink.reset();
    // A large body is delivered (and its buffer recycled) before the next is read:
    // the next one then reuses that memory instead of faulting in its own (a map of
    // a million ints: eight 500 KB results, 1000 page faults at microseconds each).
    if (large) break;
  }
  if (progress) wake_sleepers(ring.word);  // it may wait for room
  return progress;
}

// Asks the sink of the task whose result frame begins in worker i's outbox where its body
// may go (TaskSink::result_place); sets r.place and r.sink, or returns false.
bool ProcessImpl::find_place(std::size_t i, ReadState& r) {
  std::size_t tag = 0;
  {
    auto lock = lock_soon(mutex);
    const SlotState& s = slots_[i];
    if (s.assigned.empty() || s.assigned.front().id != r.header.task_id) return false;
    r.sink = s.assigned.front().task.sink;
    tag = s.assigned.front().task.tag;
  }
  if (r.sink) r.place = r.sink->result_place(tag, r.header.size);
  if (r.place.rest != nullptr && r.place.head <= r.header.size) return true;
  r.place = {};
  r.sink.reset();
  return false;
}

// Keeps a delivered body's buffer for a later frame (read_mutex_ held): memory the
// process touched before costs no page faults.
void ProcessImpl::recycle(ByteVector& body) {
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
// supervisor's hand-off queue (returns true then) when completing it runs user code:
// the supervisor runs those in run_handoffs(), holding no lock of the engine, so that a
// callback that blocks (on a lock a caller holds while it waits for a result with a
// timeout) blocks no reader.
bool ProcessImpl::match(Frame& f, std::vector<Delivery>& out) {
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
      s.last_result = ++results_matched_;
      s.worked = true;
      s.failures = 0;
      record_task_time(f.header.entry);
      s.assigned.pop_front();
      recycle_args(a.task.args);
      Delivery d{std::move(a.task.sink), a.task.tag, f.header.kind,
                 std::move(f.body),      nullptr,    f.placed};
      if (d.sink && d.sink->has_callbacks()) {
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

// A future completed by the collecting thread itself (deliver()) wakes nobody: the only
// sleeper on `results` is that thread.
void ProcessCollector::poke() noexcept {
  if (t_collecting != this) wake_sleepers(header()->results);
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
    ~Gone() {
      cpu.store(-1, std::memory_order_relaxed);
      t_collecting = nullptr;
    }
  } gone{cpu};
  t_collecting = this;
  if (spin) cpu.store(::sched_getcpu(), std::memory_order_relaxed);
  for (unsigned i = 1;; ++i) {
    if (ready()) return true;
    if (impl.collect(false, false, deadline)) {
      if (ready()) return true;  // before reading the clock again
      idle_since = monotonic_ns();
      if (spin && !spinning()) {
        spin = false;
        cpu.store(-1, std::memory_order_relaxed);
      }
      continue;
    }
    if (spin && i % 32 != 0) {
      impl.prefetch_results();
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

}  // namespace mpx::detail
