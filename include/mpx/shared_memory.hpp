// mpx/shared_memory.hpp — SharedMemory: a block of memory shared between processes, and
// ShareableList, a list in one (Python's multiprocessing.shared_memory).
//
//   mpx::SharedMemory shm(1 << 20);                          // anonymous (memfd)
//   auto named = mpx::SharedMemory::create("frames", 4096);  // /dev/shm/frames, mode 0600
//   auto other = mpx::SharedMemory::open("frames");          // in another process
//   auto fresh = mpx::SharedMemory::create(4096);  // a generated name: fresh.name() == "psm_…"
//
// Anonymous segments (the default) have no name: they are shared with children forked
// after construction (or by passing fd()), and vanish with the last process that maps
// them, even after kill -9. Named segments are POSIX shared memory (shm_open), visible to
// unrelated processes of the same user.
//
// Lifetime of a named segment:
// | event                                      | the name in /dev/shm        |
// |--------------------------------------------|-----------------------------|
// | create(name, size)                         | exists                      |
// | close() or destructor (any process)        | stays                       |
// | unlink() (any process)                     | removed                     |
// | an opener exits or is killed               | stays                       |
// | the creator exits or is killed, with the   | removed by the creator's    |
// |   segment not unlinked and track == true   |   tracker (as Python does)  |
// The tracker is a small process (a grandchild, not a child) started at the first
// tracked create() of a process; it holds a pipe from that process and unlinks the names
// that process created and did not unlink when the pipe reaches end of file. Children
// forked later do not inherit it: they start their own when they create segments.
// Only creators register names; opening a segment never makes the tracker unlink it.
//
// Handle semantics: move-only; the object owns one fd and one mapping. Thread safety:
// buf() may be used from any thread; close()/unlink() must not race other calls on the
// same object.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mpx/detail/handoff_trait.hpp"

namespace mpx {

class SharedMemory {
 public:
  // A new anonymous segment of `size` bytes (zero-filled), backed by a memfd.
  // Throws mpx::ValueError when size == 0; std::system_error.
  // OS resources: one fd (O_CLOEXEC) and one mapping, released by close()/destructor.
  explicit SharedMemory(std::size_t size);

  // Creates the named segment `name` ("/name" or "name"; no other '/') of `size` bytes,
  // mode 0600. With `track` (the default) the segment is unlinked when this process
  // ends without having unlinked it, even by kill -9 and even inside create() (Python's
  // resource tracker; the tracker creates the name, so it never exists untracked).
  // Throws mpx::FileExistsError when it exists; mpx::ValueError for size 0 or a bad
  // name (empty, a NUL byte, a '/' past the first character, over 255 bytes);
  // std::system_error.
  static SharedMemory create(std::string_view name, std::size_t size, bool track = true);
  // Creates a named segment under a fresh unique name, "psm_" and 8 hex digits (Python's
  // SharedMemory(create=True, size=n)); pass name() to the processes that open it.
  static SharedMemory create(std::size_t size, bool track = true);
  // Opens the existing named segment `name`; size() is its size. Never unlinks it.
  // Throws mpx::FileNotFoundError when it does not exist; mpx::ValueError for a bad
  // name; std::system_error.
  static SharedMemory open(std::string_view name);
  // Maps the segment behind `fd` (e.g. one received over a connection); the fd is
  // duplicated, the caller keeps its own. Throws std::system_error.
  static SharedMemory from_fd(int fd);

  SharedMemory(SharedMemory&& other) noexcept;
  SharedMemory& operator=(SharedMemory&& other) noexcept;
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  // Closes (never unlinks).
  ~SharedMemory();

  // The name without a leading '/', as given to create()/open(); empty when anonymous.
  const std::string& name() const noexcept { return name_; }
  // Exactly the size asked for at creation.
  std::size_t size() const noexcept { return size_; }
  // The memory. Throws mpx::InvalidStateError after close().
  std::span<std::byte> buf() const;
  // The fd behind the segment, to pass to another process (-1 after close()).
  int fd() const noexcept { return fd_; }
  bool closed() const noexcept { return addr_ == nullptr; }

  // Unmaps the memory and closes the fd; the segment lives on in other processes and,
  // when named, in /dev/shm. Idempotent.
  void close() noexcept;
  // Removes the name from /dev/shm (the memory lives on while mapped). Any process may
  // call it, once; a no-op for anonymous segments. Throws mpx::FileNotFoundError when
  // the name is gone already.
  void unlink();

 private:
  SharedMemory(std::string name, int fd, void* addr, std::size_t size, bool tracked) noexcept;

  std::string name_;
  int fd_ = -1;
  void* addr_ = nullptr;
  std::size_t size_ = 0;
  bool tracked_ = false;
};

namespace detail {
// The index of T among a variant's types (their count when T is none of them).
template <class T, class... Ts>
constexpr std::size_t variant_index(const std::variant<Ts...>*) noexcept {
  std::size_t i = 0;
  (void)((std::is_same_v<T, Ts> || (++i, false)) || ...);
  return i;
}
}  // namespace detail

// A list of fixed length whose items live in a SharedMemory block, in CPython's
// layout (Python's multiprocessing.shared_memory.ShareableList): a Python program opens
// the same block by name (ShareableList(name=...)) and sees and changes the same items.
//
//   mpx::ShareableList sl{42, 2.5, true, "text", mpx::ShareableList::bytes("\x01\x02"),
//                         std::monostate{}};               // a new block, "psm_…"
//   auto same = mpx::ShareableList::open(sl.shm().name());  // any process
//   same.set(0, "hi");  // an item may change type; a str or bytes must fit its room
//   sl.get<std::string>(0) == "hi";  sl[-1] holds std::monostate (Python's None)
//   sl.shm().close(); sl.shm().unlink();    // as in Python
//
// Items are Python's int (std::int64_t), float (double), bool, str (std::string, UTF-8),
// bytes (std::vector<std::byte>) and None (std::monostate). Each item has the room it was
// created with: 8 bytes, or for a str or bytes its length rounded up past the next
// multiple of 8; set() may store any item that fits there. Unlike Python, which strips
// trailing NULs on reading, a str or bytes ending in a NUL byte is refused (ValueError)
// rather than read back shorter; a str is checked to be UTF-8 (ValueError), as Python's
// str always is; and a str's room comes from its length in bytes, not characters (Python
// 3.11 truncates a non-ASCII str that way).
//
// No lock, as in Python: a reader racing a set() of the same item may see a torn item (a
// DecodeError); guard items several processes change with an mpx::Lock. Move-only; the
// object owns its SharedMemory (shm()), closed, never unlinked, by the destructor: the
// creator's tracker unlinks the name when it ends (as SharedMemory::create).
class ShareableList {
 public:
  using Item =
      std::variant<std::monostate, bool, std::int64_t, double, std::string, std::vector<std::byte>>;
  // A bytes item from a string's bytes (Python's b"...").
  static Item bytes(std::string_view s);

  // ShareableList(sequence): a new block under a fresh "psm_" name holding `items`.
  // Throws mpx::ValueError for an item it cannot hold (see above; a str or bytes over
  // 9999991 bytes); std::system_error.
  ShareableList(std::initializer_list<Item> items, bool track = true);
  explicit ShareableList(std::span<const Item> items, bool track = true);
  // ShareableList(sequence, name=name). Throws as SharedMemory::create, and as above.
  static ShareableList create(std::string_view name, std::span<const Item> items,
                              bool track = true);
  // ShareableList(name=name): attaches to an existing list, made by mpx or by Python.
  // Throws mpx::FileNotFoundError; mpx::DecodeError when the block is not a list.
  static ShareableList open(std::string_view name);
  // The list in the block behind `fd` (a spawn child's handoff); the fd is duplicated.
  static ShareableList from_fd(int fd);
  // The bytes a block needs to hold `items`; throws mpx::ValueError as above.
  static std::size_t block_size(std::span<const Item> items);
  // Lays a new list of `items` out at the start of `block` (at least block_size(items)
  // bytes; ValueError otherwise), a block of any kind: an anonymous one makes a list
  // shared with forked children only; SharedMemoryManager uses it for the blocks its
  // server makes.
  static ShareableList make_in(SharedMemory block, std::span<const Item> items);

  // len(sl).
  std::size_t size() const noexcept { return size_; }
  // sl[i], negative from the end: a copy of the item, read from the block (const, so
  // that Python's `sl[i] = v` does not compile: write sl.set(i, v)). Throws
  // mpx::IndexError; mpx::DecodeError when the item's bytes are not an item (a torn or
  // foreign write); InvalidStateError after shm().close().
  const Item operator[](std::ptrdiff_t i) const;
  // sl[i] as a T, one of Item's types. Throws as operator[], and mpx::DecodeError when
  // the item holds another type ("item 2 is a str, not a float").
  template <class T>
  T get(std::ptrdiff_t i) const {
    constexpr std::size_t wanted = detail::variant_index<T>(static_cast<const Item*>(nullptr));
    static_assert(wanted < std::variant_size_v<Item>,
                  "mpx: a ShareableList item is a std::int64_t, double, bool, std::string, "
                  "std::vector<std::byte> or std::monostate (None)");
    Item item = (*this)[i];
    if (T* value = std::get_if<T>(&item)) return std::move(*value);
    wrong_type(i, item, wanted);
  }
  // sl[i] = value. Throws mpx::IndexError; mpx::ValueError when a str or bytes does not
  // fit the item's room ("exceeds available storage") or is refused (see above).
  void set(std::ptrdiff_t i, const Item& value);
  // list(sl).
  std::vector<Item> list() const;
  // sl.count(value), sl.index(value): items compare as in Python (1 == 1.0 == true).
  // index() throws mpx::ValueError when no item equals `value`.
  std::size_t count(const Item& value) const;
  std::size_t index(const Item& value) const;
  // sl.format: the struct formats of the items, joined ("q", "d", "xxxxxxx?", "16s"...).
  std::string format() const;
  // sl.shm: close() and unlink() as in Python.
  SharedMemory& shm() noexcept { return shm_; }
  const SharedMemory& shm() const noexcept { return shm_; }

 private:
  friend struct detail::Handoff<ShareableList>;
  // Checks the layout of the list in `shm` (mpx::DecodeError).
  explicit ShareableList(SharedMemory shm);
  // make_in() for items block_size() checked, in a block of at least that size.
  static ShareableList lay_out(SharedMemory block, std::span<const Item> items);
  std::size_t position(std::ptrdiff_t i, const char* what) const;
  // Throws the DecodeError of get<T>() (`wanted`: T's index among Item's types).
  [[noreturn]] static void wrong_type(std::ptrdiff_t i, const Item& item, std::size_t wanted);
  std::byte* base() const { return shm_.buf().data(); }
  // Where the item's data, its format (8 bytes) and its code (1 byte) lie in the block.
  std::size_t data_at(std::size_t i) const noexcept;
  std::size_t format_at(std::size_t i) const noexcept;
  std::size_t code_at(std::size_t i) const noexcept;
  std::size_t room(std::size_t i) const noexcept { return offsets_[i + 1] - offsets_[i]; }
  void write(std::size_t i, const Item& value);

  SharedMemory shm_;
  std::size_t size_ = 0;
  std::vector<std::uint64_t> offsets_;  // size_ + 1, into the data area (checked at open)
};

// A SharedMemory handed to a spawn or forkserver child (mpx/context.hpp): its fd
// travels, and the child maps the same segment (from_fd; the name is not kept).
namespace detail {
template <>
struct Handoff<SharedMemory> {
  static void save(const SharedMemory& shm, HandoffWriter& w) { w.put_fd(shm.fd()); }
  static SharedMemory load(HandoffReader& r) {
    const int fd = r.take_fd();
    struct Close {
      int fd;
      ~Close() { ::close(fd); }
    } close_it{fd};
    return SharedMemory::from_fd(fd);
  }
};
// A ShareableList likewise (its block's fd; the child checks the layout again).
template <>
struct Handoff<ShareableList> {
  static void save(const ShareableList& sl, HandoffWriter& w) {
    Handoff<SharedMemory>::save(sl.shm(), w);
  }
  static ShareableList load(HandoffReader& r) {
    return ShareableList(Handoff<SharedMemory>::load(r));
  }
};
}  // namespace detail

}  // namespace mpx
