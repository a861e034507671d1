// mpx::subprocess's run() and module functions (mpx/subprocess.hpp): every option, the
// errors of a program that cannot run, timeouts, text mode, many threads at once. Popen
// itself: popen_test.cpp. The fixture of tests/support checks after every test that no
// child and no fd is left.
#include "mpx/subprocess.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mpx/errors.hpp"
#include "process/subprocess_internal.hpp"
#include "support/subprocess.hpp"
#include "sys/fd.hpp"

namespace {

using namespace std::chrono_literals;
namespace sp = mpx::subprocess;
using mpx::sys::Fd;
using mpx::sys::make_pipe;
using mpx_test::inheritable_fds;
using mpx_test::read_all;
using mpx_test::seconds_since;

// A directory under /tmp, removed with its contents at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string t = "/tmp/mpx-subprocess-XXXXXX";
    path = ::mkdtemp(t.data());
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name, const std::string& content, mode_t mode) const {
    auto p = path / name;
    std::ofstream(p) << content;
    std::filesystem::permissions(p, static_cast<std::filesystem::perms>(mode));
    return p.string();
  }
};

// Field `index` (0 = pid) of a /proc/<pid>/stat line.
long stat_field(const std::string& stat, int index) {
  if (index == 0) return std::stol(stat);
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  for (int i = 2; i <= index; ++i)
    rest >> field;
  return std::stol(field);
}

TEST(SubprocessTest, RunReturnsTheReturnCodeAndCapturesNothingByDefault) {
  auto r = sp::run({"sh", "-c", "exit 3"});
  EXPECT_EQ(r.returncode, 3);
  EXPECT_EQ(r.args, (std::vector<std::string>{"sh", "-c", "exit 3"}));
  EXPECT_TRUE(r.stdout.empty());
  EXPECT_TRUE(r.stderr.empty());
  EXPECT_THROW(r.check_returncode(), mpx::CalledProcessError);
  EXPECT_EQ(sp::run("true").returncode, 0);
}

TEST(SubprocessTest, CaptureOutputKeepsStdoutAndStderrApart) {
  auto r = sp::run({"sh", "-c", "echo out; echo err >&2"}, {.capture_output = true});
  EXPECT_EQ(r.stdout, "out\n");
  EXPECT_EQ(r.stderr, "err\n");
  r.check_returncode();
}

TEST(SubprocessTest, InputIsWrittenToStdinAndStdinIsClosedAfterIt) {
  auto r = sp::run({"cat"}, {.input = "hello\n", .capture_output = true});
  EXPECT_EQ(r.stdout, "hello\n");
  // Empty input: the child reads EOF at once.
  EXPECT_EQ(sp::run({"cat"}, {.input = "", .stdout = sp::PIPE}).stdout, "");
}

TEST(SubprocessTest, StderrToStdoutMergesTheStreamsInOrder) {
  auto r = sp::run({"sh", "-c", "echo 1; echo 2 >&2; echo 3"},
                   {.stdout = sp::PIPE, .stderr = sp::STDOUT});
  EXPECT_EQ(r.stdout, "1\n2\n3\n");
  EXPECT_EQ(r.stderr, "");
  // stderr=STDOUT with stdout inherited: the child's stderr is our stdout.
  auto [out_r, out_w] = make_pipe();
  Fd saved(::dup(STDOUT_FILENO));
  ::dup2(out_w.get(), STDOUT_FILENO);
  int rc = sp::run({"sh", "-c", "echo e >&2"}, {.stderr = sp::STDOUT}).returncode;
  ::dup2(saved.get(), STDOUT_FILENO);
  out_w.reset();
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(read_all(out_r.get()), "e\n");
}

TEST(SubprocessTest, DevnullGivesEmptyInputAndSwallowsOutput) {
  EXPECT_EQ(sp::run({"cat"}, {.stdin = sp::DEVNULL, .stdout = sp::PIPE}).stdout, "");
  auto r = sp::run({"sh", "-c", "echo x; echo y >&2"}, {.stdout = sp::DEVNULL, .stderr = sp::PIPE});
  EXPECT_EQ(r.stdout, "");
  EXPECT_EQ(r.stderr, "y\n");
}

TEST(SubprocessTest, FdsOfThisProcessServeAsTheStreams) {
  auto [in_r, in_w] = make_pipe();
  auto [out_r, out_w] = make_pipe();
  ASSERT_EQ(::write(in_w.get(), "data", 4), 4);
  in_w.reset();
  EXPECT_EQ(sp::run({"cat"}, {.stdin = in_r.get(), .stdout = out_w.get()}).returncode, 0);
  out_w.reset();
  EXPECT_EQ(read_all(out_r.get()), "data");
  // Swapped targets among 0..2 are not overwritten by each other.
  auto [o_r, o_w] = make_pipe();
  auto [e_r, e_w] = make_pipe();
  Fd saved_out(::dup(1)), saved_err(::dup(2));
  ::dup2(o_w.get(), 1);
  ::dup2(e_w.get(), 2);
  sp::run({"sh", "-c", "echo to-out; echo to-err >&2"}, {.stdout = 2, .stderr = 1});
  ::dup2(saved_out.get(), 1);
  ::dup2(saved_err.get(), 2);
  o_w.reset();
  e_w.reset();
  EXPECT_EQ(read_all(o_r.get()), "to-err\n");
  EXPECT_EQ(read_all(e_r.get()), "to-out\n");
}

TEST(SubprocessTest, CheckThrowsCalledProcessErrorCarryingTheOutput) {
  try {
    sp::run({"sh", "-c", "echo o; echo e >&2; exit 2"}, {.capture_output = true, .check = true});
    FAIL() << "no exception";
  } catch (const mpx::CalledProcessError& e) {
    EXPECT_EQ(e.returncode(), 2);
    EXPECT_EQ(e.cmd(), (std::vector<std::string>{"sh", "-c", "echo o; echo e >&2; exit 2"}));
    EXPECT_EQ(e.stdout(), "o\n");
    EXPECT_EQ(e.output(), "o\n");
    EXPECT_EQ(e.stderr(), "e\n");
    EXPECT_STREQ(e.what(),
                 "Command '['sh', '-c', 'echo o; echo e >&2; exit 2']' returned non-zero exit "
                 "status 2.");
  }
}

TEST(SubprocessTest, AChildKilledBySignalNHasReturnCodeMinusN) {
  auto r = sp::run({"sh", "-c", "kill -9 $$"});
  EXPECT_EQ(r.returncode, -9);
  try {
    r.check_returncode();
    FAIL() << "no exception";
  } catch (const mpx::CalledProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("died with <Signals.SIGKILL: 9>"), std::string::npos)
        << e.what();
  }
}

TEST(SubprocessTest, TextModeTranslatesNewlinesAndRejectsInvalidUtf8) {
  const char* script = "printf 'a\\r\\nb\\rc\\n\\303\\251'";
  EXPECT_EQ(sp::run({"sh", "-c", script}, {.stdout = sp::PIPE}).stdout, "a\r\nb\rc\n\xc3\xa9");
  EXPECT_EQ(sp::run({"sh", "-c", script}, {.stdout = sp::PIPE, .text = true}).stdout,
            "a\nb\nc\n\xc3\xa9");
  EXPECT_THROW(sp::run({"printf", "\\377"}, {.stdout = sp::PIPE, .text = true}), mpx::DecodeError);
  EXPECT_THROW(sp::run({"printf", "\\303"}, {.stdout = sp::PIPE, .text = true}), mpx::DecodeError);
  EXPECT_EQ(sp::run({"printf", "\\377"}, {.stdout = sp::PIPE}).stdout, "\xff");
}

TEST(SubprocessTest, TextDecodingDoesNotDependOnWhereTheBytesAreSplit) {
  const std::string bytes = "x\r\n\xc3\xa9\r\r\n\xe2\x82\xac\xf0\x9f\x98\x80\r";
  mpx::detail::TextDecoder whole;
  const std::string expected = whole.feed(bytes, true);
  EXPECT_EQ(expected, "x\n\xc3\xa9\n\n\xe2\x82\xac\xf0\x9f\x98\x80\n");
  mpx::detail::TextDecoder one_by_one;
  std::string got;
  for (std::size_t i = 0; i < bytes.size(); ++i)
    got += one_by_one.feed(bytes.substr(i, 1), i + 1 == bytes.size());
  EXPECT_EQ(got, expected);
  mpx::detail::TextDecoder bad;
  EXPECT_THROW(bad.feed("\xed\xa0\x80", true), mpx::DecodeError);  // a surrogate
}

TEST(SubprocessTest, CwdRunsTheChildThereAndBadCwdsNameTheDirectory) {
  TempDir dir;
  EXPECT_EQ(sp::run({"pwd"}, {.stdout = sp::PIPE, .cwd = dir.path}).stdout,
            dir.path.string() + "\n");
  try {
    sp::run({"true"}, {.cwd = dir.path / "missing"});
    FAIL() << "no exception";
  } catch (const mpx::FileNotFoundError& e) {
    EXPECT_EQ(e.filename(), (dir.path / "missing").string());
    EXPECT_EQ(e.errno_value(), ENOENT);
  }
  const std::string file = dir.file("f", "", 0644);
  EXPECT_THROW(sp::run({"true"}, {.cwd = file}), mpx::NotADirectoryError);
  // A program path relative to cwd is found there.
  dir.file("hello.sh", "#!/bin/sh\necho hi\n", 0755);
  EXPECT_EQ(sp::run({"./hello.sh"}, {.stdout = sp::PIPE, .cwd = dir.path}).stdout, "hi\n");
}

TEST(SubprocessTest, EnvReplacesTheEnvironmentAndItsPathIsSearched) {
  auto r =
      sp::run({"env"}, {.stdout = sp::PIPE,
                        .env = std::map<std::string, std::string>{{"A", "1"}, {"B", "two words"}}});
  EXPECT_EQ(r.stdout, "A=1\nB=two words\n");  // no PATH: found in /bin:/usr/bin
  using Env = std::map<std::string, std::string>;
  EXPECT_THROW(sp::run({"true"}, {.env = Env{{"PATH", "/nonexistent"}}}), mpx::FileNotFoundError);
  EXPECT_THROW(sp::run({"true"}, {.env = Env{{"A=B", "1"}}}), mpx::ValueError);
  auto env = sp::environ();
  ASSERT_TRUE(env.count("PATH"));
  env["MPX_TEST_VAR"] = "42";
  EXPECT_EQ(sp::run({"sh", "-c", "echo $MPX_TEST_VAR"}, {.stdout = sp::PIPE, .env = env}).stdout,
            "42\n");
}

TEST(SubprocessTest, ShellRunsTheCommandThroughBinShAndExecutableReplacesTheProgram) {
  EXPECT_EQ(sp::run("echo $((1 + 2)) | tr 3 x", {.stdout = sp::PIPE, .shell = true}).stdout, "x\n");
  EXPECT_EQ(sp::run({"echo $0 $1", "a", "b"}, {.stdout = sp::PIPE, .shell = true}).stdout, "a b\n");
  EXPECT_EQ(
      sp::run({"my-name", "-c", "echo $0"}, {.stdout = sp::PIPE, .executable = "/bin/sh"}).stdout,
      "my-name\n");
}

// Exec failures are reported in the parent, on both ways of starting a child (a umask
// takes the fork path).
class ExecErrorTest : public ::testing::TestWithParam<bool> {
 protected:
  sp::RunOptions options() const {
    sp::RunOptions o;
    if (GetParam()) o.umask = 022;
    return o;
  }
};

TEST_P(ExecErrorTest, AMissingProgramThrowsFileNotFoundErrorNamingIt) {
  try {
    sp::run({"mpx-no-such-program", "x"}, options());
    FAIL() << "no exception";
  } catch (const mpx::FileNotFoundError& e) {
    EXPECT_EQ(e.errno_value(), ENOENT);
    EXPECT_EQ(e.filename(), "mpx-no-such-program");
    EXPECT_STREQ(e.what(), "[Errno 2] No such file or directory: 'mpx-no-such-program'");
  }
  EXPECT_THROW(sp::run({"/nonexistent/prog"}, options()), mpx::FileNotFoundError);
  EXPECT_THROW(sp::Popen({"/nonexistent/prog"}, options()), mpx::OSError);
}

TEST_P(ExecErrorTest, AFileThatIsNotExecutableThrowsPermissionError) {
  TempDir dir;
  const std::string file = dir.file("data.txt", "echo not run\n", 0644);
  try {
    sp::run({file}, options());
    FAIL() << "no exception";
  } catch (const mpx::PermissionError& e) {
    EXPECT_EQ(e.errno_value(), EACCES);
    EXPECT_EQ(e.filename(), file);
  }
  // Found in PATH, but not executable.
  auto o = options();
  o.env = std::map<std::string, std::string>{{"PATH", dir.path.string()}};
  EXPECT_THROW(sp::run({"data.txt"}, o), mpx::PermissionError);
  // A directory is not a program either.
  EXPECT_THROW(sp::run({dir.path.string()}, options()), mpx::PermissionError);
}

TEST_P(ExecErrorTest, ABadCwdNamesTheDirectory) {
  auto o = options();
  o.cwd = "/nonexistent-dir";
  try {
    sp::run({"true"}, o);
    FAIL() << "no exception";
  } catch (const mpx::FileNotFoundError& e) {
    EXPECT_EQ(e.filename(), "/nonexistent-dir");
  }
}

TEST_P(ExecErrorTest, PassFdsKeepTheirNumbersAndCloseFdsClosesTheRest) {
  auto [r, w] = make_pipe();
  Fd inheritable(::dup(w.get()));  // without O_CLOEXEC, as a careless library leaves one
  const std::string script = "echo hi >&" + std::to_string(w.get()) + "; [ -e /proc/self/fd/" +
                             std::to_string(inheritable.get()) + " ] && echo leaked; exit 0";
  auto o = options();
  o.stdout = sp::PIPE;
  o.pass_fds = {w.get()};
  auto res = sp::run({"sh", "-c", script}, o);
  w.reset();
  inheritable.reset();
  EXPECT_EQ(read_all(r.get()), "hi\n");
  EXPECT_EQ(res.stdout, "");
}

INSTANTIATE_TEST_SUITE_P(PosixSpawnAndFork, ExecErrorTest, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return param_info.param ? "Fork" : "PosixSpawn";
                         });

TEST(SubprocessTest, CloseFdsFalseLetsInheritableFdsThrough) {
  auto [r, w] = make_pipe();
  Fd inheritable(::dup(w.get()));
  const std::string script = "[ -e /proc/self/fd/" + std::to_string(inheritable.get()) +
                             " ] && echo inherited; [ -e /proc/self/fd/" + std::to_string(w.get()) +
                             " ] && echo leaked; exit 0";
  EXPECT_EQ(sp::run({"sh", "-c", script}, {.stdout = sp::PIPE, .close_fds = false}).stdout,
            "inherited\n");
}

TEST(SubprocessTest, UmaskIsSetInTheChild) {
  EXPECT_EQ(sp::run({"sh", "-c", "umask"}, {.stdout = sp::PIPE, .umask = 027}).stdout, "0027\n");
}

TEST(SubprocessTest, StartNewSessionAndProcessGroupAreSetInTheChild) {
  const std::string own = sp::run({"cat", "/proc/self/stat"}, {.stdout = sp::PIPE}).stdout;
  EXPECT_EQ(stat_field(own, 5), static_cast<long>(::getsid(0)));
  const std::string session =
      sp::run({"cat", "/proc/self/stat"}, {.stdout = sp::PIPE, .start_new_session = true}).stdout;
  EXPECT_EQ(stat_field(session, 5), stat_field(session, 0));  // session id == its pid
  const std::string group =
      sp::run({"cat", "/proc/self/stat"}, {.stdout = sp::PIPE, .process_group = 0}).stdout;
  EXPECT_EQ(stat_field(group, 4), stat_field(group, 0));  // group id == its pid
  EXPECT_EQ(stat_field(group, 5), static_cast<long>(::getsid(0)));
}

TEST(SubprocessTest, TheChildStartsWithNoSignalBlockedAndSigpipeRestored) {
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &old);
  sigset_t term, old_mask;
  ::sigemptyset(&term);
  ::sigaddset(&term, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &term, &old_mask);
  const sp::Args grep{"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"};
  const std::string restored = sp::run(grep, {.stdout = sp::PIPE}).stdout;
  const std::string kept = sp::run(grep, {.stdout = sp::PIPE, .restore_signals = false}).stdout;
  const std::string forked = sp::run(grep, {.stdout = sp::PIPE, .umask = 022}).stdout;
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGPIPE, &old, nullptr);
  // SIGPIPE is signal 13: bit 12 of the mask, the 0x1000 of the last four hex digits.
  auto ignored_mask = [](const std::string& status) {
    auto at = status.find("SigIgn:");
    return std::stoull(status.substr(at + 7), nullptr, 16);
  };
  EXPECT_NE(restored.find("SigBlk:\t0000000000000000"), std::string::npos) << restored;
  EXPECT_NE(forked.find("SigBlk:\t0000000000000000"), std::string::npos) << forked;
  EXPECT_EQ(ignored_mask(restored) & 0x1000, 0u) << restored;
  EXPECT_EQ(ignored_mask(forked) & 0x1000, 0u) << forked;
  EXPECT_NE(ignored_mask(kept) & 0x1000, 0u) << kept;
}

TEST(SubprocessTest, RunTimesOutAProgramThatIgnoresSigtermAndKillsIt) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    sp::run({"sh", "-c", "echo started; trap '' TERM; exec sleep 30"},
            {.stdout = sp::PIPE, .timeout = 300ms});
    FAIL() << "no exception";
  } catch (const mpx::TimeoutExpired& e) {
    EXPECT_DOUBLE_EQ(e.timeout().count(), 0.3);
    EXPECT_EQ(e.cmd().size(), 3u);
    EXPECT_NE(std::string(e.what()).find("timed out after 0.3 seconds"), std::string::npos);
    // What the child wrote before the timeout (if it got that far on a loaded machine).
    EXPECT_TRUE(e.stdout() == "started\n" || e.stdout().empty()) << e.stdout();
  }
  const double elapsed = seconds_since(t0);
  EXPECT_GE(elapsed, 0.2);
  EXPECT_LT(elapsed, 10.0);
  // Without pipes too; call() kills on timeout as well.
  EXPECT_THROW(sp::run({"sh", "-c", "trap '' TERM; exec sleep 30"}, {.timeout = 100ms}),
               mpx::TimeoutExpired);
  EXPECT_THROW(sp::call({"sleep", "30"}, {.timeout = 100ms}), mpx::TimeoutExpired);
}

TEST(SubprocessTest, MisusedOptionsThrowValueError) {
  EXPECT_THROW(sp::run({"cat"}, {.stdin = sp::DEVNULL, .input = "x"}), mpx::ValueError);
  EXPECT_THROW(sp::run({"true"}, {.stdout = sp::PIPE, .capture_output = true}), mpx::ValueError);
  EXPECT_THROW(sp::Popen({"true"}, {.timeout = 1s}), mpx::ValueError);
  EXPECT_THROW(sp::Popen(std::vector<std::string>{}), mpx::ValueError);
  EXPECT_THROW(sp::run({std::string("a\0b", 3)}), mpx::ValueError);
  EXPECT_THROW(sp::run({"true"}, {.stdout = sp::STDOUT}), mpx::ValueError);
  EXPECT_THROW(sp::run({"true"}, {.stderr = -7}), mpx::ValueError);
  EXPECT_THROW(sp::check_output({"true"}, {.stdout = sp::DEVNULL}), mpx::ValueError);
  sp::Popen p({"true"});
  EXPECT_THROW(p.communicate("input"), mpx::ValueError);
  EXPECT_THROW(p.stdout().fileno(), mpx::InvalidStateError);
  p.wait();
  sp::Popen moved = std::move(p);
  EXPECT_THROW(p.pid(), mpx::InvalidStateError);  // NOLINT: testing the moved-from state
  EXPECT_GT(moved.pid(), 0);
}

TEST(SubprocessTest, CallCheckCallCheckOutputAndGetoutput) {
  EXPECT_EQ(sp::call({"sh", "-c", "exit 4"}), 4);
  EXPECT_EQ(sp::check_call({"true"}), 0);
  EXPECT_THROW(sp::check_call({"false"}), mpx::CalledProcessError);
  EXPECT_EQ(sp::check_output({"echo", "hi"}), "hi\n");
  EXPECT_EQ(sp::check_output({"cat"}, {.input = "in"}), "in");
  try {
    sp::check_output({"sh", "-c", "echo partial; exit 1"});
    FAIL() << "no exception";
  } catch (const mpx::CalledProcessError& e) {
    EXPECT_EQ(e.output(), "partial\n");
  }
  EXPECT_EQ(sp::getstatusoutput("echo hi; echo err >&2; exit 3"),
            (std::pair<int, std::string>{3, "hi\nerr"}));
  EXPECT_EQ(sp::getoutput("printf 'x\\r\\n'"), "x");
  EXPECT_EQ(sp::getstatusoutput("mpx-no-such-program").first, 127);  // the shell's code
}

std::set<std::string> fd_lines(const std::string& ls_output) {
  // "lrwx------ 1 u g 64 date 0 -> pipe:[123]" -> "0 pipe:[123]"
  std::set<std::string> fds;
  std::istringstream in(ls_output);
  std::string line;
  while (std::getline(in, line)) {
    auto arrow = line.find(" -> ");
    if (arrow == std::string::npos) continue;
    auto start = line.rfind(' ', arrow - 1) + 1;
    fds.insert(line.substr(start, arrow - start) + " " + line.substr(arrow + 4));
  }
  return fds;
}

TEST(SubprocessTest, HundredThreadsRunAtOnceAndEachChildHasOnlyItsOwnFds) {
  constexpr int kThreads = 100;
  std::vector<std::string> listings(kThreads);
  std::atomic<int> failures{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load())
        std::this_thread::yield();
      try {
        // The child's stdin and stdout are pipes; it lists its own fds.
        auto r = sp::run({"ls", "-l", "/proc/self/fd"},
                         {.input = "x", .capture_output = true, .close_fds = t % 2 == 0});
        if (r.returncode != 0) ++failures;
        listings[t] = r.stdout;
      } catch (...) {
        ++failures;
      }
    });
  }
  go = true;
  for (auto& th : threads)
    th.join();
  ASSERT_EQ(failures.load(), 0);
  const std::set<std::string> inherited = inheritable_fds();
  std::set<std::string> pipes;
  for (int t = 0; t < kThreads; ++t) {
    auto fds = fd_lines(listings[t]);
    if (t % 2 == 1)
      for (const auto& fd : inherited)
        fds.erase(fd);
    // 0, 1, 2 (pipes of its own) and ls's directory (3, or the first fd above the
    // inherited ones), nothing else.
    ASSERT_EQ(fds.size(), 4u) << listings[t];
    std::map<int, std::string> by_fd;
    for (const auto& line : fds)
      by_fd[std::stoi(line)] = line.substr(line.find(' ') + 1);
    for (int fd = 0; fd < 3; ++fd) {
      ASSERT_EQ(by_fd[fd].rfind("pipe:[", 0), 0u) << listings[t];
      EXPECT_TRUE(pipes.insert(by_fd[fd]).second) << "pipe shared by two children";
    }
    EXPECT_EQ(by_fd.rbegin()->second.rfind("/proc/", 0), 0u) << listings[t];
  }
}

}  // namespace
