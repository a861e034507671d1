// mpx/detail/pool_entry.hpp — how a call reaches a worker process (DESIGN.md section 1).
// Not public API.
//
// A task is (entry point, encoded callable state, encoded arguments). The entry point
// is an instantiation of call_entry/chunk_entry for the callable's type. The entry's
// address, and a function pointer given as the callable, travel as the sender's plain
// addresses: valid as they are in a worker forked from this binary, and moved to this
// process's load addresses by local_address() in a worker that is not a fork (spawn,
// MPI: mpx/detail/function_id.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <ranges>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mpx/codec.hpp"
#include "mpx/detail/function_id.hpp"
#include "mpx/detail/handoff.hpp"
#include "mpx/detail/pool_task.hpp"
#include "mpx/errors.hpp"

namespace mpx::detail {

// Decodes a value that may be void.
template <class R>
auto decode_result(std::span<const std::byte> bytes) {
  if constexpr (std::is_void_v<R>) {
    return std::monostate{};
  } else {
    return mpx::decode<R>(bytes);
  }
}

template <class R>
std::vector<R> decode_chunk(std::span<const std::byte> bytes) {
  return mpx::decode<std::vector<R>>(bytes);
}

// The head (type tag and count) of a std::vector<R> message of `count` elements, whose
// elements were read elsewhere (TaskSink::result_place): what append_vector_head wrote.
// Throws DecodeError.
template <class R>
void check_vector_head(std::span<const std::byte> head, std::size_t count) {
  std::byte expected[sizeof(std::uint64_t) + 10];
  const std::uint64_t tag = type_tag<std::vector<R>>();
  std::memcpy(expected, &tag, sizeof tag);
  const std::size_t n = sizeof tag + put_varint(count, expected + sizeof tag);
  if (head.size() != n || std::memcmp(head.data(), expected, n) != 0)
    throw_decode_error(
        &Codec<std::vector<R>>::name, 0,
        "a map chunk's results do not start as a vector of " + std::to_string(count) + " elements");
}

// Worker side: one call f(args...).
template <class F, class... Args>
void call_entry(std::span<const std::byte> in, ByteVector& out) {
  F f = decode_callable<F>(in);
  auto args = mpx::decode<std::tuple<Args...>>(in);
  using R = std::invoke_result_t<F&, Args&...>;
  if constexpr (std::is_void_v<R>) {
    std::apply(f, args);
  } else {
    mpx::encode_append(std::apply(f, args), out);
  }
}

template <class Fn, class Item, bool Star>
struct item_result {
  using type = std::invoke_result_t<Fn&, Item&>;
};
template <class Fn, class Item>
struct item_result<Fn, Item, true> {
  using type = decltype(std::apply(std::declval<Fn&>(), std::declval<Item&>()));
};
// The result of a map's call for one item: f(item), or f(a, b...) for a tuple item
// (Star, starmap); void for a function that returns nothing.
template <class Fn, class Item, bool Star>
using item_result_t = typename item_result<Fn, Item, Star>::type;
// What a map keeps per item: the result, or std::monostate (Python's None) for a
// function that returns nothing.
template <class R>
using map_value_t = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

// One item's call, its result as map_value_t.
template <bool Star, class F, class Item>
auto call_item(F& f, Item& item) {
  using R = item_result_t<F, Item, Star>;
  if constexpr (std::is_void_v<R>) {
    if constexpr (Star) {
      std::apply(f, item);
    } else {
      f(item);
    }
    return std::monostate{};
  } else if constexpr (Star) {
    return std::apply(f, item);
  } else {
    return f(item);
  }
}

// Whether a chunk's items and results both travel as raw bytes.
template <class F, class Item, bool Star>
constexpr bool raw_chunk() {
  if constexpr (Star || !trivially_encodable_v<Item>) {
    return false;
  } else {
    return trivially_encodable_v<map_value_t<std::invoke_result_t<F&, Item&>>>;
  }
}

// Worker side: a chunk of calls; Star: each item is a tuple of arguments.
// Aligned to a cache line: its loop over a chunk's items, the hot loop of a worker in a
// map of small calls, then runs at the same speed whatever code precedes it in the
// binary (16 bytes further, an unrelated change made a map of a million ints 5% slower).
template <class F, class Item, bool Star>
[[gnu::aligned(64)]] void chunk_entry(std::span<const std::byte> in, ByteVector& out) {
  F f = decode_callable<F>(in);
  using R = map_value_t<item_result_t<F, Item, Star>>;
  if constexpr (raw_chunk<F, Item, Star>()) {
    // Raw bytes both ways: each item is read from the message and each result written
    // into the reply, with no vector in between (a chunk of a million ints would need
    // two fresh 4 MB vectors, faulted in page by page).
    // The results go straight to the outbox when they fit there (DirectResult).
    std::size_t n = 0;
    const std::byte* src = vector_elements<Item>(in, n).data();
    const std::size_t bytes = sizeof(std::uint64_t) + varint_size(n) + n * sizeof(R);
    std::byte* dst = nullptr;
    if (DirectResult& d = direct_result(); d.room.size() >= bytes) {
      const std::uint64_t tag = type_tag<std::vector<R>>();
      PtrWriter w{d.room.data()};
      w.put(&tag, sizeof tag);
      w.varint(n);
      dst = w.p;
      d.used = bytes;
    } else {
      reserve_prefaulted(out, out.size() + bytes);
      dst = append_vector_head<R>(n, out);
    }
    for (std::size_t i = 0; i < n; ++i) {
      Item item;
      std::memcpy(static_cast<void*>(&item), src + i * sizeof(Item), sizeof(Item));
      const R result = call_item<false>(f, item);
      std::memcpy(dst + i * sizeof(R), static_cast<const void*>(&result), sizeof(R));
    }
    return;
  }
  auto items = mpx::decode<std::vector<Item>>(in);
  std::vector<R> results;
  results.reserve(items.size());
  for (auto& item : items)
    results.push_back(call_item<Star>(f, item));
  mpx::encode_append(results, out);
}

// Worker side: the initializer.
template <class F, class... Args>
void init_entry(std::span<const std::byte> in, ByteVector&) {
  F f = decode_callable<F>(in);
  auto args = mpx::decode<std::tuple<Args...>>(in);
  std::apply(f, args);
}

// In a worker of a zygote that is not a fork: the fds of the mpx objects among the
// initializer's arguments, as the zygote received them (src/pool/zygote_spawn.cpp).
const std::vector<int>& initializer_fds() noexcept;

// Worker side: an initializer whose arguments include mpx objects (InitObjects).
template <class F, class... Args>
void init_objects_entry(std::span<const std::byte> in, ByteVector&) {
  F f = decode_callable<F>(in);
  std::vector<int> fds = initializer_fds();  // this worker's copies, taken by the objects
  std::tuple<Args...> args{decode_arg<Args>(in, fds)...};  // in order: braced
  std::apply([&f](Args&... a) { std::invoke(f, a...); }, args);
}

// Room for a callable's encoding (a function pointer's) and a message's head, reserved
// at once so that a small task's bytes take one allocation, not one per append.
inline constexpr std::size_t kTaskHeadBytes = 64;
// Room reserved for a call's bytes: a function pointer and a few small arguments (a
// function pointer and an int take 20 bytes). Small, because a burst of calls holds
// one buffer per call queued, in fresh pages at first (a fault costs microseconds in a
// virtual machine): 24 bytes take 32 of the heap, 64 took 80.
inline constexpr std::size_t kCallBytes = 24;

// `buffer`: memory to encode into (a finished task's, see Engine::submit), or none.
template <class F, class... Args>
Task process_call_task(const F& f, const std::tuple<Args...>& args, ByteVector buffer = {}) {
  Task t;
  t.entry = &call_entry<F, Args...>;
  t.args = std::move(buffer);
  t.args.clear();
  t.args.reserve(kCallBytes);
  encode_callable(f, t.args);
  mpx::encode_append(args, t.args);
  return t;
}

// A chunk task of `count` raw-byte items, which the caller writes at `items` (each
// item's bytes in turn) before it submits the task. `buffer`: memory to encode into
// (a finished task's, see Engine::submit), or none.
template <class F, class Item>
Task process_raw_chunk_task(const F& f, std::size_t count, std::byte*& items,
                            ByteVector buffer = {}) {
  Task t;
  t.entry = &chunk_entry<F, Item, false>;
  t.args = std::move(buffer);
  t.args.clear();
  reserve_prefaulted(t.args, kTaskHeadBytes + count * sizeof(Item));
  encode_callable(f, t.args);
  items = append_vector_head<Item>(count, t.args);
  return t;
}

// The bytes of process_raw_chunk_task's arguments before its items, for a frame written
// straight into a worker's inbox (Engine::submit_written).
template <class F, class Item>
ByteVector raw_chunk_head(const F& f, std::size_t count) {
  ByteVector head;
  head.reserve(kTaskHeadBytes);
  encode_callable(f, head);
  ensure_registered<std::vector<Item>>();
  const std::uint64_t tag = Codec<std::vector<Item>>::tag;
  const std::size_t at = head.size();
  head.resize(at + sizeof tag + varint_size(count));
  PtrWriter w{head.data() + at};
  w.put(&tag, sizeof tag);
  w.varint(count);
  return head;
}

// Writes the next `count` elements from `it` (up to `end`) as raw Item bytes at `out`,
// advancing `it`. Returns false if the range ended first.
template <class Item, class It, class End>
bool copy_raw_items(It& it, const End& end, std::size_t count, std::byte* out) {
  if constexpr (std::random_access_iterator<It> && std::sized_sentinel_for<End, It>) {
    using D = std::iter_difference_t<It>;
    if (end - it < static_cast<D>(count)) return false;
    for (std::size_t k = 0; k < count; ++k) {
      const Item item = static_cast<Item>(it[static_cast<D>(k)]);
      std::memcpy(out + k * sizeof(Item), static_cast<const void*>(&item), sizeof(Item));
    }
    it += static_cast<D>(count);
  } else {
    for (std::size_t k = 0; k < count; ++k, ++it) {
      if (it == end) return false;
      const Item item = static_cast<Item>(*it);
      std::memcpy(out + k * sizeof(Item), static_cast<const void*>(&item), sizeof(Item));
    }
  }
  return true;
}

// Input whose reading runs no user code: a contiguous range of arithmetic values, or
// iota, converted to an arithmetic Item (write_chunk() reads it under the engine's lock).
template <class T>
inline constexpr bool is_integral_iota_v = false;
template <class W, class B>
inline constexpr bool is_integral_iota_v<std::ranges::iota_view<W, B>> = std::is_integral_v<W>;
template <class Source, class Item, class S = std::remove_cvref_t<Source>>
inline constexpr bool plain_items_v = std::is_arithmetic_v<Item> &&
                                      (is_integral_iota_v<S> ||
                                       (std::ranges::contiguous_range<S> &&
                                        std::is_arithmetic_v<std::ranges::range_value_t<S>>));

// A map's chunk of `count` raw items from `it`, written straight into a worker's inbox
// (Engine::submit_written) when one has room, as chunk `index` of `sink`: no buffer to
// encode it into and copy from (in fresh pages, for a map of a million ints). Plain:
// plain_items_v. `waited` (a blocking map's, else null): how many of its chunks are
// done that it waited for; it then waits for room, one more chunk done at a time, rather
// than have the chunk encoded into a buffer ahead (each chunk done left its worker's
// inbox room for one more). Returns false, `it` untouched, if it was not.
inline constexpr std::size_t kWrittenChunkBytes = std::size_t{64} << 10;
template <class F, class Item, bool Plain, class It, class End, class Sink>
bool write_chunk(Engine& engine, const F& f, It& it, const End& end, std::size_t count,
                 const std::shared_ptr<Sink>& sink, std::size_t index, std::size_t* waited) {
  if constexpr (Plain) {
    struct ChunkWriter {
      ByteVector head;
      It* it;
      const End* end;
      std::size_t count;
      static void write(void* self, std::byte* at) {
        auto& w = *static_cast<ChunkWriter*>(self);
        std::memcpy(at, w.head.data(), w.head.size());
        if (!copy_raw_items<Item>(*w.it, *w.end, w.count, at + w.head.size()))
          throw ValueError("map: the range holds fewer elements than its size()");
      }
    };
    ChunkWriter w{raw_chunk_head<F, Item>(f, count), &it, &end, count};
    Task t;
    t.entry = &chunk_entry<F, Item, false>;
    t.sink = sink;
    t.tag = index;
    const std::size_t size = w.head.size() + count * sizeof(Item);
    bool written = engine.submit_written(t, size, &ChunkWriter::write, &w);
    while (!written && waited && size <= Engine::written_limit() && *waited < index) {
      sink->wait_completed(++*waited);
      written = engine.submit_written(t, size, &ChunkWriter::write, &w);
    }
    return written;
  } else {
    static_cast<void>(engine);
    static_cast<void>(f);
    static_cast<void>(it);
    static_cast<void>(end);
    static_cast<void>(count);
    static_cast<void>(sink);
    static_cast<void>(index);
    static_cast<void>(waited);
    return false;
  }
}

template <class F, class Item, bool Star>
Task process_chunk_task(const F& f, const std::vector<Item>& items, ByteVector buffer = {}) {
  Task t;
  t.entry = &chunk_entry<F, Item, Star>;
  t.args = std::move(buffer);
  t.args.clear();
  encode_callable(f, t.args);
  mpx::encode_append(items, t.args);
  return t;
}

}  // namespace mpx::detail
