// Two builds of this program (MPX_VARIANT a and b, another build id each) in one job:
// mpx::mpi::init refuses to run tasks across them (tests/mpi/CMakeLists.txt). Exits 0
// only when init refused with the message that names the other rank and the cause.
#include <cstdio>
#include <regex>

#include "mpx/errors.hpp"
#include "mpx/mpi.hpp"

int main(int argc, char** argv) {
  try {
    mpx::mpi::init(argc, argv);
  } catch (const mpx::ProcessError& e) {
    std::printf("refused: %s\n", e.what());
    static const std::regex expected("rank 1 on [^:]+: .*binary changed on disk or differs");
    return std::regex_search(e.what(), expected) ? 0 : 2;
  }
  std::printf("variant %s accepted\n", MPX_VARIANT);
  return 1;
}
