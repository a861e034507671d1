// A capturing lambda given to a process pool (it cannot travel to the workers).
// expect-error: mpx: a process pool can only send portable callables
#include <vector>

#include "mpx/pool.hpp"

int main() {
  int offset = 3;
  mpx::Pool pool(2);
  std::vector<int> r = pool.map([offset](int x) { return x + offset; }, std::vector<int>{1, 2});
}
