// A Lock made by its constructor, given to a Context's Process: it is shared by fork only.
// expect-error: mpx: an argument of a Context's Process cannot reach a spawn
#include "mpx/context.hpp"

void use(mpx::Lock lock) {
  lock.acquire();
}

int main() {
  mpx::Lock lock;
  mpx::Process p = mpx::get_context("spawn").Process(use, lock);
  p.start();
}
