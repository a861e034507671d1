// mpx/queues.hpp — Queue, SimpleQueue and JoinableQueue, like multiprocessing.queues.
//
//   mpx::Queue<std::string> q;                 // made before Process::start()
//   mpx::Process p([&] { q.put("hello"); });   // any process that inherits q may put/get
//   p.start(); std::string s = q.get(); p.join();
//
// A queue is a ring buffer in shared memory: put() copies an encoded item in (mpx/codec.hpp),
// get() copies it out. There is no feeder thread: put() has finished when it returns, so
// an item is never lost when its process exits right after, and qsize()/empty()/full()
// are exact while no put or get runs. Blocking waits spin briefly, then sleep on a futex.
// Items larger than the ring stream through it whole, never interleaved with another
// producer's item.
//
// Small raw items (ints, doubles, enums, trivially copyable structs and std::arrays of at
// most 24 bytes: mpx::is_trivially_encodable_v) skip the encoding: a Queue or SimpleQueue
// of them keeps one item per 16- or 32-byte slot and takes no lock (a JoinableQueue, which
// counts tasks, keeps the message ring). Such a queue holds only its T: opening it by
// name as another type throws DecodeError. Its capacity is in slots: `maxsize` of them, or
// as many as `capacity` bytes hold. Killed processes are noticed by pid: processes sharing
// one must see each other's pids (one pid namespace).
//
// Thread and process safety: any number of producers and consumers, threads or processes
// (inherited through fork, or opened by name). Crash safety: a producer or consumer killed
// at any point (SIGKILL included) never corrupts the queue nor leaves it locked; an item
// whose put() did not finish is never delivered; an item whose get() did not finish is
// lost (it was taken). As in Python, a queue does not know its consumers: put() with no
// consumer left succeeds until the queue is full (a Connection raises BrokenPipeError).
//
// Copies of a queue object are handles to the same queue.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "mpx/codec.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/handoff_trait.hpp"
#include "mpx/detail/scratch.hpp"
#include "mpx/errors.hpp"

namespace mpx {

namespace detail {

// The items a queue keeps in fixed slots rather than as messages: size 0 for none.
struct SlotItem {
  std::size_t size = 0;
  std::uint64_t tag = 0;  // mpx::type_tag<T>()
  friend bool operator==(const SlotItem&, const SlotItem&) = default;
};

// Whether a Queue<T> keeps its items in slots: raw items (one memcpy each way) of at most
// 24 bytes (src/ipc/slot_ring.hpp).
template <class T>
inline constexpr bool slotted_v = is_trivially_encodable_v<T> && sizeof(T) <= 24 &&
                                  alignof(T) <= 8 && std::is_default_constructible_v<T>;

template <class T>
SlotItem slot_item_of() {
  if constexpr (slotted_v<T>)
    return {sizeof(T), type_tag<T>()};
  else
    return {};
}

// The untyped queue under Queue<T>: whole byte messages in a shared-memory ring, or
// small raw items in a ring of slots.
class QueueCore {
 public:
  // Ring bytes used when none are asked for.
  static constexpr std::size_t kDefaultCapacity = std::size_t{1} << 20;

  // An anonymous queue (shared with children forked later). `item`: a slot ring for
  // these items, unless maxsize of them would take more than 256 MiB.
  QueueCore(std::size_t maxsize, std::size_t capacity, SlotItem item = {});
  // A named queue (POSIX shared memory "/name", mode 0600); throws FileExistsError.
  static QueueCore create(const std::string& name, std::size_t maxsize, std::size_t capacity,
                          SlotItem item = {});
  // Opens a named queue of either kind; throws FileNotFoundError.
  static QueueCore open(const std::string& name);
  // The queue behind `fd` (fd(), received by a child that is not a fork); takes the fd.
  static QueueCore adopt_fd(int fd);
  // The memfd or shared memory object behind the queue, kept open (for adopt_fd).
  int fd() const;

  // The slot ring's items; size 0 for a message ring.
  SlotItem slot_item() const;
  bool slotted() const noexcept { return slotted_; }

  // A message ring's. false: timed out. count_task: JoinableQueue's put.
  bool put(Parts parts, const Deadline& deadline, bool count_task);
  // A message ring's. false: timed out. `out` is resized to the item.
  bool get(Bytes& out, const Deadline& deadline);
  // A slot ring's: copies slot_item().size bytes in or out. false: timed out.
  bool put_item(const void* item, const Deadline& deadline);
  bool get_item(void* item, const Deadline& deadline);

  std::size_t qsize() const;
  bool empty() const;
  std::size_t maxsize() const;
  std::size_t capacity() const;
  void close() noexcept;
  bool closed() const noexcept;
  void task_done();
  bool join(const Deadline& deadline);

 private:
  struct State;
  explicit QueueCore(std::shared_ptr<State> state) noexcept;
  State& handle() const;      // throws InvalidStateError when moved from
  State& open_state() const;  // also when closed
  [[noreturn]] void throw_slotted();
  std::shared_ptr<State> state_;
  bool slotted_ = false;
};

// A queue opened by name or handed over, checked for T: a slot ring holds one item type
// only, and counts no tasks. A message ring takes any T (a wrong one is a DecodeError on
// get). Throws DecodeError, or ValueError for a JoinableQueue on a slot ring.
template <class T>
QueueCore checked(QueueCore core, bool joinable, const std::string& what) {
  const SlotItem held = core.slot_item();
  if (held.size == 0) return core;
  if (joinable) throw ValueError(what + " is a Queue, not a JoinableQueue: it counts no tasks");
  if (held != slot_item_of<T>())
    throw DecodeError(what + " holds items of " + std::to_string(held.size) +
                      " bytes of another type than " + type_name<T>());
  return core;
}

template <class T>
bool put_value(QueueCore& core, const T& value, const Deadline& deadline, bool count_task) {
  if constexpr (slotted_v<T>)
    if (!count_task && core.slotted()) return core.put_item(&value, deadline);
  return with_message(value, [&](Parts parts) { return core.put(parts, deadline, count_task); });
}

template <class T>
std::optional<T> get_value(QueueCore& core, const Deadline& deadline) {
  if constexpr (slotted_v<T>) {
    if (core.slotted()) {
      std::optional<T> v(std::in_place);
      if (!core.get_item(&*v, deadline)) return std::nullopt;
      return v;
    }
  }
  Bytes& buffer = recv_scratch();
  ScratchTrim trim{buffer};
  if (!core.get(buffer, deadline)) return std::nullopt;
  return decode<T>(buffer);
}

}  // namespace detail

// A FIFO queue of T between processes and threads (multiprocessing.Queue).
//   mpx::Queue<int> q(10);  q.put(1);  int v = q.get();
template <class T>
class JoinableQueue;

template <class T>
class Queue {
 public:
  friend struct detail::Handoff<Queue<T>>;
  friend struct detail::Handoff<JoinableQueue<T>>;

  // maxsize: most items held at once (0: unbounded but for memory). capacity: bytes of
  // the ring (rounded up to a power of two; default 1 MiB); an item larger than the ring
  // still passes, streamed through it. Small raw items (top of this file) get `maxsize`
  // slots, or as many as `capacity` bytes hold; capacity() then counts the slots' bytes.
  // OS resources: an anonymous shared mapping, gone with the last process using it.
  // Across fork: a queue made before fork is shared with the child.
  explicit Queue(std::size_t maxsize = 0, std::size_t capacity = 0)
      : core_(maxsize, capacity == 0 ? detail::QueueCore::kDefaultCapacity : capacity,
              detail::slot_item_of<T>()) {}

  // A queue other programs can open by name ("name" or "/name": POSIX shared memory,
  // mode 0600). OS resources: the name is unlinked by the creating process when its last
  // handle goes away, or by its resource tracker if it dies first (even by kill -9);
  // processes that opened it keep the queue itself until they drop it.
  // Throws: FileExistsError; ValueError (a name that is empty, holds a NUL byte or a '/'
  // past the first character, or is over 255 bytes); std::system_error.
  static Queue create(const std::string& name, std::size_t maxsize = 0, std::size_t capacity = 0) {
    return Queue(detail::QueueCore::create(
        name, maxsize, capacity == 0 ? detail::QueueCore::kDefaultCapacity : capacity,
        detail::slot_item_of<T>()));
  }
  // Opens a queue made by create(name) (or by JoinableQueue<T>::create).
  // Throws: FileNotFoundError; ValueError (a bad name, as create); DecodeError when a
  // queue of small raw items (top of this file) holds another type than T;
  // std::system_error.
  static Queue open(const std::string& name) {
    return Queue(detail::checked<T>(detail::QueueCore::open(name), false, "queue '" + name + "'"));
  }

  // Puts `value` at the back. Blocks: while the queue is full (maxsize items, or no room
  // in the ring). Timeout form: throws Full when still full after `timeout` (an item
  // larger than the ring that did not get through whole is dropped, never delivered).
  // Throws: InvalidStateError after close(); what encoding throws.
  void put(const T& value) { put_until(value, detail::Deadline::never()); }
  template <class Rep, class Period>
  void put(const T& value, std::chrono::duration<Rep, Period> timeout) {
    put_until(value, detail::Deadline::after(timeout));
  }
  // Never blocks; throws Full.
  void put_nowait(const T& value) { put(value, std::chrono::seconds(0)); }
  // Never blocks (or up to `timeout`); false instead of Full.
  bool try_put(const T& value) { return try_put(value, std::chrono::seconds(0)); }
  template <class Rep, class Period>
  bool try_put(const T& value, std::chrono::duration<Rep, Period> timeout) {
    return detail::put_value(core_, value, detail::Deadline::after(timeout), joinable_);
  }

  // Removes and returns the front item. Blocks: until there is one. Timeout form: throws
  // Empty when none arrived within `timeout` (an item larger than the ring that has begun
  // to stream in is read to its end, or dropped if its producer died, past the timeout).
  // Throws: InvalidStateError after close(); DecodeError when the item is not a T (it is
  // consumed).
  T get() { return get_until(detail::Deadline::never()); }
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return get_until(detail::Deadline::after(timeout));
  }
  // Never blocks; throws Empty.
  T get_nowait() { return get(std::chrono::seconds(0)); }
  // Never blocks (or up to `timeout`); nullopt instead of Empty.
  std::optional<T> try_get() { return try_get(std::chrono::seconds(0)); }
  template <class Rep, class Period>
  std::optional<T> try_get(std::chrono::duration<Rep, Period> timeout) {
    return detail::get_value<T>(core_, detail::Deadline::after(timeout));
  }

  // Items in the queue now (complete items only). Exact while no put or get runs; a queue
  // of small raw items counts them slot by slot (empty() stops at the first).
  // Throws (qsize, empty, full): InvalidStateError after close().
  std::size_t qsize() const { return core_.qsize(); }
  bool empty() const { return core_.empty(); }
  // maxsize items are queued (never true for an unbounded queue).
  bool full() const {
    const std::size_t n = qsize();
    return maxsize() != 0 && n >= maxsize();
  }
  std::size_t maxsize() const { return core_.maxsize(); }
  // Ring bytes.
  std::size_t capacity() const { return core_.capacity(); }

  // This handle (and its copies in this process) will put and get no more: they, and
  // qsize/empty/full, then throw InvalidStateError. Other processes are not affected. Idempotent.
  void close() noexcept { core_.close(); }
  bool closed() const noexcept { return core_.closed(); }
  // Python compatibility: there is no feeder thread to join or cancel.
  void join_thread() noexcept {}
  void cancel_join_thread() noexcept {}

 protected:
  explicit Queue(detail::QueueCore core, bool joinable = false) noexcept
      : core_(std::move(core)), joinable_(joinable) {}

  void put_until(const T& value, const detail::Deadline& deadline) {
    if (!detail::put_value(core_, value, deadline, joinable_)) throw Full();
  }
  T get_until(const detail::Deadline& deadline) {
    std::optional<T> v = detail::get_value<T>(core_, deadline);
    if (!v) throw Empty();
    return std::move(*v);
  }

  detail::QueueCore core_;
  bool joinable_ = false;
};

// A Queue that counts unfinished tasks (multiprocessing.JoinableQueue): every put() adds
// one, task_done() removes one, join() waits until none are left.
//   mpx::JoinableQueue<Job> jobs;  ... worker: auto j = jobs.get(); run(j); jobs.task_done();
//   jobs.join();  // every job put so far has been processed
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  explicit JoinableQueue(std::size_t maxsize = 0, std::size_t capacity = 0)
      : Queue<T>(detail::QueueCore(maxsize,
                                   capacity == 0 ? detail::QueueCore::kDefaultCapacity : capacity),
                 true) {}
  static JoinableQueue create(const std::string& name, std::size_t maxsize = 0,
                              std::size_t capacity = 0) {
    return JoinableQueue(detail::QueueCore::create(
        name, maxsize, capacity == 0 ? detail::QueueCore::kDefaultCapacity : capacity));
  }
  // Opens a queue made by JoinableQueue::create(name). Throws as Queue::open, and
  // ValueError for a Queue of small raw items (it counts no tasks).
  static JoinableQueue open(const std::string& name) {
    return JoinableQueue(
        detail::checked<T>(detail::QueueCore::open(name), true, "queue '" + name + "'"));
  }

  // Marks one item taken by get() as processed. Never blocks.
  // Throws: ValueError when called more times than items were put.
  void task_done() { this->core_.task_done(); }
  // Blocks until every item put has been marked done. Timeout form: false if some are
  // still unfinished after `timeout` (Python's join() has no timeout).
  void join() { this->core_.join(detail::Deadline::never()); }
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->core_.join(detail::Deadline::after(timeout));
  }

 private:
  friend struct detail::Handoff<JoinableQueue<T>>;
  explicit JoinableQueue(detail::QueueCore core) noexcept : Queue<T>(std::move(core), true) {}
};

// The simplest queue (multiprocessing.SimpleQueue): unbounded, put/get/empty/close.
template <class T>
class SimpleQueue {
 public:
  friend struct detail::Handoff<SimpleQueue<T>>;
  // capacity: ring bytes (default 1 MiB); larger items stream through.
  explicit SimpleQueue(std::size_t capacity = 0)
      : core_(0, capacity == 0 ? detail::QueueCore::kDefaultCapacity : capacity,
              detail::slot_item_of<T>()) {}
  // Blocks while the ring is full. Throws: InvalidStateError after close().
  void put(const T& value) { detail::put_value(core_, value, detail::Deadline::never(), false); }
  // Blocks until an item arrives. Throws: InvalidStateError after close(); DecodeError.
  T get() { return std::move(*detail::get_value<T>(core_, detail::Deadline::never())); }
  // Throws: InvalidStateError after close().
  bool empty() const { return core_.empty(); }
  void close() noexcept { core_.close(); }
  bool closed() const noexcept { return core_.closed(); }

 private:
  explicit SimpleQueue(detail::QueueCore core) noexcept : core_(std::move(core)) {}
  detail::QueueCore core_;
};

// Queues handed to a spawn or forkserver child (mpx/context.hpp): the memfd (or shared
// memory object) behind the ring travels, and the child's handle shares the ring.
namespace detail {
template <class T>
struct Handoff<Queue<T>> {
  static void save(const Queue<T>& q, HandoffWriter& w) { w.put_fd(q.core_.fd()); }
  static Queue<T> load(HandoffReader& r) {
    return Queue<T>(checked<T>(QueueCore::adopt_fd(r.take_fd()), false, "the queue handed over"));
  }
};
template <class T>
struct Handoff<JoinableQueue<T>> {
  static void save(const JoinableQueue<T>& q, HandoffWriter& w) { w.put_fd(q.core_.fd()); }
  static JoinableQueue<T> load(HandoffReader& r) {
    return JoinableQueue<T>(
        checked<T>(QueueCore::adopt_fd(r.take_fd()), true, "the queue handed over"));
  }
};
template <class T>
struct Handoff<SimpleQueue<T>> {
  static void save(const SimpleQueue<T>& q, HandoffWriter& w) { w.put_fd(q.core_.fd()); }
  static SimpleQueue<T> load(HandoffReader& r) {
    return SimpleQueue<T>(
        checked<T>(QueueCore::adopt_fd(r.take_fd()), false, "the queue handed over"));
  }
};
}  // namespace detail

}  // namespace mpx
