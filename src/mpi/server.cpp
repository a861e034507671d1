// Server: where a rank runs a driver's pool's tasks (src/mpi/wire.hpp). Outcomes become
// kResults records under one lock and wake the communication thread.
//
// Tiny tasks in batches: while more of a pool's tasks are queued on this rank than its
// workers can start at once, consecutive ones go to a worker as one local task
// (run_batch), so that a worker's result wakes the pool's thread once per batch, not
// once per task (that wake-up, tens of microseconds on a VM, would cap a rank at a few
// tens of thousands of tiny tasks a second). A batch's tasks keep their own results and
// exceptions. If a batch's worker dies, its tasks are run again one by one, so that
// only the task that crashes fails with WorkerLost (a task of that batch that had
// finished before the crash runs twice). Pools with a per-task timeout or
// maxtasksperchild never batch: both count tasks one by one.
#include <unordered_map>

#include "mpi/wire.hpp"
#include "mpx/detail/function_id.hpp"

namespace mpx::mpi::detail {

namespace {
constexpr std::size_t kBatchTag = std::size_t{1} << 63;
constexpr std::size_t kMaxBatch = 64;
constexpr std::size_t kMaxBatchBytes = std::size_t{64} << 10;
constexpr std::size_t kBatchableBytes = std::size_t{4} << 10;  // a task's arguments
}  // namespace

void run_batch(std::span<const std::byte> args, ByteVector& out) {
  Reader r(args);
  ByteVector one;
  while (!r.done()) {
    const std::uint64_t entry = r.u64();
    const auto task_args = r.bytes();
    one.clear();
    Status status = kOk;
    try {
      reinterpret_cast<mpx::detail::Entry>(mpx::detail::local_address(entry))(task_args, one);
    } catch (...) {
      one.clear();
      status = kFailed;
      mpx::detail::encode_exception(std::current_exception(), one);
    }
    put(out, status);
    put(out, one);
  }
}

struct Server::Queued {
  std::uint64_t id = 0;
  std::uint64_t entry = 0;
  ByteVector args;
};

class Server::Sink final : public mpx::detail::TaskSink {
 public:
  explicit Sink(Idle& idle) : idle_(idle) {}
  bool task_running(std::size_t) noexcept override { return true; }
  void task_result(std::size_t tag, std::span<const std::byte> result) noexcept override {
    guarded([&] { result_locked(tag, result); });
  }
  void task_results(std::span<const mpx::detail::TaskResult> results) noexcept override {
    guarded([&] {
      for (const auto& r : results)
        result_locked(r.tag, r.bytes);
    });
  }
  void task_failed(std::size_t tag, std::exception_ptr error) noexcept override {
    ByteVector bytes;
    Status status = kFailed;
    bool lost = false;
    try {
      try {
        std::rethrow_exception(error);
      } catch (const WorkerLost& e) {
        status = kLost;
        lost = true;
        put(bytes, static_cast<std::uint64_t>(e.pid()));
        put(bytes, static_cast<std::uint64_t>(static_cast<std::int64_t>(e.exitcode())));
      } catch (const BrokenPool& e) {
        status = kBroken;
        const std::string what = e.what();
        bytes.assign(reinterpret_cast<const std::byte*>(what.data()),
                     reinterpret_cast<const std::byte*>(what.data() + what.size()));
      } catch (...) {
        mpx::detail::encode_exception(error, bytes);
      }
    } catch (...) {
    }
    guarded([&] {
      if ((tag & kBatchTag) == 0) return record(tag, status, bytes);
      auto batch = take_batch(tag);
      if (lost) {  // run each again alone: only the one that crashes fails
        for (auto& q : batch)
          reruns_.push_back(std::move(q));
        return;
      }
      for (auto& q : batch)
        record(q.id, status, bytes);
    });
  }
  void task_abandoned(std::size_t tag) noexcept override {
    guarded([&] {
      if ((tag & kBatchTag) == 0) return record(tag, kAbandoned, {});
      for (auto& q : take_batch(tag))
        record(q.id, kAbandoned, {});
    });
  }

  // A batch's tasks, kept until its outcome (to run them again if its worker dies).
  std::size_t add_batch(std::vector<Queued> tasks) {
    std::lock_guard lock(mutex_);
    const std::size_t tag = kBatchTag | next_batch_++;
    batches_.emplace(tag, std::move(tasks));
    return tag;
  }
  void started(std::size_t n) noexcept { outstanding_.fetch_add(n, std::memory_order_relaxed); }
  std::size_t outstanding() const noexcept { return outstanding_.load(std::memory_order_relaxed); }
  bool take(ByteVector& out, std::vector<Queued>& reruns) {
    std::lock_guard lock(mutex_);
    reruns = std::exchange(reruns_, {});
    if (records_.empty()) return false;
    out.insert(out.end(), records_.begin(), records_.end());
    records_.clear();
    return true;
  }

 private:
  template <class F>
  void guarded(F&& f) noexcept {
    try {
      std::lock_guard lock(mutex_);
      f();
    } catch (...) {
      std::terminate();  // out of memory for a result: nothing sensible is left
    }
    idle_.poke();
  }
  std::vector<Queued> take_batch(std::size_t tag) {
    auto it = batches_.find(tag);
    if (it == batches_.end()) return {};
    auto tasks = std::move(it->second);
    batches_.erase(it);
    return tasks;
  }
  void result_locked(std::size_t tag, std::span<const std::byte> bytes) {
    if ((tag & kBatchTag) == 0) return record(tag, kOk, bytes);
    Reader r(bytes);
    for (auto& q : take_batch(tag)) {
      const auto status = static_cast<Status>(r.u64());
      record(q.id, status, r.bytes());
    }
  }
  void record(std::uint64_t id, Status status, std::span<const std::byte> bytes) {
    put(records_, id);
    put(records_, status);
    put(records_, bytes);
    outstanding_.fetch_sub(1, std::memory_order_relaxed);
  }

  Idle& idle_;
  std::mutex mutex_;
  ByteVector records_;
  std::unordered_map<std::size_t, std::vector<Queued>> batches_;
  std::size_t next_batch_ = 0;
  std::vector<Queued> reruns_;
  std::atomic<std::size_t> outstanding_{0};
};

Server::Server(mpx::detail::EngineOptions options, Idle& idle, std::uint64_t batch_entry)
    : batch_entry_(options.timeout || options.maxtasksperchild != 0 ? 0 : batch_entry),
      sink_(std::make_shared<Sink>(idle)),
      engine_([&] {
        options.processes = true;
        return std::move(options);
      }()),
      queued_() {}

Server::~Server() = default;

void Server::add(std::uint64_t id, std::uint64_t entry, ByteVector args) {
  queued_.push_back({id, entry, std::move(args)});
}

void Server::submit(Reader& records) {
  while (!records.done()) {
    const std::uint64_t id = records.u64();
    const std::uint64_t entry = records.u64();
    auto args = records.bytes();
    add(id, entry, ByteVector(args.begin(), args.end()));
  }
  flush();
}

mpx::detail::Task Server::single(Queued& q) {
  mpx::detail::Task t;
  t.sink = sink_;
  t.tag = static_cast<std::size_t>(q.id);
  t.entry = reinterpret_cast<mpx::detail::Entry>(q.entry);
  t.args = std::move(q.args);
  return t;
}

void Server::flush() {
  if (queued_.empty()) return;
  // Batches only while more is queued here than the workers can start at once.
  const std::size_t n = queued_.size();
  const std::size_t backlog = sink_->outstanding() + n;
  std::size_t per_batch = 1;
  if (batch_entry_ != 0 && backlog > 4 * workers())
    per_batch = std::min(kMaxBatch, backlog / (4 * workers()));
  sink_->started(n);
  std::vector<mpx::detail::Task> tasks;
  for (std::size_t k = 0; k < n;) {
    std::size_t take = 0, bytes = 0;
    while (take < per_batch && k + take < n && queued_[k + take].args.size() <= kBatchableBytes &&
           bytes < kMaxBatchBytes)
      bytes += queued_[k + take++].args.size() + 16;
    if (take <= 1) {
      tasks.push_back(single(queued_[k++]));
      continue;
    }
    mpx::detail::Task t;
    t.sink = sink_;
    t.entry = reinterpret_cast<mpx::detail::Entry>(batch_entry_);
    t.args.reserve(bytes + 16 * take);
    std::vector<Queued> batch;
    batch.reserve(take);
    for (std::size_t j = 0; j < take; ++j, ++k) {
      put(t.args, queued_[k].entry);
      put(t.args, queued_[k].args);
      batch.push_back(std::move(queued_[k]));
    }
    t.tag = sink_->add_batch(std::move(batch));
    tasks.push_back(std::move(t));
  }
  queued_.clear();
  engine_.submit(tasks);
}

bool Server::busy() const noexcept {
  return sink_->outstanding() != 0;
}

bool Server::take_results(ByteVector& out) {
  std::vector<Queued> reruns;
  const bool any = sink_->take(out, reruns);
  if (!reruns.empty()) {
    std::vector<mpx::detail::Task> tasks;
    for (auto& q : reruns)
      tasks.push_back(single(q));
    engine_.submit(tasks);
  }
  return any;
}

}  // namespace mpx::mpi::detail
