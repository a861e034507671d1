// Python's sl[i] = v written as such: sl[i] is a copy of the item, so assigning to it
// would store nothing; it does not compile (write sl.set(i, v)).
// expect-error: passing .+const mpx::ShareableList::Item.+discards qualifiers
#include "mpx/shared_memory.hpp"

int main() {
  mpx::ShareableList sl{1, 2};
  sl[0] = 5;
}
