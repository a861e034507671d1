// map of a two-argument function over single elements (starmap was meant).
// expect-error: mpx: the function cannot be called with one element of the range
// max-errors: 3
#include <vector>

#include "mpx/pool.hpp"

int add(int a, int b) {
  return a + b;
}

int main() {
  mpx::ThreadPool pool(2);
  for (int r : pool.imap(add, std::vector<int>{1, 2, 3}))
    (void)r;
}
