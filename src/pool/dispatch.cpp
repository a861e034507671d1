// Handing tasks to process workers (src/pool/process_engine.hpp): which worker gets a
// task (pick, has_room), writing frames into its inbox (assign, pump), waking the
// workers that were written to (wake_assigned, wake_elsewhere), and taking back tasks
// queued behind a long one for an idle worker (rebalance, take_back).
#include <sched.h>

#include <algorithm>
#include <cstring>

#include "pool/process_engine.hpp"

namespace mpx::detail {

// A live worker with room for another task (of a group or not: depth()), preferring
// the least loaded, then the one that answered last (likely still spinning, not
// asleep). -1 if none. Lock held.
long ProcessImpl::pick(bool of_group) noexcept {
  long best = -1;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const SlotState& s = slots_[i];
    if (!has_room(i, of_group)) continue;
    if (best >= 0) {
      const SlotState& b = slots_[static_cast<std::size_t>(best)];
      if (s.assigned.size() > b.assigned.size()) continue;
      if (s.assigned.size() == b.assigned.size() && s.last_result <= b.last_result) continue;
    }
    best = static_cast<long>(i);
  }
  return best;
}

// Whether worker i may be given another task (lock held).
bool ProcessImpl::has_room(std::size_t i, bool of_group) noexcept {
  SlotState& s = slots_[i];
  if (s.pid <= 0 || s.assigned.size() >= depth(of_group)) return false;
  if (options.maxtasksperchild != 0 && s.given >= options.maxtasksperchild) return false;
  if (s.closed) {  // until the worker has passed the tasks taken back from it
    if ((pool_->slot(i).claim.load(std::memory_order_acquire) >> 32) != 0) return false;
    s.closed = false;
  }
  return true;
}

// When nothing else is queued, hands tasks queued behind another in a busy worker's
// inbox to idle workers, the last queued first: a task must not wait behind a long one
// while another worker idles (a map of 400, 40, 400 and 40 ms sleeps took 0.8 s on two
// workers instead of 0.44: Python's workers pull from one shared queue). A task is
// taken back only whole in the inbox and not yet taken by its worker
// (WorkerSlot::claim). Lock held. Returns whether it moved any.
bool ProcessImpl::rebalance() {
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
    if (idle < 0 || busy < 0) return moved;
    SlotState& from = slots_[static_cast<std::size_t>(busy)];
    ByteVector args;  // for a body read in place: allocated before the task is taken
    if (from.assigned.back().body_size != 0 && !take_args(from.assigned.back(), args)) return moved;
    if (!take_back(static_cast<std::size_t>(busy))) {
      recycle_args(args);
      return moved;
    }
    if (!args.empty()) {
      const Assigned& a = from.assigned.back();
      ring_copy_out(pool_->slot(static_cast<std::size_t>(busy)).inbox.data, ByteRing::kCapacity,
                    a.body_at, args.data(), a.body_size);
      from.assigned.back().task.args = std::move(args);
    }
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
bool ProcessImpl::take_back(std::size_t i) noexcept {
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
bool ProcessImpl::fill(std::unique_lock<std::mutex>& lock, bool use_feeders) {
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
    // (Only per-task timeouts need it: Assigned::dispatched_ns.)
    if (options.timeout && (now == 0 || (use_feeders && !feeders.empty()))) now = monotonic_ns();
    assign(static_cast<std::size_t>(i), std::move(*task), now, of_group);
    progress = true;
  }
  if (pending.empty() && feeders.empty() && !broken && !terminating) progress |= rebalance();
  wake_assigned();
  return progress;
}

// A call submitted while no task waits goes to a worker with room at once, without a
// trip through `pending` (fill() does the same with more steps). Lock held.
bool ProcessImpl::take_now(Task& task) {
  bool of_group = false;
  const long i = slot_now(task, of_group);
  if (i < 0) return false;
  if (task.sink && !task.sink->task_running(task.tag)) return true;  // cancelled: dropped
  assign(static_cast<std::size_t>(i), std::move(task), options.timeout ? monotonic_ns() : 0,
         of_group);
  return true;
}

// Wakes the workers whose inboxes assign() wrote to (lock held): once per fill(), not
// per task. The fence waits until the frames' stores reach the cache lines the workers
// read: per task, that was two thirds of fill()'s time in a chunksize-1 map, whose
// caller it slowed down; a run of frames lets the misses overlap.
// One sleeping worker is left to the kernel. Of several, each is woken where it fell
// asleep unless another worker runs or was just woken there, or this thread runs there
// (the kernel then moves it to a CPU that looks idle: where it sent the previous one);
// then wake_elsewhere().
void ProcessImpl::wake_assigned() noexcept {
  // Nothing written (a collector's fill() that found no task): no fence to pay.
  if (std::none_of(slots_.begin(), slots_.end(), [](const SlotState& s) { return s.written; }))
    return;
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
void ProcessImpl::wake_elsewhere(std::size_t i, cpu_set_t& taken, int here) noexcept {
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
void ProcessImpl::assign(std::size_t i, Task task, int64_t now, bool of_group) {
  SlotState& s = slots_[i];
  const FrameHeader h = new_frame(i, task, task.args.size(), of_group);
  Assigned& a = record(i, h, std::move(task), now);
  // The body is written straight from the task's bytes: deque elements stay put,
  // and a task leaves `assigned` only after its frame was written (its result
  // comes after) or when the worker is gone (then `out` is cleared too).
  const ByteVector& body = a.task.args;
  if (s.out.empty() && write_frame(i, h, a)) {
    mark_written(i, h);
    return;
  }
  s.out.push_back({h, &body});
  outgoing_.fetch_add(1, std::memory_order_relaxed);
  pump(i);
}

// The slot a task submitted now goes to at once (lock held), and whether it is of a
// group: -1 if none can take it now.
long ProcessImpl::slot_now(const Task& task, bool& of_group) {
  if (broken || terminating) return -1;
  of_group = grouped(task);
  return pick(of_group);
}

// Task `task`, framed as h, is worker i's now (lock held).
ProcessImpl::Assigned& ProcessImpl::record(std::size_t i, const FrameHeader& h, Task task,
                                           int64_t now) {
  SlotState& s = slots_[i];
  s.assigned.push_back({h.task_id, h.seq, std::move(task), now});
  ++s.given;
  return s.assigned.back();
}

// Frame h is in worker i's inbox: the caller wakes the worker (wake_assigned()).
void ProcessImpl::mark_written(std::size_t i, const FrameHeader& h) noexcept {
  pool_->slot(i).last_seq.store(h.seq, std::memory_order_release);
  slots_[i].written = true;
}

// The header of the next frame for worker i, of `task` with `size` bytes of arguments
// (lock held).
FrameHeader ProcessImpl::new_frame(std::size_t i, const Task& task, std::size_t size,
                                   bool of_group) {
  SlotState& s = slots_[i];
  if (++s.seq == 0) s.seq = 1;  // 0 is never a frame's (WorkerSlot::claim)
  FrameHeader h{};
  h.kind = kFrameTask;
  h.seq = s.seq;
  h.task_id = ++next_id_;
  h.entry = reinterpret_cast<uint64_t>(task.entry);
  h.size = size;
  // Its group: its sink, which lives at least as long as the results held back for it
  // (no other sink can have the same address meanwhile).
  const TaskSink* group = of_group ? task.sink.get() : nullptr;
  if (group) h.flags = group == s.last_group ? kFrameGrouped | kFrameSameGroup : kFrameGrouped;
  s.last_group = group;
  return h;
}

namespace {

std::size_t to_end(const ByteRing& ring) noexcept {
  return ByteRing::kCapacity - static_cast<std::size_t>(ring.written & (ByteRing::kCapacity - 1));
}

FrameHeader pad_frame(std::size_t skip) noexcept {
  FrameHeader pad{};
  pad.kind = kFramePad;
  pad.size = skip;
  return pad;
}

}  // namespace

// Whether a frame with a body of `size` bytes goes into `inbox` only whole and in one
// piece (write_frame()): a large one (its worker reads it where it lies, kInPlaceFrame)
// of at most half the inbox, so that an empty inbox always has room for it, after a pad
// frame if need be (for which there must be room before the end). Streamed as room
// came, half the chunks of a map of a million ints crossed the end, and their workers
// copied them out first, into fresh memory.
bool ProcessImpl::in_one_piece(const ByteRing& inbox, std::size_t size) noexcept {
  const std::size_t total = sizeof(FrameHeader) + size;
  return size >= kInPlaceFrame && total <= ByteRing::kCapacity / 2 &&
         (total <= to_end(inbox) || to_end(inbox) >= sizeof(FrameHeader));
}

// Writes the frame of task `a` (header h) into worker i's inbox whole, a large one after
// a kFramePad frame (when there is room for both) if it would cross the end. Returns
// false, writing nothing, if there is no room, or none for a frame in_one_piece() to go
// in one piece: the worker makes it as it reads (a writer_waiting wake-up). Lock held.
bool ProcessImpl::write_frame(std::size_t i, const FrameHeader& h, Assigned& a) {
  ByteRing& inbox = pool_->slot(i).inbox;
  const ByteVector& body = a.task.args;
  const std::size_t total = sizeof h + body.size();
  const bool large = body.size() >= kInPlaceFrame;
  if (large) {
    const bool whole = in_one_piece(inbox, body.size());
    if (!inbox.pad_before(total, &pad_frame) && whole && total > to_end(inbox)) return false;
  }
  if (!inbox.write_frame(reinterpret_cast<const std::byte*>(&h), sizeof h, body.data(),
                         body.size()))
    return false;
  if (large) mark_in_place(a, inbox);
  return true;
}

std::size_t Engine::written_limit() noexcept {
  return ByteRing::kCapacity / 2 - sizeof(FrameHeader);  // in_one_piece()
}

// Engine::submit_written: the frame goes whole and in one piece (in_one_piece()) to a
// worker with room, its body written there by `write`, and is read there by the worker
// (Assigned::body_at): a map's chunk of a million ints was encoded into a buffer, in
// fresh pages for most chunks, then copied into the inbox. Lock held.
bool ProcessImpl::take_written(Task& task, std::size_t size, Engine::ArgsWriter write, void* ctx) {
  if (!task.args.empty()) return false;
  bool of_group = false;
  const long found = slot_now(task, of_group);
  if (found < 0) return false;
  const auto i = static_cast<std::size_t>(found);
  SlotState& s = slots_[i];
  ByteRing& inbox = pool_->slot(i).inbox;
  const std::size_t total = sizeof(FrameHeader) + size;
  if (!s.out.empty() || !in_one_piece(inbox, size)) return false;
  const std::size_t need = total > to_end(inbox) ? to_end(inbox) + total : total;
  if (inbox.room_for(inbox.written, need) < need) return false;
  if (task.sink && !task.sink->task_running(task.tag)) return false;
  if (total > to_end(inbox)) inbox.pad_before(total, &pad_frame);  // the worker skips it
  const uint64_t at = inbox.written;
  std::byte* frame = inbox.data + (at & (ByteRing::kCapacity - 1));
  write(ctx, frame + sizeof(FrameHeader));
  const FrameHeader h = new_frame(i, task, size, of_group);
  Assigned& a = record(i, h, std::move(task), options.timeout ? monotonic_ns() : 0);
  a.body_at = at + sizeof h;
  a.body_size = size;
  std::memcpy(frame, &h, sizeof h);
  inbox.publish(at + total);
  mark_written(i, h);  // submitted() wakes the worker
  return true;
}

// Task `a`'s frame was just written to `inbox`: if large and in one piece, its worker
// reads the body where it lies, and the task's buffer goes back for reuse (lock held).
void ProcessImpl::mark_in_place(Assigned& a, const ByteRing& inbox) noexcept {
  const std::size_t size = a.task.args.size();
  const uint64_t body_at = inbox.written - size;
  if (size >= kInPlaceFrame &&
      (body_at & (ByteRing::kCapacity - 1)) + size <= ByteRing::kCapacity) {
    a.body_at = body_at;
    a.body_size = size;
    recycle_args(a.task.args);  // kept, or left in the task when the spares are full
  }
}

// For a task whose body worker i reads in place (Assigned::body_at), a buffer for its
// bytes, to be copied from the inbox once the task is the caller's (lock held). Returns
// false for want of memory; an empty `buffer` if the task still holds its bytes.
bool ProcessImpl::take_args(Assigned& a, ByteVector& buffer) noexcept {
  if (!a.task.args.empty()) return true;
  try {
    buffer = take_spare();
    buffer.resize(a.body_size);
  } catch (const std::bad_alloc&) {
    return false;
  }
  return true;
}

// Forgets the frames not yet written to a slot's inbox (lock held).
void ProcessImpl::drop_outgoing(SlotState& s) noexcept {
  outgoing_.fetch_sub(s.out.size(), std::memory_order_relaxed);
  s.out.clear();
  s.out_offset = 0;
}

// Writes what fits of worker i's outgoing frames (lock held). Returns whether it
// wrote anything.
bool ProcessImpl::pump(std::size_t i) {
  SlotState& s = slots_[i];
  WorkerSlot& slot = pool_->slot(i);
  bool wrote = false;
  bool told = false;  // writer_waiting set
  for (;;) {
    bool progress = false;
    while (!s.out.empty()) {
      Outgoing& f = s.out.front();
      constexpr std::size_t kHeader = sizeof(FrameHeader);
      std::size_t total = kHeader + f.body->size();
      std::size_t n;
      auto a = s.assigned.rend();
      if (s.out_offset == 0 && in_one_piece(slot.inbox, f.body->size()))
        a = std::find_if(s.assigned.rbegin(), s.assigned.rend(),
                         [&](const Assigned& x) { return x.seq == f.header.seq; });
      if (a != s.assigned.rend()) {
        if (!write_frame(i, f.header, *a)) break;
        n = total;
      } else if (s.out_offset < kHeader) {
        n = slot.inbox.write(reinterpret_cast<const std::byte*>(&f.header) + s.out_offset,
                             kHeader - s.out_offset);
      } else {
        n = slot.inbox.write(f.body->data() + (s.out_offset - kHeader), total - s.out_offset);
      }
      if (n == 0) break;
      wrote = progress = true;
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
    if (told && !progress) break;
    // Full, or no room for a frame in one piece: the worker rings the supervisor once it
    // read (Dekker with inbox_read()); looked at once more after saying so.
    slot.writer_waiting.store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    told = true;
  }
  if (wrote) wake_sleepers(slot.inbox.word);
  return wrote;
}

bool ProcessImpl::dispatch() {
  auto lock = lock_soon(mutex);
  bool progress = false;
  for (std::size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].pid > 0 && !slots_[i].out.empty()) progress |= pump(i);
  progress |= fill(lock, true);
  return progress;
}

}  // namespace mpx::detail
