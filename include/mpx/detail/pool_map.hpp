// mpx/detail/pool_map.hpp — chunked map/imap state shared by Pool, ThreadPool and the
// executors' map. Not public API.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/codec.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/pool_entry.hpp"
#include "mpx/detail/pool_future.hpp"
#include "mpx/detail/pool_iterator.hpp"
#include "mpx/detail/pool_task.hpp"
#include "mpx/detail/waiter.hpp"
#include "mpx/errors.hpp"

namespace mpx::detail {

// Results of a map, by chunk, as they arrive. Chunks are numbered from 0 in input order;
// the state keeps those not yet taken (imap drops each chunk once its consumer took it
// and every chunk before it, so that an endless imap holds a bounded window). It is the
// sink of its chunks' tasks, the tag being the chunk's index. `Whole`: what map_async's
// future holds, all results (void for a function that returns nothing: R is then
// std::monostate).
template <class R, class Whole = std::vector<R>>
class MapState final : public TaskSink {
 public:
  using Chunk = std::vector<R>;
  using Decoder = Chunk (*)(std::span<const std::byte>);

  // Known number of chunks (map) or nullopt until the input runs out (imap).
  explicit MapState(std::optional<std::size_t> total) : total_(total) {
    if (total) slots_.resize(*total);
  }

  // map_async: a future completed with all results (or the first error).
  void attach_future(std::shared_ptr<FutureState<Whole>> future) {
    std::lock_guard lock(mutex_);
    callbacks_.store(future && future->has_callbacks(), std::memory_order_relaxed);
    whole_ = future != nullptr;
    future_ = std::move(future);
  }

  // A new chunk was handed out (imap); returns its index.
  std::size_t add_chunk() {
    std::lock_guard lock(mutex_);
    slots_.emplace_back();
    return first_ + slots_.size() - 1;
  }

  // The input ended after `chunks` chunks; `error` (if any) is raised at that point.
  void set_total(std::size_t chunks, std::exception_ptr error = nullptr) {
    std::unique_lock lock(mutex_);
    if (total_) return;
    if (error) {
      if (first_ + slots_.size() <= chunks) slots_.resize(chunks + 1 - first_);
      slots_[chunks - first_].error = error;
      slots_[chunks - first_].done = true;
      order_.push_back(chunks);
      ++completed_;
      ++chunks;
    }
    total_ = chunks;
    unlock_and_finish(lock);
  }

  // map/map_async: every chunk's results go straight to their place in the one result
  // vector (`items` results, `chunksize` per chunk, the last chunk the rest), instead of
  // a vector per chunk copied into the result at the end. Call before any chunk
  // completes; only for results that travel as raw bytes. The vector is sized (zeroed,
  // its pages faulted in: milliseconds for a million ints on a VM) by whoever completes
  // the first chunk, not by the caller before it hands out the first.
  void gather_in_place(std::size_t items, std::size_t chunksize) {
    static_assert(trivially_encodable_v<R>);
    all_.reserve(items);
    items_ = items;
    chunksize_ = chunksize;
  }

  // A chunk's encoded results.
  void complete_bytes(std::size_t index, std::span<const std::byte> bytes,
                      Chunk (*decoder)(std::span<const std::byte>)) {
    if constexpr (trivially_encodable_v<R>) {
      if (chunksize_ != 0) {
        const TaskResult one{index, bytes, false};
        place_results(std::span(&one, 1));
        return;
      }
    }
    complete(index, decoder(bytes), bytes.size());
  }

  // map/map_async: chunks' encoded results, each put at its place, under one lock and
  // with one wake-up; a chunk whose results do not decode fails. Throws only for want of
  // memory (the chunks it did not reach are not done).
  void place_results(std::span<const TaskResult> results) requires trivially_encodable_v<R> {
    std::vector<std::pair<std::size_t, std::exception_ptr>> failed;
    std::unique_lock lock(mutex_);
    size_results();
    for (const TaskResult& r : results) {
      if (finished(r.tag)) continue;  // its place may be given away already
      try {
        if (r.placed) {
          check_vector_head<R>(r.bytes, place_of(r.tag).size());
        } else {
          decode_vector_into(r.bytes, place_of(r.tag));
        }
      } catch (const DecodeError&) {
        failed.emplace_back(r.tag, std::current_exception());
        continue;
      }
      order_.push_back(r.tag);
      bytes_seen_ += r.bytes.size();
      slots_[r.tag - first_].done = true;
      ++completed_;
    }
    unlock_and_finish(lock);
    for (auto& [index, error] : failed)
      fail(index, std::move(error));
  }

  // `bytes`: the encoded size of the results, when they came encoded.
  void complete(std::size_t index, Chunk values, std::size_t bytes = 0) {
    if constexpr (trivially_encodable_v<R>) {
      if (chunksize_ != 0) {  // thread workers' results (process ones: complete_bytes)
        {
          std::lock_guard lock(mutex_);
          size_results();  // then it stays put: the chunks' places are written unlocked
        }
        std::span<R> place = place_of(index);
        if (values.size() != place.size()) throw std::logic_error("map: a chunk of another size");
        std::copy(values.begin(), values.end(), place.begin());
        values.clear();
      }
    }
    std::unique_lock lock(mutex_);
    if (finished(index)) return;
    bytes_seen_ += bytes;
    mark_done(lock, index, std::move(values));
  }

  void fail(std::size_t index, std::exception_ptr error) {
    std::shared_ptr<FutureState<Whole>> future;
    {
      std::lock_guard lock(mutex_);
      if (finished(index)) return;
      slots_[index - first_].error = error;
      slots_[index - first_].done = true;
      order_.push_back(index);
      ++completed_;
      future = future_;
    }
    wake_waiters();
    if (future) future->set_exception(error);  // map_async fails at the first error
  }

  // Ordered iteration: waits for chunk `index`. Returns false at the end.
  // Throws TimeoutError, or the chunk's error.
  bool wait_chunk(std::size_t index, const Deadline& deadline) {
    auto ready = [&] {
      std::lock_guard lock(mutex_);
      return (total_ && index >= *total_) || done(index);
    };
    if (!collect_until(collector_.get(), word_, ready, deadline))
      throw TimeoutError("no result in time");
    std::lock_guard lock(mutex_);
    return done(index) && !(total_ && index >= *total_);
  }
  // Unordered iteration: waits for the `n`-th completed chunk; returns its index or
  // nullopt at the end. Asked for n = 0, 1, 2... in turn (earlier entries are dropped).
  std::optional<std::size_t> wait_nth(std::size_t n, const Deadline& deadline) {
    auto ready = [&] {
      std::lock_guard lock(mutex_);
      return order_first_ + order_.size() > n || (total_ && n >= *total_);
    };
    if (!collect_until(collector_.get(), word_, ready, deadline))
      throw TimeoutError("no result in time");
    std::lock_guard lock(mutex_);
    if (n < order_first_ || order_first_ + order_.size() <= n) return std::nullopt;
    const std::size_t index = order_[n - order_first_];
    order_.erase(order_.begin(),
                 order_.begin() + static_cast<std::ptrdiff_t>(n + 1 - order_first_));
    order_first_ = n + 1;
    return index;
  }
  // Takes a completed chunk's results (throws its error).
  Chunk take(std::size_t index) {
    std::shared_ptr<EngineWaker> waker;
    std::exception_ptr error;
    Chunk values;
    {
      std::lock_guard lock(mutex_);
      if (index < first_ || index - first_ >= slots_.size())
        throw std::logic_error("map: a chunk taken twice");
      auto& slot = slots_[index - first_];
      slot.taken = true;
      ++consumed_;
      waker = waker_;
      error = slot.error;
      values = std::move(slot.values);
      while (!slots_.empty() && slots_.front().taken) {
        slots_.pop_front();
        ++first_;
      }
      // Completion order, for an ordered consumer (which never reads it) or past what an
      // unordered one has read (wait_nth drops that).
      while (!order_.empty() && order_.front() < first_) {
        order_.pop_front();
        ++order_first_;
      }
    }
    if (waker) waker->wake();  // its feeder may produce again
    if (error) std::rethrow_exception(error);
    return values;
  }
  // Whether at least `n` chunks are done.
  bool completed_at_least(std::size_t n) {
    std::lock_guard lock(mutex_);
    return completed_ >= n;
  }
  // Blocks until `n` chunks are done, reading results meanwhile (map's bound on the
  // chunks it queues). A chunk is done once it succeeded, failed or was cancelled, so
  // this ends whatever happens to the workers.
  void wait_completed(std::size_t n) {
    collect_until(
        collector_.get(), word_, [&] { return completed_at_least(n); }, Deadline::never());
  }

  // imap's bound: whether another chunk may be handed out while the consumer has not
  // taken those before. Under `base` chunks outstanding always; under `limit` while that
  // many chunks of the average encoded size so far (input and result) stay within
  // `max_bytes`.
  bool has_room(std::size_t base, std::size_t limit, std::size_t max_bytes) {
    std::lock_guard lock(mutex_);
    const std::size_t outstanding = first_ + slots_.size() - consumed_;
    if (outstanding < base) return true;
    if (outstanding >= limit) return false;
    const std::size_t chunks = first_ + slots_.size();
    const std::size_t average = chunks == 0 ? 0 : bytes_seen_ / chunks;
    return average * (outstanding + 1) <= max_bytes;
  }
  // Encoded bytes of a chunk's input (imap's bound).
  void count_bytes(std::size_t n) {
    std::lock_guard lock(mutex_);
    bytes_seen_ += n;
  }
  void set_waker(std::shared_ptr<EngineWaker> waker) {
    std::lock_guard lock(mutex_);
    waker_ = std::move(waker);
  }
  // Process pools: waits read results through the pool's collector. Set before the
  // first chunk is submitted.
  void set_collector(std::shared_ptr<Collector> collector) { collector_ = std::move(collector); }
  // Whether completing a chunk may run user code (map_async's callbacks). Asked for
  // every result, under the engine's lock: no lock of ours.
  bool has_callbacks() const noexcept override {
    return callbacks_.load(std::memory_order_relaxed);
  }
  // map/map_async: the chunks' results are wanted all together (imap's one by one).
  bool whole() const noexcept override { return whole_.load(std::memory_order_relaxed); }

  // Process pools: how a chunk's encoded results decode. Set before the first chunk
  // is submitted.
  void set_decoder(Decoder decoder) noexcept { decoder_ = decoder; }
  // A closed map's chunks not yet handed to a worker are skipped (cancelled).
  bool task_running(std::size_t) noexcept override {
    return !closed_.load(std::memory_order_acquire);
  }

  // imap: its consumer closed it or went away (IMapIterator::close). From then on its
  // feeder reads no more input and its chunks not yet handed to a worker do not run;
  // those running finish. Blocks while the feeder reads the input (it reads under
  // lock_input()), so that the input may go away once this returns.
  void close() noexcept {
    {
      std::lock_guard input(input_mutex_);
      closed_.store(true, std::memory_order_release);
    }
    std::shared_ptr<EngineWaker> waker;
    {
      std::lock_guard lock(mutex_);
      if (!total_) waker = waker_;  // the feeder is still the engine's: let it drop it
    }
    if (waker) waker->wake();
  }
  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }
  // Held by the feeder while it reads the input (see close()).
  std::unique_lock<std::mutex> lock_input() { return std::unique_lock(input_mutex_); }
  void task_result(std::size_t index, std::span<const std::byte> bytes) noexcept override {
    try {
      if (!decoder_) throw InvalidStateError("map: no decoder for encoded results");
      complete_bytes(index, bytes, decoder_);
    } catch (...) {
      fail(index, std::current_exception());
    }
  }
  void task_results(std::span<const TaskResult> results) noexcept override {
    if constexpr (trivially_encodable_v<R>) {
      if (chunksize_ != 0) {
        try {
          place_results(results);
          return;
        } catch (...) {  // no memory: one by one, each failing on its own if it must
        }
        for (const TaskResult& r : results) {
          try {
            place_results(std::span(&r, 1));
          } catch (...) {
            fail(r.tag, std::current_exception());
          }
        }
        return;
      }
    }
    TaskSink::task_results(results);
  }
  // map/map_async: a chunk's results are read from the worker straight to their place
  // in the result vector (sized here, once): its message's head (type tag and count)
  // comes after, to task_results(), and is checked then.
  ResultPlace result_place(std::size_t index, std::size_t bytes) noexcept override {
    if constexpr (trivially_encodable_v<R>) {
      if (chunksize_ == 0) return {};
      try {
        std::lock_guard lock(mutex_);
        if (finished(index)) return {};
        size_results();
        const std::span<R> place = place_of(index);
        const std::size_t head = sizeof(std::uint64_t) + varint_size(place.size());
        if (bytes != head + place.size_bytes()) return {};  // read whole, to fail as usual
        return {reinterpret_cast<std::byte*>(place.data()), head};
      } catch (...) {  // no memory for the results: they come as usual (and fail)
        return {};
      }
    }
    return {};
  }
  void task_failed(std::size_t index, std::exception_ptr error) noexcept override {
    fail(index, std::move(error));
  }
  void task_abandoned(std::size_t index) noexcept override {
    fail(index, std::make_exception_ptr(CancelledError()));
  }

 private:
  struct Slot {
    bool done = false;
    bool taken = false;  // by the consumer (imap)
    Chunk values;
    std::exception_ptr error;
  };

  // mutex_ held. Chunk `index` has its outcome (a chunk no longer held was taken).
  bool finished(std::size_t index) const { return index < first_ || slots_[index - first_].done; }
  // mutex_ held. Chunk `index` is held and has its outcome.
  bool done(std::size_t index) const {
    return index >= first_ && index - first_ < slots_.size() && slots_[index - first_].done;
  }

  void wake_waiters() noexcept {
    notify(word_);
    if (collector_) collector_->poke();
  }

  // mutex_ held; releases it.
  void mark_done(std::unique_lock<std::mutex>& lock, std::size_t index, Chunk values) {
    slots_[index - first_].values = std::move(values);
    slots_[index - first_].done = true;
    order_.push_back(index);
    ++completed_;
    unlock_and_finish(lock);
  }

  // mutex_ held; releases it, wakes the waiters, and completes map_async's future once
  // every chunk is in.
  void unlock_and_finish(std::unique_lock<std::mutex>& lock) {
    std::shared_ptr<FutureState<Whole>> future;
    std::vector<R> all;
    std::exception_ptr error;
    if (future_ && total_ && completed_ == *total_) {
      future = std::move(future_);
      future_.reset();
      std::size_t n = 0;
      for (auto& s : slots_) {
        if (s.error) {
          error = s.error;
          break;
        }
        n += s.values.size();
      }
      if constexpr (!std::is_void_v<Whole>) {  // else there is nothing to gather
        if (!error && chunksize_ != 0) {
          all = std::move(all_);
        } else if (!error) {
          all.reserve(n);
          for (auto& s : slots_)
            all.insert(all.end(), std::make_move_iterator(s.values.begin()),
                       std::make_move_iterator(s.values.end()));
        }
      }
    }
    lock.unlock();
    wake_waiters();
    if (!future) return;
    if (error) {
      future->set_exception(error);
    } else if constexpr (std::is_void_v<Whole>) {
      future->set_result();
    } else {
      future->set_result(std::move(all));
    }
  }

  mutable std::mutex mutex_;
  std::mutex input_mutex_;  // see close()
  std::atomic<bool> closed_{false};
  Decoder decoder_ = nullptr;
  WaitWord word_;
  std::optional<std::size_t> total_;
  std::size_t completed_ = 0;
  std::deque<Slot> slots_;
  std::size_t first_ = 0;  // the chunk in slots_.front()
  // Indexes of the chunks in the order they completed, from the order_first_-th on.
  std::deque<std::size_t> order_;
  std::size_t order_first_ = 0;
  std::size_t consumed_ = 0;
  std::size_t bytes_seen_ = 0;  // encoded inputs and results of all chunks so far
  std::shared_ptr<EngineWaker> waker_;
  std::shared_ptr<FutureState<Whole>> future_;
  // Set with future_ (whose callbacks are set before it is attached, before any task).
  std::atomic<bool> callbacks_{false};
  std::atomic<bool> whole_{false};  // likewise
  std::shared_ptr<Collector> collector_;
  // gather_in_place: the results (items_ once sized), and the length of every chunk but
  // the last.
  std::vector<R> all_;
  std::size_t items_ = 0;
  std::size_t chunksize_ = 0;

  // mutex_ held.
  void size_results() {
    if (all_.size() == items_) return;
    if (items_ * sizeof(R) >= kPrefaultBytes) prefault(all_.data(), items_ * sizeof(R));
    all_.resize(items_);
  }

  std::span<R> place_of(std::size_t index) {
    const std::size_t begin = index * chunksize_;
    return std::span<R>(all_).subspan(begin, std::min(chunksize_, all_.size() - begin));
  }
};

// The result of imap/imap_unordered/Executor::map: results in order (or as they
// complete), fetched with next() or a range-for loop.
//
// Lifetime (as with std::views): a range given as an lvalue is read, lazily, while this
// object lives, so it must outlive this object; a range given as an rvalue is moved into
// the map, which owns it. Closing or destroying this object (close(), leaving a loop by
// break, an exception or a return) stops the map: it blocks until the input is no longer
// being read and never reads it again; the items not yet handed to a worker are
// cancelled (never run), those already running finish (their results are dropped), and
// no item runs twice. Tasks a process worker holds queued behind the one it runs (two
// while tasks are long, up to 64 while they take microseconds) count as running, as
// those in Python's call queue do.
// Move-only. Thread safety: one consumer at a time.
template <class R>
class IMapIterator {
 public:
  IMapIterator(std::shared_ptr<MapState<R>> state, bool ordered, Deadline deadline)
      : state_(std::move(state)), ordered_(ordered), deadline_(deadline) {}
  IMapIterator(IMapIterator&&) noexcept = default;
  IMapIterator& operator=(IMapIterator&& other) noexcept {
    if (this != &other) {
      close();
      state_ = std::move(other.state_);
      ordered_ = other.ordered_;
      deadline_ = other.deadline_;
      chunk_ = other.chunk_;
      buffer_ = std::move(other.buffer_);
      pos_ = other.pos_;
      closed_ = other.closed_;
      timed_out_ = other.timed_out_;
    }
    return *this;
  }
  IMapIterator(const IMapIterator&) = delete;
  IMapIterator& operator=(const IMapIterator&) = delete;
  // close().
  ~IMapIterator() { close(); }

  // The next result, or nullopt after the last one (or after close()).
  // Blocks until it is available.
  // Timeout: throws TimeoutError if it is not available in time. With next(timeout)
  // the iterator stays usable (call next() again); when the map's own timeout
  // (Executor::map's MapOptions::timeout) passes, the map is closed as by close() and
  // every later next() throws TimeoutError (Python cancels the items then).
  // Throws: the exception of the call that produced this result (the rest of its
  // chunk is skipped; later results still come).
  std::optional<R> next() { return next_until(deadline_); }
  template <class Rep, class Period>
  std::optional<R> next(std::chrono::duration<Rep, Period> timeout) {
    return next_until(deadline_.at_most(timeout));
  }

  // Ends the iteration (Python's generator close()): later next() calls return nullopt.
  // Blocks while the map's feeder reads the input, then never reads it again; the items
  // not yet handed to a worker are cancelled. Calling it twice is harmless.
  void close() noexcept {
    if (!state_ || closed_) return;
    closed_ = true;
    state_->close();
    buffer_.clear();
    pos_ = 0;
  }

  using iterator = PullIterator<IMapIterator, R&>;
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  std::optional<R> next_until(const Deadline& deadline) {
    if (timed_out_) throw TimeoutError("the map's timeout passed");
    if (closed_) return std::nullopt;
    try {
      return take_next(deadline);
    } catch (const TimeoutError&) {
      if (!deadline_.is_never() && deadline_.expired()) {
        close();
        timed_out_ = true;
      }
      throw;
    }
  }
  std::optional<R> take_next(const Deadline& deadline) {
    while (pos_ == buffer_.size()) {
      buffer_.clear();
      pos_ = 0;
      if (ordered_) {
        if (!state_->wait_chunk(chunk_, deadline)) return std::nullopt;
        std::size_t index = chunk_++;
        buffer_ = state_->take(index);
      } else {
        auto index = state_->wait_nth(chunk_, deadline);
        if (!index) return std::nullopt;
        ++chunk_;
        buffer_ = state_->take(*index);
      }
    }
    return std::move(buffer_[pos_++]);
  }

  std::shared_ptr<MapState<R>> state_;
  bool ordered_;
  Deadline deadline_;
  std::size_t chunk_ = 0;
  std::vector<R> buffer_;
  std::size_t pos_ = 0;
  bool closed_ = false;
  bool timed_out_ = false;
};

// Pulls chunks of items from a view, lazily, for imap. MakeTask(chunk, sink) -> Task.
template <class R, class Item, class View, class MakeTask>
class RangeFeeder final : public Feeder {
 public:
  // Chunks handed out and not yet consumed: `base` at any size, up to `limit` while they
  // hold about `max_bytes` at most (MapState::has_room).
  RangeFeeder(std::shared_ptr<MapState<R>> state, View view, std::size_t chunksize,
              std::size_t base, std::size_t limit, std::size_t max_bytes, MakeTask make)
      : state_(std::move(state)),
        view_(std::move(view)),
        chunksize_(chunksize),
        base_(base),
        limit_(limit),
        max_bytes_(max_bytes),
        make_(std::move(make)) {}
  // A closed map's feeder is ready: to be dropped (next() then returns nullopt).
  bool ready() const noexcept override {
    return state_->closed() || state_->has_room(base_, limit_, max_bytes_);
  }
  ~RangeFeeder() override {
    // Dropped before its input ran out (terminate, shutdown): the iteration ends there.
    if (!exhausted_) state_->set_total(index_, std::make_exception_ptr(CancelledError()));
  }

  std::optional<Task> next() noexcept override {
    if (exhausted_) return std::nullopt;
    try {
      std::vector<Item> chunk;
      {
        // The input is read only under this lock, and never once the map is closed
        // (MapState::close()): its consumer may be gone, and an lvalue input with it.
        auto input = state_->lock_input();
        if (state_->closed()) {
          exhausted_ = true;
          return std::nullopt;
        }
        if (!started_) {
          it_.emplace(std::ranges::begin(view_));
          started_ = true;
        }
        while (chunk.size() < chunksize_ && *it_ != std::ranges::end(view_)) {
          chunk.push_back(static_cast<Item>(**it_));
          ++*it_;
        }
      }
      if (chunk.empty()) {
        exhausted_ = true;
        state_->set_total(index_);
        return std::nullopt;
      }
      std::size_t index = state_->add_chunk();
      index_ = index + 1;
      Task task = make_(std::move(chunk), index);
      state_->count_bytes(task.args.size());
      return task;
    } catch (...) {
      exhausted_ = true;
      state_->set_total(index_, std::current_exception());
      return std::nullopt;
    }
  }

 private:
  std::shared_ptr<MapState<R>> state_;
  View view_;
  std::optional<std::ranges::iterator_t<View>> it_;
  std::size_t chunksize_;
  std::size_t base_;
  std::size_t limit_;
  std::size_t max_bytes_;
  MakeTask make_;
  std::size_t index_ = 0;
  bool started_ = false;
  bool exhausted_ = false;
};

// Python's default map chunksize: ceil(n / (4 * workers)).
inline std::size_t auto_chunksize(std::size_t n, std::size_t workers) {
  std::size_t d = 4 * (workers == 0 ? 1 : workers);
  std::size_t c = (n + d - 1) / d;
  return c == 0 ? 1 : c;
}

}  // namespace mpx::detail
