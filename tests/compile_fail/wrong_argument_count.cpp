// apply_async with too few arguments for the function.
// expect-error: mpx: the function cannot be called with these arguments
#include "mpx/pool.hpp"

int add(int a, int b) {
  return a + b;
}

int main() {
  mpx::Pool pool(2);
  return pool.apply_async(add, 1).get();
}
