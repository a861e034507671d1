// mpx/codec.hpp — values to bytes and back, with a type check on the way in.
//
//   mpx::Bytes msg = mpx::encode(std::vector<int>{1, 2, 3});
//   auto v = mpx::decode<std::vector<int>>(msg);      // {1, 2, 3}
//   mpx::decode<std::string>(msg);                     // throws mpx::DecodeError
//
// This is what every channel, queue and pool of mpx sends (Python's pickle, without
// pickle's costs and without its trust in the bytes).
//
// Supported types: arithmetic and enum types, bool, trivially copyable structs,
// std::string (and the other std::basic_string of character types), std::vector
// (std::vector<bool> too), std::array, std::pair, std::tuple, std::optional,
// std::variant, std::monostate, std::map, std::unordered_map, std::set,
// std::unordered_set, any nesting of these, and any type with a cereal serialize() or
// load()/save() (cereal's headers for the standard types are included here). Anything
// else is a compile-time error naming what is supported. Pointers, references, views
// (std::string_view, std::span) and C arrays are never encodable.
//
// Wire format (version 1; both ends must be the same build of the same program on the
// same machine type — there is no byte swapping, the host is little-endian):
//   message   = tag:u64 payload          (tag in host byte order)
//   raw T     = the sizeof(T) bytes of the object: arithmetic, enums, trivially
//               copyable structs, std::array of raw elements, std::monostate
//   bool      = one byte, 0 or 1
//   string    = n:varint, then n characters
//   vector    = n:varint, then n elements (raw elements: one block of n*sizeof(T))
//   vector<bool> = n:varint, then ceil(n/8) bytes, bit i in byte i/8 at bit i%8
//   array     = the N elements (when they are not raw)
//   pair/tuple = the members in order
//   optional  = one byte 0 (empty) or 1, then the value when 1
//   variant   = index:varint, then the alternative's value
//   map/set   = n:varint, then n entries, key then value (sorted for std::map/set)
//   cereal T  = length:varint, then cereal's binary archive bytes of the value
//               (host byte order, sizes as u64), exactly `length` of them
//   varint    = LEB128: 7 bits per byte, low group first, high bit set on all but the
//               last byte, at most 10 bytes
//
// Type tags: a 64-bit FNV-1a hash of the type's structure (its readable name for
// fundamental, enum and user types; the template's name and its arguments' tags for the
// standard templates), fixed at compile time. It is the same in every process of the
// same build, and practically never the same for two types. Two types that print the
// same name share a tag: one `Foo` in each of two anonymous namespaces, or (with GCC,
// which prints no position for them) two closure types of the same signature declared in
// the same function.
//
// Safety: decode never trusts a length. Every count is checked against the bytes left
// before anything is allocated (n elements need n times the smallest encoding of an
// element), every bool and optional flag must be 0 or 1, every variant index in range,
// no key may repeat, and the whole message must be used. Truncated, corrupt or trailing
// bytes throw DecodeError; nothing crashes, and decoding allocates at most a small
// multiple (sizeof(T)/min encoding, 32 for a std::string of empty strings) of the
// message's size. Recursive cereal types are limited in nesting depth. The one trust
// that remains: raw T is copied as bytes, so a trivially copyable struct holding a bool,
// a pointer or an enum gets whatever bits the sender wrote, and an enum is not checked
// against its enumerators. That is harmless between processes of one program; for input
// that may be hostile, use types whose every bit pattern is valid (an enum with a fixed
// underlying type, `enum E : int`, accepts every value of it), or give them a serialize().
//
// Cereal caveats: inside a cereal-serialized value, a container of n elements that encode
// to no bytes at all (empty classes) cannot hold more elements than bytes follow it.
// std::shared_ptr members keep their sharing, and a reference to an object of another
// type is rejected; but bytes can describe a shared_ptr cycle, which leaks like any
// shared_ptr cycle, so do not decode types holding shared_ptr from untrusted peers.
//
// Thread safety: all functions are reentrant; nothing is shared but the name registry,
// which is filled before main and locked when read.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "mpx/detail/codec_impl.hpp"
#include "mpx/detail/codec_wire.hpp"
#include "mpx/errors.hpp"

namespace mpx {

// True when T travels as its raw bytes (one memcpy each way): arithmetic types other
// than bool, enums, trivially copyable structs, std::array of such, std::monostate.
// std::optional, std::variant, std::pair and std::tuple never do, even when trivially
// copyable: their flags and indexes are checked on decode.
template <class T>
inline constexpr bool is_trivially_encodable_v = detail::trivially_encodable_v<T>;

// The compact type tag that starts every message of type T. Stable across the processes
// of one build (not across compilers or mpx versions).
template <class T>
std::uint64_t type_tag() {
  detail::ensure_registered<T>();
  return detail::Codec<T>::tag;
}

// A readable name of T: "int", "std::string", "std::vector<std::pair<int, double>>",
// and the compiler's spelling for enums and user types ("geo::Point").
template <class T>
std::string type_name() {
  return detail::Codec<T>::name();
}

// Appends the message for `value` (tag, then payload) to `out`. Grows `out` at most
// once for types whose size is known without running cereal. When it throws, `out`
// holds what it held before (its capacity may have grown).
// Blocks: no. Throws: std::bad_alloc; ValueError for a valueless std::variant; what a
// user's serialize() throws.
template <class T>
void encode_append(const T& value, Bytes& out) {
  using C = detail::Codec<T>;
  detail::ensure_registered<T>();
  const std::uint64_t tag = C::tag;
  const std::size_t old_size = out.size();
  const std::size_t needed = old_size + sizeof(tag) + C::size(value);
  if (needed > out.capacity()) out.reserve(std::max(needed, 2 * out.capacity()));
  try {
    if constexpr (C::exact) {
      out.resize(needed);
      detail::PtrWriter w{out.data() + old_size};
      w.put(&tag, sizeof(tag));
      C::write(w, value);
    } else {
      detail::Writer w{out};
      w.put(&tag, sizeof(tag));
      C::write(w, value);
    }
  } catch (...) {
    out.resize(old_size);  // no half-written message
    throw;
  }
}

// The message for `value`: its type tag, then its payload. One allocation, of the exact
// size, for types that do not go through cereal.
// Blocks: no. Throws: as encode_append.
template <class T>
Bytes encode(const T& value) {
  Bytes out;
  encode_append(value, out);
  return out;
}

namespace detail {
// A reader positioned after the tag of a message that must hold a T.
template <class T>
Reader open_message(std::span<const std::byte> bytes) {
  using C = Codec<T>;
  ensure_registered<T>();
  Reader r{bytes.data(), bytes.data() + bytes.size(), bytes.data(), &C::name};
  std::uint64_t tag = 0;
  r.copy(&tag, sizeof(tag));
  if (tag != C::tag) throw_type_mismatch(&C::name, C::tag, tag);
  return r;
}
}  // namespace detail

// Decodes a whole message as a T.
// Blocks: no. Throws: DecodeError when the message holds another type (the message
// names both), is truncated or malformed in any way, or has bytes left over; what a
// user's load()/serialize() throws.
template <class T>
T decode(std::span<const std::byte> bytes) {
  static_assert(std::is_default_constructible_v<T>,
                "mpx::decode<T> reads into a default-constructed T: give T a public default "
                "constructor");
  detail::Reader r = detail::open_message<T>(bytes);
  T value;
  detail::Codec<T>::read(r, value);
  if (r.p != r.end) r.fail("trailing bytes after the value");
  return value;
}

namespace detail {
// The element bytes of a std::vector<T> message, where they lie in `bytes` (not aligned
// for T: copy each element out), and their count. Checks as decode does.
template <class T>
requires trivially_encodable_v<T> std::span<const std::byte> vector_elements(
    std::span<const std::byte> bytes, std::size_t& count) {
  Reader r = open_message<std::vector<T>>(bytes);
  count = r.count(Codec<T>::min_size);
  const std::byte* elements = r.take(count * sizeof(T));
  if (r.p != r.end) r.fail("trailing bytes after the value");
  return {elements, count * sizeof(T)};
}

// Decodes a std::vector<T> message straight into `out`, which must be its exact length
// (the pool's map puts each chunk's results at their place in the one result vector).
// Throws: as decode, and DecodeError when the element count differs.
template <class T>
requires trivially_encodable_v<T>
void decode_vector_into(std::span<const std::byte> bytes, std::span<T> out) {
  std::size_t n = 0;
  std::span<const std::byte> elements = vector_elements<T>(bytes, n);
  if (n != out.size()) {
    throw_decode_error(
        &Codec<std::vector<T>>::name, sizeof(std::uint64_t),  // the count
        std::to_string(n) + " elements where " + std::to_string(out.size()) + " were expected");
  }
  if (n != 0) std::memcpy(static_cast<void*>(out.data()), elements.data(), elements.size());
}

// Appends the start of a std::vector<T> message of `count` elements to `out`, grown to
// hold them; returns where their count * sizeof(T) bytes go (written by the caller, as
// decode reads them: each element's object representation in turn).
template <class T>
requires trivially_encodable_v<T> std::byte* append_vector_head(std::size_t count, Bytes& out) {
  using C = Codec<std::vector<T>>;
  ensure_registered<std::vector<T>>();
  const std::uint64_t tag = C::tag;
  const std::size_t at = out.size();
  out.resize(at + sizeof(tag) + varint_size(count) + count * sizeof(T));
  PtrWriter w{out.data() + at};
  w.put(&tag, sizeof(tag));
  w.varint(count);
  return w.p;
}
}  // namespace detail

}  // namespace mpx
