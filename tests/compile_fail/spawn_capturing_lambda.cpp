// A capturing lambda given to a Context's Process (it cannot reach a spawned child).
// expect-error: mpx: a Context's Process \(spawn or forkserver start method\) can only
#include "mpx/context.hpp"

int main() {
  int offset = 3;
  mpx::Process p = mpx::get_context("spawn").Process([offset] { mpx::exit(offset); });
  p.start();
}
