// A Barrier given to a Context's Process: it is shared through fork only.
// expect-error: mpx: an argument of a Context's Process cannot reach a spawn
#include "mpx/context.hpp"

void use(mpx::Barrier barrier) {
  barrier.wait();
}

int main() {
  mpx::Barrier barrier(2);
  mpx::Process p = mpx::get_context("spawn").Process(use, barrier);
  p.start();
}
