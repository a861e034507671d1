// 05 — Pipe: a two-way channel between processes (Python: multiprocessing.Pipe).
//
//   from multiprocessing import Process, Pipe
//   def f(conn):
//       conn.send([42, None, 'hello']); conn.close()
//   parent_conn, child_conn = Pipe()
//   p = Process(target=f, args=(child_conn,)); p.start()
//   print(parent_conn.recv()); p.join()
//
// Each process closes the end it does not use (here the parent's end of the child is
// moved into the Process); then the parent sees EOFError once the child's end is gone, and
// mpx::wait() watches many connections (and process sentinels) at once.
//
// expect: pipe example done: 42 hello, 3 replies, EOF seen
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mpx/connection.hpp"
#include "mpx/context.hpp"
#include "mpx/process.hpp"

// The child: a greeting, then an echo service that doubles what it gets until it gets
// a negative number.
void f(mpx::Connection conn) {
  conn.send(std::pair<int, std::string>(42, "hello"));
  for (int n; (n = conn.recv<int>()) >= 0;)
    conn.send(2 * n);
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  auto [parent_conn, child_conn] = mpx::get_context().Pipe();  // Python's ctx.Pipe()
  // The child's end is moved in: the parent keeps no copy of it after start().
  mpx::Process p(f, std::move(child_conn));
  p.start();

  auto [number, word] = parent_conn.recv<std::pair<int, std::string>>();
  std::printf("received %d %s\n", number, word.c_str());

  int replies = 0;
  for (int n : {1, 2, 3}) {
    parent_conn.send(n);
    if (parent_conn.recv<int>() == 2 * n) ++replies;
  }
  parent_conn.send(-1);

  // Wait for a message or the child's exit, whichever comes first: here the exit.
  auto ready = mpx::wait({parent_conn, p.sentinel()});
  bool eof = false;
  try {
    parent_conn.recv<int>();
  } catch (const mpx::EOFError&) {
    eof = true;  // the child ended, and with it its end of the pipe
  }
  p.join();
  std::printf("pipe example done: %d %s, %d replies, %s\n", number, word.c_str(), replies,
              eof && !ready.empty() ? "EOF seen" : "no EOF");
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
