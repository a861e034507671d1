// mpx/detail/managers_sync.hpp — the proxies of a SyncManager's objects and SyncManager
// itself (included by mpx/managers.hpp; see there). Method names are Python's; Python's
// operators are spelled out: d[k] is getitem(k), d[k] = v is setitem(k, v), len(d) is
// len(), k in d is contains(k).
#pragma once

#include "mpx/managers.hpp"

namespace mpx {

#define MPX_PROXY_BODY(Self)                                   \
  Self() = default;                                            \
  explicit Self(BaseProxy base) : BaseProxy(std::move(base)) { \
    (void)registered;                                          \
  }

template <class K, class V>
class DictProxy : public BaseProxy {
  using Obj = detail::DictObject<K, V>;

 public:
  static std::string type_id() { return "dict<" + type_name<K>() + ", " + type_name<V>() + ">"; }
  static Bytes make_args() { return encode(std::tuple<>()); }
  static inline const bool registered =
      detail::register_builtin<Obj>(type_id(), detail::maker<Obj>(),
                                    {{"__getitem__", detail::method(&Obj::getitem)},
                                     {"get", detail::method(&Obj::get)},
                                     {"__setitem__", detail::method(&Obj::setitem)},
                                     {"__delitem__", detail::method(&Obj::delitem)},
                                     {"pop", detail::method(&Obj::pop)},
                                     {"setdefault", detail::method(&Obj::setdefault)},
                                     {"__contains__", detail::method(&Obj::contains)},
                                     {"__len__", detail::method(&Obj::len)},
                                     {"keys", detail::method(&Obj::keys)},
                                     {"values", detail::method(&Obj::values)},
                                     {"copy", detail::method(&Obj::copy)},
                                     {"update", detail::method(&Obj::update)},
                                     {"clear", detail::method(&Obj::clear)}});
  MPX_PROXY_BODY(DictProxy)

  V getitem(const K& k) { return call<V>("__getitem__", k); }
  std::optional<V> get(const K& k) { return call<std::optional<V>>("get", k); }
  V get(const K& k, const V& fallback) { return get(k).value_or(fallback); }
  void setitem(const K& k, const V& v) { call("__setitem__", k, v); }
  void delitem(const K& k) { call("__delitem__", k); }
  V pop(const K& k) { return call<V>("pop", k); }
  V setdefault(const K& k, const V& v) { return call<V>("setdefault", k, v); }
  bool contains(const K& k) { return call<bool>("__contains__", k); }
  std::size_t len() { return call<std::uint64_t>("__len__"); }
  std::vector<K> keys() { return call<std::vector<K>>("keys"); }
  std::vector<V> values() { return call<std::vector<V>>("values"); }
  std::vector<std::pair<K, V>> items() {
    auto m = copy();
    return {m.begin(), m.end()};
  }
  std::map<K, V> copy() { return call<std::map<K, V>>("copy"); }
  void update(const std::map<K, V>& other) { call("update", other); }
  void clear() { call("clear"); }
};

template <class T>
class ListProxy : public BaseProxy {
  using Obj = detail::ListObject<T>;

 public:
  static std::string type_id() { return "list<" + type_name<T>() + ">"; }
  static Bytes make_args(const std::vector<T>& init = {}) { return encode(std::tuple(init)); }
  static inline const bool registered =
      detail::register_builtin<Obj>(type_id(), detail::maker<Obj, std::vector<T>>(),
                                    {{"append", detail::method(&Obj::append)},
                                     {"extend", detail::method(&Obj::extend)},
                                     {"__getitem__", detail::method(&Obj::getitem)},
                                     {"__setitem__", detail::method(&Obj::setitem)},
                                     {"pop", detail::method(&Obj::pop)},
                                     {"insert", detail::method(&Obj::insert)},
                                     {"remove", detail::method(&Obj::remove)},
                                     {"index", detail::method(&Obj::index)},
                                     {"count", detail::method(&Obj::count)},
                                     {"__len__", detail::method(&Obj::len)},
                                     {"copy", detail::method(&Obj::copy)}});
  MPX_PROXY_BODY(ListProxy)

  void append(const T& v) { call("append", v); }
  void extend(const std::vector<T>& v) { call("extend", v); }
  T getitem(std::int64_t i) { return call<T>("__getitem__", i); }
  void setitem(std::int64_t i, const T& v) { call("__setitem__", i, v); }
  T pop(std::int64_t i = -1) { return call<T>("pop", i); }
  void insert(std::int64_t i, const T& v) { call("insert", i, v); }
  void remove(const T& v) { call("remove", v); }
  std::int64_t index(const T& v) { return call<std::int64_t>("index", v); }
  std::size_t count(const T& v) { return call<std::uint64_t>("count", v); }
  std::size_t len() { return call<std::uint64_t>("__len__"); }
  std::vector<T> copy() { return call<std::vector<T>>("copy"); }
};

// Queue and JoinableQueue (task_done, join).
template <class T>
class QueueProxy : public BaseProxy {
  using Obj = detail::QueueObject<T>;

 public:
  static std::string type_id() { return "Queue<" + type_name<T>() + ">"; }
  static Bytes make_args(std::int64_t maxsize = 0) { return encode(std::tuple(maxsize)); }
  static inline const bool registered =
      detail::register_builtin<Obj>(type_id(), detail::maker<Obj, std::int64_t>(),
                                    {{"put", detail::method(&Obj::put)},
                                     {"get", detail::method(&Obj::get)},
                                     {"qsize", detail::method(&Obj::qsize)},
                                     {"empty", detail::method(&Obj::empty)},
                                     {"full", detail::method(&Obj::full)},
                                     {"task_done", detail::method(&Obj::task_done)},
                                     {"join", detail::method(&Obj::join)}});
  MPX_PROXY_BODY(QueueProxy)

  // Throws Full (after the timeout, or at once when !block).
  void put(const T& v, bool block = true, OptionalTimeout timeout = std::nullopt) {
    call("put", v, block, detail::seconds(timeout));
  }
  void put_nowait(const T& v) { put(v, false); }
  // Throws Empty (after the timeout, or at once when !block).
  T get(bool block = true, OptionalTimeout timeout = std::nullopt) {
    return call<T>("get", block, detail::seconds(timeout));
  }
  T get_nowait() { return get(false); }
  std::size_t qsize() { return call<std::uint64_t>("qsize"); }
  bool empty() { return call<bool>("empty"); }
  bool full() { return call<bool>("full"); }
  void task_done() { call("task_done"); }
  void join() { call("join"); }
};
template <class T>
using JoinableQueueProxy = QueueProxy<T>;

template <class T>
class ValueProxy : public BaseProxy {
  using Obj = detail::ValueObject<T>;

 public:
  static std::string type_id() { return "Value<" + type_name<T>() + ">"; }
  static Bytes make_args(const T& v = T{}) { return encode(std::tuple(v)); }
  static inline const bool registered = detail::register_builtin<Obj>(
      type_id(), detail::maker<Obj, T>(),
      {{"get", detail::method(&Obj::get)}, {"set", detail::method(&Obj::set)}});
  MPX_PROXY_BODY(ValueProxy)

  T get() { return call<T>("get"); }
  void set(const T& v) { call("set", v); }
};

// Array: a fixed-length list (no append).
template <class T>
class ArrayProxy : public BaseProxy {
  using Obj = detail::ListObject<T>;

 public:
  static std::string type_id() { return "Array<" + type_name<T>() + ">"; }
  static Bytes make_args(const std::vector<T>& init) { return encode(std::tuple(init)); }
  static inline const bool registered =
      detail::register_builtin<Obj>(type_id(), detail::maker<Obj, std::vector<T>>(),
                                    {{"__getitem__", detail::method(&Obj::getitem)},
                                     {"__setitem__", detail::method(&Obj::setitem)},
                                     {"__len__", detail::method(&Obj::len)},
                                     {"tolist", detail::method(&Obj::copy)}});
  MPX_PROXY_BODY(ArrayProxy)

  T getitem(std::int64_t i) { return call<T>("__getitem__", i); }
  void setitem(std::int64_t i, const T& v) { call("__setitem__", i, v); }
  std::size_t len() { return call<std::uint64_t>("__len__"); }
  std::vector<T> tolist() { return call<std::vector<T>>("tolist"); }
};

// Namespace: attributes by name, each of any encodable type (checked when read).
class NamespaceProxy : public BaseProxy {
  using Obj = detail::NamespaceObject;

 public:
  static std::string type_id() { return "Namespace"; }
  static Bytes make_args() { return encode(std::tuple<>()); }
  static inline const bool registered =
      detail::register_builtin<Obj>(type_id(), detail::maker<Obj>(),
                                    {{"__getattribute__", detail::method(&Obj::getattr)},
                                     {"__setattr__", detail::method(&Obj::setattr)},
                                     {"__delattr__", detail::method(&Obj::delattr)},
                                     {"__dir__", detail::method(&Obj::names)}});
  MPX_PROXY_BODY(NamespaceProxy)

  // ns.name; throws AttributeError when unset, DecodeError when not a T.
  template <class T>
  T get(const std::string& name) {
    return decode<T>(call<Bytes>("__getattribute__", name));
  }
  template <class T>
  void set(const std::string& name, const T& value) {
    call("__setattr__", name, encode(value));
  }
  void del(const std::string& name) { call("__delattr__", name); }
  std::vector<std::string> names() { return call<std::vector<std::string>>("__dir__"); }
};

namespace detail {
template <class Obj>
std::map<std::string, Method, std::less<>> acquirer_methods() {
  return {{"acquire", method(&Obj::acquire)}, {"release", method(&Obj::release)}};
}
}  // namespace detail

// Lock, RLock, Semaphore, BoundedSemaphore (Python's AcquirerProxy). lock()/unlock()
// make it usable with std::lock_guard.
class AcquirerProxy : public BaseProxy {
 public:
  AcquirerProxy() = default;
  explicit AcquirerProxy(BaseProxy base) : BaseProxy(std::move(base)) {}
  bool acquire(bool block = true, OptionalTimeout timeout = std::nullopt) {
    return call<bool>("acquire", block, detail::seconds(timeout));
  }
  void release() { call("release"); }
  void lock() { acquire(); }
  void unlock() { release(); }
};

#define MPX_ACQUIRER(Name, Obj, ...)                                                            \
  class Name##Proxy : public AcquirerProxy {                                                    \
   public:                                                                                      \
    static std::string type_id() { return #Name; }                                              \
    static Bytes make_args(std::int64_t value = 1) { return encode(std::tuple(value)); }        \
    static inline const bool registered = detail::register_builtin<detail::Obj>(                \
        type_id(),                                                                              \
        [](std::span<const std::byte> a) -> std::shared_ptr<void> {                             \
          [[maybe_unused]] auto [value] = decode<std::tuple<std::int64_t>>(a);                  \
          return std::make_shared<detail::Obj>(__VA_ARGS__);                                    \
        },                                                                                      \
        detail::acquirer_methods<detail::Obj>());                                               \
    Name##Proxy() = default;                                                                    \
    explicit Name##Proxy(BaseProxy base) : AcquirerProxy(std::move(base)) { (void)registered; } \
  };
MPX_ACQUIRER(Lock, LockObject, false)
MPX_ACQUIRER(RLock, LockObject, true)
MPX_ACQUIRER(Semaphore, SemaphoreObject, value, false)
MPX_ACQUIRER(BoundedSemaphore, SemaphoreObject, value, true)
#undef MPX_ACQUIRER

class EventProxy : public BaseProxy {
  using Obj = detail::EventObject;

 public:
  static std::string type_id() { return "Event"; }
  static Bytes make_args() { return encode(std::tuple<>()); }
  static inline const bool registered =
      detail::register_builtin<Obj>(type_id(), detail::maker<Obj>(),
                                    {{"set", detail::method(&Obj::set)},
                                     {"clear", detail::method(&Obj::clear)},
                                     {"is_set", detail::method(&Obj::is_set)},
                                     {"wait", detail::method(&Obj::wait)}});
  MPX_PROXY_BODY(EventProxy)

  void set() { call("set"); }
  void clear() { call("clear"); }
  bool is_set() { return call<bool>("is_set"); }
  bool wait(OptionalTimeout timeout = std::nullopt) {
    return call<bool>("wait", detail::seconds(timeout));
  }
};

class ConditionProxy : public BaseProxy {
  using Obj = detail::ConditionObject;

 public:
  static std::string type_id() { return "Condition"; }
  static Bytes make_args() { return encode(std::tuple<>()); }
  static inline const bool registered =
      detail::register_builtin<Obj>(type_id(), detail::maker<Obj>(),
                                    {{"acquire", detail::method(&Obj::acquire)},
                                     {"release", detail::method(&Obj::release)},
                                     {"wait", detail::method(&Obj::wait)},
                                     {"notify", detail::method(&Obj::notify)}});
  MPX_PROXY_BODY(ConditionProxy)

  bool acquire(bool block = true, OptionalTimeout timeout = std::nullopt) {
    return call<bool>("acquire", block, detail::seconds(timeout));
  }
  void release() { call("release"); }
  void lock() { acquire(); }
  void unlock() { release(); }
  bool wait(OptionalTimeout timeout = std::nullopt) {
    return call<bool>("wait", detail::seconds(timeout));
  }
  void notify(std::int64_t n = 1) { call("notify", n); }
  void notify_all() { notify(std::numeric_limits<std::int64_t>::max()); }
};

class BarrierProxy : public BaseProxy {
  using Obj = detail::BarrierObject;

 public:
  static std::string type_id() { return "Barrier"; }
  static Bytes make_args(std::int64_t parties) { return encode(std::tuple(parties)); }
  static inline const bool registered =
      detail::register_builtin<Obj>(type_id(), detail::maker<Obj, std::int64_t>(),
                                    {{"wait", detail::method(&Obj::wait)},
                                     {"abort", detail::method(&Obj::abort)},
                                     {"reset", detail::method(&Obj::reset)},
                                     {"n_waiting", detail::method(&Obj::n_waiting)},
                                     {"broken", detail::method(&Obj::is_broken)}});
  MPX_PROXY_BODY(BarrierProxy)

  // Throws BrokenBarrierError (aborted, reset, or the timeout passed).
  std::int64_t wait(OptionalTimeout timeout = std::nullopt) {
    return call<std::int64_t>("wait", detail::seconds(timeout));
  }
  void abort() { call("abort"); }
  void reset() { call("reset"); }
  std::int64_t n_waiting() { return call<std::int64_t>("n_waiting"); }
  bool broken() { return call<bool>("broken"); }
};
#undef MPX_PROXY_BODY

// BaseManager with Python's SyncManager types.
class SyncManager : public BaseManager {
 public:
  using BaseManager::BaseManager;
  template <class K, class V>
  DictProxy<K, V> dict() {
    return create<DictProxy<K, V>>();
  }
  template <class T>
  ListProxy<T> list(const std::vector<T>& init = {}) {
    return create<ListProxy<T>>(init);
  }
  template <class T>
  QueueProxy<T> Queue(std::int64_t maxsize = 0) {
    return create<QueueProxy<T>>(maxsize);
  }
  template <class T>
  QueueProxy<T> JoinableQueue(std::int64_t maxsize = 0) {
    return create<QueueProxy<T>>(maxsize);
  }
  template <class T>
  ValueProxy<T> Value(const T& v) {
    return create<ValueProxy<T>>(v);
  }
  template <class T>
  ArrayProxy<T> Array(const std::vector<T>& init) {
    return create<ArrayProxy<T>>(init);
  }
  template <class T>
  ArrayProxy<T> Array(std::size_t n) {
    return create<ArrayProxy<T>>(std::vector<T>(n));
  }
  NamespaceProxy Namespace() { return create<NamespaceProxy>(); }
  LockProxy Lock() { return create<LockProxy>(); }
  RLockProxy RLock() { return create<RLockProxy>(); }
  SemaphoreProxy Semaphore(std::int64_t value = 1) { return create<SemaphoreProxy>(value); }
  BoundedSemaphoreProxy BoundedSemaphore(std::int64_t value = 1) {
    return create<BoundedSemaphoreProxy>(value);
  }
  EventProxy Event() { return create<EventProxy>(); }
  ConditionProxy Condition() { return create<ConditionProxy>(); }
  BarrierProxy Barrier(std::int64_t parties) { return create<BarrierProxy>(parties); }
};

// multiprocessing.Manager(): a started SyncManager.
SyncManager Manager();

}  // namespace mpx
