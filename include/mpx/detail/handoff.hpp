// mpx/detail/handoff.hpp — how a callable and its arguments reach a process that is not
// a fork of the sender: a pool's worker, a spawned or forkserver child (DESIGN.md
// section 1). Not public API.
//
// A portable callable travels as bytes: a function pointer as its address (moved to
// the receiver's load address by local_address(), mpx/detail/function_id.hpp), an
// empty function object as nothing, a function object with serialize() as its codec
// message. A spawned child's target travels as (entry, bytes): the entry is
// spawn_entry<F, Args...>, which decodes the callable and the arguments and calls it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/codec.hpp"
#include "mpx/detail/bound_call.hpp"
#include "mpx/detail/function_id.hpp"
#include "mpx/detail/handoff_trait.hpp"
#include "mpx/errors.hpp"

namespace mpx::detail {

struct ProbeArchive {
  template <class... T>
  void operator()(T&&...) {}
};

template <class F>
concept FunctionPointer = std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;
template <class F>
concept StatelessCallable =
    std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>;
template <class F>
concept SerializableCallable = std::is_class_v<F> && requires(F& f, ProbeArchive& ar) {
  f.serialize(ar);
};
// Callables a process pool can send to its workers.
template <class F>
concept PortableCallable = FunctionPointer<F> || StatelessCallable<F> || SerializableCallable<F>;

template <class F>
constexpr void require_portable() {
  static_assert(PortableCallable<F>,
                "mpx: a process pool can only send portable callables to its workers: function "
                "pointers, captureless lambdas, empty function objects, or function objects "
                "with a serialize() method. A capturing lambda (or a function object with state "
                "and no serialize()) cannot be sent. Instead: put the captured values in a "
                "struct with operator() and serialize(); or pass them as arguments; or set them "
                "up once per worker with the pool's initializer; or use mpx::fork_map / a "
                "ThreadPool, which take any callable.");
}

inline void put_u64(std::vector<std::byte>& out, std::uint64_t v) {
  // resize + memcpy rather than insert(): GCC 12 at -O3 warns falsely
  // (-Wstringop-overflow) on vector::insert into an empty vector.
  const std::size_t at = out.size();
  out.resize(at + sizeof v);
  std::memcpy(out.data() + at, &v, sizeof v);
}
inline std::uint64_t take_u64(std::span<const std::byte>& in) {
  std::uint64_t v;
  if (in.size() < sizeof v) throw DecodeError("truncated task");
  std::memcpy(&v, in.data(), sizeof v);
  in = in.subspan(sizeof v);
  return v;
}

template <class F>
void encode_callable(const F& f, std::vector<std::byte>& out) {
  if constexpr (FunctionPointer<F>) {
    put_u64(out, reinterpret_cast<std::uint64_t>(f));
  } else if constexpr (StatelessCallable<F>) {
    (void)f;
  } else {
    std::vector<std::byte> state = mpx::encode(f);
    put_u64(out, state.size());
    out.insert(out.end(), state.begin(), state.end());
  }
}

template <class F>
F decode_callable(std::span<const std::byte>& in) {
  if constexpr (FunctionPointer<F>) {
    return reinterpret_cast<F>(local_address(take_u64(in)));
  } else if constexpr (StatelessCallable<F>) {
    return F{};
  } else {
    std::uint64_t n = take_u64(in);
    if (in.size() < n) throw DecodeError("truncated callable state");
    F f = mpx::decode<F>(in.first(n));
    in = in.subspan(n);
    return f;
  }
}

// An argument that can reach a child that is not a fork: a value with a codec, or an
// mpx object that travels by its fds (Handoff, mpx/detail/handoff_trait.hpp).
template <class T>
concept Sendable = encodable_v<T> || HandedOff<T>;

template <class T>
void encode_arg(const T& value, std::vector<std::byte>& out, std::vector<int>& fds) {
  if constexpr (HandedOff<T>) {
    HandoffWriter w{out, fds};
    Handoff<T>::save(value, w);
  } else {
    const std::size_t at = out.size();
    put_u64(out, 0);
    mpx::encode_append(value, out);
    const std::uint64_t n = out.size() - at - sizeof(std::uint64_t);
    std::memcpy(out.data() + at, &n, sizeof n);
  }
}

template <class T>
T decode_arg(std::span<const std::byte>& in, std::vector<int>& fds) {
  if constexpr (HandedOff<T>) {
    HandoffReader r{in, fds};
    return Handoff<T>::load(r);
  } else {
    const std::uint64_t n = take_u64(in);
    if (in.size() < n) throw DecodeError("truncated argument");
    T value = mpx::decode<T>(in.first(static_cast<std::size_t>(n)));
    in = in.subspan(static_cast<std::size_t>(n));
    return value;
  }
}

// A spawned child's target: decodes the callable and its arguments from `in` (taking the
// fds of mpx objects from `fds`) and calls it once.
using SpawnEntry = void (*)(std::span<const std::byte> in, std::vector<int>& fds);

template <class F, class... Args>
void spawn_entry(std::span<const std::byte> in, std::vector<int>& fds) {
  F f = decode_callable<F>(in);
  std::tuple<Args...> args{decode_arg<Args>(in, fds)...};  // in order: braced
  std::apply([&f](Args&... a) { static_cast<void>(std::invoke(std::move(f), std::move(a)...)); },
             args);
}

// Targets that can reach a child that is not a fork: a portable callable, and arguments
// with a codec or mpx objects that can travel.
template <class F, class... Args>
concept SpawnableTarget = PortableCallable<F> &&(Sendable<Args>&&...);

template <class F, class... Args>
constexpr void require_spawnable() {
  static_assert(PortableCallable<F>,
                "mpx: a Context's Process (spawn or forkserver start method) can only send "
                "portable callables to its child: function pointers, captureless lambdas, empty "
                "function objects, or function objects with a serialize() method. A capturing "
                "lambda cannot be sent. Instead: pass the captured values as arguments; or put "
                "them in a struct with operator() and serialize(); or, under fork only, use "
                "mpx::Process, which takes any callable.");
  static_assert((Sendable<Args> && ...),
                "mpx: an argument of a Context's Process cannot reach a spawn or forkserver "
                "child: it has no codec and is no mpx object that can travel (queues, "
                "SharedMemory, and the Context's locks, semaphores, events, conditions, "
                "barriers, values, arrays and Pipe ends can). Give its type a cereal "
                "serialize() function, pass a supported type (mpx/codec.hpp), or use the "
                "fork start method.");
}

// A Process target that can also travel to a spawned child.
template <class F, class... Args>
class SpawnableCallOf final : public BoundCallOf<F, Args...> {
 public:
  using BoundCallOf<F, Args...>::BoundCallOf;
  bool encode_for_spawn(std::uint64_t& entry, std::vector<std::byte>& out,
                        std::vector<int>& fds) const override {
    entry = reinterpret_cast<std::uint64_t>(&spawn_entry<F, Args...>);
    encode_callable(this->f_, out);
    std::apply([&](const Args&... a) { (encode_arg(a, out, fds), ...); }, this->args_);
    return true;
  }
};

// A Process's target: one that can travel to a spawned child when it can.
template <class F, class... Args>
std::unique_ptr<BoundCall> bind_process_call(F&& f, Args&&... args) {
  if constexpr (SpawnableTarget<std::decay_t<F>, std::decay_t<Args>...>) {
    return std::make_unique<SpawnableCallOf<std::decay_t<F>, std::decay_t<Args>...>>(
        std::forward<F>(f), std::forward<Args>(args)...);
  } else {
    return bind_call(std::forward<F>(f), std::forward<Args>(args)...);
  }
}

}  // namespace mpx::detail
