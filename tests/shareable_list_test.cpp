// mpx::ShareableList (mpx/shared_memory.hpp): items of every kind, set() within an item's
// room, Python's indexing, count() and index(), what it refuses, blocks that hold no list,
// other processes, and CPython's own ShareableList (the system's /usr/bin/python3) on the
// same block, both ways.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "mpx/process.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/subprocess.hpp"
#include "support/leak_check.hpp"
#include "support/python.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using Item = mpx::ShareableList::Item;
namespace sp = mpx::subprocess;
using mpx_test::have_python;
using mpx_test::kPython;

// Unlinks the list's name when the test ends, however it ends.
struct Unlinked {
  mpx::ShareableList list;
  ~Unlinked() {
    try {
      list.shm().unlink();
    } catch (...) {
    }
  }
};

Unlinked named_list(std::initializer_list<Item> items) {
  return {mpx::ShareableList::create(mpx_test::unique_name("sl"), items)};
}

TEST(ShareableList, HoldsEveryKindOfItem) {
  mpx::ShareableList sl{42,
                        -7,
                        2.5,
                        true,
                        false,
                        "text",
                        "",
                        "h\xc3\xa9llo w\xc3\xb6rld",
                        mpx::ShareableList::bytes("\x01\x02"),
                        std::monostate{}};
  EXPECT_EQ(sl.shm().name().rfind("psm_", 0), 0u) << sl.shm().name();
  const std::vector<Item> want{std::int64_t{42},
                               std::int64_t{-7},
                               2.5,
                               true,
                               false,
                               std::string("text"),
                               std::string(),
                               std::string("h\xc3\xa9llo w\xc3\xb6rld"),
                               mpx::ShareableList::bytes("\x01\x02"),
                               std::monostate{}};
  ASSERT_EQ(sl.size(), want.size());
  EXPECT_EQ(sl.list(), want);
  for (std::size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(sl[static_cast<std::ptrdiff_t>(i)], want[i]) << "item " << i;
  // A str of 13 bytes gets 16 of room, an empty one 8, as in Python.
  EXPECT_EQ(sl.format(), "qqdxxxxxxx?xxxxxxx?8s8s16s8sxxxxxx?x");
  // Python's block size for these items: 8 + 11 offsets + 88 of data + 10 formats + 10 codes.
  EXPECT_EQ(sl.shm().size(), 8u + 88 + 88 + 80 + 10);
  sl.shm().unlink();

  mpx::ShareableList empty{};
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_TRUE(empty.list().empty());
  EXPECT_EQ(empty.format(), "");
  empty.shm().unlink();
}

TEST(ShareableList, GetReadsAnItemAsTheTypeItHolds) {
  auto u = named_list({42, "text", std::monostate{}});
  mpx::ShareableList& sl = u.list;
  EXPECT_EQ(sl.get<std::int64_t>(0), 42);
  EXPECT_EQ(sl.get<std::string>(-2), "text");
  EXPECT_EQ(sl.get<std::monostate>(2), std::monostate{});
  try {
    (void)sl.get<double>(0);
    ADD_FAILURE() << "get<double> of an int returned";
  } catch (const mpx::DecodeError& e) {
    EXPECT_STREQ(e.what(), "ShareableList: item 0 is an int, not a float");
  }
  try {
    (void)sl.get<std::int64_t>(-1);
    ADD_FAILURE() << "get<std::int64_t> of None returned";
  } catch (const mpx::DecodeError& e) {
    EXPECT_STREQ(e.what(), "ShareableList: item -1 is None, not an int");
  }
  EXPECT_THROW((void)sl.get<std::string>(3), mpx::IndexError);
}

TEST(ShareableList, SetChangesAnItemWithinItsRoom) {
  auto u = named_list({1, "hello", 3.0});
  mpx::ShareableList& sl = u.list;
  sl.set(0, "8 bytes!");  // an int's 8 bytes of room hold a str of 8
  EXPECT_EQ(sl[0], Item(std::string("8 bytes!")));
  EXPECT_THROW(sl.set(0, "9 bytes!!"), mpx::ValueError);
  EXPECT_EQ(sl[0], Item(std::string("8 bytes!")));  // unchanged
  sl.set(1, 3.5);  // a str's room holds a number, and a str again after it
  EXPECT_EQ(sl[1], Item(3.5));
  sl.set(1, mpx::ShareableList::bytes("abcdefgh"));
  EXPECT_EQ(sl[1], mpx::ShareableList::bytes("abcdefgh"));
  sl.set(1, "ab");  // shorter: the rest of the room is cleared
  EXPECT_EQ(sl[1], Item(std::string("ab")));
  sl.set(2, std::monostate{});
  sl.set(-3, std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(sl.list(), (std::vector<Item>{std::numeric_limits<std::int64_t>::min(),
                                          std::string("ab"), std::monostate{}}));
  EXPECT_EQ(sl.format(), "q8sxxxxxx?x");
}

TEST(ShareableList, IndexesFromTheEndAndChecksTheRange) {
  auto u = named_list({10, 20, 30});
  mpx::ShareableList& sl = u.list;
  EXPECT_EQ(sl[-1], Item(std::int64_t{30}));
  EXPECT_EQ(sl[-3], Item(std::int64_t{10}));
  EXPECT_THROW((void)sl[3], mpx::IndexError);
  EXPECT_THROW((void)sl[-4], mpx::IndexError);
  EXPECT_THROW(sl.set(3, 1), mpx::IndexError);
  EXPECT_THROW(sl.set(-4, 1), mpx::IndexError);
}

TEST(ShareableList, CountAndIndexCompareAsPythonDoes) {
  auto u = named_list({1, 1.0, true, "1", mpx::ShareableList::bytes("1"), std::monostate{},
                       std::int64_t{1} << 60, (std::int64_t{1} << 53) + 1});
  mpx::ShareableList& sl = u.list;
  EXPECT_EQ(sl.count(1), 3u);  // 1 == 1.0 == True
  EXPECT_EQ(sl.count(true), 3u);
  EXPECT_EQ(sl.count(1.0), 3u);
  EXPECT_EQ(sl.count("1"), 1u);  // a str is not bytes, nor a number
  EXPECT_EQ(sl.count(mpx::ShareableList::bytes("1")), 1u);
  EXPECT_EQ(sl.count(std::monostate{}), 1u);
  EXPECT_EQ(sl.index(std::monostate{}), 5u);
  EXPECT_EQ(sl.index(0x1p60), 6u);  // exactly 2**60
  EXPECT_EQ(sl.count(0x1p53), 0u);  // 2**53 + 1 is not the float 2**53
  EXPECT_EQ(sl.index("1"), 3u);
  EXPECT_THROW((void)sl.index(2), mpx::ValueError);
}

TEST(ShareableList, RefusesItemsItCouldNotGiveBack) {
  const std::string name = mpx_test::unique_name("sl");
  // A trailing NUL would be stripped on reading (as Python strips it); not UTF-8.
  EXPECT_THROW(mpx::ShareableList::create(name, std::vector<Item>{std::string("a\0", 2)}),
               mpx::ValueError);
  EXPECT_THROW(mpx::ShareableList::create(name, std::vector<Item>{std::string("\xff")}),
               mpx::ValueError);
  EXPECT_THROW(mpx::ShareableList::create(name, std::vector<Item>{std::string(9999992, 'x')}),
               mpx::ValueError);
  EXPECT_TRUE(mpx_test::shm_entries().empty());  // no block was made for them
  auto u = named_list({"ok", mpx::ShareableList::bytes("ok")});
  EXPECT_THROW(u.list.set(0, std::string("a\0", 2)), mpx::ValueError);
  EXPECT_THROW(u.list.set(1, mpx::ShareableList::bytes(std::string_view("\0", 1))),
               mpx::ValueError);
  EXPECT_THROW(u.list.set(0, "\xc3"), mpx::ValueError);
  EXPECT_EQ(u.list.list(), (std::vector<Item>{std::string("ok"), mpx::ShareableList::bytes("ok")}));
}

TEST(ShareableList, ABlockThatHoldsNoListIsADecodeError) {
  EXPECT_THROW(mpx::ShareableList::open(mpx_test::unique_name("none")), mpx::FileNotFoundError);
  auto check = [](std::size_t size, auto&& fill) {
    const std::string name = mpx_test::unique_name("junk");
    mpx::SharedMemory shm = mpx::SharedMemory::create(name, size);
    fill(shm.buf());
    EXPECT_THROW(mpx::ShareableList::open(name), mpx::DecodeError);
    shm.unlink();
  };
  auto put = [](std::span<std::byte> b, std::size_t at, std::int64_t v) {
    std::memcpy(b.data() + at, &v, sizeof v);
  };
  check(8, [](std::span<std::byte>) {});                                      // too small
  check(4096, [&](std::span<std::byte> b) { put(b, 0, -1); });                // length -1
  check(4096, [&](std::span<std::byte> b) { put(b, 0, 1000); });              // 1000 items
  check(4096, [&](std::span<std::byte> b) { put(b, 0, 1), put(b, 16, 4); });  // 4 bytes of room
  check(4096, [&](std::span<std::byte> b) { put(b, 0, 1), put(b, 8, 8), put(b, 16, 16); });
  check(4096, [&](std::span<std::byte> b) { put(b, 0, 1), put(b, 16, 8192); });  // past the end

  // A well-formed list whose item says something no writer says (a torn write).
  auto u = named_list({5});
  mpx::SharedMemory raw = mpx::SharedMemory::open(u.list.shm().name());
  raw.buf()[8 * 3 + 8 + 8] = std::byte{1};  // item 0's code: str, with format "q"
  EXPECT_THROW((void)u.list[0], mpx::DecodeError);
  EXPECT_THROW((void)u.list.list(), mpx::DecodeError);
  u.list.set(0, 6);  // a set() rewrites the item whole
  EXPECT_EQ(u.list[0], Item(std::int64_t{6}));

  // A str whose format claims more than the item's room (here the whole block and more).
  auto v = named_list({"ab", 7});
  mpx::SharedMemory raw2 = mpx::SharedMemory::open(v.list.shm().name());
  const std::size_t formats = 8 * 4 + 16;  // 2 items: data from byte 32, 16 bytes of it
  std::memcpy(raw2.buf().data() + formats, "1000s\0\0\0", 8);
  EXPECT_THROW((void)v.list[0], mpx::DecodeError);
  EXPECT_EQ(v.list[1], Item(std::int64_t{7}));
}

TEST(ShareableList, AClosedBlockIsAnInvalidState) {
  auto u = named_list({1});
  const std::string name = u.list.shm().name();
  u.list.shm().close();
  EXPECT_THROW((void)u.list[0], mpx::InvalidStateError);
  EXPECT_THROW(u.list.set(0, 2), mpx::InvalidStateError);
  mpx::SharedMemory::open(name).unlink();
}

TEST(ShareableList, OtherProcessesSeeTheSameItems) {
  auto u = named_list({0, "start"});
  const std::string name = u.list.shm().name();
  mpx::Process p([&name] {
    mpx::ShareableList mine = mpx::ShareableList::open(name);
    if (mine[1] != Item(std::string("start"))) mpx::exit(3);
    mine.set(0, 7);
    mine.set(1, "child");
  });
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  EXPECT_EQ(u.list.list(), (std::vector<Item>{std::int64_t{7}, std::string("child")}));
}

TEST(ShareableList, AListInAnAnonymousBlockIsSharedWithForkedChildren) {
  const std::vector<Item> items{std::int64_t{1}, std::string("a")};
  EXPECT_THROW(mpx::ShareableList::make_in(mpx::SharedMemory(16), items), mpx::ValueError);
  mpx::ShareableList sl =
      mpx::ShareableList::make_in(mpx::SharedMemory(mpx::ShareableList::block_size(items)), items);
  EXPECT_TRUE(sl.shm().name().empty());
  mpx::Process p([&sl] { sl.set(0, 2); });
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  EXPECT_EQ(sl.list(), (std::vector<Item>{std::int64_t{2}, std::string("a")}));
}

// CPython's ShareableList on a block mpx made: it reads every item as mpx wrote it, and
// mpx reads what it writes. The script leaves the name to mpx (Python 3.11's tracker
// would unlink it at exit otherwise, gh-82300).
const char* kPythonReads = R"(
import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import ShareableList
sl = ShareableList(name=sys.argv[1])
resource_tracker.unregister(sl.shm._name, 'shared_memory')
print(ascii(list(sl)), sl.format, len(sl))
sl[0] = 'from py'
sl[1] = None
sl[4] = b'\x00\xff'
sl[5] = 2**62
sl.shm.close()
)";

TEST(ShareableList, PythonReadsAndChangesAListMpxMade) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  auto u = named_list(
      {42, 2.5, true, "h\xc3\xa9", mpx::ShareableList::bytes("\x01\x02"), std::monostate{}});
  sp::Popen py({kPython, "-c", kPythonReads, u.list.shm().name()},
               {.stdout = sp::PIPE, .stderr = sp::PIPE});
  mpx_test::Watchdog watchdog(30s, "python3", [pid = py.pid()] { ::kill(pid, SIGKILL); });
  const auto [out, err] = py.communicate();
  EXPECT_EQ(py.wait(), 0) << err;
  EXPECT_EQ(err, "");
  EXPECT_EQ(out, "[42, 2.5, True, 'h\\xe9', b'\\x01\\x02', None] qdxxxxxxx?8s8sxxxxxx?x 6\n");
  EXPECT_EQ(
      u.list.list(),
      (std::vector<Item>{std::string("from py"), std::monostate{}, true, std::string("h\xc3\xa9"),
                         mpx::ShareableList::bytes(std::string_view("\x00\xff", 2)),
                         std::int64_t{1} << 62}));
}

// A list CPython made, read and changed by mpx while Python waits; Python then reads what
// mpx wrote, and unlinks its block.
const char* kPythonMakes = R"(
import sys
from multiprocessing.shared_memory import ShareableList
sl = ShareableList([7, -1.5, False, 'caf\u00e9 ol\u00e9', b'raw', None, 'x' * 20], name=sys.argv[1])
print(sl.format, flush=True)
sys.stdin.readline()
print(ascii(list(sl)))
sl.shm.close()
sl.shm.unlink()
)";

TEST(ShareableList, MpxReadsAndChangesAListPythonMade) {
  if (!have_python()) GTEST_SKIP() << "no " << kPython << ": CPython interop not tested";
  const std::string name = mpx_test::unique_name("py");
  sp::Popen py({kPython, "-c", kPythonMakes, name},
               {.stdin = sp::PIPE, .stdout = sp::PIPE, .stderr = sp::PIPE});
  mpx_test::Watchdog watchdog(30s, "python3", [pid = py.pid()] { ::kill(pid, SIGKILL); });
  const std::string format = py.stdout().readline();
  ASSERT_EQ(format, "qdxxxxxxx?16s8sxxxxxx?x24s\n");
  {
    mpx::ShareableList sl = mpx::ShareableList::open(name);
    EXPECT_EQ(sl.list(),
              (std::vector<Item>{
                  std::int64_t{7}, -1.5, false, std::string("caf\xc3\xa9 ol\xc3\xa9"),
                  mpx::ShareableList::bytes("raw"), std::monostate{}, std::string(20, 'x')}));
    EXPECT_EQ(sl.format(), "qdxxxxxxx?16s8sxxxxxx?x24s");
    sl.set(0, "mpx");
    sl.set(2, std::int64_t{-3});
    sl.set(5, true);
    sl.set(6, std::string(24, 'y'));  // all of its room
    EXPECT_THROW(sl.set(3, std::string(17, 'z')), mpx::ValueError);
  }
  const auto [out, err] = py.communicate("go\n");
  EXPECT_EQ(py.wait(), 0) << err;
  EXPECT_EQ(err, "");
  EXPECT_EQ(
      out, "['mpx', -1.5, -3, 'caf\\xe9 ol\\xe9', b'raw', True, '" + std::string(24, 'y') + "']\n");
}

}  // namespace
