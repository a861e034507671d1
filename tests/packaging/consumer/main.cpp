// Built against an installed mpx by tests/packaging/run.sh.
#include <mpx/mpx.hpp>

#include <iostream>

int main() {
  try {
    throw mpx::Empty();
  } catch (const mpx::Error& e) {
    std::cout << "consumer ok: " << e.what() << "\n";
  }
  return 0;
}
