// Queue, SimpleQueue, JoinableQueue: the untyped core over a shared-memory ring (ring.hpp).
#include "mpx/queues.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <new>
#include <thread>

#include "ipc/ring.hpp"
#include "shm/resource_tracker.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

struct QueueCore::State {
  sys::Fd fd;  // kept for a child that is not a fork (QueueCore::fd)
  sys::Mapping mapping;
  Ring ring;
  std::string name;  // set in the process that created a named queue: it unlinks
  pid_t creator = 0;
  std::atomic<bool> closed{false};

  State(sys::Mapping m) noexcept : mapping(std::move(m)), ring(mapping.data(), nullptr) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (!name.empty() && ::getpid() == creator) {
      ::shm_unlink(name.c_str());
      unregister_segment(name);
    }
  }
};

QueueCore::QueueCore(std::size_t maxsize, std::size_t capacity) {
  const std::size_t cap = Ring::round_capacity(capacity);
  const std::size_t size = Ring::region_size(cap);
  sys::Fd fd = sys::memfd("mpx-queue", size);
  auto state = std::make_shared<State>(sys::map_shared(fd.get(), size));
  state->fd = std::move(fd);
  Ring::init(state->mapping.data(), cap, maxsize);
  state_ = std::move(state);
}

QueueCore QueueCore::create(const std::string& name, std::size_t maxsize, std::size_t capacity) {
  const std::string path = segment_path(name, "Queue");
  const std::size_t cap = Ring::round_capacity(capacity);
  const std::size_t size = Ring::region_size(cap);
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
    sys::call("ftruncate", [&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); });
    state = std::make_shared<State>(sys::map_shared(fd.get(), size));
  } catch (...) {
    ::shm_unlink(path.c_str());
    unregister_segment(path);
    throw;
  }
  state->fd = std::move(fd);
  state->name = path;
  state->creator = ::getpid();
  Ring::init(state->mapping.data(), cap, maxsize);
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
  // The creator sizes and initialises the segment right after creating it; give it a
  // moment if we came in between.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    struct stat st {};
    sys::call("fstat", [&] { return ::fstat(fd.get(), &st); });
    const auto size = static_cast<std::size_t>(st.st_size);
    if (size >= Ring::region_size(4096)) {
      auto state = std::make_shared<State>(sys::map_shared(fd.get(), size));
      auto* header = static_cast<RingHeader*>(state->mapping.data());
      if (header->magic.load(std::memory_order_acquire) == kRingMagic) {
        if (Ring::region_size(static_cast<std::size_t>(header->capacity)) > size)
          throw Error("queue '" + name + "' is not an mpx queue");
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
  if (size < Ring::region_size(4096)) throw Error("the fd handed over is not an mpx queue");
  auto state = std::make_shared<State>(sys::map_shared(fd.get(), size));
  auto* header = static_cast<RingHeader*>(state->mapping.data());
  if (header->magic.load(std::memory_order_acquire) != kRingMagic ||
      Ring::region_size(static_cast<std::size_t>(header->capacity)) > size)
    throw Error("the fd handed over is not an mpx queue");
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
  return open_state().ring.write(parts, deadline, count_task);
}

bool QueueCore::get(Bytes& out, const Deadline& deadline) {
  IntoVector into{&out};
  if (!open_state().ring.read(&IntoVector::reserve, &into, deadline)) return false;
  if (into.no_memory) throw std::bad_alloc();
  return true;
}

std::size_t QueueCore::qsize() const {
  return static_cast<std::size_t>(open_state().ring.qsize());
}
std::size_t QueueCore::maxsize() const {
  return static_cast<std::size_t>(handle().ring.header()->maxsize);
}
std::size_t QueueCore::capacity() const {
  return handle().ring.capacity();
}
void QueueCore::close() noexcept {
  if (state_) state_->closed.store(true, std::memory_order_relaxed);
}
bool QueueCore::closed() const noexcept {
  return !state_ || state_->closed.load(std::memory_order_relaxed);
}
void QueueCore::task_done() {
  open_state().ring.task_done();
}
bool QueueCore::join(const Deadline& deadline) {
  return open_state().ring.join(deadline);
}

}  // namespace mpx::detail
