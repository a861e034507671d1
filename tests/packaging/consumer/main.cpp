// The README's example, built against an installed mpx by tests/packaging/run.sh with
// -Wall -Wextra -Werror: the documented option spellings must compile cleanly.
#include <mpx/mpx.hpp>

#include <cstdio>
#include <ranges>

int square(int x) {
  return x * x;
}

int main() {
  mpx::Queue<int> q;
  mpx::Process p(mpx::ProcessOptions{.name = "w"}, [&] { q.put(42); });  // child (fork)
  p.start();
  int answer = q.get();
  p.join();
  mpx::Thread t(mpx::ThreadOptions{.name = "t"}, [] {});
  t.start();
  t.join();
  auto run = mpx::subprocess::RunOptions{.capture_output = true};
  mpx::Pool pool(2, mpx::PoolOptions{.maxtasksperchild = 1000});
  auto map_options = mpx::MapOptions{.chunksize = 2};  // as Executor::map takes it
  static_cast<void>(map_options);
  auto squares = pool.map(square, std::views::iota(0, 5));
  std::printf("consumer ok: %d %d %d %d\n", answer, squares[4], *p.exitcode(),
              run.capture_output ? 1 : 0);
}
