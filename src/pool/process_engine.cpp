// The process workers' engine (src/pool/process_engine.hpp): its life (the zygote is
// forked before the supervisor thread exists) and the submitting side.
#include <sys/eventfd.h>

#include <string>
#include <system_error>

#include "mpx/errors.hpp"
#include "mpx/process.hpp"
#include "pool/process_engine.hpp"
#include "process/start_methods.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

ProcessImpl::ProcessImpl(EngineOptions opts) : Impl(std::move(opts)) {
  // Under spawn and forkserver the zygote is no fork of ours: the shared pages it needs
  // are memfds, handed to it (the fork path keeps its anonymous mappings).
  const StartMethod method = options.start_method.value_or(default_start_method());
  const bool forked = method == StartMethod::fork;
  auto shared_collector = std::make_shared<ProcessCollector>(!forked);
  header_ = shared_collector->header();
  pool_ = std::make_unique<WorkerShared>(options.workers, header_, !forked);
  doorbell_ =
      sys::Fd(sys::call("eventfd", [] { return ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }));
  pool_->doorbell = doorbell_.get();
  slots_ = std::vector<SlotState>(options.workers);  // built in place: a slot cannot be copied
  reads_.resize(options.workers);
  // The zygote is forked (or spawned) now, before the supervisor thread exists.
  if (!forked && options.init_objects && !options.init_objects->error.empty()) {
    throw ValueError(
        std::string("mpx: the initializer's arguments cannot reach the workers of a ") +
        (method == StartMethod::spawn ? "spawn" : "forkserver") +
        " pool: " + options.init_objects->error);
  }
  zygote_ = forked ? start_zygote(*pool_, options)
                   : start_zygote_by(method, *pool_, shared_collector->take_fd(), options);
  try {
    start_workers();
    // Through the syscall seam, so that tests can make it fail (pool_faults_test.cpp).
    if (int err = sys::injected_failure("pthread_create"))
      throw std::system_error(err, std::system_category());
    supervisor_ = std::thread([this] { supervise(); });
  } catch (const std::system_error& e) {
    stop_zygote();
    throw std::system_error(e.code(), "pthread_create (the pool's supervisor thread)");
  } catch (...) {
    stop_zygote();
    throw;
  }
  shared_collector->attach(this);
  process_collector_ = shared_collector;
  collector = std::move(shared_collector);
}

ProcessImpl::~ProcessImpl() {
  if (supervisor_.joinable()) supervisor_.join();
  process_collector_->detach();
}

void ProcessImpl::wake() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // see WorkerLoop::results_written
  header_->ring_supervisor(doorbell_.get());
}

void ProcessImpl::join_workers() {
  if (supervisor_.joinable()) supervisor_.join();
}

std::vector<pid_t> ProcessImpl::pids() const {
  std::lock_guard lock(mutex);
  std::vector<pid_t> out;
  for (const auto& s : slots_)
    if (s.pid > 0) out.push_back(s.pid);
  return out;
}

void ProcessImpl::submitted(std::unique_lock<std::mutex>& lock) {
  fill(lock, false);
  // The supervisor must see: a frame that did not fit, a task whose timeout it must
  // watch, queued tasks that no result will make room for (no worker has any).
  bool need = options.timeout.has_value();
  bool busy = false;
  for (const auto& s : slots_) {
    if (!s.out.empty()) need = true;
    if (!s.assigned.empty()) busy = true;
  }
  if (!pending.empty() && !busy) need = true;
  const bool backlog = !pending.empty();
  lock.unlock();
  if (need) wake();
  // No worker had room, and room comes with results: read them here unless a caller
  // collects or another thread reads. Left to the supervisor, a burst of submits on
  // two CPUs stalled: woken onto this thread's CPU, it waited for the burst to end
  // (2-3 ms) while the workers, their inboxes full of unread results, slept.
  if (backlog && header_->collecting.load(std::memory_order_relaxed) == 0) {
    try {
      collect(false, true);
    } catch (...) {  // the supervisor reads them
    }
  }
}

void ProcessImpl::release_started_args() noexcept {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    SlotState& s = slots_[i];
    if (s.pid <= 0 || s.assigned.empty()) continue;
    // A worker runs its tasks in order, each after reading all of its frame.
    Assigned& a = s.assigned.front();
    if (a.task.args.capacity() != 0 &&
        pool_->slot(i).current.load(std::memory_order_acquire) == a.id)
      recycle_args(a.task.args);
  }
}

std::unique_ptr<Engine::Impl> make_process_workers(EngineOptions options) {
  return std::make_unique<ProcessImpl>(std::move(options));
}

}  // namespace mpx::detail
