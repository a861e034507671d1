// 05 — Pipe: a two-way channel between processes (Python: multiprocessing.Pipe).
//
//   from multiprocessing import Process, Pipe
//   def f(conn):
//       conn.send([42, None, 'hello']); conn.close()
//   parent_conn, child_conn = Pipe()
//   p = Process(target=f, args=(child_conn,)); p.start()
//   print(parent_conn.recv()); p.join()
//
// Each process closes the end it does not use; then the parent sees EOFError once the
// child's end is gone, and mpx::wait() watches many connections (and process sentinels)
// at once.
//
// expect: pipe example done: 42 hello, 3 replies, EOF seen
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "mpx/connection.hpp"
#include "mpx/process.hpp"

int main() {
  auto [parent_conn, child_conn] = mpx::Pipe();
  mpx::Process p([&] {
    parent_conn.close();
    child_conn.send(std::pair<int, std::string>(42, "hello"));
    // An echo service: doubles what it gets until it gets a negative number.
    for (int n; (n = child_conn.recv<int>()) >= 0;)
      child_conn.send(2 * n);
  });
  p.start();
  child_conn.close();

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
}
