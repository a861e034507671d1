// A result type with no codec, from a process pool's map.
// expect-error: mpx: the function's result type has no codec
#include <string>
#include <vector>

#include "mpx/pool.hpp"

struct Opaque {
  std::string text;
};
Opaque make(int) {
  return {};
}

int main() {
  mpx::Pool pool(2);
  auto results = pool.map(make, std::vector<int>{1, 2, 3});
}
