// Two builds of this program (MPX_VARIANT a and b, another build id each) in one job:
// mpx::mpi::init refuses to run tasks across them (tests/mpi/CMakeLists.txt).
#include <cstdio>

#include "mpx/errors.hpp"
#include "mpx/mpi.hpp"

int main(int argc, char** argv) {
  try {
    mpx::mpi::init(argc, argv);
  } catch (const mpx::ProcessError& e) {
    std::printf("refused: %s\n", e.what());
    return 0;
  }
  std::printf("variant %s accepted\n", MPX_VARIANT);
  return 1;
}
