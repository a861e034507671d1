// ShareableList in CPython's layout (3.11's Lib/multiprocessing/shared_memory.py). With N
// items, in native byte order, every field 8-aligned:
//
//   i64 N | i64 offsets[N + 1] (into the data area; offsets[0] = 0) | data area |
//   char formats[N][8] (a struct format, NUL-padded) | i8 codes[N]
//
// Item i's data lies at offsets[i] of the data area, with offsets[i + 1] - offsets[i]
// bytes of room. Its format and code say what it is now:
//   "q" 0: int  "d" 0: float  "xxxxxxx?" 0: bool (byte 7)  "xxxxxx?x" 3: None (byte 6, 0)
//   "<room>s" 1: str (UTF-8)  "<room>s" 2: bytes — NUL-padded to the room.
#include <bit>
#include <charconv>
#include <cstring>
#include <iterator>
#include <string>
#include <utility>

#include "mpx/errors.hpp"
#include "mpx/shared_memory.hpp"
#include "sys/utf8.hpp"

namespace mpx {

namespace {

using Item = ShareableList::Item;

constexpr std::size_t kWord = 8;
// Python's back-transform codes.
constexpr std::int8_t kValue = 0, kStr = 1, kBytes = 2, kNone = 3;
constexpr char kBoolFormat[] = "xxxxxxx?";
constexpr char kNoneFormat[] = "xxxxxx?x";
// A format is at most 8 characters: "9999999s" is the largest room.
constexpr std::size_t kMaxRoom = 9999999;

std::string_view text_of(const Item& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  const auto& b = std::get<std::vector<std::byte>>(v);
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

bool is_text(const Item& v) {
  return std::holds_alternative<std::string>(v) ||
         std::holds_alternative<std::vector<std::byte>>(v);
}

// The room a new item gets: Python's 8 * (len // 8 + 1) for a str or bytes, else 8.
std::size_t room_for(const Item& v) {
  return is_text(v) ? kWord * (text_of(v).size() / kWord + 1) : kWord;
}

// Refuses the str and bytes items the layout cannot give back as they are.
void check_text(const Item& v) {
  if (!is_text(v)) return;
  const std::string_view t = text_of(v);
  if (!t.empty() && t.back() == '\0')
    throw ValueError(
        "ShareableList: a str or bytes item may not end in a NUL byte (it would "
        "be read back without it)");
  if (std::holds_alternative<std::string>(v) && !sys::valid_utf8(t))
    throw ValueError("ShareableList: a str item must be UTF-8 (store other bytes as bytes)");
}

std::uint64_t load_u64(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store_u64(std::byte* p, std::uint64_t v) noexcept {
  std::memcpy(p, &v, sizeof v);
}

// Python's == between items: numbers (bool, int, float) by value, str with str, bytes
// with bytes, None with None.
bool python_equal(const Item& a, const Item& b) {
  auto number = [](const Item& v, long double& out) {
    if (const auto* x = std::get_if<bool>(&v)) return out = *x, true;
    if (const auto* x = std::get_if<std::int64_t>(&v))
      return out = static_cast<long double>(*x), true;
    if (const auto* x = std::get_if<double>(&v)) return out = *x, true;
    return false;
  };
  long double x, y;
  const bool xn = number(a, x), yn = number(b, y);
  if (xn || yn) {
    if (!(xn && yn)) return false;
    // Two ints compare exactly; long double holds every int64 and double exactly.
    return x == y;
  }
  return a == b;
}

[[noreturn]] void not_a_list(const std::string& why) {
  throw DecodeError("ShareableList: the block does not hold a list: " + why);
}

// A stored format, without its NUL padding.
std::string_view format_of(const std::byte* p) noexcept {
  const char* f = reinterpret_cast<const char*>(p);
  std::size_t n = kWord;
  while (n > 0 && f[n - 1] == '\0')
    --n;
  return {f, n};
}

}  // namespace

Item ShareableList::bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return std::vector<std::byte>(p, p + s.size());
}

std::size_t ShareableList::block_size(std::span<const Item> items) {
  std::size_t rooms = 0;
  for (const Item& v : items) {
    check_text(v);
    const std::size_t room = room_for(v);
    if (room > kMaxRoom)
      throw ValueError("ShareableList: a str or bytes item of " +
                       std::to_string(text_of(v).size()) +
                       " bytes is too long for the layout (at most 9999991)");
    rooms += room;
  }
  return kWord * (items.size() + 2) + rooms + (kWord + 1) * items.size();
}

ShareableList::ShareableList(std::initializer_list<Item> items, bool track)
    : ShareableList(std::span<const Item>(items.begin(), items.size()), track) {}

ShareableList::ShareableList(std::span<const Item> items, bool track)
    : ShareableList(lay_out(SharedMemory::create(block_size(items), track), items)) {}

ShareableList ShareableList::create(std::string_view name, std::span<const Item> items,
                                    bool track) {
  const std::size_t size = block_size(items);
  return lay_out(SharedMemory::create(name, size, track), items);
}

ShareableList ShareableList::open(std::string_view name) {
  return ShareableList(SharedMemory::open(name));
}

ShareableList ShareableList::from_fd(int fd) {
  return ShareableList(SharedMemory::from_fd(fd));
}

ShareableList ShareableList::make_in(SharedMemory shm, std::span<const Item> items) {
  const std::size_t need = block_size(items);
  if (shm.buf().size() < need)
    throw ValueError("ShareableList: the block has " + std::to_string(shm.size()) +
                     " bytes, the items need " + std::to_string(need));
  return lay_out(std::move(shm), items);
}

ShareableList ShareableList::lay_out(SharedMemory shm, std::span<const Item> items) {
  std::byte* p = shm.buf().data();
  store_u64(p, items.size());
  std::uint64_t offset = 0;
  store_u64(p + kWord, offset);
  for (std::size_t i = 0; i < items.size(); ++i) {
    offset += room_for(items[i]);
    store_u64(p + kWord * (i + 2), offset);
  }
  ShareableList list(std::move(shm));
  for (std::size_t i = 0; i < items.size(); ++i)
    list.write(i, items[i]);
  return list;
}

ShareableList::ShareableList(SharedMemory shm) : shm_(std::move(shm)) {
  const std::size_t total = shm_.size();
  const std::byte* p = base();
  if (total < 2 * kWord) not_a_list("it has " + std::to_string(total) + " bytes");
  // Each item takes at least 25 bytes: its offset, 8 of data, its format and its code.
  const std::uint64_t n = load_u64(p);
  if (n > (total - 2 * kWord) / (3 * kWord + 1))
    not_a_list("a length of " + std::to_string(static_cast<std::int64_t>(n)) + " in " +
               std::to_string(total) + " bytes");
  offsets_.resize(n + 1);
  for (std::size_t k = 0; k <= n; ++k)
    offsets_[k] = load_u64(p + kWord * (k + 1));
  if (offsets_[0] != 0) not_a_list("its first offset is not 0");
  for (std::size_t k = 0; k < n; ++k) {
    const std::uint64_t a = offsets_[k], b = offsets_[k + 1];
    if (b <= a || b - a < kWord || b - a > kMaxRoom || b % kWord != 0)
      not_a_list("item " + std::to_string(k) + " has " + std::to_string(b - a) + " bytes of room");
  }
  const std::uint64_t data_start = kWord * (n + 2);
  if (offsets_[n] > total || data_start + offsets_[n] + (kWord + 1) * n > total)
    not_a_list("its items need more than its " + std::to_string(total) + " bytes");
  size_ = static_cast<std::size_t>(n);
}

std::size_t ShareableList::data_at(std::size_t i) const noexcept {
  return kWord * (size_ + 2) + offsets_[i];
}
std::size_t ShareableList::format_at(std::size_t i) const noexcept {
  return kWord * (size_ + 2) + offsets_[size_] + kWord * i;
}
std::size_t ShareableList::code_at(std::size_t i) const noexcept {
  return kWord * (size_ + 2) + offsets_[size_] + kWord * size_ + i;
}

std::size_t ShareableList::position(std::ptrdiff_t i, const char* what) const {
  const auto n = static_cast<std::ptrdiff_t>(size_);
  const std::ptrdiff_t k = i < 0 ? i + n : i;
  if (k < 0 || k >= n) throw IndexError(std::string("ShareableList: ") + what);
  return static_cast<std::size_t>(k);
}

const Item ShareableList::operator[](std::ptrdiff_t i) const {
  const std::size_t k = position(i, "index out of range");
  const std::byte* p = base();
  const std::string_view format = format_of(p + format_at(k));
  const auto code = static_cast<std::int8_t>(p[code_at(k)]);
  const std::byte* d = p + data_at(k);
  if (code == kValue && format == "q") return static_cast<std::int64_t>(load_u64(d));
  if (code == kValue && format == "d") return std::bit_cast<double>(load_u64(d));
  if (code == kValue && format == kBoolFormat) return d[7] != std::byte{0};
  if (code == kNone && format == kNoneFormat) return std::monostate{};
  std::size_t length = 0;
  if ((code == kStr || code == kBytes) && format.size() > 1 && format.back() == 's') {
    const char* end = format.data() + format.size() - 1;
    const auto [at, err] = std::from_chars(format.data(), end, length);
    if (err == std::errc() && at == end && length <= room(k)) {
      while (length > 0 && d[length - 1] == std::byte{0})
        --length;
      if (code == kBytes) return std::vector<std::byte>(d, d + length);
      std::string s(reinterpret_cast<const char*>(d), length);
      if (!sys::valid_utf8(s))
        throw DecodeError("ShareableList: item " + std::to_string(k) +
                          " is a str that is not UTF-8");
      return s;
    }
  }
  throw DecodeError("ShareableList: item " + std::to_string(k) + " has format '" +
                    std::string(format) + "' and code " + std::to_string(code) +
                    ", which no writer makes (a torn or foreign write)");
}

void ShareableList::wrong_type(std::ptrdiff_t i, const Item& item, std::size_t wanted) {
  // Python's names of Item's types, in their order.
  static constexpr const char* kNames[] = {"None",    "a bool", "an int",
                                           "a float", "a str",  "a bytes"};
  static_assert(std::size(kNames) == std::variant_size_v<Item>);
  throw DecodeError("ShareableList: item " + std::to_string(i) + " is " + kNames[item.index()] +
                    ", not " + kNames[wanted]);
}

void ShareableList::set(std::ptrdiff_t i, const Item& value) {
  check_text(value);
  write(position(i, "assignment index out of range"), value);
}

// As Python's __setitem__: the format and code first, then the data.
void ShareableList::write(std::size_t k, const Item& value) {
  std::byte* p = base();
  const std::size_t space = room(k);
  char format[kWord] = {};
  std::int8_t code = kValue;
  std::byte data[kWord] = {};
  std::string_view text;
  if (is_text(value)) {
    text = text_of(value);
    if (text.size() > space)
      throw ValueError("ShareableList: bytes/str item exceeds available storage (" +
                       std::to_string(text.size()) + " bytes, room for " + std::to_string(space) +
                       ")");
    const auto end = std::to_chars(format, format + kWord - 1, space).ptr;  // room <= 9999999
    *end = 's';
    code = std::holds_alternative<std::string>(value) ? kStr : kBytes;
  } else if (const auto* i = std::get_if<std::int64_t>(&value)) {
    format[0] = 'q';
    store_u64(data, static_cast<std::uint64_t>(*i));
  } else if (const auto* f = std::get_if<double>(&value)) {
    format[0] = 'd';
    store_u64(data, std::bit_cast<std::uint64_t>(*f));
  } else if (const auto* b = std::get_if<bool>(&value)) {
    std::memcpy(format, kBoolFormat, kWord);
    data[7] = std::byte{*b};
  } else {
    std::memcpy(format, kNoneFormat, kWord);
    code = kNone;
  }
  std::memcpy(p + format_at(k), format, kWord);
  p[code_at(k)] = static_cast<std::byte>(code);
  std::byte* d = p + data_at(k);
  if (is_text(value)) {
    std::memcpy(d, text.data(), text.size());
    std::memset(d + text.size(), 0, space - text.size());
  } else {
    std::memcpy(d, data, kWord);
  }
}

std::vector<Item> ShareableList::list() const {
  std::vector<Item> out;
  out.reserve(size_);
  for (std::size_t k = 0; k < size_; ++k)
    out.push_back((*this)[static_cast<std::ptrdiff_t>(k)]);
  return out;
}

std::size_t ShareableList::count(const Item& value) const {
  std::size_t n = 0;
  for (std::size_t k = 0; k < size_; ++k)
    n += python_equal((*this)[static_cast<std::ptrdiff_t>(k)], value) ? 1 : 0;
  return n;
}

std::size_t ShareableList::index(const Item& value) const {
  for (std::size_t k = 0; k < size_; ++k)
    if (python_equal((*this)[static_cast<std::ptrdiff_t>(k)], value)) return k;
  throw ValueError("ShareableList::index: the value is not in the list");
}

std::string ShareableList::format() const {
  const std::byte* p = base();
  std::string out;
  for (std::size_t k = 0; k < size_; ++k)
    out += format_of(p + format_at(k));
  return out;
}

}  // namespace mpx
