// examples/04_shared_memory.cpp — a block of memory shared by processes (Python:
// multiprocessing.shared_memory.SharedMemory), anonymous and named; and a ShareableList.
//
// An anonymous segment (the default) is shared with the children forked after it is made
// and vanishes with its last user, even after kill -9. A named one is visible to any
// process of the user under /dev/shm/<name> until someone calls unlink(); if its creator
// dies first, the creator's tracker unlinks it.
//
// A ShareableList keeps Python's layout: a Python program could open it by name
// (ShareableList(name=...)) and see the same items.
//
// expect: sum of squares = 332833500; named segment says: hello from the child
// expect: list: 3 2.5 'child' None
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <variant>

#include "mpx/process.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/synchronize.hpp"

int main() {
  // Anonymous: two children fill halves of one array, the parent sums it.
  constexpr std::size_t kCount = 1000;
  mpx::SharedMemory block(kCount * sizeof(long));
  auto fill = [&block](std::size_t begin, std::size_t end) {
    auto* numbers = reinterpret_cast<long*>(block.buf().data());
    for (std::size_t i = begin; i < end; ++i)
      numbers[i] = static_cast<long>(i * i);
  };
  mpx::Process low(fill, std::size_t{0}, kCount / 2);
  mpx::Process high(fill, kCount / 2, kCount);
  low.start();
  high.start();
  low.join();
  high.join();
  auto* numbers = reinterpret_cast<const long*>(block.buf().data());
  std::printf("sum of squares = %ld; ", std::accumulate(numbers, numbers + kCount, 0L));

  // Named: a child opens the segment by name, as an unrelated program could.
  std::string name = "mpx-example-" + std::to_string(::getpid());
  auto named = mpx::SharedMemory::create(name, 64);
  mpx::Process writer([name] {
    auto view = mpx::SharedMemory::open(name);
    std::strcpy(reinterpret_cast<char*>(view.buf().data()), "hello from the child");
  });  // the child's view closes when it exits; the name stays
  writer.start();
  writer.join();
  std::printf("named segment says: %s\n", reinterpret_cast<const char*>(named.buf().data()));
  named.unlink();  // the creator removes the name

  // A ShareableList of an int, a float, a str and None; a child changes three of them.
  mpx::ShareableList list{0, 0.0, "nobody", std::monostate{}};
  mpx::Process scorer([&list] {
    list.set(0, 3);
    list.set(1, 2.5);
    list.set(2, "child");  // a str fits the room it was made with (8 bytes here)
  });
  scorer.start();
  scorer.join();
  std::printf("list: %ld %.1f '%s' %s\n", static_cast<long>(list.get<std::int64_t>(0)),
              list.get<double>(1), list.get<std::string>(2).c_str(),
              std::holds_alternative<std::monostate>(list[3]) ? "None" : "?");
  list.shm().unlink();
}
