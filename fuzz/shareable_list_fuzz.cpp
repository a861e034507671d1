// libFuzzer target for ShareableList's reading of a block (mpx/shared_memory.hpp): the
// input is the whole block, as a foreign or broken writer could leave it. Opening it must
// end with a list or a DecodeError; every item of a list must read as an item or a
// DecodeError; and set() must store what it is given (or refuse a str too long for its
// room with ValueError), after which the item reads back as given. Never a crash, a
// sanitizer report, or a read outside the block.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "mpx/errors.hpp"
#include "mpx/shared_memory.hpp"

namespace {

using Item = mpx::ShareableList::Item;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "unexpected outcome: %s\n", what);
  std::abort();
}

// The item read at i, or nothing for a DecodeError; anything else aborts.
bool read(const mpx::ShareableList& sl, std::ptrdiff_t i, Item& out) {
  try {
    out = sl[i];
    return true;
  } catch (const mpx::DecodeError&) {
    return false;
  } catch (const std::exception& e) {
    fail(e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mpx::SharedMemory block(size == 0 ? 1 : size);
  if (size != 0) std::memcpy(block.buf().data(), data, size);
  std::optional<mpx::ShareableList> sl;
  try {
    sl.emplace(mpx::ShareableList::from_fd(block.fd()));
  } catch (const mpx::DecodeError&) {
    return 0;
  } catch (const std::exception& e) {
    fail(e.what());
  }
  const auto n = static_cast<std::ptrdiff_t>(sl->size());
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    Item item;
    if (!read(*sl, i, item)) continue;
    // A str or bytes is read from inside the block (its mapping may extend past the block
    // in the same page, where an over-long read would not fault).
    if (const auto* t = std::get_if<std::string>(&item); t && t->size() > size)
      fail("a str longer than the block");
    if (const auto* b = std::get_if<std::vector<std::byte>>(&item); b && b->size() > size)
      fail("a bytes longer than the block");
    try {
      (void)sl->count(item);  // reads every item: another may be torn
    } catch (const mpx::DecodeError&) {
    } catch (const std::exception& e) {
      fail(e.what());
    }
  }
  (void)sl->format();
  // Rewrite every item with a value chosen by the input, and read it back.
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const std::uint8_t pick = size != 0 ? data[static_cast<std::size_t>(i) % size] : 0;
    Item value;
    switch (pick % 5) {
      case 0:
        value = std::int64_t{pick} - 128;
        break;
      case 1:
        value = pick / 7.0;
        break;
      case 2:
        value = (pick & 8) != 0;
        break;
      case 3:
        value = std::string(pick % 24, 'a');
        break;
      default:
        value = std::monostate{};
        break;
    }
    try {
      sl->set(i, value);
    } catch (const mpx::ValueError&) {
      continue;  // a str longer than the item's room
    } catch (const std::exception& e) {
      fail(e.what());
    }
    Item back;
    if (!read(*sl, i, back) || back != value) fail("an item does not read back as set");
  }
  return 0;
}
