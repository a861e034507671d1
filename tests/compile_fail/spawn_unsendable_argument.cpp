// An argument with no codec given to a Context's Process: it cannot reach a spawned child.
// expect-error: mpx: an argument of a Context's Process cannot reach a spawn
#include <string>

#include "mpx/context.hpp"

struct Opaque {
  std::string text;  // not trivially copyable, and no serialize()
};
void use(Opaque o) {
  static_cast<void>(o);
}

int main() {
  mpx::Process p = mpx::get_context("spawn").Process(use, Opaque{"x"});
  p.start();
}
