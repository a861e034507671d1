// The shared-memory message ring; see ring.hpp for the protocol.
#include "ipc/ring.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <new>

#include "ipc/chunk.hpp"
#include "ipc/ring_wait.hpp"
#include "mpx/errors.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

constexpr std::size_t kHeaderBytes = (sizeof(RingHeader) + 63) & ~std::size_t{63};

// A connection's whole one-chunk message of at most kSmallMessage bytes: one that readers
// may take without the read lock (Ring::read_small()).
bool is_small(const ChunkHeader& c) noexcept {
  return (c.flags & (kFirst | kLast)) == (kFirst | kLast) && c.length <= Ring::kSmallMessage;
}

// How often a reader in the middle of a streamed message checks that its writer lives.
constexpr auto kWriterCheckInterval = std::chrono::milliseconds(20);

class UnlockGuard {
 public:
  explicit UnlockGuard(sys::RobustMutex& m) noexcept : m_(m) {}
  ~UnlockGuard() {
    try {
      m_.unlock();
    } catch (...) {
    }
  }
  UnlockGuard(const UnlockGuard&) = delete;
  UnlockGuard& operator=(const UnlockGuard&) = delete;

 private:
  sys::RobustMutex& m_;
};

std::atomic<CommitHook> commit_hook{nullptr};

// The two halves of a commit (see the crash-safety rules in ring.hpp): journal, count,
// publish the position, end.
void journal_begin(CommitJournal& j, uint64_t position, uint64_t count0, uint64_t count1) noexcept {
  j.count[0] = count0;
  j.count[1] = count1;
  j.position = position;
  j.active.store(1, std::memory_order_release);
}
void journal_end(CommitJournal& j) noexcept {
  j.active.store(0, std::memory_order_release);
}

// For the holder that found the previous one dead: rolls back counts that were raised
// for a position never published. Returns whether it did.
bool journal_repair(CommitJournal& j, const std::atomic<uint64_t>& published,
                    std::atomic<uint64_t>* counts[2]) noexcept {
  if (j.active.load(std::memory_order_acquire) == 0) return false;
  const bool rolled_back = published.load(std::memory_order_relaxed) != j.position;
  if (rolled_back)
    for (int i = 0; i < 2; ++i)
      if (counts[i]) counts[i]->store(j.count[i], std::memory_order_seq_cst);
  journal_end(j);
  return rolled_back;
}

}  // namespace

int bell_sleep_ms(const Doorbell& bell, const Deadline& deadline) noexcept {
  // Threads sleeping on one end share its socket, so one may drain a bell meant for
  // another (who was about to poll). Sleeping in slices bounds what such a lost bell
  // costs: short ones while several threads wait on the end, long ones otherwise (a
  // later thread may join after this one went to sleep).
  const int slice = bell.waiting_threads.load(std::memory_order_relaxed) > 1 ? 5 : 100;
  const int ms = deadline.poll_timeout_ms();
  return ms < 0 || ms > slice ? slice : ms;
}

void Doorbell::drain() noexcept {
  char buf[64];
  for (;;) {
    ssize_t n =
        sys::call_raw("recv(doorbell)", [&] { return ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT); });
    if (n > 0) continue;
    // ECONNRESET: the peer died with bells unread; that is a hang-up too.
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      peer_closed.store(true, std::memory_order_relaxed);
    return;
  }
}

void Doorbell::ring() noexcept {
  const char bell = 1;
  // EAGAIN: the socket is full of bells already; EPIPE: nobody left to wake.
  if (sys::call_raw("send(doorbell)",
                    [&] { return ::send(fd, &bell, 1, MSG_DONTWAIT | MSG_NOSIGNAL); }) < 0 &&
      (errno == EPIPE || errno == ECONNRESET))
    peer_closed.store(true, std::memory_order_relaxed);
}

void set_commit_hook(CommitHook hook) noexcept {
  commit_hook.store(hook, std::memory_order_relaxed);
}

void run_commit_hook(CommitStep step) noexcept {
  if (CommitHook hook = commit_hook.load(std::memory_order_relaxed)) hook(step);
}

std::size_t Ring::round_capacity(std::size_t bytes) noexcept {
  std::size_t cap = 4096;
  const std::size_t max = std::size_t{1} << 40;
  while (cap < bytes && cap < max)
    cap <<= 1;
  return cap;
}

std::size_t Ring::region_size(std::size_t capacity) noexcept {
  return kHeaderBytes + capacity;
}

void Ring::init(void* region, std::size_t capacity, std::size_t maxsize) {
  auto* h = new (region) RingHeader;
  h->capacity = capacity;
  // A chunk's length is a u32; a quarter of the ring lets writer and reader overlap.
  h->max_chunk = std::min<uint64_t>(capacity / 4, uint64_t{1} << 30) - head_bytes(kFirst);
  h->maxsize = maxsize;
  h->magic.store(kRingMagic, std::memory_order_release);
}

Ring::Ring(void* region, Doorbell* bell) noexcept
    : h_(static_cast<RingHeader*>(region)),
      data_(static_cast<std::byte*>(region) + kHeaderBytes),
      bell_(bell) {}

uint64_t Ring::qsize() noexcept {
  repair_if_abandoned();
  // items_put is raised before the commit that lets a reader take the item, so
  // reading got first never yields got > put.
  uint64_t got = h_->items_got.load(std::memory_order_seq_cst);
  uint64_t put = h_->items_put.load(std::memory_order_seq_cst);
  return put - got;
}

void Ring::wake_readers(bool fenced) noexcept {
  if (!fenced)
    std::atomic_thread_fence(std::memory_order_seq_cst);
  else
    std::atomic_signal_fence(std::memory_order_seq_cst);
  if (bell_) {
    if (h_->reader_sleeping.load(std::memory_order_relaxed) != 0 &&
        h_->reader_sleeping.exchange(0, std::memory_order_seq_cst) != 0)
      bell_->ring();
  } else {
    wake(h_->data_word, h_->data_woken);
  }
}

void Ring::wake_writers(bool fenced) noexcept {
  if (!fenced) std::atomic_thread_fence(std::memory_order_seq_cst);
  if (bell_) {
    if (h_->writer_sleeping.load(std::memory_order_seq_cst) != 0 &&
        h_->writer_sleeping.exchange(0, std::memory_order_seq_cst) != 0)
      bell_->ring();
  } else {
    wake(h_->space_word, h_->space_woken);
  }
}

template <class Pred>
bool Ring::wait_for(bool for_data, Pred&& ready, const Deadline& deadline, bool spin) {
  if (deadline.expired()) return ready();  // a non-blocking call does not spin
  if (!bell_) {
    return for_data ? sleep_until(h_->data_word, h_->data_woken, ready, deadline, spin)
                    : sleep_until(h_->space_word, h_->space_woken, ready, deadline, spin);
  }

  if (ready()) return true;
  if (bell_->gone()) return false;
  if (spin && spin_until(ready, spin_limit())) return true;
  std::atomic<uint32_t>& flag = for_data ? h_->reader_sleeping : h_->writer_sleeping;
  bell_->waiting_threads.fetch_add(1, std::memory_order_relaxed);
  struct Leave {
    Doorbell* bell;
    ~Leave() { bell->waiting_threads.fetch_sub(1, std::memory_order_relaxed); }
  } leave{bell_};
  for (;;) {
    flag.store(1, std::memory_order_seq_cst);
    if (ready()) {
      flag.store(0, std::memory_order_relaxed);
      return true;
    }
    const int ms = bell_sleep_ms(*bell_, deadline);
    pollfd p{bell_->fd, POLLIN, 0};
    sys::call("poll(doorbell)", [&] { return ::poll(&p, 1, ms); });
    bell_->drain();
    if (ready()) return true;
    if (bell_->gone() || deadline.expired()) {
      flag.store(0, std::memory_order_relaxed);
      return false;
    }
  }
}

// The wake-up for a message's last chunk comes after the unlock (under the lock it paid
// the wait for our stores twice). Where the unlock is a full fence itself
// (RobustMutex::kUnlockIsFence), wake_readers() adds none: 3.1 -> 4.0 M queued ints/s.
// A connection's writer learns that every reader is gone from its socket: when a bell it
// rings finds no one (a reader that closes its end, or whose process ends through mpx,
// asks for a bell: Connection's hang_up()), or a wait for room sees EOF. The message that
// learnt it fails too, unless the reader took all of it before it left (a spinning reader
// may read it, answer and close before this writer's bell finds the socket closed).
bool Ring::write(std::span<const std::span<const std::byte>> parts, const Deadline& deadline,
                 bool count_task) {
  if (bell_ && bell_->gone()) throw_broken_pipe();
  if (!lock(h_->write_mutex, &Ring::repair_writer, deadline)) return false;
  bool written;
  uint64_t end;
  {
    UnlockGuard guard(h_->write_mutex);
    written = bell_ ? write_locked<false>(parts, deadline, false)
                    : write_locked<true>(parts, deadline, count_task);
    end = h_->head.load(std::memory_order_relaxed);
  }
  if (written) {
    wake_readers(sys::RobustMutex::kUnlockIsFence);
    if (bell_ && bell_->gone() && h_->tail.load(std::memory_order_acquire) < end)
      throw_broken_pipe();
  }
  return written;
}

void Ring::throw_broken_pipe() {
  throw BrokenPipeError("send: the other end of the connection is closed");
}

void Ring::hang_up_reader() noexcept {
  h_->reader_sleeping.store(1, std::memory_order_seq_cst);
}

template <bool kCounted>
bool Ring::write_locked(std::span<const std::span<const std::byte>> parts, const Deadline& deadline,
                        bool count_task) {
  RingHeader& h = *h_;
  const uint64_t cap = h.capacity;
  auto broken_pipe = [&] {
    if (bell_ && bell_->gone()) throw_broken_pipe();
  };

  const uint64_t put = h.items_put.load(std::memory_order_relaxed);
  if (h.maxsize != 0 && put - h.cached_got >= h.maxsize) {
    auto room = [&] {
      h.cached_got = h.items_got.load(std::memory_order_seq_cst);
      return put - h.cached_got < h.maxsize;
    };
    if (!wait_for(false, room, deadline)) {
      broken_pipe();
      return false;
    }
  }

  uint64_t total = 0;
  for (auto part : parts)
    total += part.size();
  uint64_t head = h.head.load(std::memory_order_relaxed);
  uint64_t remaining = total;
  std::size_t part_index = 0;
  std::size_t part_offset = 0;
  bool first = true;
  do {
    const uint64_t want = std::min<uint64_t>(remaining, h.max_chunk);
    // A message's first chunk carries its total size unless it is the whole message.
    uint64_t head_size = first && want < remaining ? head_bytes(kFirst) : kHeadBytes;
    const uint64_t need = align8(head_size + want);
    // Stream large messages in whatever room there is (at least 1/16 of the ring) so
    // that writer and reader copy at the same time. The writer also needs the word after
    // the chunk: it clears the next commit word there.
    const uint64_t least = std::min<uint64_t>(need, align8(head_size + cap / 16)) + kCommitBytes;
    if (cap - (head - h.cached_tail) < least) {
      auto room = [&] {
        h.cached_tail = h.tail.load(std::memory_order_seq_cst);
        return cap - (head - h.cached_tail) >= least;
      };
      if (!wait_for(false, room, deadline)) {
        broken_pipe();
        return false;  // an unfinished message is abandoned; readers drop it
      }
    }
    const uint64_t room = cap - (head - h.cached_tail) - kCommitBytes;
    uint64_t length = std::min<uint64_t>(want, (room - head_size) & ~uint64_t{7});
    if (first && length < remaining && head_size == kHeadBytes) {
      // Split after all: the first chunk carries the total (`least` leaves room for it).
      head_size = head_bytes(kFirst);
      length = std::min<uint64_t>(want, (room - head_size) & ~uint64_t{7});
    }
    const bool last = length == remaining;
    ChunkHeader c{total, static_cast<uint32_t>(length), (first ? kFirst : 0) | (last ? kLast : 0)};
    store_total(data_, cap, head, c);
    uint64_t pos = head + head_size;
    uint64_t left = length;
    while (left > 0) {
      auto part = parts[part_index];
      const uint64_t n = std::min<uint64_t>(left, part.size() - part_offset);
      if (const uint64_t at = pos & (cap - 1); at + n <= cap)
        copy_short(data_ + at, part.data() + part_offset, static_cast<std::size_t>(n));
      else
        copy_in(pos, part.data() + part_offset, n);
      pos += n;
      left -= n;
      part_offset += n;
      if (part_offset == part.size()) {
        ++part_index;
        part_offset = 0;
      }
    }
    while (part_index < parts.size() && parts[part_index].empty())
      ++part_index;
    const uint64_t start = head;
    head += align8(head_size + length);
    // Queues count items, before the commit (see ring.hpp). Connections have no qsize or
    // join, and their round trip is measurably slower with the counting code merely
    // present on its path (1.05 -> 1.2 us when the two CPUs share no cache): they get an
    // instance without it.
    const bool count = kCounted && last;
    if (count) {
      const uint64_t tasks = h.tasks_put.load(std::memory_order_relaxed);
      journal_begin(h.write_journal, head, put, tasks);
      h.items_put.store(put + 1, std::memory_order_relaxed);
      if (count_task) h.tasks_put.store(tasks + 1, std::memory_order_relaxed);
      run_commit_hook(CommitStep::kCounted);
    }
    commit_word(head).store(0, std::memory_order_relaxed);
    commit_word(start).store(commit_value(start, c.length, c.flags), std::memory_order_release);
    run_commit_hook(CommitStep::kCommitted);
    h.head.store(head, std::memory_order_release);
    if (count) journal_end(h.write_journal);
    // Ask now for the lines the next message of this size will fill, so that its stores
    // (and the unlock, which waits for them) do not each start with a round trip to the
    // reader's CPU. Measured on a VM whose two vCPUs share no cache: 5 -> 8-9 M ints/s.
    // The line holding the end of this message is left alone: the reader is about to
    // read it.
    const uint64_t lines = std::min<uint64_t>(4, (head_size + length) / 64 + 2);
    const uint64_t next_line = (head + 63) & ~uint64_t{63};
    for (uint64_t k = 0; k < lines; ++k)
      prefetch_for_write(data_ + ((next_line + 64 * k) & (cap - 1)));
    if (!last) wake_readers();
    remaining -= length;
    first = false;
  } while (remaining > 0);
  return true;
}

bool Ring::writer_abandoned(uint64_t at) noexcept {
  try {
    auto r = h_->write_mutex.try_lock();
    if (r == sys::RobustMutex::Result::kTimedOut) return false;  // the writer is at work
    if (r == sys::RobustMutex::Result::kOwnerDied) repair_writer();
    // No writer holds the lock: if nothing new was published, the message we are in
    // will never be finished.
    bool abandoned = h_->head.load(std::memory_order_seq_cst) <= at;
    h_->write_mutex.unlock();
    return abandoned;
  } catch (...) {
    return false;
  }
}

// As in write(), the wake-up for the chunk that ends a delivered message comes after the
// unlock. A connection's reader first waits for a small whole message without the lock.
bool Ring::read(ReserveFn reserve, void* ctx, const Deadline& deadline) {
  bool spun = false;
  if (bell_) {
    spun = !deadline.expired() && !bell_->gone();
    if (read_small(reserve, ctx, spun)) {
      wake_writers(true);  // take_small()'s compare-exchange was the fence
      return true;
    }
  }
  if (!lock(h_->read_mutex, &Ring::repair_reader, deadline)) return false;
  bool delivered;
  {
    UnlockGuard guard(h_->read_mutex);
    delivered = bell_ ? read_locked<false>(reserve, ctx, deadline, spun)
                      : read_locked<true>(reserve, ctx, deadline, false);
  }
  if (delivered) wake_writers(sys::RobustMutex::kUnlockIsFence);
  return delivered;
}

bool Ring::read_small(ReserveFn reserve, void* ctx, bool spin) {
  const int spins = spin ? spin_limit() : 0;
  for (int i = 0;;) {
    const uint64_t t = h_->tail.load(std::memory_order_acquire);
    if (const uint64_t w = commit_word(t).load(std::memory_order_acquire); commits(w, t)) {
      const ChunkHeader c = load_header(data_, h_->capacity, t, w);
      if (!is_small(c)) return false;  // (if torn, the locked path looks again)
      if (take_small(t, c.length, reserve, ctx)) return true;
      continue;  // another reader took it
    }
    if (i++ >= spins) return false;
    // Ask for the two lines after the commit word's as well: a message's bytes then cross
    // to this CPU while it waits, not one line after another once it is committed (the
    // writer's stores take them back if they are not written yet). Measured on the 2-vCPU
    // VM: 0.82 -> 0.74 us a round trip (0.247 -> 0.238 where the vCPUs share a cache).
    prefetch_for_read(data_ + ((t + 64) & (h_->capacity - 1)));
    prefetch_for_read(data_ + ((t + 128) & (h_->capacity - 1)));
    cpu_relax();
  }
}

bool Ring::take_small(uint64_t t, uint32_t length, ReserveFn reserve, void* ctx) {
  std::byte stage[kSmallMessage];
  copy_from(data_, h_->capacity, t + kHeadBytes, stage, length);
  // The copy is good if the tail is still at the chunk: then no writer can have touched
  // it. The exchange orders the copy before it (release) and the caller's look at the
  // writers' sleeping flag after it.
  uint64_t expected = t;
  if (!h_->tail.compare_exchange_strong(expected, t + align8(kHeadBytes + length),
                                        std::memory_order_seq_cst))
    return false;
  if (std::byte* dest = reserve(ctx, length)) copy_short(dest, stage, length);
  return true;
}

template <bool kCounted>
bool Ring::read_locked(ReserveFn reserve, void* ctx, const Deadline& deadline, bool spun) {
  RingHeader& h = *h_;
  const uint64_t cap = h.capacity;
  // A connection's small messages may be taken by readers without the lock
  // (read_small()): the tail can move under us, but only forward past such a message.
  uint64_t t = h.tail.load(std::memory_order_acquire);
  if constexpr (!kCounted) h.cached_head = std::max(h.cached_head, t);
  // cached_head: how far chunks are known to be complete (never behind t). The reader
  // learns it from the chunk at t itself: polling the writer's head line too would slow
  // every message down (0.22 -> 0.29 us a connection's round trip). It looks at head only
  // now and then, for a chunk whose commit word is not what it should be (the ring's
  // memory overwritten by a stranger); the chunk is then dropped below.
  unsigned polls = 0;
  auto ready = [&] {
    // A reader without the lock took the message at t: the loop moves on to the tail.
    if (!kCounted && h.tail.load(std::memory_order_relaxed) != t) return true;
    if (const uint64_t end = committed_end(t); end != 0) {
      h.cached_head = std::max(h.cached_head, end);
      return true;
    }
    if (++polls % 64 != 0) return false;
    h.cached_head = std::max(h.cached_head, h.head.load(std::memory_order_seq_cst));
    return h.cached_head != t;
  };
  bool mid = false;
  std::byte* dest = nullptr;
  uint64_t total = 0;
  uint64_t got = 0;
  for (;;) {
    if (h.cached_head == t && !ready()) {
      if (!mid) {
        bool spin = !spun;
        bool came = false;
        if constexpr (kCounted) {
          const bool lazily = keeping_up_.get() && !deadline.expired();
          keeping_up_.set(false);
          if (lazily) {
            spin = false;
            came = spin_lazily(ready);
          }
        }
        if (!came && !wait_for(true, ready, deadline, spin)) {
          if (bell_ && bell_->gone() && !ready()) throw EOFError();
          if (!ready()) return false;
        }
      } else {
        // Inside a streamed message: its writer is alive and at work, or dead (then the
        // message is dropped). The caller's deadline no longer applies.
        for (;;) {
          if (wait_for(true, ready, Deadline::after(kWriterCheckInterval))) break;
          if (bell_ && bell_->gone()) {
            if (ready()) break;
            throw EOFError();
          }
          if (writer_abandoned(t)) {
            mid = false;
            break;
          }
        }
        if (!mid) continue;
      }
    } else if (kCounted && !mid) {
      keeping_up_.set(true);  // a message was waiting: the producer is ahead
    }

    const ChunkHeader c =
        load_header(data_, cap, t, commit_word(t).load(std::memory_order_acquire));
    if constexpr (!kCounted) {
      // Still at the tail after reading the header: then the header is not torn, and a
      // chunk that is not a small message stays ours.
      std::atomic_thread_fence(std::memory_order_acquire);
      if (const uint64_t now = h.tail.load(std::memory_order_relaxed); now != t) {
        t = now;
        h.cached_head = std::max(h.cached_head, t);
        mid = false;  // a partial message before a taken small one is dropped
        continue;
      }
      if (is_small(c)) {
        if (take_small(t, c.length, reserve, ctx)) return true;  // read() wakes writers
        continue;  // another reader took it: the tail check above moves on
      }
    }
    const uint64_t size = align8(head_bytes(c.flags) + c.length);
    if (c.length > h.max_chunk || size > h.cached_head - t) {
      // Not a chunk a writer of this ring could have made: drop everything published.
      t = h.cached_head;
      h.tail.store(t, std::memory_order_release);
      wake_writers();
      mid = false;
      continue;
    }
    if (c.flags & kFirst) {
      mid = true;  // a partial message before it (its writer died) is dropped
      total = c.total;
      got = 0;
      dest = reserve(ctx, total);
    }
    if (mid) {
      if (got + c.length > total) {
        mid = false;
      } else {
        if (dest) copy_from(data_, cap, t + head_bytes(c.flags), dest + got, c.length);
        got += c.length;
      }
    }
    t += size;
    const bool last = (c.flags & kLast) != 0;
    // Every last chunk consumed counts, delivered or dropped, to keep qsize exact
    // (queues only, as in write_locked()).
    const bool count = kCounted && last;
    if (count) {
      const uint64_t items = h.items_got.load(std::memory_order_relaxed);
      journal_begin(h.read_journal, t, items, 0);
      h.items_got.store(items + 1, std::memory_order_relaxed);
      run_commit_hook(CommitStep::kCounted);
    }
    h.tail.store(t, std::memory_order_release);
    if (count) journal_end(h.read_journal);
    if (mid && last && got == total) return true;  // read() wakes writers
    wake_writers();
    if (last) mid = false;
  }
}

bool Ring::wait_readable(const Deadline& deadline) {
  auto ready = [&] { return has_data(); };
  return wait_for(true, ready, deadline);
}

bool Ring::lock(sys::RobustMutex& m, void (Ring::*repair)(), const Deadline& deadline) {
  auto r = m.lock(deadline);
  if (r == sys::RobustMutex::Result::kTimedOut) return false;
  if (r == sys::RobustMutex::Result::kOwnerDied) (this->*repair)();
  return true;
}

void Ring::repair_reader() {
  std::atomic<uint64_t>* counts[2] = {&h_->items_got, nullptr};
  journal_repair(h_->read_journal, h_->tail, counts);
  h_->read_mutex.mark_consistent();
}

uint64_t Ring::committed_end(uint64_t at) const noexcept {
  // Complete if its commit word was stored (after it).
  const ChunkHeader c =
      load_header(data_, h_->capacity, at, commit_word(at).load(std::memory_order_seq_cst));
  if (c.length > h_->max_chunk) return 0;  // not committed, or not a writer's chunk
  return at + align8(head_bytes(c.flags) + c.length);
}

bool Ring::has_data() const noexcept {
  // Head may lag the tail, after a writer died (see ring.hpp).
  const uint64_t t = h_->tail.load(std::memory_order_acquire);
  return h_->head.load(std::memory_order_acquire) > t || committed_end(t) != 0;
}

void Ring::repair_writer() {
  // A writer that died between committing chunks and publishing head.
  uint64_t head = h_->head.load(std::memory_order_relaxed);
  while (const uint64_t end = committed_end(head))
    head = end;
  h_->head.store(head, std::memory_order_seq_cst);
  std::atomic<uint64_t>* counts[2] = {&h_->items_put, &h_->tasks_put};
  // One task fewer may be what join() waits for.
  if (journal_repair(h_->write_journal, h_->head, counts)) notify(h_->join_word);
  h_->write_mutex.mark_consistent();
}

void Ring::repair_if_abandoned() noexcept {
  auto repair = [](sys::RobustMutex& m, CommitJournal& j, auto&& fix) {
    if (j.active.load(std::memory_order_acquire) == 0) return;
    try {
      auto r = m.try_lock();
      if (r == sys::RobustMutex::Result::kTimedOut) return;  // a holder is at work
      if (r == sys::RobustMutex::Result::kOwnerDied) fix();
      m.unlock();
    } catch (...) {
    }
  };
  repair(h_->write_mutex, h_->write_journal, [&] { repair_writer(); });
  repair(h_->read_mutex, h_->read_journal, [&] { repair_reader(); });
}

void Ring::task_done() {
  RingHeader& h = *h_;
  uint64_t done = h.tasks_done.load(std::memory_order_seq_cst);
  do {
    if (done >= h.tasks_put.load(std::memory_order_seq_cst))
      throw ValueError("task_done() called too many times");
  } while (!h.tasks_done.compare_exchange_weak(done, done + 1, std::memory_order_seq_cst));
  // The last task, or the last but one while a put is committing: that put's producer
  // may have died before publishing it, and a joiner must wake to find out.
  const uint64_t put = h.tasks_put.load(std::memory_order_seq_cst);
  const uint64_t committing = h.write_journal.active.load(std::memory_order_seq_cst);
  if (done + 1 + committing >= put) notify(h.join_word);
}

bool Ring::join(const Deadline& deadline) {
  RingHeader& h = *h_;
  auto finished = [&] {
    return h.tasks_done.load(std::memory_order_seq_cst) >=
           h.tasks_put.load(std::memory_order_seq_cst);
  };
  // Once a put is seen committing, sleep in slices: its producer may die before
  // publishing it, and the repair (by whoever next takes the lock) must then be made
  // here. Until then, a put that starts to commit ends the wait (task_done() wakes us
  // when only that put is left).
  bool sliced = false;
  for (;;) {
    if (h.write_journal.active.load(std::memory_order_seq_cst) != 0) sliced = true;
    const Deadline slice = sliced ? deadline.at_most(kWriterCheckInterval) : deadline;
    auto ready = [&] {
      return finished() || (!sliced && h.write_journal.active.load(std::memory_order_seq_cst) != 0);
    };
    const bool woke = wait_until(h.join_word, ready, slice);
    if (woke && finished()) return true;
    if (woke) sliced = true;
    if (deadline.expired()) return finished();
    repair_if_abandoned();
  }
}

}  // namespace mpx::detail
