// The README's example, built against an installed mpx by tests/packaging/run.sh.
#include <mpx/mpx.hpp>

#include <cstdio>
#include <ranges>

int square(int x) {
  return x * x;
}

int main() {
  mpx::Queue<int> q;
  mpx::Process p([&] { q.put(42); });  // child process (fork)
  p.start();
  int answer = q.get();
  p.join();
  mpx::Pool pool(2);
  auto squares = pool.map(square, std::views::iota(0, 5));
  std::printf("consumer ok: %d %d %d\n", answer, squares[4], *p.exitcode());
}
