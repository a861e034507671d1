// The driver's side of an MPI pool: its engine (MpiEngine, an Engine::Impl whose
// workers are the ranks) and the communication thread that makes every MPI call of
// rank 0 for all of its pools.
//
// The front end queues tasks in the engine's `pending` as for a local pool; the thread
// takes as many as the ranks have credit for, sends each rank its share in one message,
// and completes the tasks' sinks from the ranks' kResults. A rank's credit is how many
// of its tasks may be in flight: four per worker at first, never under two, more while they come
// back in under kTargetLatencyNs (tiny tasks then travel in batches), fewer when they take longer,
// so that a slow rank holds few tasks and the fast ones take the rest.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "mpi/wire.hpp"
#include "mpx/mpi.hpp"
#include "pool/engine_impl.hpp"
#include "process/start_methods.hpp"

namespace mpx::mpi::detail {

namespace {

using Clock = std::chrono::steady_clock;
using mpx::detail::Engine;
using mpx::detail::EngineOptions;
using mpx::detail::Task;
using mpx::detail::TaskSink;

constexpr double kTargetLatencyNs = 10e6;
constexpr std::size_t kMaxCredit = 8192;

struct RankState {
  int rank = 0;
  std::size_t workers = 0;
  std::size_t in_flight = 0;
  std::size_t limit = 0;
  ByteVector message;  // kTasks being built
  bool opened = false;
  bool closed = false;
};

struct InFlight {
  std::shared_ptr<TaskSink> sink;
  std::size_t tag = 0;
  std::size_t rank = 0;  // index in MpiEngine::ranks
  Clock::time_point sent;
};

class Driver;
Driver* g_driver = nullptr;

// A failed task's exception, from a kResults record.
std::exception_ptr failure(Status status, std::span<const std::byte> bytes) {
  if (status == kFailed) return mpx::detail::decode_exception(bytes);
  if (status == kBroken)
    return std::make_exception_ptr(
        BrokenPool(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())));
  try {
    Reader r(bytes);
    const auto pid = static_cast<pid_t>(r.u64());
    const auto code = static_cast<int>(static_cast<std::int64_t>(r.u64()));
    return std::make_exception_ptr(WorkerLost(pid, code));
  } catch (...) {
    return std::current_exception();
  }
}

class MpiEngine final : public Engine::Impl {
 public:
  MpiEngine(EngineOptions opts, std::size_t workers, RankOptions where);
  ~MpiEngine() override = default;
  void wake() noexcept override;
  void join_workers() override {
    std::unique_lock lock(done_mutex_);
    done_cv_.wait(lock, [&] { return finished_; });
  }
  // Waits for every rank's kOpened; throws (after the ranks let the pool go) if one
  // could not start its pool.
  void open();

  // The communication thread's.
  std::uint64_t id = 0;
  std::size_t per_rank = 0;
  std::vector<RankState> ranks;  // the serving ranks; rank 0 first when it serves
  std::unique_ptr<Server> local;
  std::unordered_map<std::uint64_t, InFlight> in_flight;
  std::uint64_t next_task = 1;
  std::size_t opened = 0, acks = 0;
  bool open_sent = false, close_sent = false, terminate_sent = false;
  std::string open_error;

  void set_opened() {
    std::lock_guard lock(done_mutex_);
    opened_flag_ = true;
    done_cv_.notify_all();
  }
  void set_finished() {
    std::lock_guard lock(done_mutex_);
    finished_ = true;
    opened_flag_ = true;
    done_cv_.notify_all();
  }

 private:
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  bool opened_flag_ = false;
  bool finished_ = false;
};

class Driver {
 public:
  Driver() : thread_([this] { run(); }) {}
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    idle_.poke();
    thread_.join();
  }
  void add(MpiEngine* pool) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) throw InvalidStateError("mpx::mpi: the job is ending");
      pool->id = next_pool_++;
      added_.push_back(pool);
    }
    idle_.poke();
  }
  Idle& idle() noexcept { return idle_; }

 private:
  void run();
  void start(MpiEngine& p);
  void handle(Message& m);
  void results(MpiEngine& p, std::size_t index, Reader& r);
  bool step(MpiEngine& p);
  bool dispatch(MpiEngine& p);
  void send_all(MpiEngine& p, Kind kind);
  MpiEngine* find(std::uint64_t id) {
    for (auto* p : pools_)
      if (p->id == id) return p;
    return nullptr;
  }

  Idle idle_;
  Sender sender_;
  std::mutex mutex_;
  bool stopping_ = false;
  std::uint64_t next_pool_ = 1;
  std::vector<MpiEngine*> added_;
  std::vector<MpiEngine*> pools_;
  std::thread thread_;
};

MpiEngine::MpiEngine(EngineOptions opts, std::size_t workers, RankOptions where)
    : Impl(std::move(opts)), per_rank(workers) {
  const int n = mpx::mpi::size();
  if (where.driver_runs_tasks || n == 1) {
    EngineOptions o = this->options;
    o.workers = per_rank;
    local = std::make_unique<Server>(std::move(o), g_driver->idle(),
                                     reinterpret_cast<std::uint64_t>(&run_batch));
    ranks.push_back({0, local->workers(), 0, 4 * local->workers(), {}, true, false});
    ++opened;
  }
  for (int r = 1; r < n; ++r)
    ranks.push_back({r, 0, 0, 0, {}, false, false});
}

void MpiEngine::wake() noexcept {
  if (g_driver) g_driver->idle().poke();
}

void MpiEngine::open() {
  g_driver->add(this);
  {
    std::unique_lock lock(done_mutex_);
    done_cv_.wait(lock, [&] { return opened_flag_; });
  }
  if (open_error.empty()) return;
  {
    std::lock_guard lock(mutex);
    closed = terminating = true;
    stopping.store(true, std::memory_order_release);
  }
  wake();
  join_workers();
  throw ProcessError("mpx::mpi: a rank could not start its pool: " + open_error);
}

void Driver::run() {
  for (;;) {
    bool did = false;
    bool stop = false;
    {
      std::lock_guard lock(mutex_);
      for (auto* p : added_) {
        pools_.push_back(p);
        start(*p);
        did = true;
      }
      added_.clear();
      stop = stopping_;
    }
    while (auto m = poll_message()) {
      did = true;
      handle(*m);
    }
    for (std::size_t k = 0; k < pools_.size();) {
      MpiEngine& p = *pools_[k];
      did |= step(p);
      const bool over = (p.close_sent || p.terminate_sent) && p.acks == p.ranks.size();
      if (!over) {
        ++k;
        continue;
      }
      if (p.local) {
        p.local->terminate();
        p.local->join();
      }
      pools_.erase(pools_.begin() + static_cast<std::ptrdiff_t>(k));
      p.set_finished();
    }
    did |= sender_.progress();
    if (stop) {
      // Pools still alive at exit end now, as with a terminate.
      for (auto* p : pools_) {
        std::vector<std::shared_ptr<mpx::detail::Feeder>> feeders;
        std::vector<Task> dropped;
        {
          std::lock_guard lock(p->mutex);
          p->closed = p->terminating = true;
          p->stopping.store(true, std::memory_order_release);
          dropped = p->take_pending(feeders);
        }
        mpx::detail::abandon_all(dropped);
      }
      if (pools_.empty()) {
        for (int r = 1; r < ranks(); ++r)
          sender_.send(r, kShutdown, ByteVector(8));
        sender_.flush();
        return;
      }
    }
    if (did) {
      idle_.busy();
    } else {
      bool active = false;
      for (auto* p : pools_)
        active = active || !p->in_flight.empty();
      idle_.wait(active);
    }
  }
}

void Driver::start(MpiEngine& p) {
  for (auto& r : p.ranks) {
    if (r.opened) continue;
    ByteVector m;
    put(m, p.id);
    put(m, p.per_rank);
    put(m, p.options.maxtasksperchild);
    put(m, p.options.timeout ? static_cast<std::uint64_t>(p.options.timeout->count()) : kNoTimeout);
    put(m, reinterpret_cast<std::uint64_t>(p.options.initializer));
    put(m, p.options.initargs);
    put(m, reinterpret_cast<std::uint64_t>(&run_batch));
    // The driver's: a rank's own default is the one it had when it began to serve.
    put(m, static_cast<std::uint64_t>(
               p.options.start_method.value_or(mpx::detail::default_start_method())));
    sender_.send(r.rank, kOpen, std::move(m));
  }
  p.open_sent = true;
  if (p.opened == p.ranks.size()) {
    p.options.workers = p.ranks.front().workers;
    p.set_opened();
  }
}

void Driver::handle(Message& m) {
  Reader r(m.bytes);
  MpiEngine* p = find(r.u64());
  if (!p) return;
  std::size_t index = 0;
  while (index < p->ranks.size() && p->ranks[index].rank != m.source)
    ++index;
  if (index == p->ranks.size()) return;
  RankState& rank = p->ranks[index];
  if (m.kind == kResults) {
    results(*p, index, r);
  } else if (m.kind == kClosed) {
    rank.closed = true;
    ++p->acks;
  } else if (m.kind == kOpened) {
    rank.workers = static_cast<std::size_t>(r.u64());
    rank.limit = 4 * rank.workers;
    rank.opened = true;
    if (rank.workers == 0) {
      auto why = r.bytes();
      p->open_error += (p->open_error.empty() ? "" : "; ") + std::string("rank ") +
                       std::to_string(rank.rank) + " on " + host(rank.rank) + ": " +
                       std::string(reinterpret_cast<const char*>(why.data()), why.size());
      rank.closed = true;  // nothing to close there
      ++p->acks;
    }
    if (++p->opened == p->ranks.size()) {
      std::size_t total = 0;
      for (auto& x : p->ranks)
        total += x.workers;
      p->options.workers = std::max<std::size_t>(total, 1);
      p->set_opened();
    }
  }
}

void Driver::results(MpiEngine& p, std::size_t index, Reader& r) {
  RankState& rank = p.ranks[index];
  const auto now = Clock::now();
  double latency = 0;
  std::size_t count = 0;
  while (!r.done()) {
    const std::uint64_t id = r.u64();
    const auto status = static_cast<Status>(r.u64());
    auto bytes = r.bytes();
    auto it = p.in_flight.find(id);
    if (it == p.in_flight.end()) continue;  // abandoned by a terminate
    InFlight f = std::move(it->second);
    p.in_flight.erase(it);
    --rank.in_flight;
    latency += static_cast<double>(std::chrono::nanoseconds(now - f.sent).count());
    ++count;
    if (status == kOk) {
      f.sink->task_result(f.tag, bytes);
    } else if (status == kFailed || status == kLost || status == kBroken) {
      f.sink->task_failed(f.tag, failure(status, bytes));
    } else {
      f.sink->task_abandoned(f.tag);
    }
  }
  if (count == 0) return;
  // More credit while tasks come back fast, less when they are slow (at most x2 a step).
  const double mean = std::max(latency / static_cast<double>(count), 1.0);
  const double scaled = static_cast<double>(rank.limit) * kTargetLatencyNs / mean;
  const double next =
      std::clamp(scaled, static_cast<double>(rank.limit) / 2, static_cast<double>(rank.limit) * 2);
  rank.limit = std::clamp(static_cast<std::size_t>(next), 2 * rank.workers,
                          std::max(kMaxCredit, 2 * rank.workers));
}

void Driver::send_all(MpiEngine& p, Kind kind) {
  for (auto& r : p.ranks) {
    if (r.rank == 0 || r.closed) continue;
    ByteVector m;
    put(m, p.id);
    sender_.send(r.rank, kind, std::move(m));
  }
}

bool Driver::step(MpiEngine& p) {
  if (p.opened < p.ranks.size() || p.terminate_sent) return false;
  bool did = false;
  if (p.local) {
    ByteVector out;
    put(out, p.id);
    if (p.local->take_results(out)) {
      Reader r(out);
      r.u64();
      results(p, 0, r);
      did = true;
    }
  }
  bool terminating = false, finished = false;
  {
    std::lock_guard lock(p.mutex);
    terminating = p.terminating || !p.open_error.empty();
    finished = p.closed && !p.has_work();
  }
  if (terminating) {
    send_all(p, kTerminate);
    p.terminate_sent = true;
    for (auto& [id, f] : p.in_flight)
      f.sink->task_abandoned(f.tag);
    p.in_flight.clear();
    if (p.local) ++p.acks;
    return true;
  }
  if (!finished) return dispatch(p) || did;
  if (!p.in_flight.empty() || p.close_sent) return did;
  send_all(p, kClose);
  p.close_sent = true;
  if (p.local) ++p.acks;
  return true;
}

bool Driver::dispatch(MpiEngine& p) {
  std::size_t room = 0;
  for (auto& r : p.ranks)
    if (r.limit > r.in_flight) room += r.limit - r.in_flight;
  if (room == 0) return false;
  if (p.pending_count.load(std::memory_order_relaxed) == 0 &&
      p.feeder_count.load(std::memory_order_relaxed) == 0)
    return false;
  std::vector<Task> tasks;
  {
    auto lock = mpx::detail::lock_soon(p.mutex);
    while (tasks.size() < room) {
      auto t = p.pop(lock);
      if (!t) break;
      tasks.push_back(std::move(*t));
    }
  }
  if (tasks.empty()) return false;
  const auto now = Clock::now();
  std::size_t next = 0;  // ranks are filled in turn, each up to its credit
  for (auto& t : tasks) {
    if (!t.sink->task_running(t.tag)) continue;
    std::size_t best = next;
    for (std::size_t k = 0; k < p.ranks.size(); ++k) {
      const std::size_t i = (next + k) % p.ranks.size();
      if (p.ranks[i].limit > p.ranks[i].in_flight) {
        best = i;
        break;
      }
    }
    next = (best + 1) % p.ranks.size();
    RankState& r = p.ranks[best];
    const std::uint64_t id = p.next_task++;
    ++r.in_flight;
    const auto entry = reinterpret_cast<std::uint64_t>(t.entry);
    if (r.rank == 0) {
      p.local->add(id, entry, std::move(t.args));
    } else {
      if (r.message.empty()) put(r.message, p.id);
      put(r.message, id);
      put(r.message, entry);
      put(r.message, t.args);
    }
    p.in_flight.emplace(id, InFlight{std::move(t.sink), t.tag, best, now});
  }
  for (auto& r : p.ranks) {
    if (r.rank == 0) {
      p.local->flush();
    } else if (!r.message.empty()) {
      sender_.send(r.rank, kTasks, std::exchange(r.message, {}));
    }
  }
  {
    std::lock_guard lock(p.mutex);
    for (auto& t : tasks)
      p.recycle_args(t.args);
  }
  return true;
}

}  // namespace

void start_driver() {
  g_driver = new Driver();
}

void stop_driver() {
  if (!g_driver) return;
  g_driver->stop();
  // Kept: an engine that outlives the job may still poke it.
}

}  // namespace mpx::mpi::detail

namespace mpx::mpi::detail {
mpx::detail::Engine::Impl* make_engine(mpx::detail::EngineOptions options, RankOptions ranks) {
  if (!initialized() || !g_driver) throw InvalidStateError("mpx::mpi: call mpx::mpi::init first");
  const std::size_t per_rank = options.workers;
  auto engine = std::make_unique<MpiEngine>(std::move(options), per_rank, ranks);
  engine->open();
  return engine.release();
}
}  // namespace mpx::mpi::detail
