// src/ipc/ring.hpp — the shared-memory message ring under every mpx channel (Connection
// direction, Queue). Private: used by src/ipc/connection.cpp and src/ipc/queues.cpp. Its
// bytes are those of every mpx ring (src/ipc/byte_ring.hpp).
//
// Layout: a RingHeader followed by `capacity` bytes (a power of two). Positions `head`
// (bytes published by writers) and `tail` (bytes consumed by readers) only grow; the
// bytes in [tail, head) are whole chunks:
//
//   chunk = commit word { u32 mark, u32 payload length | flags << 30 },
//           [u64 total message size], payload, padding to 8
//
// The total is there only in the first chunk of a message of several chunks: a one-chunk
// message (every small one) has an 8-byte header, its commit word (a queued int takes 24
// bytes of the ring).
//
// The writer stores a chunk's commit word (release) once the chunk is complete, and
// publishes head after it; the word's mark is derived from the chunk's position (odd,
// so never 0; chunk.hpp). A reader polls the commit word of the chunk it waits for rather
// than head, so a message reaches it in the cache lines of the message itself (one
// transfer between CPUs fewer per message), and one load gives it the chunk's header.
// No stale word can pass for a commit: before it commits a chunk, the writer zeroes the
// word where the next chunk will start (always inside the room it owns), and a reader
// looks for a commit only where a chunk starts, at the tail or (repair) past head. (A
// connection's reader without the lock may read a tail that is already stale, and find
// anything there; its exchange on the tail then fails, see below.) A writer that dies
// between committing and publishing head leaves committed chunks beyond head: whoever
// next takes the write mutex (kOwnerDied) moves head past them.
//
// A message is one or more chunks: the first has kFirst, the last kLast (a small message
// is one chunk with both). A message larger than a chunk streams through the ring: the
// writer publishes chunk after chunk while the reader copies them out. One writer at a
// time (write_mutex, held for the whole message) and one reader at a time (read_mutex),
// so messages never interleave.
//
// Except that a connection's reader may take a small whole message (one chunk of at most
// kSmallMessage bytes) without the read mutex: it copies the message out, then moves the
// tail past it with a compare-exchange from the chunk's position. The copy is good when
// the exchange succeeds: the tail was at the chunk all along (it never moves back), so no
// writer can have reused those bytes. The mutex's holder takes such messages the same
// way, and after reading any chunk header checks that the tail is still where it read
// it (if not, another reader took a small message, and it moves on); past every other
// chunk only the holder moves the tail. A reader dies holding nothing on this path.
//
// Crash safety comes from two rules: a chunk becomes visible only once complete (its
// commit word is stored after its bytes), and a reader at a message boundary discards chunks
// without kFirst, and a reader in the middle of a message discards it when a chunk with kFirst
// arrives. So:
//  - a writer killed mid-message leaves a message without kLast: the next writer (robust
//    mutex: kOwnerDied) simply starts a new message, and the reader throws the partial one
//    away; a reader waiting for the rest notices the dead writer itself (try_lock on the
//    write mutex) and throws the partial message away too;
//  - a reader killed mid-message leaves continuation chunks at the tail: the next reader
//    skips them.
// The counters of a queue (items put and got, JoinableQueue tasks; connections keep
// none) change with the position that commits a message's last chunk. The holder of each mutex
// journals the commit first (old counts, new position, `active`), then counts, then (writer)
// stores the commit word; a holder that dies before its commit leaves an active journal whose
// position is never reached, and the next holder (kOwnerDied) rolls the counts back; one that
// dies after it (writer: the commit word stored, head not) is repaired forward: head moves past
// the committed chunks, and the counts stand. Nothing else needs repair.
//
// Waiting: queues sleep on futexes (detail/waiter.hpp). A queue's reader whose last get
// found its item waiting (the producer is ahead of it) spins for the next one looking at
// the ring only every kLazyPolls pauses: the producer then fills the lines the reader
// would poll without handing each back and forth, and the reader takes the batch. A
// reader that had to wait for its last item polls at every pause, so a request and its
// answer (ping-pong) do not wait for a lazy look. A queue's sleeper looks again every
// second: a waker killed between its change and its futex wake leaves it asleep otherwise.
// Connections pass a Doorbell: the
// sleeping side sets a flag in shared memory and polls its socket; the other side writes
// a byte to the socket only when it sees the flag, so a busy channel makes no system call.
// The socket's hang-up tells a reader that the other end is gone (EOF).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "ipc/byte_ring.hpp"
#include "ipc/ring_wait.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/waiter.hpp"
#include "sys/robust_mutex.hpp"

namespace mpx::detail {

inline constexpr uint32_t kRingMagic = 0x6d707852;  // "mpxR"

// What a mutex holder writes before it counts a message and publishes its position (see
// the crash-safety rules above); only holders of that mutex touch it.
struct CommitJournal {
  uint64_t position = 0;   // head or tail once the commit is published
  uint64_t count[2] = {};  // the counts before the commit
  std::atomic<uint32_t> active{0};
};

// Tests only: called at the commit steps below, in the committing process. kCounted: a
// queue's message is counted, its position not yet published. kCommitted: a chunk is
// committed, head not yet published (a slot ring's item: published). The slot ring's
// (slot_ring.hpp): kClaimed, a producer holds a slot, its item not yet published;
// kTaking, a consumer holds an item, its slot not yet freed.
enum class CommitStep { kCounted, kCommitted, kClaimed, kTaking };
using CommitHook = void (*)(CommitStep) noexcept;
void set_commit_hook(CommitHook hook) noexcept;
// Calls the hook, if one is set (the rings' commit steps).
void run_commit_hook(CommitStep step) noexcept;

// The magic of the ring header at `region` (kRingMagic, kSlotRingMagic, or neither).
inline uint32_t ring_magic(const void* region) noexcept {
  return static_cast<const std::atomic<uint32_t>*>(region)->load(std::memory_order_acquire);
}

struct alignas(64) RingHeader {
  // Written once by init(). The magic comes first in every ring's header (ring_magic()).
  std::atomic<uint32_t> magic{0};
  uint64_t capacity = 0;
  uint64_t max_chunk = 0;  // largest payload per chunk
  uint64_t maxsize = 0;    // items; 0 = unbounded

  // Writer side: the lock and what only its holder touches, then (on its own cache
  // line, so that polling readers do not slow the lock down) what readers look at.
  alignas(64) sys::RobustMutex write_mutex;
  uint64_t cached_tail = 0;
  uint64_t cached_got = 0;
  alignas(64) std::atomic<uint64_t> head{0};
  std::atomic<uint64_t> items_put{0};

  // Reader side, likewise.
  alignas(64) sys::RobustMutex read_mutex;
  uint64_t cached_head = 0;
  alignas(64) std::atomic<uint64_t> tail{0};
  std::atomic<uint64_t> items_got{0};

  // *_woken: a wake-up is on its way to the current sleepers, so wakers make one futex
  // call per sleep, not one per message (sleepers stays raised until they run again).
  alignas(64) WaitWord data_word;
  std::atomic<uint32_t> data_woken{0};
  std::atomic<uint32_t> reader_sleeping{0};
  alignas(64) WaitWord space_word;
  std::atomic<uint32_t> space_woken{0};
  std::atomic<uint32_t> writer_sleeping{0};

  // JoinableQueue: unfinished tasks = tasks_put - tasks_done.
  alignas(64) std::atomic<uint64_t> tasks_done{0};
  WaitWord join_word;

  // Queues only, each on lines of its own: what the writer's and the reader's commits
  // journal, and the JoinableQueue puts (under the write mutex).
  alignas(64) CommitJournal write_journal;  // counts: items_put, tasks_put
  std::atomic<uint64_t> tasks_put{0};
  alignas(64) CommitJournal read_journal;  // count: items_got
};

// The socket side of a Connection end (process-local; one per end, shared by its two
// rings). fd is this end's socket; bells from the peer arrive on it, bells to the peer
// leave through it.
struct Doorbell {
  int fd = -1;
  std::atomic<int> waiting_threads{0};
  // Whether the other side is gone: its socket is closed in every process that held it
  // (a recv saw EOF, a send EPIPE). Any thread of this end may learn it while another
  // looks: atomic.
  bool gone() const noexcept { return peer_closed.load(std::memory_order_relaxed); }
  // Reads all pending bell bytes without blocking; notes the peer's hang-up.
  void drain() noexcept;
  // Sends one bell byte (never blocks; a full socket already carries a bell); notes the
  // peer's hang-up.
  void ring() noexcept;

 private:
  std::atomic<bool> peer_closed{false};
};

// How long a thread waiting on `bell` may sleep in one poll(2) call.
int bell_sleep_ms(const Doorbell& bell, const Deadline& deadline) noexcept;

// Where read() puts a message: called once per message start (again if a partial message
// is discarded) with the message's total size; returns where to copy it, or nullptr to
// drop the payload. May not throw.
using ReserveFn = std::byte* (*)(void* ctx, std::size_t total) noexcept;

// A ReserveFn target that reads a message into a byte vector (resized to it). A message
// longer than maxlength is dropped (too_long); a failed allocation drops it too
// (no_memory). The caller turns either into its own error.
struct IntoVector {
  std::vector<std::byte>* out;
  std::size_t maxlength = static_cast<std::size_t>(-1);
  bool too_long = false;
  bool no_memory = false;
  static std::byte* reserve(void* ctx, std::size_t total) noexcept {
    auto* self = static_cast<IntoVector*>(ctx);
    self->too_long = total > self->maxlength;
    self->no_memory = false;
    if (self->too_long) return nullptr;
    try {
      self->out->resize(total);
    } catch (...) {
      self->no_memory = true;
      return nullptr;
    }
    return self->out->data();
  }
};

class Ring {
 public:
  static constexpr std::size_t kDefaultQueueCapacity = std::size_t{1} << 20;
  static constexpr std::size_t kDefaultPipeCapacity = std::size_t{256} << 10;
  // Connections: whole messages up to this size may be read without the read lock.
  static constexpr std::size_t kSmallMessage = 512;

  // The capacity actually used for a request: a power of two in [4 KiB, 1 TiB].
  static std::size_t round_capacity(std::size_t bytes) noexcept;
  // Bytes of shared memory a ring of `capacity` (already rounded) needs.
  static std::size_t region_size(std::size_t capacity) noexcept;
  // Constructs a ring in `region` (region_size(capacity) bytes, 64-aligned, zeroed).
  static void init(void* region, std::size_t capacity, std::size_t maxsize);

  Ring() noexcept = default;
  Ring(void* region, Doorbell* bell) noexcept;

  // Writes one message made of `parts` (concatenated). Blocks for room (and, with a
  // maxsize, until fewer than maxsize items are queued). false: the deadline passed
  // before the message was complete; a partly streamed message is then abandoned and
  // never delivered. `count_task` adds one to the unfinished-task count on commit.
  // Doorbell mode throws BrokenPipeError (EPIPE) when the readers are known to be gone:
  // before it writes, or after (the message is then lost with them).
  bool write(std::span<const std::span<const std::byte>> parts, const Deadline& deadline,
             bool count_task = false);
  // Reads one whole message. false: the deadline passed before a message started (once
  // a message has started, it is read to its end or dropped if its writer died).
  // Doorbell mode throws mpx::EOFError when no message is left and the peer is gone.
  bool read(ReserveFn reserve, void* ctx, const Deadline& deadline);

  // Doorbell mode: a reader end is going away (closed, or its process ends). The writer's
  // next message then rings a bell, whose send fails once no reader end is left in any
  // process: the writer learns that it writes to no one (BrokenPipeError). Where other
  // reader ends remain, they get a bell they drain and ignore.
  void hang_up_reader() noexcept;

  // Unconsumed bytes exist (a message, maybe partial).
  bool has_data() const noexcept;
  uint64_t qsize() noexcept;
  RingHeader* header() const noexcept { return h_; }
  std::size_t capacity() const noexcept { return static_cast<std::size_t>(h_->capacity); }

  // Blocks until has_data() or the deadline (Doorbell: or the peer is gone).
  bool wait_readable(const Deadline& deadline);

  // JoinableQueue support.
  void task_done();  // throws mpx::ValueError when called too often
  bool join(const Deadline& deadline);

 private:
  // `spin`: spin before sleeping (false: the caller just did).
  template <class Pred>
  bool wait_for(bool for_data, Pred&& ready, const Deadline& deadline, bool spin = true);
  // `fenced`: a full fence (a sequentially consistent RMW) follows the caller's last
  // update of the head (tail) already.
  void wake_readers(bool fenced = false) noexcept;
  void wake_writers(bool fenced = false) noexcept;
  // kCounted: a queue's ring (counts and journals); false for connections.
  template <bool kCounted>
  bool write_locked(std::span<const std::span<const std::byte>> parts, const Deadline& deadline,
                    bool count_task);
  // `spun`: read_small() spun for a message already.
  template <bool kCounted>
  bool read_locked(ReserveFn reserve, void* ctx, const Deadline& deadline, bool spun);
  // Connections: waits (spinning only, if `spin`) for a small whole message at the tail
  // and takes it without the read lock. false: none came, or the message there is not
  // small and whole (the locked path reads it).
  bool read_small(ReserveFn reserve, void* ctx, bool spin);
  // Takes the small whole message of `length` bytes at `t`, if no other reader did.
  bool take_small(uint64_t t, uint32_t length, ReserveFn reserve, void* ctx);
  bool writer_abandoned(uint64_t at) noexcept;
  [[noreturn]] static void throw_broken_pipe();
  // Takes the write or read mutex; `repair` (repair_writer/repair_reader) rolls back a
  // dead previous holder's unpublished counts. false: timed out.
  bool lock(sys::RobustMutex& m, void (Ring::*repair)(), const Deadline& deadline);
  void repair_writer();
  void repair_reader();
  // Repairs the journal of a holder that died mid-commit, if no one holds its lock now.
  void repair_if_abandoned() noexcept;
  // Copies across the ring's end as needed.
  void copy_in(uint64_t pos, const std::byte* src, std::size_t n) noexcept {
    ring_copy_in(data_, static_cast<std::size_t>(h_->capacity), pos, src, n);
  }
  // Connections: the commit word of the chunk at `pos`.
  std::atomic_ref<uint64_t> commit_word(uint64_t pos) const noexcept {
    return std::atomic_ref<uint64_t>(
        *reinterpret_cast<uint64_t*>(data_ + static_cast<std::size_t>(pos & (h_->capacity - 1))));
  }
  // Connections: where the chunk at `at` ends if it is committed, else 0.
  uint64_t committed_end(uint64_t at) const noexcept;

  RingHeader* h_ = nullptr;
  std::byte* data_ = nullptr;
  Doorbell* bell_ = nullptr;
  KeepingUp keeping_up_;  // queues (see "Waiting" above)
};

}  // namespace mpx::detail
