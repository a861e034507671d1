// ShareableList::get<T> with a T no item can hold (Python's int is std::int64_t).
// expect-error: mpx: a ShareableList item is a std::int64_t, double, bool, std::string
#include "mpx/shared_memory.hpp"

int main() {
  mpx::ShareableList sl{1, 2};
  return sl.get<int>(0);
}
