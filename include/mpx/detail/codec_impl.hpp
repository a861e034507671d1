// mpx/detail/codec_impl.hpp — one Codec<T> per supported type (not API).
//
// Each Codec<T> has:
//   min_size        the fewest bytes any value of T encodes to (bounds element counts)
//   tag             the 64-bit type tag, a compile-time constant
//   name()          the readable type name
//   exact           whether size(v) is exact (false when cereal is involved)
//   size(v)         the encoded size of v (a guess when not exact)
//   write(w, v)     appends v, to a Writer (vector) or, when exact, a PtrWriter
//   read(r, v)      reads into v (default-constructed or reused), checking every length
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

#include "mpx/detail/codec_cereal.hpp"
#include "mpx/detail/codec_wire.hpp"
#include "mpx/errors.hpp"

namespace mpx::detail {

template <class T>
inline constexpr bool always_false_v = false;

// The primary template: no codec. Specialisations below.
template <class T>
struct Codec {
  static_assert(always_false_v<T>,
                "mpx codec: this type cannot be encoded. Supported: arithmetic and enum types, "
                "trivially copyable structs, std::string, std::vector, std::array, std::pair, "
                "std::tuple, std::optional, std::variant, std::map, std::unordered_map, "
                "std::set, std::unordered_set, and types with a cereal serialize() (or "
                "load/save) function. Pointers, references and views are not encodable.");
};

template <class... Ts>
std::string join_names() {
  std::string s;
  ((s += (s.empty() ? "" : ", "), s += Codec<Ts>::name()), ...);
  return s;
}

template <class... Ts>
constexpr std::uint64_t template_tag(std::string_view name) {
  std::uint64_t h = fnv1a(name);
  ((h = mix(h, Codec<Ts>::tag)), ...);
  return h;
}

// std::array is named and tagged the same whether its elements are raw or not.
template <class T>
struct RawNaming {
  static constexpr std::uint64_t tag = fnv1a(scalar_name<T>());
  static std::string name() { return std::string(scalar_name<T>()); }
};
template <class T, std::size_t N>
struct RawNaming<std::array<T, N>> {
  static constexpr std::uint64_t tag = mix(template_tag<T>("std::array"), N);
  static std::string name() {
    return "std::array<" + Codec<T>::name() + ", " + std::to_string(N) + ">";
  }
};

// ---------------------------------------------------------------------------
// Raw bytes: arithmetic, enums, trivially copyable structs, std::array of those.

template <class T>
requires trivially_encodable_v<T>
struct Codec<T> {
  static constexpr std::size_t min_size = sizeof(T);
  static constexpr bool exact = true;
  static constexpr std::uint64_t tag = RawNaming<T>::tag;
  static std::string name() { return RawNaming<T>::name(); }
  static constexpr std::size_t size(const T&) noexcept { return sizeof(T); }
  template <class W>
  static void write(W& w, const T& v) {
    w.put(std::addressof(v), sizeof(T));
  }
  static void read(Reader& r, T& v) { r.copy(static_cast<void*>(std::addressof(v)), sizeof(T)); }
};

template <>
struct Codec<bool> {
  static constexpr std::size_t min_size = 1;
  static constexpr bool exact = true;
  static constexpr std::uint64_t tag = fnv1a("bool");
  static std::string name() { return "bool"; }
  static constexpr std::size_t size(bool) noexcept { return 1; }
  template <class W>
  static void write(W& w, bool v) {
    w.byte(v ? 1 : 0);
  }
  static void read(Reader& r, bool& v) {
    const std::uint8_t b = r.byte();
    if (b > 1) r.fail("a bool that is neither 0 nor 1");
    v = b != 0;
  }
};

// ---------------------------------------------------------------------------
// Strings: length in characters, then the characters.

template <class C>
inline constexpr bool is_char_v =
    std::is_same_v<C, char> || std::is_same_v<C, wchar_t> || std::is_same_v<C, char8_t> ||
    std::is_same_v<C, char16_t> || std::is_same_v<C, char32_t>;

template <class C>
requires is_char_v<C>
struct Codec<std::basic_string<C>> {
  using S = std::basic_string<C>;
  static constexpr std::string_view kName = std::is_same_v<C, char>       ? "std::string"
                                            : std::is_same_v<C, wchar_t>  ? "std::wstring"
                                            : std::is_same_v<C, char8_t>  ? "std::u8string"
                                            : std::is_same_v<C, char16_t> ? "std::u16string"
                                                                          : "std::u32string";
  static constexpr std::size_t min_size = 1;
  static constexpr bool exact = true;
  static constexpr std::uint64_t tag = fnv1a(kName);
  static std::string name() { return std::string(kName); }
  static std::size_t size(const S& s) noexcept {
    return varint_size(s.size()) + s.size() * sizeof(C);
  }
  template <class W>
  static void write(W& w, const S& s) {
    w.varint(s.size());
    w.put(s.data(), s.size() * sizeof(C));
  }
  static void read(Reader& r, S& s) {
    const std::size_t n = r.count(sizeof(C));
    const std::byte* src = r.take(n * sizeof(C));
    if constexpr (std::is_same_v<C, char>) {
      s.assign(reinterpret_cast<const char*>(src), n);
    } else {
      s.resize(n);
      if (n != 0) std::memcpy(s.data(), src, n * sizeof(C));
    }
  }
};

// ---------------------------------------------------------------------------
// std::vector: count, then the elements (one memcpy when they are raw bytes).

template <class T>
struct Codec<std::vector<T>> {
  using V = std::vector<T>;
  using E = Codec<T>;
  static constexpr std::size_t min_size = 1;
  static constexpr bool exact = E::exact;
  static constexpr std::uint64_t tag = template_tag<T>("std::vector");
  static std::string name() { return "std::vector<" + E::name() + ">"; }
  static std::size_t size(const V& v) {
    if constexpr (trivially_encodable_v<T>) {
      return varint_size(v.size()) + v.size() * sizeof(T);
    } else {
      std::size_t n = varint_size(v.size());
      for (const T& x : v)
        n += E::size(x);
      return n;
    }
  }
  template <class W>
  static void write(W& w, const V& v) {
    w.varint(v.size());
    if constexpr (trivially_encodable_v<T>) {
      w.put(v.data(), v.size() * sizeof(T));
    } else {
      for (const T& x : v)
        E::write(w, x);
    }
  }
  static void read(Reader& r, V& v) {
    const std::size_t n = r.count(E::min_size);
    v.clear();
    v.resize(n);
    if constexpr (trivially_encodable_v<T>) {
      r.copy(static_cast<void*>(v.data()), n * sizeof(T));
    } else {
      for (T& x : v)
        E::read(r, x);
    }
  }
};

// std::vector<bool>: count of bits, then the bits packed eight to a byte, low bit first.
template <>
struct Codec<std::vector<bool>> {
  using V = std::vector<bool>;
  static constexpr std::size_t min_size = 1;
  static constexpr bool exact = true;
  static constexpr std::uint64_t tag = template_tag<bool>("std::vector");
  static std::string name() { return "std::vector<bool>"; }
  static std::size_t size(const V& v) noexcept {
    return varint_size(v.size()) + (v.size() + 7) / 8;
  }
  template <class W>
  static void write(W& w, const V& v) {
    w.varint(v.size());
    std::uint8_t acc = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i]) acc = static_cast<std::uint8_t>(acc | (1u << (i % 8)));
      if (i % 8 == 7) {
        w.byte(acc);
        acc = 0;
      }
    }
    if (v.size() % 8 != 0) w.byte(acc);
  }
  static void read(Reader& r, V& v) {
    const std::size_t at = r.offset();
    const std::uint64_t n = r.varint();
    const std::uint64_t nbytes = n / 8 + (n % 8 != 0 ? 1 : 0);
    if (nbytes > r.remaining()) throw_bad_count(r.target, at, n, r.remaining());
    const std::byte* bits = r.take(static_cast<std::size_t>(nbytes));
    v.assign(static_cast<std::size_t>(n), false);
    for (std::size_t i = 0; i < n; ++i) {
      v[i] = (static_cast<std::uint8_t>(bits[i / 8]) >> (i % 8)) & 1u;
    }
    if (n % 8 != 0 && (static_cast<std::uint8_t>(bits[nbytes - 1]) >> (n % 8)) != 0) {
      r.fail("set padding bits after a std::vector<bool>");
    }
  }
};

// ---------------------------------------------------------------------------
// std::array of non-raw elements: the N elements, no count.

template <class T, std::size_t N>
requires(!trivially_encodable_v<std::array<T, N>>) struct Codec<std::array<T, N>> {
  using A = std::array<T, N>;
  using E = Codec<T>;
  static constexpr std::size_t min_size = N * E::min_size;
  static constexpr bool exact = E::exact;
  static constexpr std::uint64_t tag = mix(template_tag<T>("std::array"), N);
  static std::string name() { return "std::array<" + E::name() + ", " + std::to_string(N) + ">"; }
  static std::size_t size(const A& a) {
    std::size_t n = 0;
    for (const T& x : a)
      n += E::size(x);
    return n;
  }
  template <class W>
  static void write(W& w, const A& a) {
    for (const T& x : a)
      E::write(w, x);
  }
  static void read(Reader& r, A& a) {
    for (T& x : a)
      E::read(r, x);
  }
};

// ---------------------------------------------------------------------------
// std::pair, std::tuple: the members in order.

template <class A, class B>
struct Codec<std::pair<A, B>> {
  using P = std::pair<A, B>;
  static constexpr std::size_t min_size = Codec<A>::min_size + Codec<B>::min_size;
  static constexpr bool exact = Codec<A>::exact && Codec<B>::exact;
  static constexpr std::uint64_t tag = template_tag<A, B>("std::pair");
  static std::string name() { return "std::pair<" + join_names<A, B>() + ">"; }
  static std::size_t size(const P& p) { return Codec<A>::size(p.first) + Codec<B>::size(p.second); }
  template <class W>
  static void write(W& w, const P& p) {
    Codec<A>::write(w, p.first);
    Codec<B>::write(w, p.second);
  }
  static void read(Reader& r, P& p) {
    Codec<A>::read(r, p.first);
    Codec<B>::read(r, p.second);
  }
};

template <class T, class... Ts>
struct Codec<std::tuple<T, Ts...>> {
  using Tu = std::tuple<T, Ts...>;
  static constexpr std::size_t min_size = (Codec<T>::min_size + ... + Codec<Ts>::min_size);
  static constexpr bool exact = (Codec<T>::exact && ... && Codec<Ts>::exact);
  static constexpr std::uint64_t tag = template_tag<T, Ts...>("std::tuple");
  static std::string name() { return "std::tuple<" + join_names<T, Ts...>() + ">"; }
  static std::size_t size(const Tu& t) {
    return std::apply(
        [](const T& x, const Ts&... xs) { return (Codec<T>::size(x) + ... + Codec<Ts>::size(xs)); },
        t);
  }
  template <class W>
  static void write(W& w, const Tu& t) {
    std::apply(
        [&w](const T& x, const Ts&... xs) {
          Codec<T>::write(w, x);
          (Codec<Ts>::write(w, xs), ...);
        },
        t);
  }
  static void read(Reader& r, Tu& t) {
    std::apply(
        [&r](T& x, Ts&... xs) {
          Codec<T>::read(r, x);
          (Codec<Ts>::read(r, xs), ...);
        },
        t);
  }
};

// ---------------------------------------------------------------------------
// std::optional: one byte (0 empty, 1 engaged), then the value if engaged.

template <class T>
struct Codec<std::optional<T>> {
  using O = std::optional<T>;
  static constexpr std::size_t min_size = 1;
  static constexpr bool exact = Codec<T>::exact;
  static constexpr std::uint64_t tag = template_tag<T>("std::optional");
  static std::string name() { return "std::optional<" + Codec<T>::name() + ">"; }
  static std::size_t size(const O& o) { return 1 + (o ? Codec<T>::size(*o) : 0); }
  template <class W>
  static void write(W& w, const O& o) {
    w.byte(o ? 1 : 0);
    if (o) Codec<T>::write(w, *o);
  }
  static void read(Reader& r, O& o) {
    const std::uint8_t b = r.byte();
    if (b > 1) r.fail("a std::optional flag that is neither 0 nor 1");
    if (b == 0) {
      o.reset();
    } else {
      Codec<T>::read(r, o.emplace());
    }
  }
};

// ---------------------------------------------------------------------------
// std::variant: the alternative's index (LEB128), then its value.

template <class... Ts>
struct Codec<std::variant<Ts...>> {
  using V = std::variant<Ts...>;
  static constexpr std::size_t min_size = 1 + std::min({Codec<Ts>::min_size...});
  static constexpr bool exact = (Codec<Ts>::exact && ...);
  static constexpr std::uint64_t tag = template_tag<Ts...>("std::variant");
  static std::string name() { return "std::variant<" + join_names<Ts...>() + ">"; }
  static std::size_t size(const V& v) {
    if (v.valueless_by_exception()) return 1;
    return varint_size(v.index()) +
           std::visit([](const auto& x) { return Codec<std::decay_t<decltype(x)>>::size(x); }, v);
  }
  template <class W>
  static void write(W& w, const V& v) {
    if (v.valueless_by_exception()) {
      throw ValueError("mpx::encode: a std::variant that is valueless by exception");
    }
    w.varint(v.index());
    std::visit([&w](const auto& x) { Codec<std::decay_t<decltype(x)>>::write(w, x); }, v);
  }
  template <std::size_t I>
  static void read_alternative(Reader& r, V& v) {
    Codec<std::variant_alternative_t<I, V>>::read(r, v.template emplace<I>());
  }
  template <std::size_t... I>
  static constexpr auto make_table(std::index_sequence<I...>) {
    return std::array<void (*)(Reader&, V&), sizeof...(I)>{&read_alternative<I>...};
  }
  static void read(Reader& r, V& v) {
    static constexpr auto kTable = make_table(std::index_sequence_for<Ts...>{});
    const std::uint64_t index = r.varint();
    if (index >= sizeof...(Ts)) r.fail("a std::variant index out of range");
    kTable[static_cast<std::size_t>(index)](r, v);
  }
};

// ---------------------------------------------------------------------------
// Maps and sets: count, then the entries (key then value). Duplicate keys are malformed.

template <class M, class K, class Mapped>
struct AssociativeCodec {
  static constexpr bool kIsMap = !std::is_void_v<Mapped>;
  static constexpr bool kOrdered = requires(M m) { m.lower_bound(std::declval<K>()); };
  static constexpr std::size_t min_size = 1;
  static constexpr bool exact = [] {
    if constexpr (std::is_void_v<Mapped>) {
      return Codec<K>::exact;
    } else {
      return Codec<K>::exact && Codec<Mapped>::exact;
    }
  }();

  static std::size_t size(const M& m) {
    std::size_t n = varint_size(m.size());
    for (const auto& e : m) {
      if constexpr (kIsMap) {
        n += Codec<K>::size(e.first) + Codec<Mapped>::size(e.second);
      } else {
        n += Codec<K>::size(e);
      }
    }
    return n;
  }
  template <class W>
  static void write(W& w, const M& m) {
    w.varint(m.size());
    for (const auto& e : m) {
      if constexpr (kIsMap) {
        Codec<K>::write(w, e.first);
        Codec<Mapped>::write(w, e.second);
      } else {
        Codec<K>::write(w, e);
      }
    }
  }
  static void read(Reader& r, M& m) {
    std::size_t entry_min = Codec<K>::min_size;
    if constexpr (kIsMap) entry_min += Codec<Mapped>::min_size;
    const std::size_t n = r.count(entry_min);
    m.clear();
    if constexpr (!kOrdered) m.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      K key{};
      Codec<K>::read(r, key);
      const std::size_t before = m.size();
      if constexpr (kIsMap) {
        Mapped value{};
        Codec<Mapped>::read(r, value);
        if constexpr (kOrdered) {
          m.emplace_hint(m.end(), std::move(key), std::move(value));
        } else {
          m.emplace(std::move(key), std::move(value));
        }
      } else {
        if constexpr (kOrdered) {
          m.emplace_hint(m.end(), std::move(key));
        } else {
          m.emplace(std::move(key));
        }
      }
      if (m.size() == before) r.fail("a duplicate key");
    }
  }
};

template <class K, class V>
struct Codec<std::map<K, V>> : AssociativeCodec<std::map<K, V>, K, V> {
  static constexpr std::uint64_t tag = template_tag<K, V>("std::map");
  static std::string name() { return "std::map<" + join_names<K, V>() + ">"; }
};
template <class K, class V>
struct Codec<std::unordered_map<K, V>> : AssociativeCodec<std::unordered_map<K, V>, K, V> {
  static constexpr std::uint64_t tag = template_tag<K, V>("std::unordered_map");
  static std::string name() { return "std::unordered_map<" + join_names<K, V>() + ">"; }
};
template <class K>
struct Codec<std::set<K>> : AssociativeCodec<std::set<K>, K, void> {
  static constexpr std::uint64_t tag = template_tag<K>("std::set");
  static std::string name() { return "std::set<" + join_names<K>() + ">"; }
};
template <class K>
struct Codec<std::unordered_set<K>> : AssociativeCodec<std::unordered_set<K>, K, void> {
  static constexpr std::uint64_t tag = template_tag<K>("std::unordered_set");
  static std::string name() { return "std::unordered_set<" + join_names<K>() + ">"; }
};

// ---------------------------------------------------------------------------
// Anything else cereal can serialize: its byte length (LEB128), then cereal's binary
// encoding of it (see codec_cereal.hpp), which must use up exactly that length.

template <class T>
requires(!trivially_encodable_v<T> && !has_std_codec<T>::value && !is_view<T>::value &&
         !std::is_pointer_v<T> && !std::is_array_v<T> && !std::is_same_v<T, bool> &&
         cereal_serializable_v<T>) struct Codec<T> {
  static constexpr std::size_t min_size = 1;
  static constexpr bool exact = false;  // size() is a guess: write() needs the vector
  static constexpr std::uint64_t tag = fnv1a(pretty_name<T>());
  static std::string name() { return std::string(pretty_name<T>()); }
  static constexpr std::size_t size(const T&) noexcept { return 1 + sizeof(T); }  // a guess
  static void write(Writer& w, const T& v) {
    Bytes& out = w.out;
    const std::size_t at = out.size();
    out.push_back(std::byte{0});  // room for a length below 128, the common case
    {
      CodecOutputArchive archive(out);
      archive(v);
    }
    const std::size_t length = out.size() - at - 1;
    std::byte prefix[10];
    std::size_t n = 0;
    for (std::uint64_t rest = length;; rest >>= 7) {
      prefix[n++] = static_cast<std::byte>(rest >= 0x80 ? (rest & 0x7f) | 0x80 : rest);
      if (rest < 0x80) break;
    }
    out[at] = prefix[0];
    if (n > 1) {
      out.insert(out.begin() + static_cast<std::ptrdiff_t>(at + 1), prefix + 1, prefix + n);
    }
  }
  static void read(Reader& r, T& v) {
    const std::size_t at = r.offset();
    const std::uint64_t length = r.varint();
    if (length > r.remaining()) throw_truncated(r.target, at, length, r.remaining());
    Reader inner{r.p, r.p + length, r.begin, r.target};
    r.p += length;
    try {
      CodecInputArchive archive(inner);
      archive(v);
    } catch (const cereal::Exception& e) {
      inner.fail(e.what());
    }
    if (inner.p != inner.end) inner.fail("unread bytes inside a cereal-serialized value");
  }
};

// ---------------------------------------------------------------------------
// Registration of every type encoded or decoded, at static initialisation, so that a
// process decoding a message of another type can name the sender's type.

template <class T>
struct Registration {
  static const bool done;
};
template <class T>
const bool Registration<T>::done = (register_type(Codec<T>::tag, &Codec<T>::name), true);

template <class T>
inline void ensure_registered() noexcept {
  static_cast<void>(&Registration<T>::done);
}

// ---------------------------------------------------------------------------
// Whether T has a Codec, asked without instantiating one (the primary template's
// static_assert is a hard error, met deep inside whatever encodes): the pool front ends
// ask it first, to report a type with no codec in one message. Mirrors the
// specialisations above; for a cereal type, whether cereal can save and load it.

template <class T>
concept cereal_codec = !trivially_encodable_v<T> && !has_std_codec<T>::value &&
                       !is_view<T>::value && !std::is_pointer_v<T> && !std::is_array_v<T> &&
                       !std::is_same_v<T, bool> && cereal_serializable_v<T>;
template <class T>
struct encodable : std::bool_constant<trivially_encodable_v<T> || cereal_codec<T>> {};
template <>
struct encodable<bool> : std::true_type {};
template <class C>
struct encodable<std::basic_string<C>> : std::bool_constant<is_char_v<C>> {};
template <class T>
struct encodable<std::vector<T>> : encodable<T> {};
template <class T, std::size_t N>
struct encodable<std::array<T, N>> : encodable<T> {};
template <class A, class B>
struct encodable<std::pair<A, B>> : std::bool_constant<encodable<A>::value && encodable<B>::value> {
};
template <class... Ts>
struct encodable<std::tuple<Ts...>> : std::bool_constant<(encodable<Ts>::value && ...)> {};
template <class T>
struct encodable<std::optional<T>> : encodable<T> {};
template <class... Ts>
struct encodable<std::variant<Ts...>> : std::bool_constant<(encodable<Ts>::value && ...)> {};
template <class K, class V>
struct encodable<std::map<K, V>> : std::bool_constant<encodable<K>::value && encodable<V>::value> {
};
template <class K, class V>
struct encodable<std::unordered_map<K, V>>
    : std::bool_constant<encodable<K>::value && encodable<V>::value> {};
template <class K>
struct encodable<std::set<K>> : encodable<K> {};
template <class K>
struct encodable<std::unordered_set<K>> : encodable<K> {};
template <class T>
inline constexpr bool encodable_v = encodable<T>::value;

}  // namespace mpx::detail
