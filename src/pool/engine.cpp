// The engine's front door (Engine, mpx/detail/pool_task.hpp): submitting, closing,
// terminating and joining, over either kind of workers (src/pool/engine_impl.hpp). Also
// the small helpers every part of the pool uses: cpu_count, prefaulting, lock_soon.
#include <sched.h>
#include <unistd.h>

#include <mutex>

#include "mpx/detail/pool_task.hpp"
#include "mpx/detail/waiter.hpp"
#include "pool/engine_impl.hpp"
#include "sys/mapping.hpp"

namespace mpx::detail {

std::size_t cpu_count() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<std::size_t>(n);
  }
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<std::size_t>(n) : 1;
}

void prefault(void* p, std::size_t bytes) noexcept {
  sys::prefault(p, bytes);
}

void reserve_prefaulted(ByteVector& v, std::size_t n) {
  if (n <= v.capacity()) return;
  v.reserve(n);
  if (n >= kPrefaultBytes) prefault(v.data() + v.size(), n - v.size());
}

// Takes an engine lock, trying for a moment before it sleeps: the engine's threads hold
// it for short stretches, and a thread that sleeps on it pays a context switch, and its
// holder a wake-up call, for each (a tenth of a small task's cost, measured). Not on a
// single CPU, where the holder cannot run meanwhile.
std::unique_lock<std::mutex> lock_soon(std::mutex& m) {
  if (spin_until([&] { return m.try_lock(); }, spin_limit() == 0 ? 1 : 64))
    return std::unique_lock(m, std::adopt_lock);
  return std::unique_lock(m);
}

void EngineWaker::wake() const noexcept {
  std::lock_guard lock(mutex_);
  if (impl_) static_cast<Engine::Impl*>(impl_)->wake();
}

Engine::Engine(EngineOptions options) : waker_(std::make_shared<EngineWaker>()) {
  impl_ = options.processes ? make_process_workers(std::move(options))
                            : make_thread_workers(std::move(options));
  waker_->impl_ = impl_.get();
}

Engine::Engine(Impl* impl) : impl_(impl), waker_(std::make_shared<EngineWaker>()) {
  waker_->impl_ = impl_.get();
}

Engine::~Engine() {
  try {
    if (!impl_->joined) {
      terminate();
      join();
    }
  } catch (...) {
  }
  std::lock_guard lock(waker_->mutex_);
  waker_->impl_ = nullptr;
}

void Engine::submit(Task task, ByteVector* spare) {
  auto lock = lock_soon(impl_->mutex);
  impl_->check_open();
  if (!impl_->pending.empty() || !impl_->take_now(task)) impl_->pending.push_back(std::move(task));
  if (spare && spare->capacity() == 0) *spare = impl_->take_spare();
  impl_->pending_count.store(impl_->pending.size(), std::memory_order_relaxed);
  impl_->submitted(lock);
}

void Engine::submit(std::vector<Task>& tasks, std::vector<ByteVector>* spares) {
  auto lock = lock_soon(impl_->mutex);
  impl_->check_open();
  const std::size_t n = tasks.size();
  for (auto& t : tasks)
    impl_->pending.push_back(std::move(t));
  tasks.clear();
  impl_->pending_count.store(impl_->pending.size(), std::memory_order_relaxed);
  impl_->submitted(lock);
  if (!spares) return;
  // After submitted(): the tasks' frames are written then, and workers may have
  // started earlier ones, whose buffers the caller can then encode its next tasks into.
  lock.lock();
  impl_->release_started_args();
  for (std::size_t k = 0; k < n && !impl_->spare_args.empty(); ++k)
    spares->push_back(impl_->take_spare());
}

bool Engine::submit_written(Task& task, std::size_t size, ArgsWriter write, void* ctx) {
  auto lock = lock_soon(impl_->mutex);
  if (impl_->broken || impl_->closed || !impl_->pending.empty() ||
      !impl_->take_written(task, size, write, ctx))
    return false;
  impl_->submitted(lock);
  return true;
}

void Engine::submit(std::shared_ptr<Feeder> feeder) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->check_open();
    impl_->feeders.push_back(std::move(feeder));
    impl_->feeder_count.store(impl_->feeders.size(), std::memory_order_relaxed);
    impl_->feeding();
    impl_->pending_count.fetch_add(1, std::memory_order_relaxed);  // a hint to wake up
  }
  impl_->wake();
}

void Engine::cancel_pending() {
  std::vector<std::shared_ptr<Feeder>> dropped_feeders;
  std::vector<Task> dropped;
  {
    std::lock_guard lock(impl_->mutex);
    dropped = impl_->take_pending(dropped_feeders);
  }
  abandon_all(dropped);
  impl_->wake();
}

void Engine::close() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->closed = true;
    impl_->stopping.store(true, std::memory_order_release);
  }
  impl_->wake();
}

void Engine::terminate() {
  std::vector<std::shared_ptr<Feeder>> dropped_feeders;
  std::vector<Task> dropped;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->closed = true;
    impl_->terminating = true;
    impl_->stopping.store(true, std::memory_order_release);
    dropped = impl_->take_pending(dropped_feeders);
  }
  abandon_all(dropped);
  impl_->wake();
}

void Engine::join() {
  {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->closed) throw InvalidStateError("join() before close() or terminate()");
  }
  impl_->join_workers();
  impl_->joined = true;
}

std::size_t Engine::workers() const noexcept {
  return impl_->options.workers;
}
bool Engine::processes() const noexcept {
  return impl_->options.processes;
}
std::pmr::memory_resource* Engine::state_memory() const noexcept {
  return impl_->state_memory.get();
}
const std::shared_ptr<Collector>& Engine::collector() const noexcept {
  return impl_->collector;
}
std::vector<pid_t> Engine::pids() const {
  return impl_->pids();
}

}  // namespace mpx::detail
