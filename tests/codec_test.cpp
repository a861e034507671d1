// Tests of mpx/codec.hpp: round trips of every supported type, the type check, and
// hostile bytes (truncation, corrupt lengths, trailing bytes) giving DecodeError only.
#include "mpx/codec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "mpx/errors.hpp"

namespace codec_test {

struct Point {
  double x;
  double y;
  int id;
  bool operator==(const Point&) const = default;
};

enum class Color : std::uint8_t { kRed, kGreen, kBlue };
enum Plain { kOne = 1, kTwo = 2 };

// A user type that is not trivially copyable and has a cereal serialize().
struct Person {
  std::string name;
  int age = 0;
  std::vector<std::string> tags;
  std::map<std::string, double> scores;
  std::optional<Point> home;
  bool active = false;
  bool operator==(const Person&) const = default;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, age, tags, scores, home, active);
  }
};

// A user type with split load/save.
class Counter {
 public:
  Counter() = default;
  explicit Counter(std::vector<long> values) : values_(std::move(values)) {}
  const std::vector<long>& values() const { return values_; }
  bool operator==(const Counter&) const = default;

  template <class Archive>
  void save(Archive& ar) const {
    ar(values_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(values_);
  }

 private:
  std::vector<long> values_;
};

// A recursive user type: hostile bytes could nest it arbitrarily deep.
struct Tree {
  int value = 0;
  std::vector<Tree> children;
  bool operator==(const Tree&) const = default;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children);
  }
};

// Shared pointers: cereal sends an object once and later references by id.
struct Shared {
  std::shared_ptr<int> a;
  std::shared_ptr<int> b;
  std::shared_ptr<std::string> c;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(a, b, c);
  }
};

// A user type whose serialize() throws while saving.
struct Refuses {
  int value = 0;
  std::string text;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value);
    throw std::runtime_error("refused");
  }
};

// Moving it throws: a way to make a std::variant valueless.
struct ThrowsOnMove {
  ThrowsOnMove() = default;
  ThrowsOnMove(const ThrowsOnMove&) = default;
  ThrowsOnMove(ThrowsOnMove&&) { throw std::runtime_error("no moving"); }
  ThrowsOnMove& operator=(const ThrowsOnMove&) = default;
  ThrowsOnMove& operator=(ThrowsOnMove&&) = default;
  template <class Archive>
  void serialize(Archive&) {}
};

}  // namespace codec_test

namespace {

using codec_test::Color;
using codec_test::Counter;
using codec_test::Person;
using codec_test::Plain;
using codec_test::Point;
using codec_test::Shared;
using codec_test::Tree;
using mpx::Bytes;
using mpx::DecodeError;

template <class T>
T round_trip(const T& value) {
  return mpx::decode<T>(mpx::encode(value));
}

template <class T>
void expect_round_trip(const T& value) {
  // EXPECT_TRUE, not EXPECT_EQ: gtest cannot print every type here (char8_t strings).
  EXPECT_TRUE(round_trip(value) == value) << mpx::type_name<T>();
}

// Every strict prefix of the message must be rejected with DecodeError.
template <class T>
void expect_every_truncation_throws(const T& value) {
  const Bytes full = mpx::encode(value);
  for (std::size_t n = 0; n < full.size(); ++n) {
    std::span<const std::byte> prefix(full.data(), n);
    EXPECT_THROW(mpx::decode<T>(prefix), DecodeError)
        << mpx::type_name<T>() << " truncated to " << n << " of " << full.size() << " bytes";
  }
}

std::string decode_error_message(const auto& f) {
  try {
    f();
  } catch (const DecodeError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no DecodeError thrown";
  return {};
}

// A message of type T whose payload is `payload`.
template <class T>
Bytes message(std::initializer_list<std::uint8_t> payload) {
  Bytes out(sizeof(std::uint64_t));
  const std::uint64_t tag = mpx::type_tag<T>();
  std::memcpy(out.data(), &tag, sizeof(tag));
  for (std::uint8_t b : payload)
    out.push_back(static_cast<std::byte>(b));
  return out;
}

// ---------------------------------------------------------------------------
// Round trips

TEST(CodecTest, ArithmeticTypesRoundTripIncludingExtremes) {
  expect_round_trip(0);
  expect_round_trip(-42);
  expect_round_trip(std::numeric_limits<int>::min());
  expect_round_trip(std::numeric_limits<std::uint64_t>::max());
  expect_round_trip(std::numeric_limits<std::int8_t>::min());
  expect_round_trip(static_cast<short>(-7));
  expect_round_trip(3.5);
  expect_round_trip(-0.25f);
  expect_round_trip(static_cast<long double>(1.0) / 3);
  expect_round_trip(std::numeric_limits<double>::infinity());
  expect_round_trip(true);
  expect_round_trip(false);
  expect_round_trip('x');
  expect_round_trip(L'\u00e9');
  expect_round_trip(u8'a');
  expect_round_trip(u'\u2603');
  expect_round_trip(U'\U0001F600');
  expect_round_trip(std::byte{0xab});
}

TEST(CodecTest, EnumsRoundTrip) {
  expect_round_trip(Color::kBlue);
  expect_round_trip(codec_test::kTwo);
}

TEST(CodecTest, TriviallyCopyableStructTravelsAsItsBytes) {
  static_assert(mpx::is_trivially_encodable_v<Point>);
  const Point p{1.5, -2.5, 7};
  const Bytes msg = mpx::encode(p);
  EXPECT_EQ(msg.size(), sizeof(std::uint64_t) + sizeof(Point));
  EXPECT_EQ(mpx::decode<Point>(msg), p);
}

TEST(CodecTest, IntMessageIsTagPlusFourBytes) {
  const Bytes msg = mpx::encode(0x01020304);
  ASSERT_EQ(msg.size(), 12u);
  EXPECT_EQ(msg.capacity(), 12u);  // one allocation, exactly the message
  EXPECT_EQ(msg[8], std::byte{0x04});
}

TEST(CodecTest, VectorOfTriviallyCopyableElementsIsOneBlock) {
  const std::vector<int> v(1000, 5);
  const Bytes msg = mpx::encode(v);
  EXPECT_EQ(msg.size(), 8u + 2 + v.size() * sizeof(int));  // tag, two-byte count, the ints
  EXPECT_EQ(msg.capacity(), msg.size());
  EXPECT_EQ(std::memcmp(msg.data() + 10, v.data(), v.size() * sizeof(int)), 0);
}

TEST(CodecTest, EncodeAppendIntoRoomyBufferDoesNotReallocate) {
  Bytes buffer;
  buffer.reserve(256);
  const std::byte* data = buffer.data();
  mpx::encode_append(Point{1, 2, 3}, buffer);
  mpx::encode_append(std::string("text"), buffer);
  mpx::encode_append(std::vector<std::string>{"a", "b"}, buffer);
  EXPECT_EQ(buffer.data(), data);
}

TEST(CodecTest, TriviallyEncodableTraitMatchesTheWireFormat) {
  static_assert(mpx::is_trivially_encodable_v<int>);
  static_assert(mpx::is_trivially_encodable_v<Color>);
  static_assert(mpx::is_trivially_encodable_v<std::array<double, 4>>);
  static_assert(mpx::is_trivially_encodable_v<std::monostate>);
  static_assert(!mpx::is_trivially_encodable_v<bool>);
  static_assert(!mpx::is_trivially_encodable_v<std::array<bool, 2>>);
  static_assert(!mpx::is_trivially_encodable_v<std::optional<int>>);
  static_assert(!mpx::is_trivially_encodable_v<std::variant<int, float>>);
  static_assert(!mpx::is_trivially_encodable_v<std::string>);
  static_assert(!mpx::is_trivially_encodable_v<int*>);
  static_assert(!mpx::is_trivially_encodable_v<std::string_view>);
  SUCCEED();
}

TEST(CodecTest, StringsRoundTripIncludingEmptyAndBinary) {
  expect_round_trip(std::string());
  expect_round_trip(std::string("hello"));
  expect_round_trip(std::string("a\0b\xff", 4));
  expect_round_trip(std::string(100000, 'z'));
  expect_round_trip(std::wstring(L"wide"));
  expect_round_trip(std::u8string(u8"utf8"));
  expect_round_trip(std::u16string(u"utf16"));
  expect_round_trip(std::u32string(U"utf32"));
}

TEST(CodecTest, StringMessageIsTagLengthAndCharacters) {
  const Bytes msg = mpx::encode(std::string("abc"));
  ASSERT_EQ(msg.size(), 8u + 1 + 3);
  EXPECT_EQ(msg[8], std::byte{3});
  EXPECT_EQ(msg[9], std::byte{'a'});
}

TEST(CodecTest, VectorsRoundTrip) {
  expect_round_trip(std::vector<int>{});
  expect_round_trip(std::vector<int>{1, 2, 3});
  expect_round_trip(std::vector<double>(1000, 0.5));
  expect_round_trip(std::vector<std::string>{"", "a", "bc"});
  expect_round_trip(std::vector<std::vector<int>>{{}, {1}, {2, 3}});
  expect_round_trip(std::vector<Point>{{1, 2, 3}, {4, 5, 6}});
  expect_round_trip(std::vector<std::uint8_t>(300, 9));  // a two-byte length
}

TEST(CodecTest, VectorOfBoolRoundTripsForEveryLengthAroundAByte) {
  for (std::size_t n = 0; n <= 17; ++n) {
    std::vector<bool> v(n);
    for (std::size_t i = 0; i < n; ++i)
      v[i] = (i * 7 + 3) % 3 == 0;
    expect_round_trip(v);
  }
}

TEST(CodecTest, ArraysRoundTrip) {
  expect_round_trip(std::array<int, 3>{1, 2, 3});
  expect_round_trip(std::array<int, 0>{});
  expect_round_trip(std::array<std::string, 2>{"x", "yz"});
  expect_round_trip(std::array<bool, 3>{true, false, true});
}

TEST(CodecTest, PairsAndTuplesRoundTrip) {
  expect_round_trip(std::pair<int, std::string>{1, "one"});
  expect_round_trip(std::tuple<int, double, std::string, bool>{1, 2.0, "three", true});
  expect_round_trip(std::tuple<int>{5});
  expect_round_trip(std::tuple<>{});
  expect_round_trip(
      std::pair<std::pair<int, int>, std::tuple<char, std::string>>{{1, 2}, {'c', "s"}});
}

TEST(CodecTest, OptionalsRoundTripEmptyAndEngaged) {
  expect_round_trip(std::optional<int>{});
  expect_round_trip(std::optional<int>{3});
  expect_round_trip(std::optional<std::string>{"s"});
  expect_round_trip(std::optional<std::optional<int>>{std::optional<int>{}});
  expect_round_trip(std::vector<std::optional<int>>{1, std::nullopt, 3});
}

TEST(CodecTest, VariantsRoundTripEachAlternative) {
  using V = std::variant<std::monostate, int, std::string, std::vector<double>>;
  expect_round_trip(V{});
  expect_round_trip(V{7});
  expect_round_trip(V{std::string("str")});
  expect_round_trip(V{std::vector<double>{1.0, 2.0}});
  using Same = std::variant<int, int>;
  const auto second = round_trip(Same{std::in_place_index<1>, 4});
  EXPECT_EQ(second.index(), 1u);
  EXPECT_EQ(std::get<1>(second), 4);
}

TEST(CodecTest, MapsAndSetsRoundTrip) {
  expect_round_trip(std::map<int, std::string>{});
  expect_round_trip(std::map<int, std::string>{{1, "a"}, {2, "b"}});
  expect_round_trip(std::map<std::string, std::vector<int>>{{"x", {1}}, {"y", {}}});
  expect_round_trip(std::unordered_map<std::string, int>{{"a", 1}, {"b", 2}, {"c", 3}});
  expect_round_trip(std::set<std::string>{"b", "a"});
  expect_round_trip(std::unordered_set<long>{1, 5, 9});
  expect_round_trip(std::set<std::pair<int, int>>{{1, 2}, {0, 5}});
}

TEST(CodecTest, DeeplyNestedCombinationsRoundTrip) {
  using Entry = std::optional<std::tuple<std::string, bool>>;
  using Item = std::variant<int, Entry, std::set<int>>;
  using Nested = std::map<std::string, std::vector<Item>>;
  Nested value;
  value["a"].resize(2);
  value["a"][0].emplace<0>(1);
  value["a"][1].emplace<1>().emplace("deep", true);
  value["b"].resize(2);
  value["b"][0].emplace<2>() = {3, 1};
  value["b"][1].emplace<1>();
  value["c"];
  expect_round_trip(value);
}

TEST(CodecTest, CerealUserTypesRoundTrip) {
  Person p;
  p.name = "Ada";
  p.age = 36;
  p.tags = {"math", "engines"};
  p.scores = {{"logic", 9.5}, {"poetry", 7.0}};
  p.home = Point{51.5, -0.1, 1};
  p.active = true;
  expect_round_trip(p);
  expect_round_trip(Person{});
  expect_round_trip(Counter(std::vector<long>(200, -3)));  // a two-byte length prefix
  expect_round_trip(std::vector<Person>{p, Person{}, p});
  expect_round_trip(std::map<int, Counter>{{1, Counter({1, 2})}, {2, Counter()}});
  Tree t{1, {Tree{2, {}}, Tree{3, {Tree{4, {}}}}}};
  expect_round_trip(t);
}

// ---------------------------------------------------------------------------
// Type tags and names

TEST(CodecTest, TypeNamesAreReadable) {
  EXPECT_EQ(mpx::type_name<int>(), "int");
  EXPECT_EQ(mpx::type_name<std::string>(), "std::string");
  EXPECT_EQ(mpx::type_name<std::vector<int>>(), "std::vector<int>");
  EXPECT_EQ((mpx::type_name<std::map<std::string, std::vector<double>>>()),
            "std::map<std::string, std::vector<double>>");
  EXPECT_EQ((mpx::type_name<std::variant<int, std::optional<bool>>>()),
            "std::variant<int, std::optional<bool>>");
  EXPECT_EQ((mpx::type_name<std::array<long, 3>>()), "std::array<long, 3>");
  EXPECT_EQ((mpx::type_name<std::array<std::string, 2>>()), "std::array<std::string, 2>");
  EXPECT_EQ(mpx::type_name<Point>(), "codec_test::Point");
  EXPECT_EQ(mpx::type_name<Person>(), "codec_test::Person");
}

TEST(CodecTest, TypeTagsDifferBetweenTypes) {
  const std::set<std::uint64_t> tags = {
      mpx::type_tag<int>(),
      mpx::type_tag<unsigned>(),
      mpx::type_tag<long>(),
      mpx::type_tag<float>(),
      mpx::type_tag<bool>(),
      mpx::type_tag<std::string>(),
      mpx::type_tag<std::vector<int>>(),
      mpx::type_tag<std::vector<unsigned>>(),
      mpx::type_tag<std::vector<std::vector<int>>>(),
      mpx::type_tag<std::pair<int, std::pair<int, int>>>(),
      mpx::type_tag<std::pair<std::pair<int, int>, int>>(),
      mpx::type_tag<std::tuple<int, int>>(),
      mpx::type_tag<std::map<int, int>>(),
      mpx::type_tag<std::unordered_map<int, int>>(),
      mpx::type_tag<std::array<int, 2>>(),
      mpx::type_tag<std::array<int, 3>>(),
      mpx::type_tag<std::array<std::string, 2>>(),
      mpx::type_tag<std::array<std::string, 3>>(),
      mpx::type_tag<Point>(),
      mpx::type_tag<Person>(),
  };
  EXPECT_EQ(tags.size(), 20u);
  EXPECT_EQ(mpx::type_tag<int>(), mpx::type_tag<int>());
}

TEST(CodecTest, DecodingAsAnotherTypeNamesBothTypes) {
  const std::string what = decode_error_message([] {
    mpx::decode<std::vector<int>>(mpx::encode(std::map<std::string, int>{{"a", 1}}));
  });
  EXPECT_NE(what.find("std::vector<int>"), std::string::npos) << what;
  EXPECT_NE(what.find("std::map<std::string, int>"), std::string::npos) << what;
}

TEST(CodecTest, DecodingAUserTypeAsAnotherNamesBothTypes) {
  const std::string what = decode_error_message([] { mpx::decode<Point>(mpx::encode(Person{})); });
  EXPECT_NE(what.find("codec_test::Point"), std::string::npos) << what;
  EXPECT_NE(what.find("codec_test::Person"), std::string::npos) << what;
}

TEST(CodecTest, SameSizedTypesAreStillTellApart) {
  EXPECT_THROW(mpx::decode<float>(mpx::encode(1)), DecodeError);
  EXPECT_THROW(mpx::decode<unsigned>(mpx::encode(1)), DecodeError);
  EXPECT_THROW(mpx::decode<std::vector<std::uint8_t>>(mpx::encode(std::string("ab"))), DecodeError);
}

TEST(CodecTest, AnUnknownTagIsReportedInHex) {
  Bytes msg = mpx::encode(1);
  msg[0] ^= std::byte{0xff};
  const std::string what = decode_error_message([&] { mpx::decode<int>(msg); });
  EXPECT_NE(what.find("0x"), std::string::npos) << what;
  EXPECT_NE(what.find("int"), std::string::npos) << what;
}

// ---------------------------------------------------------------------------
// Hostile bytes

TEST(CodecTest, EveryTruncationThrowsDecodeError) {
  expect_every_truncation_throws(12345);
  expect_every_truncation_throws(std::string("truncate me"));
  expect_every_truncation_throws(std::vector<std::string>{"a", "bc", "", "def"});
  expect_every_truncation_throws(std::map<int, std::string>{{1, "x"}, {2, "yy"}});
  expect_every_truncation_throws(std::variant<int, std::string>{std::string("v")});
  expect_every_truncation_throws(std::optional<std::pair<int, double>>{{1, 2.0}});
  expect_every_truncation_throws(
      std::vector<bool>{true, false, true, true, false, true, true, true, true});
  expect_every_truncation_throws(std::vector<std::uint8_t>(200, 1));
  Person p;
  p.name = "Grace";
  p.tags = {"navy", "cobol"};
  p.scores = {{"x", 1.0}};
  p.home = Point{};
  expect_every_truncation_throws(p);
  expect_every_truncation_throws(Tree{1, {Tree{2, {}}}});
}

TEST(CodecTest, EmptyInputThrowsDecodeError) {
  EXPECT_THROW(mpx::decode<int>(std::span<const std::byte>()), DecodeError);
}

TEST(CodecTest, TrailingBytesAreRejected) {
  Bytes msg = mpx::encode(std::vector<int>{1, 2});
  msg.push_back(std::byte{0});
  EXPECT_THROW(mpx::decode<std::vector<int>>(msg), DecodeError);
  Bytes two = mpx::encode(7);
  mpx::encode_append(8, two);
  EXPECT_THROW(mpx::decode<int>(two), DecodeError);
}

TEST(CodecTest, DecodingAVectorInPlaceChecksTypeLengthAndCount) {
  std::vector<int> out(3);
  mpx::detail::decode_vector_into(mpx::encode(std::vector<int>{1, 2, 3}), std::span<int>(out));
  EXPECT_EQ(out, (std::vector<int>{1, 2, 3}));
  std::vector<int> two(2), four(4);
  EXPECT_THROW(
      mpx::detail::decode_vector_into(mpx::encode(std::vector<int>{1, 2, 3}), std::span<int>(two)),
      DecodeError);
  EXPECT_THROW(
      mpx::detail::decode_vector_into(mpx::encode(std::vector<int>{1, 2, 3}), std::span<int>(four)),
      DecodeError);
  EXPECT_THROW(
      mpx::detail::decode_vector_into(mpx::encode(std::vector<long>{1, 2, 3}), std::span<int>(out)),
      DecodeError);
  Bytes truncated = mpx::encode(std::vector<int>{1, 2, 3});
  truncated.pop_back();
  EXPECT_THROW(mpx::detail::decode_vector_into(truncated, std::span<int>(out)), DecodeError);
  Bytes trailing = mpx::encode(std::vector<int>{1, 2, 3});
  trailing.push_back(std::byte{0});
  EXPECT_THROW(mpx::detail::decode_vector_into(trailing, std::span<int>(out)), DecodeError);
}

TEST(CodecTest, VectorsWrittenAndReadElementByElementMatchTheirMessages) {
  Bytes out = mpx::encode(std::string("before"));  // appends after what is there
  const std::size_t at = out.size();
  std::byte* dst = mpx::detail::append_vector_head<int>(3, out);
  for (int i = 0; i < 3; ++i) {
    const int v = 10 * (i + 1);
    std::memcpy(dst + i * sizeof(int), &v, sizeof v);
  }
  const std::span<const std::byte> msg = std::span<const std::byte>(out).subspan(at);
  EXPECT_EQ(mpx::decode<std::vector<int>>(msg), (std::vector<int>{10, 20, 30}));
  Bytes same = mpx::encode(std::vector<int>{10, 20, 30});
  EXPECT_TRUE(std::equal(msg.begin(), msg.end(), same.begin(), same.end()));
  std::size_t n = 0;
  auto elements = mpx::detail::vector_elements<int>(same, n);
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(elements.size(), 3 * sizeof(int));
  EXPECT_THROW(mpx::detail::vector_elements<long>(same, n), DecodeError);
  same.pop_back();
  EXPECT_THROW(mpx::detail::vector_elements<int>(same, n), DecodeError);
}

TEST(CodecTest, HugeCountsThrowWithoutAllocating) {
  // Counts up to 2^64-1 in front of a few bytes: each must fail its bounds check before
  // any allocation (an attempt to allocate would throw bad_alloc or trip ASan instead).
  const std::initializer_list<std::uint8_t> huge = {0xff, 0xff, 0xff, 0xff, 0xff,
                                                    0xff, 0xff, 0xff, 0xff, 0x01};
  const std::initializer_list<std::uint8_t> large = {0x80, 0x80, 0x80, 0x80, 0x01, 1, 2, 3};
  for (const auto& payload : {huge, large}) {
    EXPECT_THROW(mpx::decode<std::string>(message<std::string>(payload)), DecodeError);
    EXPECT_THROW(mpx::decode<std::vector<int>>(message<std::vector<int>>(payload)), DecodeError);
    EXPECT_THROW(mpx::decode<std::vector<std::string>>(message<std::vector<std::string>>(payload)),
                 DecodeError);
    EXPECT_THROW(mpx::decode<std::vector<bool>>(message<std::vector<bool>>(payload)), DecodeError);
    EXPECT_THROW((mpx::decode<std::map<int, int>>(message<std::map<int, int>>(payload))),
                 DecodeError);
    EXPECT_THROW(mpx::decode<std::unordered_set<int>>(message<std::unordered_set<int>>(payload)),
                 DecodeError);
  }
}

TEST(CodecTest, HugeSizesInsideCerealTypesThrowWithoutAllocating) {
  // Person starts with its name: a u64 size. Claim 2^62 characters.
  Bytes msg = mpx::encode(Person{});
  const std::size_t size_at = 8 + 1;  // tag, one-byte length prefix
  const std::uint64_t huge = std::uint64_t{1} << 62;
  std::memcpy(msg.data() + size_at, &huge, sizeof(huge));
  EXPECT_THROW(mpx::decode<Person>(msg), DecodeError);
  // Counter is a vector<long>: claim as many longs as bytes follow, which passes the size
  // check but not the read.
  Bytes counter = mpx::encode(Counter({1}));
  const std::uint64_t claim = 8;
  std::memcpy(counter.data() + size_at, &claim, sizeof(claim));
  EXPECT_THROW(mpx::decode<Counter>(counter), DecodeError);
}

TEST(CodecTest, OverlongLengthIsRejected) {
  // 1 spelled in two bytes: only the shortest spelling is valid.
  EXPECT_THROW(mpx::decode<std::string>(message<std::string>({0x81, 0x00, 'a'})), DecodeError);
  // Eleven continuation bytes: more than a 64-bit length can need.
  EXPECT_THROW(mpx::decode<std::string>(message<std::string>(
                   {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00})),
               DecodeError);
  EXPECT_THROW(mpx::decode<std::string>(message<std::string>(
                   {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02})),
               DecodeError);
}

TEST(CodecTest, InvalidFlagsAndIndexesAreRejected) {
  EXPECT_THROW(mpx::decode<bool>(message<bool>({2})), DecodeError);
  EXPECT_THROW(mpx::decode<std::optional<int>>(message<std::optional<int>>({7, 0, 0, 0, 0})),
               DecodeError);
  using V = std::variant<int, std::string>;
  EXPECT_THROW(mpx::decode<V>(message<V>({2, 0, 0, 0, 0})), DecodeError);
  EXPECT_THROW(mpx::decode<std::vector<bool>>(message<std::vector<bool>>({3, 0xff})),
               DecodeError);  // padding bits set
  // A cereal bool (Person::active, the last byte) that is neither 0 nor 1.
  Bytes person = mpx::encode(Person{});
  person.back() = std::byte{2};
  EXPECT_THROW(mpx::decode<Person>(person), DecodeError);
}

TEST(CodecTest, DuplicateKeysAreRejected) {
  EXPECT_THROW((mpx::decode<std::map<std::uint8_t, std::uint8_t>>(
                   message<std::map<std::uint8_t, std::uint8_t>>({2, 1, 10, 1, 11}))),
               DecodeError);
  EXPECT_THROW(mpx::decode<std::unordered_set<std::uint8_t>>(
                   message<std::unordered_set<std::uint8_t>>({2, 5, 5})),
               DecodeError);
}

TEST(CodecTest, UnreadBytesInsideACerealValueAreRejected) {
  Bytes msg = mpx::encode(Counter(std::vector<long>{}));
  // Grow the length prefix by one and add a byte that cereal will not read.
  msg[8] = static_cast<std::byte>(static_cast<std::uint8_t>(msg[8]) + 1);
  msg.push_back(std::byte{0});
  EXPECT_THROW(mpx::decode<Counter>(msg), DecodeError);
}

TEST(CodecTest, SharedPointersKeepTheirSharingAcrossARoundTrip) {
  Shared s;
  s.a = std::make_shared<int>(5);
  s.b = s.a;
  s.c = std::make_shared<std::string>("text");
  const Shared back = round_trip(s);
  ASSERT_TRUE(back.a && back.c);
  EXPECT_EQ(back.a, back.b);
  EXPECT_EQ(*back.a, 5);
  EXPECT_EQ(*back.c, "text");
}

TEST(CodecTest, ASharedPointerReferringToAnObjectOfAnotherTypeIsRejected) {
  Shared s;
  s.a = std::make_shared<int>(5);
  Bytes msg = mpx::encode(s);  // ... a: new id 1, 5; b: null (id 0); c: null (id 0)
  const std::uint32_t id_of_a = 1;
  std::memcpy(msg.data() + msg.size() - sizeof(id_of_a), &id_of_a, sizeof(id_of_a));
  const std::string what = decode_error_message([&] { mpx::decode<Shared>(msg); });
  EXPECT_NE(what.find("another type"), std::string::npos) << what;
}

TEST(CodecTest, DeeplyNestedHostileCerealInputIsRejectedNotOverflowed) {
  // Tree{value, children}: each level is 4 bytes of value and an 8-byte count of one.
  Bytes payload;
  const int levels = 100000;
  for (int i = 0; i < levels; ++i) {
    const int value = i;
    const std::uint64_t one = 1;
    const auto* v = reinterpret_cast<const std::byte*>(&value);
    const auto* c = reinterpret_cast<const std::byte*>(&one);
    payload.insert(payload.end(), v, v + sizeof(value));
    payload.insert(payload.end(), c, c + sizeof(one));
  }
  Bytes msg(8);
  const std::uint64_t tag = mpx::type_tag<Tree>();
  std::memcpy(msg.data(), &tag, sizeof(tag));
  std::uint64_t length = payload.size();
  while (length >= 0x80) {
    msg.push_back(static_cast<std::byte>((length & 0x7f) | 0x80));
    length >>= 7;
  }
  msg.push_back(static_cast<std::byte>(length));
  msg.insert(msg.end(), payload.begin(), payload.end());
  const std::string what = decode_error_message([&] { mpx::decode<Tree>(msg); });
  EXPECT_NE(what.find("nesting"), std::string::npos) << what;
}

TEST(CodecTest, EncodeAppendThatThrowsLeavesTheBufferAsItWas) {
  Bytes out = mpx::encode(1);
  const Bytes before = out;
  EXPECT_THROW(mpx::encode_append(std::vector<codec_test::Refuses>(3), out), std::runtime_error);
  EXPECT_EQ(out, before);
}

TEST(CodecTest, EncodingAValuelessVariantThrowsValueError) {
  std::variant<int, codec_test::ThrowsOnMove> v = 1;
  EXPECT_THROW(v.emplace<1>(codec_test::ThrowsOnMove{}), std::runtime_error);
  ASSERT_TRUE(v.valueless_by_exception());
  Bytes out;
  EXPECT_THROW(mpx::encode_append(v, out), mpx::ValueError);
  EXPECT_TRUE(out.empty());
}

TEST(CodecTest, EncodeAppendAppendsWholeMessages) {
  Bytes out = mpx::encode(std::string("first"));
  const std::size_t first = out.size();
  mpx::encode_append(std::vector<int>{1, 2}, out);
  EXPECT_EQ(mpx::decode<std::string>(std::span(out).first(first)), "first");
  EXPECT_EQ(mpx::decode<std::vector<int>>(std::span(out).subspan(first)), (std::vector<int>{1, 2}));
}

}  // namespace
