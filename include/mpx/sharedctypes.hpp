// mpx/sharedctypes.hpp — Value, Array, RawValue, RawArray: trivially copyable data in
// shared memory (Python's multiprocessing.sharedctypes / multiprocessing.Value, Array).
//
//   mpx::Value<long> counter(0);            // with its own RLock, like Python
//   // in each of several processes:
//   counter.with_lock([](long& c) { ++c; });
//   std::cout << counter.value();
//
// Handles: copies and moves refer to the same shared data (and the same lock), like a
// Python object; a child forked after construction shares it with its parent.
// Across fork: inherited. Not usable across exec/spawn or by unrelated processes.
// OS resources: one shared anonymous mapping (plus the lock's page for Value/Array),
// unmapped when the last handle in a process goes away; no fd, nothing to unlink.
//
// Synchronisation: value()/set() of a Value lock its lock (an RLock by default, so they
// may be called while holding get_lock()). `v.set(v.value() + 1)` is NOT atomic, exactly
// as `v.value += 1` is not in Python: use with_lock() or hold get_lock() for that.
// Element access of an Array (operator[], span(), iteration) does not lock: hold
// get_lock() or use with_lock() when other processes write. Raw* types have no lock.
//
// If the lock's owner died holding it, value()/set()/with_lock() release the lock and
// throw mpx::OwnerDied (the lock is usable again; the next call proceeds).
#pragma once

#include <cstddef>
#include <cstring>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>

#include "mpx/errors.hpp"
#include "mpx/synchronize.hpp"

namespace mpx {

namespace detail {

template <class T>
std::shared_ptr<T> allocate_shared_array(std::size_t n) {
  static_assert(std::is_trivially_copyable_v<T>,
                "mpx shared values hold trivially copyable types only (no pointers to "
                "process memory, no std::string): use a Queue or a Manager for others");
  static_assert(alignof(T) <= 4096);
  std::shared_ptr<void> block = allocate_shared_block(sizeof(T) * (n == 0 ? 1 : n));
  // The mapping is zero-filled; give the elements their lifetime.
  T* first = static_cast<T*>(block.get());
  for (std::size_t i = 0; i < n; ++i)
    new (first + i) T();
  return std::shared_ptr<T>(block, first);
}

// Runs fn() holding `lock`. OwnerDied from acquiring releases the lock and propagates.
template <class LockT, class F>
decltype(auto) with_held(const LockT& lock, F&& fn) {
  try {
    lock.acquire();
  } catch (const OwnerDied&) {
    lock.release();
    throw;
  }
  struct Release {
    const LockT& lock;
    ~Release() { lock.release(); }
  } release{lock};
  return fn();
}

}  // namespace detail

// One T in shared memory, without a lock (multiprocessing.RawValue).
template <class T>
class RawValue {
 public:
  explicit RawValue(const T& init = T()) : data_(detail::allocate_shared_array<T>(1)) {
    *data_ = init;
  }
  T value() const { return *data_; }
  void set(const T& v) const { *data_ = v; }
  T& operator*() const noexcept { return *data_; }
  T* operator->() const noexcept { return data_.get(); }
  T* get() const noexcept { return data_.get(); }

 private:
  friend struct detail::Handoff<RawValue>;
  explicit RawValue(std::shared_ptr<T> data) noexcept : data_(std::move(data)) {}
  std::shared_ptr<T> data_;
};

// One T in shared memory with a lock (multiprocessing.Value). LockT is RLock (Python's
// default) or Lock (then value()/set() must not be called while holding get_lock()).
template <class T, class LockT = RLock>
class Value {
 public:
  // A value initialised to `init`, with a new lock (lock == true) or none (lock == false;
  // get_lock() then throws and value()/set() do not lock).
  explicit Value(const T& init = T(), bool lock = true)
      : data_(detail::allocate_shared_array<T>(1)) {
    *data_ = init;
    if (lock) lock_.emplace();
  }
  // A value guarded by an existing lock (Python: Value('i', 0, lock=some_lock)).
  Value(const T& init, LockT lock) : data_(detail::allocate_shared_array<T>(1)), lock_(lock) {
    *data_ = init;
  }

  // A copy of the value, read under the lock.
  T value() const {
    if (!lock_) return *data_;
    return detail::with_held(*lock_, [&] { return *data_; });
  }
  // Stores `v` under the lock.
  void set(const T& v) const {
    if (!lock_) {
      *data_ = v;
      return;
    }
    detail::with_held(*lock_, [&] { *data_ = v; });
  }
  // Runs fn(T&) (or fn()) holding the lock and returns its result: the way to update.
  // Blocks while another holder has the lock. Throws what fn throws; mpx::OwnerDied.
  template <class F>
  decltype(auto) with_lock(F&& fn) const {
    auto call = [&]() -> decltype(auto) {
      if constexpr (std::is_invocable_v<F&, T&>) {
        return fn(*data_);
      } else {
        return fn();
      }
    };
    if (!lock_) return call();
    return detail::with_held(*lock_, call);
  }
  // The lock (a handle to the same lock). Throws mpx::InvalidStateError when created
  // with lock == false.
  const LockT& get_lock() const {
    if (!lock_) throw InvalidStateError("Value::get_lock: this Value has no lock");
    return *lock_;
  }
  // The raw shared object, unsynchronised (Python: get_obj()).
  T& get_obj() const noexcept { return *data_; }

 private:
  friend struct detail::Handoff<Value>;
  Value(std::shared_ptr<T> data, std::optional<LockT> lock)
      : data_(std::move(data)), lock_(std::move(lock)) {}

  std::shared_ptr<T> data_;
  std::optional<LockT> lock_;
};

template <class T>
Value(T) -> Value<T>;

template <class T>
Value(T, bool) -> Value<T>;
template <class T>
Value(T, Lock) -> Value<T, Lock>;
template <class T>
Value(T, RLock) -> Value<T, RLock>;

// A fixed-size array of T in shared memory, without a lock (multiprocessing.RawArray).
template <class T>
class RawArray {
 public:
  // n value-initialised (zero) elements.
  explicit RawArray(std::size_t n) : data_(detail::allocate_shared_array<T>(n)), size_(n) {}
  // A copy of a sized range's elements.
  template <std::ranges::sized_range R>
  requires(!std::is_integral_v<std::remove_cvref_t<R>>) explicit RawArray(const R& init)
      : RawArray(std::ranges::size(init)) {
    std::ranges::copy(init, data_.get());
  }
  RawArray(std::initializer_list<T> init)
      : RawArray(std::span<const T>(init.begin(), init.size())) {}

  std::size_t size() const noexcept { return size_; }
  // Unchecked, as std::vector's.
  T& operator[](std::size_t i) const noexcept { return data_.get()[i]; }
  // Checked, as Python indexes: a negative i counts from the end (at(-1) is the last).
  // Throws mpx::IndexError when i is outside [-size(), size()).
  T& at(std::ptrdiff_t i) const {
    const auto n = static_cast<std::ptrdiff_t>(size_);
    if (i < -n || i >= n)
      throw IndexError("Array index " + std::to_string(i) + " out of range (size " +
                       std::to_string(size_) + ")");
    return data_.get()[i < 0 ? i + n : i];
  }
  T* data() const noexcept { return data_.get(); }
  std::span<T> span() const noexcept { return {data_.get(), size_}; }
  T* begin() const noexcept { return data_.get(); }
  T* end() const noexcept { return data_.get() + size_; }

 private:
  friend struct detail::Handoff<RawArray>;
  RawArray(std::shared_ptr<T> data, std::size_t n) noexcept : data_(std::move(data)), size_(n) {}
  std::shared_ptr<T> data_;
  std::size_t size_;
};

// A fixed-size array of T in shared memory with a lock (multiprocessing.Array). Element
// access does not lock; use with_lock() or get_lock() for consistency between processes.
template <class T, class LockT = RLock>
class Array {
 public:
  explicit Array(std::size_t n, bool lock = true) : raw_(n) {
    if (lock) lock_.emplace();
  }
  Array(std::size_t n, LockT lock) : raw_(n), lock_(lock) {}
  template <std::ranges::sized_range R>
  requires(!std::is_integral_v<std::remove_cvref_t<R>>) explicit Array(const R& init,
                                                                       bool lock = true)
      : raw_(init) {
    if (lock) lock_.emplace();
  }
  Array(std::initializer_list<T> init, bool lock = true) : raw_(init) {
    if (lock) lock_.emplace();
  }

  std::size_t size() const noexcept { return raw_.size(); }
  // Unchecked; at(i) checks (negative i from the end; mpx::IndexError), as RawArray.
  T& operator[](std::size_t i) const noexcept { return raw_[i]; }
  T& at(std::ptrdiff_t i) const { return raw_.at(i); }
  T* data() const noexcept { return raw_.data(); }
  std::span<T> span() const noexcept { return raw_.span(); }
  T* begin() const noexcept { return raw_.begin(); }
  T* end() const noexcept { return raw_.end(); }

  // Runs fn(std::span<T>) (or fn()) holding the lock; returns its result.
  template <class F>
  decltype(auto) with_lock(F&& fn) const {
    auto call = [&]() -> decltype(auto) {
      if constexpr (std::is_invocable_v<F&, std::span<T>>) {
        return fn(raw_.span());
      } else {
        return fn();
      }
    };
    if (!lock_) return call();
    return detail::with_held(*lock_, call);
  }
  // Throws mpx::InvalidStateError when created with lock == false.
  const LockT& get_lock() const {
    if (!lock_) throw InvalidStateError("Array::get_lock: this Array has no lock");
    return *lock_;
  }
  // The raw shared array, unsynchronised (Python: get_obj()).
  const RawArray<T>& get_obj() const noexcept { return raw_; }

 private:
  friend struct detail::Handoff<Array>;
  Array(RawArray<T> raw, std::optional<LockT> lock)
      : raw_(std::move(raw)), lock_(std::move(lock)) {}
  RawArray<T> raw_;
  std::optional<LockT> lock_;
};

// Values and arrays handed to a spawn or forkserver child (mpx/context.hpp): the memfds
// of their pages and of their locks travel. Only those made by a spawn or forkserver
// Context's factories have them; others are shared through fork only (ValueError).
namespace detail {
// The shared page of a value or array, and an optional lock.
template <class T>
std::shared_ptr<T> load_shared_data(HandoffReader& r) {
  std::shared_ptr<void> block = adopt_shared_block(r.take_fd());
  return std::shared_ptr<T>(block, static_cast<T*>(block.get()));
}
template <class LockT>
void save_optional_lock(const std::optional<LockT>& lock, HandoffWriter& w) {
  const bool locked = lock.has_value();
  w.put(&locked, sizeof locked);
  if (locked) Handoff<LockT>::save(*lock, w);
}
template <class LockT>
std::optional<LockT> load_optional_lock(HandoffReader& r) {
  bool locked = false;
  r.get(&locked, sizeof locked);
  std::optional<LockT> lock;
  if (locked) lock.emplace(Handoff<LockT>::load(r));
  return lock;
}

template <class T, class LockT>
struct Handoff<Value<T, LockT>> {
  static void save(const Value<T, LockT>& v, HandoffWriter& w) {
    w.put_fd(handoff_block_fd(v.data_.get(), "mpx::Value"));
    save_optional_lock(v.lock_, w);
  }
  static Value<T, LockT> load(HandoffReader& r) {
    std::shared_ptr<T> data = load_shared_data<T>(r);
    return Value<T, LockT>(std::move(data), load_optional_lock<LockT>(r));
  }
};
template <class T>
struct Handoff<RawValue<T>> {
  static void save(const RawValue<T>& v, HandoffWriter& w) {
    w.put_fd(handoff_block_fd(v.data_.get(), "mpx::RawValue"));
  }
  static RawValue<T> load(HandoffReader& r) { return RawValue<T>(load_shared_data<T>(r)); }
};
template <class T>
struct Handoff<RawArray<T>> {
  static void save(const RawArray<T>& a, HandoffWriter& w) {
    w.put_fd(handoff_block_fd(a.data_.get(), "mpx::RawArray"));
    w.put(&a.size_, sizeof a.size_);
  }
  static RawArray<T> load(HandoffReader& r) {
    std::shared_ptr<T> data = load_shared_data<T>(r);
    std::size_t n = 0;
    r.get(&n, sizeof n);
    return RawArray<T>(std::move(data), n);
  }
};
template <class T, class LockT>
struct Handoff<Array<T, LockT>> {
  static void save(const Array<T, LockT>& a, HandoffWriter& w) {
    Handoff<RawArray<T>>::save(a.raw_, w);
    save_optional_lock(a.lock_, w);
  }
  static Array<T, LockT> load(HandoffReader& r) {
    RawArray<T> raw = Handoff<RawArray<T>>::load(r);
    return Array<T, LockT>(std::move(raw), load_optional_lock<LockT>(r));
  }
};
}  // namespace detail

}  // namespace mpx
