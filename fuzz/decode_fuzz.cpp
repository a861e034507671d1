// libFuzzer target for mpx::decode: arbitrary bytes, decoded as one of several types,
// must give a value or a DecodeError — never a crash, a sanitizer report, or an
// allocation out of proportion to the input.
//
// Input: a selector byte, then the payload. The low bits of the selector pick the type;
// with the high bit clear the payload is prefixed with that type's tag (so the fuzzer
// explores payloads without having to guess 8-byte tags), with it set the payload is
// decoded as it is (exploring the tag check). A value that decodes must re-encode to
// bytes that decode to the same encoding again.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "mpx/codec.hpp"
#include "mpx/errors.hpp"

namespace fuzz {

struct Point {
  std::int32_t x;
  std::int32_t y;
};

// A user type serialized by cereal, with the containers cereal reads sizes for.
struct Record {
  std::string name;
  std::vector<std::int64_t> values;
  std::map<std::string, std::vector<std::string>> index;
  std::optional<Point> where;
  std::variant<std::monostate, int, std::string> extra;
  bool flag = false;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, values, index, where, extra, flag);
  }
};

// Recursive, so that hostile input can try to nest it without end.
struct Tree {
  std::int32_t value = 0;
  std::vector<Tree> children;
  std::unique_ptr<Tree> next;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children, next);
  }
};

}  // namespace fuzz

namespace {

template <class T>
void check(std::span<const std::byte> message) {
  T value;
  try {
    value = mpx::decode<T>(message);
  } catch (const mpx::DecodeError&) {
    return;
  }
  const mpx::Bytes once = mpx::encode(value);
  const mpx::Bytes twice = mpx::encode(mpx::decode<T>(once));
  if (once != twice) {
    std::fprintf(stderr, "re-encoding a decoded %s changed its bytes\n",
                 mpx::type_name<T>().c_str());
    std::abort();
  }
}

// For unordered containers, whose encoding follows their (unspecified) iteration order:
// the value must survive a round trip.
template <class T>
void check_value(std::span<const std::byte> message) {
  T value;
  try {
    value = mpx::decode<T>(message);
  } catch (const mpx::DecodeError&) {
    return;
  }
  if (!(mpx::decode<T>(mpx::encode(value)) == value)) {
    std::fprintf(stderr, "a decoded %s did not survive a round trip\n",
                 mpx::type_name<T>().c_str());
    std::abort();
  }
}

template <class T, bool kByValue = false>
void run(std::span<const std::byte> payload, bool raw) {
  mpx::Bytes message;
  message.reserve((raw ? 0 : sizeof(std::uint64_t)) + payload.size());
  if (!raw) {
    message.resize(sizeof(std::uint64_t));
    const std::uint64_t tag = mpx::type_tag<T>();
    std::memcpy(message.data(), &tag, sizeof(tag));
  }
  message.insert(message.end(), payload.begin(), payload.end());
  // Decode from an exactly-sized heap copy, so that ASan sees any read past the end.
  if constexpr (kByValue) {
    check_value<T>(message);
  } else {
    check<T>(message);
  }
}

using Variant = std::variant<std::monostate, int, std::string, std::vector<double>,
                             std::optional<bool>, std::pair<char, std::u16string>>;
using Tuple = std::tuple<int, std::string, std::vector<bool>, std::pair<char, std::set<long>>,
                         std::array<std::string, 2>>;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  const std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  const bool raw = (selector & 0x80) != 0;
  switch (selector & 0x7f) {
    case 0:
      run<std::vector<std::string>>(payload, raw);
      break;
    case 1:
      run<std::map<int, std::string>>(payload, raw);
      break;
    case 2:
      run<Variant>(payload, raw);
      break;
    case 3:
      run<fuzz::Record>(payload, raw);
      break;
    case 4:
      run<Tuple>(payload, raw);
      break;
    case 5:
      run<fuzz::Tree>(payload, raw);
      break;
    case 6:
      run<std::vector<std::vector<std::uint16_t>>>(payload, raw);
      break;
    case 7:
      run<std::map<std::string, std::vector<std::optional<fuzz::Point>>>>(payload, raw);
      break;
    case 8:
      run<std::set<std::vector<bool>>>(payload, raw);
      break;
    case 9:
      run<std::string>(payload, raw);
      break;
    default:
      break;
  }
  return 0;
}
