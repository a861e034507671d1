// An argument whose type has no codec, sent to a process pool.
// expect-error: mpx: an argument \(or a map's element\) of this call has no codec
#include <string>

#include "mpx/futures.hpp"

struct Opaque {
  std::string text;  // not trivially copyable, and no serialize()
};
int use(const Opaque& o) {
  return static_cast<int>(o.text.size());
}

int main() {
  mpx::ProcessPoolExecutor ex(2);
  auto f = ex.submit(use, Opaque{"x"});
  return f.result();
}
