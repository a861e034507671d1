// mpx/detail/managers_proxy.hpp — the machinery under mpx/managers.hpp: the registry of
// shared-object types a manager's server can make, their exposed methods, and the
// client side of a proxy. Not public API.
//
// Nothing but registered types and their exposed methods can be run by a server: a
// request names a type (by its registered name) or a method (by name), with arguments in
// mpx's codec, which decodes only the argument types the method declares.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "mpx/codec.hpp"
#include "mpx/connection.hpp"

namespace mpx {

// Where a shared object lives: enough to reconnect to it from anywhere.
struct ProxyToken {
  std::string address;
  std::string family;
  std::optional<std::string> authkey;
  std::uint64_t id = 0;
  std::string type;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(address, family, authkey, id, type);
  }
};

namespace detail {
using Token = ProxyToken;

// What a method running on the server knows of its caller.
struct CallContext {
  std::uint64_t client = 0;    // the connection's id (the owner of a manager Lock)
  std::function<bool()> gone;  // the caller disconnected or the server stops
};

using Method = std::function<Bytes(void* object, std::span<const std::byte> args, CallContext&)>;

struct ObjectType {
  std::string name;
  std::function<std::shared_ptr<void>(std::span<const std::byte> args)> make;
  std::map<std::string, Method, std::less<>> methods;
  // Called when a client that referenced an object disconnects (a Lock releases).
  std::function<void(void* object, std::uint64_t client)> client_gone;
};

// Adds a type to this process's registry (the first registration of a name wins);
// returns true. Thread-safe.
bool register_object_type(ObjectType type);
const ObjectType* find_object_type(std::string_view name);

template <class R>
Bytes encode_result(R&& r) {
  return encode(std::forward<R>(r));
}

template <class R, class Call, class Tuple>
Bytes apply_and_encode(Call& call, Tuple& args) {
  if constexpr (std::is_void_v<R>) {
    std::apply(call, args);
    return encode(std::monostate{});
  } else {
    return encode(std::apply(call, args));
  }
}

template <class... A>
inline constexpr bool takes_context = false;
template <class First, class... Rest>
inline constexpr bool takes_context<First, Rest...> = std::is_same_v<First, CallContext&>;

// A member function as a Method: arguments decoded as std::tuple<std::decay_t<A>...>,
// the result encoded (void as std::monostate). A first parameter CallContext& gets the
// caller's context.
template <class Obj, class R, class Fn, class... A>
Method bind_method(Fn fn, std::type_identity<std::tuple<A...>>) {
  return [fn](void* object, std::span<const std::byte> args, CallContext& ctx) -> Bytes {
    auto* self = static_cast<Obj*>(object);
    if constexpr (takes_context<A...>) {
      return [&]<class C, class... Rest>(std::type_identity<std::tuple<C, Rest...>>) {
        auto decoded = decode<std::tuple<std::decay_t<Rest>...>>(args);
        auto call = [&](auto&... a) -> decltype(auto) { return (self->*fn)(ctx, a...); };
        return apply_and_encode<R>(call, decoded);
      }(std::type_identity<std::tuple<A...>>{});
    } else {
      auto decoded = decode<std::tuple<std::decay_t<A>...>>(args);
      auto call = [&](auto&... a) -> decltype(auto) { return (self->*fn)(a...); };
      return apply_and_encode<R>(call, decoded);
    }
  };
}
template <class Obj, class R, class... A>
Method method(R (Obj::*fn)(A...)) {
  return bind_method<Obj, R>(fn, std::type_identity<std::tuple<A...>>{});
}
template <class Obj, class R, class... A>
Method method(R (Obj::*fn)(A...) const) {
  return bind_method<Obj, R>(fn, std::type_identity<std::tuple<A...>>{});
}

// A factory: constructor arguments decoded as std::tuple<Args...>.
template <class Obj, class... Args>
std::function<std::shared_ptr<void>(std::span<const std::byte>)> maker() {
  return [](std::span<const std::byte> args) -> std::shared_ptr<void> {
    auto decoded = decode<std::tuple<Args...>>(args);
    return std::apply([](auto&... a) { return std::make_shared<Obj>(std::move(a)...); }, decoded);
  };
}

// Requests of the manager protocol (mpx codec, over a Listener/Client connection).
// hold: a reference for a proxy in transit (its encoded form), until a receiver's incref
// with the hold's id claims it or the server's transit hold expires.
enum class Op : std::uint8_t { create = 1, incref, call, named, shutdown, ping, hold };
using Request = std::tuple<std::uint8_t, std::uint64_t, std::string, Bytes>;
// kind 0: result; 1: an error (type name, message).
using Reply = std::tuple<std::uint8_t, std::string, std::string, Bytes>;

// Opens an authenticated connection to a manager's server.
Connection manager_connect(const Token& token);
// One request/reply exchange; an error reply is thrown as the mpx exception of its type
// (KeyError, IndexError, Empty, Full, TimeoutError, ValueError, BrokenBarrierError,
// AttributeError) or as RemoteError.
Bytes manager_request(Connection& connection, Op op, std::uint64_t id, std::string_view name,
                      Bytes args);

}  // namespace detail

// The client side of one shared object: one connection to the server, which holds one
// reference to the object while it is open. Copies (and decoded copies, in other
// processes) connect anew and take their own reference; a proxy used in a forked child
// reconnects there. One thread at a time per proxy object (calls are serialized).
class BaseProxy {
 public:
  BaseProxy() = default;
  BaseProxy(ProxyToken token, Connection connection);
  BaseProxy(const BaseProxy& other);
  BaseProxy& operator=(const BaseProxy& other);
  BaseProxy(BaseProxy&& other) noexcept = default;
  BaseProxy& operator=(BaseProxy&& other) noexcept = default;
  ~BaseProxy() = default;

  const ProxyToken& token() const noexcept { return token_; }
  // Calls `method` on the server's object with `args`; R is its result type.
  template <class R = void, class... A>
  R call(std::string_view method_name, const A&... args) {
    Bytes result = call_raw(method_name, encode(std::tuple<A...>(args...)));
    if constexpr (!std::is_void_v<R>) return decode<R>(result);
  }
  Bytes call_raw(std::string_view method_name, Bytes args);

  // Encoding a proxy (to send it to another process) takes a reference on the server for
  // it in transit, so that the object outlives this proxy until a receiver decodes it
  // (the receiver's reference replaces the transit one) or the manager's transit hold
  // expires (BaseManager::set_transit_hold).
  template <class Archive>
  void save(Archive& ar) const {
    ar(token_, hold_for_transit());
  }
  template <class Archive>
  void load(Archive& ar) {
    ProxyToken token;
    std::uint64_t hold = 0;
    ar(token, hold);
    if (token.id != 0) adopt(std::move(token), hold);
  }

 private:
  void adopt(ProxyToken token, std::uint64_t hold = 0);  // connect and take a reference
  std::uint64_t hold_for_transit() const;                // 0 for an empty proxy
  Connection& connection_here() const;                   // reconnects after a fork; under mu_
  ProxyToken token_;
  mutable Connection connection_;
  mutable pid_t pid_ = 0;
  std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();
};

}  // namespace mpx
