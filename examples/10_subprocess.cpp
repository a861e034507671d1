// 10 — subprocess: run other programs (Python: subprocess). The third way to use more
// processes, beside Process and Pool: start a program, feed it input, read its output,
// time it out. Same names as Python's module, in namespace mpx::subprocess.
//
// expect: uname says: Linux
// expect: wc counted 3 lines
// expect: sorted: apple banana cherry
// expect: the shell says: hello
// expect: Command '\['sleep', '10'\]' timed out after 0\.2 seconds
// expect: \[Errno 2\] No such file or directory: 'no-such-program'
// expect: returned non-zero exit status 3, stderr: oops
#include <chrono>
#include <cstdio>
#include <string>

#include "mpx/subprocess.hpp"

namespace sp = mpx::subprocess;
using namespace std::chrono_literals;

int main() {
  // subprocess.run(["uname", "-s"], capture_output=True, text=True)
  auto r = sp::run({"uname", "-s"}, {.capture_output = true, .text = true});
  std::printf("uname says: %s", r.stdout.c_str());

  // Feed input: subprocess.run(["wc", "-l"], input=..., capture_output=True)
  r = sp::run({"wc", "-l"}, {.input = "one\ntwo\nthree\n", .capture_output = true});
  std::printf("wc counted %d lines\n", std::stoi(r.stdout));

  // A pipeline: printf | sort, as with Popen(stdout=PIPE) in Python.
  sp::Popen producer({"printf", "cherry\\napple\\nbanana\\n"}, {.stdout = sp::PIPE});
  sp::Popen sorter({"sort"}, {.stdin = producer.stdout().fileno(), .stdout = sp::PIPE});
  producer.stdout().close();  // only sort reads it now
  std::string sorted;
  for (std::string line = sorter.stdout().readline(); !line.empty();
       line = sorter.stdout().readline())
    sorted += " " + line.substr(0, line.size() - 1);
  producer.wait();
  sorter.wait();
  std::printf("sorted:%s\n", sorted.c_str());

  // subprocess.getoutput("echo hello")
  std::printf("the shell says: %s\n", sp::getoutput("echo hello").c_str());

  // A timeout kills the program and raises TimeoutExpired.
  try {
    sp::run({"sleep", "10"}, {.timeout = 200ms});
  } catch (const sp::TimeoutExpired& e) {
    std::printf("%s\n", e.what());
  }

  // A program that cannot run is an error in the caller, not a child exiting 127.
  try {
    sp::run({"no-such-program"});
  } catch (const mpx::FileNotFoundError& e) {
    std::printf("%s\n", e.what());
  }

  // check=True: a non-zero exit status raises CalledProcessError with the output.
  try {
    sp::run({"sh", "-c", "echo oops >&2; exit 3"}, {.capture_output = true, .check = true});
  } catch (const sp::CalledProcessError& e) {
    std::printf("returned non-zero exit status %d, stderr: %s", e.returncode(), e.stderr().c_str());
  }
}
