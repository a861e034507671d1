// mpx/detail/pool_checks.hpp — what a pool can run, checked where a call is made: a
// misuse (a function that cannot take the arguments, a capturing lambda sent to a
// process pool, a type with no codec) stops the compilation with one mpx message, and
// the front end instantiates nothing more of the call (it returns CallRejected), so
// that no follow-on errors bury the message. Not public API.
//
// Each check returns whether the call is fine; the first rule broken fails a
// static_assert whose instantiation context names the types involved.
#pragma once

#include <array>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mpx/codec.hpp"
#include "mpx/detail/pool_entry.hpp"

namespace mpx::detail {

// What a rejected call returns (after its static_assert): it has no members, so a use
// of the result adds at most one error, which names this type.
struct CallRejected {};
template <class T>
inline constexpr bool rejected_v = std::is_same_v<std::remove_cvref_t<T>, CallRejected>;

// Whether a map's function takes one item: f(item), or f(a, b...) for a tuple item (Star;
// item_result_t, mpx/detail/pool_entry.hpp, is its result).
template <class Fn, class Item, bool Star>
struct item_invocable : std::is_invocable<Fn&, Item&> {};
template <class Fn, class... Ts>
struct item_invocable<Fn, std::tuple<Ts...>, true> : std::is_invocable<Fn&, Ts&...> {};
template <class Fn, class A, class B>
struct item_invocable<Fn, std::pair<A, B>, true> : std::is_invocable<Fn&, A&, B&> {};
template <class Fn, class T, std::size_t N>
struct item_invocable<Fn, std::array<T, N>, true> {
  static constexpr bool value = []<std::size_t... I>(std::index_sequence<I...>) {
    return std::is_invocable_v<Fn&, decltype((void(I), std::declval<T&>()))...>;
  }
  (std::make_index_sequence<N>());
};

// The first of Ts with no codec, or void.
template <class... Ts>
struct first_unencodable {
  using type = void;
};
template <class T, class... Ts>
struct first_unencodable<T, Ts...> {
  using type = std::conditional_t<encodable_v<T>, typename first_unencodable<Ts...>::type, T>;
};

// The messages. Each is a template of the offending type, so that the compiler's
// "In instantiation of ... [with T = ...]" line names it.
template <class T>
constexpr bool argument_has_no_codec() {
  static_assert(always_false_v<T>,
                "mpx: an argument (or a map's element) of this call has no codec, so a process "
                "pool cannot send it to its workers (T, in the instantiation line above, is "
                "its type). Pointers, references, views and string literals do not travel: "
                "pass values (a std::string for text). Supported: arithmetic and enum types, "
                "trivially copyable structs, std::string, std::vector, std::array, std::pair, "
                "std::tuple, std::optional, std::variant, std::map, std::set and their "
                "unordered forms, and types with a cereal serialize() (or load/save). A "
                "ThreadPool takes any type.");
  return false;
}
template <class T>
constexpr bool result_has_no_codec() {
  static_assert(always_false_v<T>,
                "mpx: the function's result type has no codec, so a process pool's worker "
                "cannot send it back (T, in the instantiation line above, is that type). Give "
                "it a cereal serialize() function, return a supported type (see mpx/codec.hpp), "
                "or use a ThreadPool, which takes any type.");
  return false;
}
template <class Fn, class... Args>
constexpr bool not_callable_with() {
  static_assert(always_false_v<Fn>,
                "mpx: the function cannot be called with these arguments (their number or "
                "types are wrong; Fn and Args are in the instantiation line above). "
                "apply_async(f, a, b) and submit(f, a, b) call f(a, b).");
  return false;
}
template <class Fn, class Item>
constexpr bool not_callable_with_item() {
  static_assert(always_false_v<Fn>,
                "mpx: the function cannot be called with one element of the range (Fn and "
                "Item are in the instantiation line above). map(f, xs), imap and "
                "Executor::map(f, xs) call f(x) for each element x; for a function of several "
                "arguments use starmap(f, tuples) or Executor::map(f, xs, ys).");
  return false;
}

template <bool Processes, class Fn>
constexpr bool check_portable() {
  if constexpr (Processes && !PortableCallable<Fn>) {
    require_portable<Fn>();
    return false;
  } else {
    return true;
  }
}

template <bool Processes, class R, class... Sent>
constexpr bool check_codecs() {
  if constexpr (!Processes) {
    return true;
  } else if constexpr (!std::is_void_v<typename first_unencodable<Sent...>::type>) {
    return argument_has_no_codec<typename first_unencodable<Sent...>::type>();
  } else if constexpr (!std::is_void_v<R> && !encodable_v<R>) {
    return result_has_no_codec<R>();
  } else {
    return true;
  }
}

// apply_async(fn, args...) and submit: Fn and Args decayed (as the task stores them).
template <bool Processes, class Fn, class... Args>
constexpr bool check_call() {
  if constexpr (!std::is_invocable_v<Fn&, Args&...>) {
    return not_callable_with<Fn, Args...>();
  } else if constexpr (!check_portable<Processes, Fn>()) {
    return false;
  } else {
    return check_codecs<Processes, std::invoke_result_t<Fn&, Args&...>, Args...>();
  }
}

// map, imap, starmap, Executor::map: Fn decayed; Item the range's value type.
template <bool Processes, class Fn, class Item, bool Star>
constexpr bool check_map() {
  if constexpr (!item_invocable<Fn, Item, Star>::value) {
    return not_callable_with_item<Fn, Item>();
  } else if constexpr (!check_portable<Processes, Fn>()) {
    return false;
  } else {
    return check_codecs<Processes, item_result_t<Fn, Item, Star>, Item>();
  }
}

}  // namespace mpx::detail
