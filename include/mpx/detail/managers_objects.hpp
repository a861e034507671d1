// mpx/detail/managers_objects.hpp — the objects a SyncManager's server holds (dict,
// list, queue, value, array, namespace, and the synchronization primitives), as the
// server runs them: plain C++ objects guarded by a mutex, one server thread per caller.
// Blocking methods wait in slices and give up when their caller disconnects. Not
// public API: users hold the proxies of mpx/managers.hpp.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/managers_proxy.hpp"
#include "mpx/errors.hpp"

namespace mpx::detail {

using Timeout = std::optional<double>;  // seconds; empty: no limit

// Waits on cv until ready() or the timeout; false on timeout. Throws EOFError when the
// caller went away (the server thread is freed).
template <class Ready>
bool wait_until_ready(CallContext& ctx, std::unique_lock<std::mutex>& lock,
                      std::condition_variable& cv, Timeout timeout, Ready ready) {
  const Deadline deadline =
      timeout ? Deadline::after(std::chrono::duration<double>(*timeout)) : Deadline::never();
  while (!ready()) {
    if (deadline.expired()) return false;
    const auto slice =
        std::min<Deadline::Clock::duration>(deadline.remaining(), std::chrono::milliseconds(50));
    cv.wait_for(lock, slice);
    if (!ready() && ctx.gone()) throw EOFError("the caller went away");
  }
  return true;
}

inline std::size_t checked_index(std::int64_t i, std::size_t size) {
  const std::int64_t n = static_cast<std::int64_t>(size);
  if (i < 0) i += n;
  if (i < 0 || i >= n) throw IndexError("index out of range");
  return static_cast<std::size_t>(i);
}

template <class K, class V>
struct DictObject {
  std::mutex mu;
  std::map<K, V> map;
  V getitem(const K& k) {
    std::lock_guard lock(mu);
    auto it = map.find(k);
    if (it == map.end()) throw KeyError("key not in the dict");
    return it->second;
  }
  std::optional<V> get(const K& k) {
    std::lock_guard lock(mu);
    auto it = map.find(k);
    return it == map.end() ? std::nullopt : std::optional<V>(it->second);
  }
  void setitem(const K& k, const V& v) {
    std::lock_guard lock(mu);
    map.insert_or_assign(k, v);
  }
  void delitem(const K& k) {
    std::lock_guard lock(mu);
    if (!map.erase(k)) throw KeyError("key not in the dict");
  }
  V pop(const K& k) {
    std::lock_guard lock(mu);
    auto it = map.find(k);
    if (it == map.end()) throw KeyError("key not in the dict");
    V v = std::move(it->second);
    map.erase(it);
    return v;
  }
  V setdefault(const K& k, const V& v) {
    std::lock_guard lock(mu);
    return map.try_emplace(k, v).first->second;
  }
  bool contains(const K& k) {
    std::lock_guard lock(mu);
    return map.count(k) != 0;
  }
  std::uint64_t len() {
    std::lock_guard lock(mu);
    return map.size();
  }
  std::vector<K> keys() {
    std::lock_guard lock(mu);
    std::vector<K> out;
    for (auto& [k, v] : map)
      out.push_back(k);
    return out;
  }
  std::vector<V> values() {
    std::lock_guard lock(mu);
    std::vector<V> out;
    for (auto& [k, v] : map)
      out.push_back(v);
    return out;
  }
  std::map<K, V> copy() {
    std::lock_guard lock(mu);
    return map;
  }
  void update(const std::map<K, V>& other) {
    std::lock_guard lock(mu);
    for (auto& [k, v] : other)
      map.insert_or_assign(k, v);
  }
  void clear() {
    std::lock_guard lock(mu);
    map.clear();
  }
};

template <class T>
struct ListObject {
  std::mutex mu;
  std::vector<T> items;
  explicit ListObject(std::vector<T> init = {}) : items(std::move(init)) {}
  void append(const T& v) {
    std::lock_guard lock(mu);
    items.push_back(v);
  }
  void extend(const std::vector<T>& v) {
    std::lock_guard lock(mu);
    items.insert(items.end(), v.begin(), v.end());
  }
  T getitem(std::int64_t i) {
    std::lock_guard lock(mu);
    return items[checked_index(i, items.size())];
  }
  void setitem(std::int64_t i, const T& v) {
    std::lock_guard lock(mu);
    items[checked_index(i, items.size())] = v;
  }
  T pop(std::int64_t i) {
    std::lock_guard lock(mu);
    if (items.empty()) throw IndexError("pop from empty list");
    const std::size_t at = checked_index(i, items.size());
    T v = std::move(items[at]);
    items.erase(items.begin() + static_cast<std::ptrdiff_t>(at));
    return v;
  }
  void insert(std::int64_t i, const T& v) {
    std::lock_guard lock(mu);
    const auto n = static_cast<std::int64_t>(items.size());
    i = std::clamp<std::int64_t>(i < 0 ? i + n : i, 0, n);
    items.insert(items.begin() + static_cast<std::ptrdiff_t>(i), v);
  }
  void remove(const T& v) {
    std::lock_guard lock(mu);
    auto it = std::find(items.begin(), items.end(), v);
    if (it == items.end()) throw ValueError("list.remove(x): x not in list");
    items.erase(it);
  }
  std::int64_t index(const T& v) {
    std::lock_guard lock(mu);
    auto it = std::find(items.begin(), items.end(), v);
    if (it == items.end()) throw ValueError("x is not in list");
    return it - items.begin();
  }
  std::uint64_t count(const T& v) {
    std::lock_guard lock(mu);
    return static_cast<std::uint64_t>(std::count(items.begin(), items.end(), v));
  }
  std::uint64_t len() {
    std::lock_guard lock(mu);
    return items.size();
  }
  std::vector<T> copy() {
    std::lock_guard lock(mu);
    return items;
  }
};

template <class T>
struct QueueObject {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<T> items;
  std::int64_t maxsize;
  std::int64_t unfinished = 0;
  explicit QueueObject(std::int64_t max) : maxsize(max) {}
  bool full_locked() const {
    return maxsize > 0 && static_cast<std::int64_t>(items.size()) >= maxsize;
  }
  void put(CallContext& ctx, const T& v, bool block, Timeout timeout) {
    std::unique_lock lock(mu);
    if (!wait_until_ready(ctx, lock, cv, block ? timeout : Timeout(0.0),
                          [&] { return !full_locked(); }))
      throw Full("the queue is full");
    items.push_back(v);
    ++unfinished;
    cv.notify_all();
  }
  T get(CallContext& ctx, bool block, Timeout timeout) {
    std::unique_lock lock(mu);
    if (!wait_until_ready(ctx, lock, cv, block ? timeout : Timeout(0.0),
                          [&] { return !items.empty(); }))
      throw Empty("the queue is empty");
    T v = std::move(items.front());
    items.pop_front();
    cv.notify_all();
    return v;
  }
  std::uint64_t qsize() {
    std::lock_guard lock(mu);
    return items.size();
  }
  bool empty() {
    std::lock_guard lock(mu);
    return items.empty();
  }
  bool full() {
    std::lock_guard lock(mu);
    return full_locked();
  }
  void task_done() {
    std::lock_guard lock(mu);
    if (unfinished <= 0) throw ValueError("task_done() called too many times");
    if (--unfinished == 0) cv.notify_all();
  }
  void join(CallContext& ctx) {
    std::unique_lock lock(mu);
    wait_until_ready(ctx, lock, cv, std::nullopt, [&] { return unfinished == 0; });
  }
};

template <class T>
struct ValueObject {
  std::mutex mu;
  T value;
  explicit ValueObject(T v) : value(std::move(v)) {}
  T get() {
    std::lock_guard lock(mu);
    return value;
  }
  void set(const T& v) {
    std::lock_guard lock(mu);
    value = v;
  }
};

// Namespace: attributes by name, each any codec value (its type checked on the way out).
struct NamespaceObject {
  std::mutex mu;
  std::map<std::string, Bytes> attributes;
  Bytes getattr(const std::string& name) {
    std::lock_guard lock(mu);
    auto it = attributes.find(name);
    if (it == attributes.end())
      throw AttributeError("'Namespace' object has no attribute '" + name + "'");
    return it->second;
  }
  void setattr(const std::string& name, const Bytes& value) {
    std::lock_guard lock(mu);
    attributes.insert_or_assign(name, value);
  }
  void delattr(const std::string& name) {
    std::lock_guard lock(mu);
    if (!attributes.erase(name)) throw AttributeError("no attribute '" + name + "'");
  }
  std::vector<std::string> names() {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (auto& [k, v] : attributes)
      out.push_back(k);
    return out;
  }
};

// Lock and RLock: owned by the caller's connection, so a caller that disconnects (its
// process died) releases what it held.
struct LockObject {
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t owner = 0;
  std::int64_t depth = 0;
  bool recursive;
  explicit LockObject(bool r) : recursive(r) {}
  bool acquire(CallContext& ctx, bool block, Timeout timeout) {
    std::unique_lock lock(mu);
    if (recursive && owner == ctx.client) {
      ++depth;
      return true;
    }
    if (!wait_until_ready(ctx, lock, cv, block ? timeout : Timeout(0.0),
                          [&] { return owner == 0; }))
      return false;
    owner = ctx.client;
    depth = 1;
    return true;
  }
  void release(CallContext& ctx) {
    std::lock_guard lock(mu);
    if (owner == 0) throw ValueError("release unlocked lock");
    if (recursive && owner != ctx.client) throw ValueError("cannot release un-acquired lock");
    if (--depth == 0) {
      owner = 0;
      cv.notify_all();
    }
  }
  bool locked() {
    std::lock_guard lock(mu);
    return owner != 0;
  }
  void client_gone(std::uint64_t client) {
    std::lock_guard lock(mu);
    if (owner == client) {
      owner = 0;
      depth = 0;
      cv.notify_all();
    }
  }
};

// Semaphore and BoundedSemaphore. A caller that disconnects (its process died) gives
// back the units it acquired and did not release itself, as a Lock's owner does, but
// never lifts the value above the initial one: a semaphore used as a signal
// (Semaphore(0), one side releases, the other acquires) gains no unit when the side that
// consumed a signal goes away, and units another caller released for it are not counted
// twice.
struct SemaphoreObject {
  std::mutex mu;
  std::condition_variable cv;
  std::int64_t value;
  std::int64_t initial;
  bool bounded;
  std::map<std::uint64_t, std::int64_t> held;  // units each caller acquired, not released
  SemaphoreObject(std::int64_t v, bool b) : value(v), initial(v), bounded(b) {
    if (v < 0) throw ValueError("semaphore initial value must be >= 0");
  }
  bool acquire(CallContext& ctx, bool block, Timeout timeout) {
    std::unique_lock lock(mu);
    if (!wait_until_ready(ctx, lock, cv, block ? timeout : Timeout(0.0), [&] { return value > 0; }))
      return false;
    --value;
    ++held[ctx.client];
    return true;
  }
  void release(CallContext& ctx) {
    std::lock_guard lock(mu);
    if (bounded && value >= initial) throw ValueError("semaphore released too many times");
    ++value;
    auto it = held.find(ctx.client);
    if (it != held.end() && --it->second == 0) held.erase(it);
    cv.notify_all();
  }
  std::int64_t get_value() {
    std::lock_guard lock(mu);
    return value;
  }
  void client_gone(std::uint64_t client) {
    std::lock_guard lock(mu);
    auto it = held.find(client);
    if (it == held.end()) return;
    const std::int64_t back = std::min(it->second, std::max<std::int64_t>(0, initial - value));
    held.erase(it);
    if (back > 0) {
      value += back;
      cv.notify_all();
    }
  }
};

struct EventObject {
  std::mutex mu;
  std::condition_variable cv;
  bool flag = false;
  void set() {
    std::lock_guard lock(mu);
    flag = true;
    cv.notify_all();
  }
  void clear() {
    std::lock_guard lock(mu);
    flag = false;
  }
  bool is_set() {
    std::lock_guard lock(mu);
    return flag;
  }
  bool wait(CallContext& ctx, Timeout timeout) {
    std::unique_lock lock(mu);
    return wait_until_ready(ctx, lock, cv, timeout, [&] { return flag; });
  }
};

// Condition over its own RLock (a LockObject, released when its owner disconnects).
struct ConditionObject {
  LockObject lock_{true};
  std::list<bool> waiters;  // one flag per waiting call, set by notify; under lock_.mu
  bool acquire(CallContext& ctx, bool block, Timeout timeout) {
    return lock_.acquire(ctx, block, timeout);
  }
  void release(CallContext& ctx) { lock_.release(ctx); }
  bool wait(CallContext& ctx, Timeout timeout) {
    std::unique_lock lock(lock_.mu);
    if (lock_.owner != ctx.client) throw ValueError("cannot wait on un-acquired lock");
    const std::int64_t saved = lock_.depth;
    lock_.owner = 0;
    lock_.depth = 0;
    auto me = waiters.insert(waiters.end(), false);
    lock_.cv.notify_all();
    bool notified = false;
    try {
      notified = wait_until_ready(ctx, lock, lock_.cv, timeout, [&] { return *me; });
    } catch (...) {
      waiters.erase(me);
      throw;
    }
    waiters.erase(me);
    wait_until_ready(ctx, lock, lock_.cv, std::nullopt, [&] { return lock_.owner == 0; });
    lock_.owner = ctx.client;
    lock_.depth = saved;
    return notified;
  }
  void notify(CallContext& ctx, std::int64_t n) {
    std::lock_guard lock(lock_.mu);
    if (lock_.owner != ctx.client) throw ValueError("cannot notify on un-acquired lock");
    for (bool& flag : waiters) {
      if (n <= 0) break;
      if (!flag) {
        flag = true;
        --n;
      }
    }
    lock_.cv.notify_all();
  }
  void client_gone(std::uint64_t client) { lock_.client_gone(client); }
};

struct BarrierObject {
  std::mutex mu;
  std::condition_variable cv;
  std::int64_t parties;
  std::int64_t count = 0;
  std::uint64_t generation = 0;
  std::optional<std::uint64_t> reset_of;  // the generation reset() abandoned
  bool broken = false;
  explicit BarrierObject(std::int64_t n) : parties(n) {
    if (n < 1) throw ValueError("parties must be at least 1");
  }
  std::int64_t wait(CallContext& ctx, Timeout timeout) {
    std::unique_lock lock(mu);
    if (broken) throw BrokenBarrierError("the barrier is broken");
    const std::uint64_t gen = generation;
    const std::int64_t index = parties - 1 - count;
    if (++count == parties) {
      count = 0;
      ++generation;
      cv.notify_all();
      return index;
    }
    bool passed = false;
    try {
      passed =
          wait_until_ready(ctx, lock, cv, timeout, [&] { return generation != gen || broken; });
    } catch (...) {
      broken = true;
      cv.notify_all();
      throw;
    }
    if (!passed || (broken && generation == gen) || reset_of == gen) {
      if (reset_of != gen) broken = true;
      cv.notify_all();
      throw BrokenBarrierError("the barrier is broken");
    }
    return index;
  }
  void abort() {
    std::lock_guard lock(mu);
    broken = true;
    cv.notify_all();
  }
  void reset() {
    std::lock_guard lock(mu);
    if (count > 0) reset_of = generation;  // its waiters get BrokenBarrierError
    count = 0;
    ++generation;
    broken = false;
    cv.notify_all();
  }
  std::int64_t n_waiting() {
    std::lock_guard lock(mu);
    return count;
  }
  bool is_broken() {
    std::lock_guard lock(mu);
    return broken;
  }
};

}  // namespace mpx::detail
