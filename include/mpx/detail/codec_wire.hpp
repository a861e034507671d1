// mpx/detail/codec_wire.hpp — the byte-level pieces of the codec (not API): the bounded
// reader, the appending writer, LEB128 lengths, type names and type tags, and the
// process-wide tag -> name registry. See mpx/codec.hpp for the wire format.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "mpx/errors.hpp"

namespace mpx {
// A message: encoded bytes, type tag first.
using Bytes = std::vector<std::byte>;
}  // namespace mpx

namespace mpx::detail {

// ---------------------------------------------------------------------------
// Errors, registry (src/codec/codec.cpp). Cold paths live out of line.

using NameFn = std::string (*)();

// Records that `tag` names the type `name()` names; called at static initialisation for
// every type some code in the program encodes or decodes. First registration wins.
void register_type(std::uint64_t tag, NameFn name) noexcept;
// The registered name of `tag`, or "<unregistered type 0x...>".
std::string describe_tag(std::uint64_t tag);

[[noreturn]] void throw_decode_error(NameFn target, std::size_t offset, std::string_view what);
[[noreturn]] void throw_type_mismatch(NameFn target, std::uint64_t expected, std::uint64_t found);
[[noreturn]] void throw_truncated(NameFn target, std::size_t offset, std::size_t needed,
                                  std::size_t left);
[[noreturn]] void throw_bad_count(NameFn target, std::size_t offset, std::uint64_t count,
                                  std::size_t left);

// ---------------------------------------------------------------------------
// Which types get a codec of their own (and so are never memcpy'd even when trivially
// copyable: a std::optional<int> holds a bool that hostile bytes could make invalid).

template <class T>
struct has_std_codec : std::false_type {};
template <class T>
struct has_std_codec<std::optional<T>> : std::true_type {};
template <class... Ts>
struct has_std_codec<std::variant<Ts...>> : std::true_type {};
template <class A, class B>
struct has_std_codec<std::pair<A, B>> : std::true_type {};
template <class T, class... Ts>
struct has_std_codec<std::tuple<T, Ts...>> : std::true_type {};
template <class C>
struct has_std_codec<std::basic_string<C>> : std::true_type {};
template <class T>
struct has_std_codec<std::vector<T>> : std::true_type {};
template <class K, class V>
struct has_std_codec<std::map<K, V>> : std::true_type {};
template <class K, class V>
struct has_std_codec<std::unordered_map<K, V>> : std::true_type {};
template <class K>
struct has_std_codec<std::set<K>> : std::true_type {};
template <class K>
struct has_std_codec<std::unordered_set<K>> : std::true_type {};
template <class T, std::size_t N>
struct has_std_codec<std::array<T, N>> : std::true_type {};

// Trivially copyable, yet meaningless or unsafe as raw bytes in another process.
template <class T>
struct is_view : std::false_type {};
template <class C, class Tr>
struct is_view<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t N>
struct is_view<std::span<T, N>> : std::true_type {};
template <class T>
struct is_view<std::reference_wrapper<T>> : std::true_type {};

template <class T>
struct trivially_encodable
    : std::bool_constant<std::is_trivially_copyable_v<T> && !std::is_const_v<T> &&
                         !std::is_volatile_v<T> && !std::is_same_v<T, bool> &&
                         !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
                         !std::is_array_v<T> && !std::is_null_pointer_v<T> &&
                         !has_std_codec<T>::value && !is_view<T>::value> {};
template <class T, std::size_t N>
struct trivially_encodable<std::array<T, N>> : trivially_encodable<T> {};

template <class T>
inline constexpr bool trivially_encodable_v = trivially_encodable<T>::value;

// ---------------------------------------------------------------------------
// Hashing for type tags (FNV-1a 64), all constexpr.

inline constexpr std::uint64_t kFnvPrime = 1099511628211ull;
// The seed carries the wire-format version: a new format gives every type a new tag.
inline constexpr std::uint64_t kTagSeed = 0x6d70782e636f6431ull;  // "mpx.cod1"

constexpr std::uint64_t fnv1a(std::string_view s, std::uint64_t h = kTagSeed) {
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= kFnvPrime;
  }
  return h;
}

constexpr std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xffu;
    h *= kFnvPrime;
  }
  return h;
}

// The spelling of T in this compiler's __PRETTY_FUNCTION__, e.g. "ns::Point".
template <class T>
constexpr std::string_view pretty_name() {
  std::string_view f = __PRETTY_FUNCTION__;
#if defined(__clang__)
  constexpr std::string_view kStart = "[T = ";
  const auto begin = f.find(kStart) + kStart.size();
  const auto end = f.rfind(']');
#else
  constexpr std::string_view kStart = "[with T = ";
  const auto begin = f.find(kStart) + kStart.size();
  auto end = f.find(';', begin);
  if (end == std::string_view::npos) end = f.rfind(']');
#endif
  return f.substr(begin, end - begin);
}

// Names of fundamental types, spelled the same by every compiler.
template <class T>
constexpr std::string_view scalar_name() {
  if constexpr (std::is_same_v<T, bool>)
    return "bool";
  else if constexpr (std::is_same_v<T, char>)
    return "char";
  else if constexpr (std::is_same_v<T, signed char>)
    return "signed char";
  else if constexpr (std::is_same_v<T, unsigned char>)
    return "unsigned char";
  else if constexpr (std::is_same_v<T, wchar_t>)
    return "wchar_t";
  else if constexpr (std::is_same_v<T, char8_t>)
    return "char8_t";
  else if constexpr (std::is_same_v<T, char16_t>)
    return "char16_t";
  else if constexpr (std::is_same_v<T, char32_t>)
    return "char32_t";
  else if constexpr (std::is_same_v<T, short>)
    return "short";
  else if constexpr (std::is_same_v<T, unsigned short>)
    return "unsigned short";
  else if constexpr (std::is_same_v<T, int>)
    return "int";
  else if constexpr (std::is_same_v<T, unsigned>)
    return "unsigned int";
  else if constexpr (std::is_same_v<T, long>)
    return "long";
  else if constexpr (std::is_same_v<T, unsigned long>)
    return "unsigned long";
  else if constexpr (std::is_same_v<T, long long>)
    return "long long";
  else if constexpr (std::is_same_v<T, unsigned long long>)
    return "unsigned long long";
  else if constexpr (std::is_same_v<T, float>)
    return "float";
  else if constexpr (std::is_same_v<T, double>)
    return "double";
  else if constexpr (std::is_same_v<T, long double>)
    return "long double";
  else if constexpr (std::is_same_v<T, std::byte>)
    return "std::byte";
  else
    return pretty_name<T>();
}

// ---------------------------------------------------------------------------
// LEB128 lengths: 7 bits a byte, low bits first, at most 10 bytes.

constexpr std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Writes `v` as LEB128 into buf (10 bytes suffice); returns the number of bytes.
inline std::size_t put_varint(std::uint64_t v, std::byte* buf) noexcept {
  std::size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<std::byte>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<std::byte>(v);
  return n;
}

// Appends to a message vector: used when the size is not known in advance (cereal).
struct Writer {
  Bytes& out;

  void put(const void* data, std::size_t n) {
    if (n == 0) return;
    const auto* b = static_cast<const std::byte*>(data);
    out.insert(out.end(), b, b + n);
  }
  void byte(std::uint8_t b) { out.push_back(static_cast<std::byte>(b)); }
  void varint(std::uint64_t v) {
    std::byte buf[10];
    put(buf, put_varint(v, buf));
  }
};

// Writes into memory already sized for the whole message: no checks, no growth.
struct PtrWriter {
  std::byte* p;

  void put(const void* data, std::size_t n) noexcept {
    if (n == 0) return;
    std::memcpy(p, data, n);
    p += n;
  }
  void byte(std::uint8_t b) noexcept { *p++ = static_cast<std::byte>(b); }
  void varint(std::uint64_t v) noexcept { p += put_varint(v, p); }
};

// Reads a message. Every read is checked against the bytes that are left.
struct Reader {
  const std::byte* p;
  const std::byte* end;
  const std::byte* begin;
  NameFn target;  // the type being decoded, for error messages

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end - p); }
  std::size_t offset() const noexcept { return static_cast<std::size_t>(p - begin); }

  [[noreturn]] void fail(std::string_view what) const {
    throw_decode_error(target, offset(), what);
  }

  // The next n bytes; throws DecodeError when fewer are left.
  const std::byte* take(std::size_t n) {
    if (n > remaining()) throw_truncated(target, offset(), n, remaining());
    const std::byte* q = p;
    p += n;
    return q;
  }
  void copy(void* dst, std::size_t n) {
    const std::byte* src = take(n);
    if (n != 0) std::memcpy(dst, src, n);
  }
  std::uint8_t byte() { return static_cast<std::uint8_t>(*take(1)); }

  std::uint64_t varint() {
    if (p != end && static_cast<std::uint8_t>(*p) < 0x80) return static_cast<std::uint8_t>(*p++);
    return varint_slow();
  }
  std::uint64_t varint_slow() {
    std::uint64_t v = 0;
    for (unsigned shift = 0;; shift += 7) {
      const std::uint8_t b = byte();
      if (shift == 63 && b > 1) fail("malformed length (more than 64 bits)");
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        // One encoding per value, so that re-encoding a decoded message gives its bytes.
        if (b == 0 && shift != 0) fail("malformed length (a needless zero byte)");
        return v;
      }
    }
  }

  // A count of `count` elements, each at least `min_size` bytes long, must fit in what
  // is left: this is what keeps a corrupt count from allocating more than the message.
  std::size_t count(std::size_t min_size) {
    const std::size_t at = offset();
    const std::uint64_t n = varint();
    const std::size_t unit = min_size == 0 ? 1 : min_size;
    if (n > remaining() / unit) throw_bad_count(target, at, n, remaining());
    return static_cast<std::size_t>(n);
  }
};

}  // namespace mpx::detail
