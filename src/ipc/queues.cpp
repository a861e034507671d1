// Queue, SimpleQueue, JoinableQueue: the untyped core over a shared-memory ring (ring.hpp).
#include "mpx/queues.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <new>
#include <thread>

#include "ipc/ring.hpp"
#include "ipc/slot_ring.hpp"
#include "shm/resource_tracker.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

// A ring's size and how to lay it out: a slot ring for `item`'s items when it names them
// and they fit, else a message ring.
struct Layout {
  std::size_t slots = 0;  // a slot ring's; 0: a message ring
  std::size_t capacity = 0;
  std::size_t size = 0;
};

Layout layout_for(SlotItem item, std::size_t maxsize, std::size_t capacity) {
  Layout l;
  if (item.size != 0) l.slots = SlotRing::slots_for(item.size, maxsize, capacity);
  if (l.slots != 0) {
    l.size = SlotRing::region_size(item.size, l.slots);
  } else {
    l.capacity = Ring::round_capacity(capacity);
    l.size = Ring::region_size(l.capacity);
  }
  return l;
}

void lay_out(void* region, const Layout& l, SlotItem item, std::size_t maxsize) {
  if (l.slots != 0)
    SlotRing::init(region, item.size, item.tag, l.slots, maxsize);
  else
    Ring::init(region, l.capacity, maxsize);
}

// Whether the `bytes` at `region` hold a whole ring of either kind.
bool holds_a_ring(const void* region, std::size_t bytes) noexcept {
  if (bytes < sizeof(uint32_t)) return false;
  if (ring_magic(region) == kSlotRingMagic) return SlotRing::holds_one(region, bytes);
  if (ring_magic(region) != kRingMagic || bytes < Ring::region_size(4096)) return false;
  const auto capacity = static_cast<const RingHeader*>(region)->capacity;
  return capacity >= 4096 && std::has_single_bit(capacity) &&
         Ring::region_size(static_cast<std::size_t>(capacity)) <= bytes;
}

}  // namespace

struct QueueCore::State {
  sys::Fd fd;  // kept for a child that is not a fork (QueueCore::fd)
  sys::Mapping mapping;
  Ring ring;       // a message ring, or
  SlotRing slots;  // a slot ring (slotted)
  bool slotted = false;
  std::string name;  // set in the process that created a named queue: it unlinks
  pid_t creator = 0;
  std::atomic<bool> closed{false};

  // Takes the ring that `m` holds (laid out already: holds_a_ring).
  explicit State(sys::Mapping m) noexcept
      : mapping(std::move(m)), slotted(ring_magic(mapping.data()) == kSlotRingMagic) {
    if (slotted)
      slots = SlotRing(mapping.data());
    else
      ring = Ring(mapping.data(), nullptr);
  }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (!name.empty() && ::getpid() == creator) {
      ::shm_unlink(name.c_str());
      unregister_segment(name);
    }
  }
};

QueueCore::QueueCore(std::shared_ptr<State> state) noexcept
    : state_(std::move(state)), slotted_(state_->slotted) {}

QueueCore::QueueCore(std::size_t maxsize, std::size_t capacity, SlotItem item) {
  const Layout l = layout_for(item, maxsize, capacity);
  sys::Fd fd = sys::memfd("mpx-queue", l.size);
  sys::Mapping mapping = sys::map_shared(fd.get(), l.size);
  lay_out(mapping.data(), l, item, maxsize);
  auto state = std::make_shared<State>(std::move(mapping));
  state->fd = std::move(fd);
  slotted_ = state->slotted;
  state_ = std::move(state);
}

QueueCore QueueCore::create(const std::string& name, std::size_t maxsize, std::size_t capacity,
                            SlotItem item) {
  const std::string path = segment_path(name, "Queue");
  const Layout l = layout_for(item, maxsize, capacity);
  // The tracker creates it: should this process die without unlinking, even inside this
  // call, the tracker unlinks (DESIGN.md §4).
  int raw = create_segment(path);
  if (raw < 0) {
    if (errno == EEXIST) throw FileExistsError("queue '" + name + "' exists already");
    sys::throw_errno("shm_open(create)");
  }
  sys::Fd fd(raw);
  std::shared_ptr<State> state;
  try {
    sys::call("ftruncate", [&] { return ::ftruncate(fd.get(), static_cast<off_t>(l.size)); });
    sys::Mapping mapping = sys::map_shared(fd.get(), l.size);
    lay_out(mapping.data(), l, item, maxsize);
    state = std::make_shared<State>(std::move(mapping));
  } catch (...) {
    ::shm_unlink(path.c_str());
    unregister_segment(path);
    throw;
  }
  state->fd = std::move(fd);
  state->name = path;
  state->creator = ::getpid();
  return QueueCore(std::move(state));
}

QueueCore QueueCore::open(const std::string& name) {
  const std::string path = segment_path(name, "Queue");
  int raw =
      sys::call_raw("shm_open", [&] { return ::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0); });
  if (raw < 0) {
    if (errno == ENOENT) throw FileNotFoundError("no queue named '" + name + "'");
    sys::throw_errno("shm_open");
  }
  sys::Fd fd(raw);
  // The creator sizes and lays out the segment right after creating it; give it a
  // moment if we came in between.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    struct stat st {};
    sys::call("fstat", [&] { return ::fstat(fd.get(), &st); });
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size >= sizeof(uint32_t)) {
      sys::Mapping mapping = sys::map_shared(fd.get(), size);
      if (ring_magic(mapping.data()) != 0) {
        if (!holds_a_ring(mapping.data(), size))
          throw Error("queue '" + name + "' is not an mpx queue");
        auto state = std::make_shared<State>(std::move(mapping));
        state->fd = std::move(fd);
        return QueueCore(std::move(state));
      }
    }
    if (std::chrono::steady_clock::now() > give_up)
      throw Error("queue '" + name + "' is not an mpx queue");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

QueueCore QueueCore::adopt_fd(int raw) {
  sys::Fd fd(raw);
  struct stat st {};
  sys::call("fstat", [&] { return ::fstat(fd.get(), &st); });
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size < sizeof(uint32_t)) throw Error("the fd handed over is not an mpx queue");
  sys::Mapping mapping = sys::map_shared(fd.get(), size);
  if (!holds_a_ring(mapping.data(), size)) throw Error("the fd handed over is not an mpx queue");
  auto state = std::make_shared<State>(std::move(mapping));
  state->fd = std::move(fd);
  return QueueCore(std::move(state));
}

int QueueCore::fd() const {
  return handle().fd.get();
}

QueueCore::State& QueueCore::handle() const {
  if (!state_) throw InvalidStateError("queue was moved from");
  return *state_;
}

QueueCore::State& QueueCore::open_state() const {
  if (!state_ || state_->closed.load(std::memory_order_relaxed))
    throw InvalidStateError("queue is closed");
  return *state_;
}

bool QueueCore::put(Parts parts, const Deadline& deadline, bool count_task) {
  State& s = open_state();
  if (s.slotted) throw_slotted();
  return s.ring.write(parts, deadline, count_task);
}

bool QueueCore::get(Bytes& out, const Deadline& deadline) {
  State& s = open_state();
  if (s.slotted) throw_slotted();
  IntoVector into{&out};
  if (!s.ring.read(&IntoVector::reserve, &into, deadline)) return false;
  if (into.no_memory) throw std::bad_alloc();
  return true;
}

void QueueCore::throw_slotted() {
  throw DecodeError("this queue holds raw items of " +
                    std::to_string(state_->slots.header().item_size) + " bytes, not messages");
}

SlotItem QueueCore::slot_item() const {
  const State& s = handle();
  if (!s.slotted) return {};
  return {static_cast<std::size_t>(s.slots.header().item_size), s.slots.header().type_tag};
}

bool QueueCore::put_item(const void* item, const Deadline& deadline) {
  return open_state().slots.put(item, deadline);
}

bool QueueCore::get_item(void* item, const Deadline& deadline) {
  return open_state().slots.get(item, deadline);
}

std::size_t QueueCore::qsize() const {
  State& s = open_state();
  return static_cast<std::size_t>(s.slotted ? s.slots.qsize() : s.ring.qsize());
}
bool QueueCore::empty() const {
  State& s = open_state();
  return s.slotted ? s.slots.empty() : s.ring.qsize() == 0;
}
std::size_t QueueCore::maxsize() const {
  const State& s = handle();
  return static_cast<std::size_t>(s.slotted ? s.slots.header().maxsize : s.ring.header()->maxsize);
}
std::size_t QueueCore::capacity() const {
  const State& s = handle();
  return s.slotted ? s.slots.capacity() : s.ring.capacity();
}
void QueueCore::close() noexcept {
  if (state_) state_->closed.store(true, std::memory_order_relaxed);
}
bool QueueCore::closed() const noexcept {
  return !state_ || state_->closed.load(std::memory_order_relaxed);
}
void QueueCore::task_done() {
  State& s = open_state();
  if (s.slotted) throw_slotted();
  s.ring.task_done();
}
bool QueueCore::join(const Deadline& deadline) {
  State& s = open_state();
  if (s.slotted) throw_slotted();
  return s.ring.join(deadline);
}

}  // namespace mpx::detail
