"""The Python column of `make bench`: each workload on CPython's multiprocessing and
concurrent.futures, as a Python user would write it (start method: the platform default,
fork on Linux).

usage: python3 bench/py/workloads.py <workload>
Runs a warm-up, then one measured repetition, and prints one line
    RESULT <tab> <workload> <tab> <value> <tab> <unit>
(plus optional `EXTRA <tab> name <tab> value <tab> unit` lines); bench/compare calls it many
times, interleaved with the mpx and floor programs, and takes medians. Pools are created
and warmed up before the clock starts. Overhead workloads use 2 workers (as the mpx side);
cpu_primes_speedup uses one worker per usable CPU.
"""
import multiprocessing as mp
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

now = time.perf_counter
PRIME_CHUNK = 10000
PRIME_LIMIT = 2000000
PRIMES_BELOW_2M = 148933


def result(workload, value, unit):
    print("RESULT\t%s\t%.6g\t%s" % (workload, value, unit), flush=True)


def extra(name, value, unit=""):
    print("EXTRA\t%s\t%.6g\t%s" % (name, value, unit), flush=True)


def noop():
    pass


def square(x):
    return x * x


def count_primes(bounds):
    lo, hi = bounds
    count = 0
    for n in range(lo, hi):
        if n < 2:
            continue
        if n % 2 == 0:
            count += n == 2
            continue
        d = 3
        while d * d <= n:
            if n % d == 0:
                break
            d += 2
        else:
            count += 1
    return count


def start_join_by(name, method):
    ctx = mp.get_context(method)

    def once():
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    for _ in range(5):
        once()
    n = 50
    t0 = now()
    for _ in range(n):
        once()
    result(name, (now() - t0) / n * 1e6, "us/op")


def process_start_join():
    start_join_by("process_start_join", None)  # the default context, as mp.Process


def process_start_join_spawn():
    start_join_by("process_start_join_spawn", "spawn")


def process_start_join_forkserver():
    start_join_by("process_start_join_forkserver", "forkserver")


def echo(conn):
    while True:
        msg = conn.recv_bytes()
        if not msg:
            return
        conn.send_bytes(msg)


def pipe_roundtrip_64b():
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b,))
    p.start()
    msg = b"x" * 64
    for _ in range(300):
        a.send_bytes(msg)
        a.recv_bytes()
    n = 3000
    t0 = now()
    for _ in range(n):
        a.send_bytes(msg)
        back = a.recv_bytes()
    t = now() - t0
    a.send_bytes(b"")
    p.join()
    assert back == msg
    result("pipe_roundtrip_64b", t / n * 1e6, "us/roundtrip")


def produce(q, item, total):
    for _ in range(total):
        q.put(item)


def queue_rate(item, warm, count):
    q = mp.Queue()
    p = mp.Process(target=produce, args=(q, item, warm + count))
    p.start()
    for _ in range(warm):
        q.get()
    t0 = now()
    for _ in range(count):
        q.get()
    t = now() - t0
    p.join()
    return count / t


def queue_int_1to1():
    result("queue_int_1to1", queue_rate(12345, 5000, 40000), "items/s")


def queue_64b_1to1():
    result("queue_64b_1to1", queue_rate(b"x" * 64, 5000, 40000), "items/s")


def queue_1mib_1to1():
    rate = queue_rate(b"x" * (1 << 20), 20, 200)
    result("queue_1mib_1to1", rate * (1 << 20) / 1e9, "GB/s")


def put_range(q, gate, n):
    gate.wait()
    for i in range(n):
        q.put(i)


def get_n(q, gate, n):
    gate.wait()
    for _ in range(n):
        q.get()


def many_to_many_rate(producers, consumers, per_producer):
    """Items/s through one mp.Queue: every process waits at a barrier, the clock runs
    from the barrier to the last consumer's exit (as bench_util.hpp's many_to_many_rate)."""
    q, gate = mp.Queue(), mp.Barrier(producers + consumers + 1)
    total = producers * per_producer
    procs = [mp.Process(target=put_range, args=(q, gate, per_producer))
             for _ in range(producers)]
    procs += [mp.Process(target=get_n, args=(q, gate, total // consumers +
                                              (1 if c < total % consumers else 0)))
              for c in range(consumers)]
    for p in procs:
        p.start()
    gate.wait()
    t0 = now()
    for p in procs[producers:]:
        p.join()
    t = now() - t0
    for p in procs[:producers]:
        p.join()
    return total / t


def queue_4to4():
    many_to_many_rate(4, 4, 500)
    result("queue_4to4", many_to_many_rate(4, 4, 10000), "items/s")


def timed_per_task(run, n):
    run(max(n // 10, 10))  # warm-up: workers started and primed
    t0 = now()
    run(n)
    return (now() - t0) / n * 1e6


def pool_map_1m_auto():
    with mp.Pool(2) as pool:
        us = timed_per_task(lambda n: pool.map(square, range(n)), 1000000)
    result("pool_map_1m_auto", us, "us/task")


def pool_map_chunk1_100k():
    with mp.Pool(2) as pool:
        us = timed_per_task(lambda n: pool.map(square, range(n), chunksize=1), 100000)
    result("pool_map_chunk1_100k", us, "us/task")


def apply_async_roundtrip():
    def run(n):
        for i in range(n):
            pool.apply_async(square, (i,)).get()
    with mp.Pool(2) as pool:
        us = timed_per_task(run, 1000)
    result("apply_async_roundtrip", us, "us")


def executor_submit_10k():
    def run(n):
        futures = [ex.submit(square, i) for i in range(n)]
        for f in futures:
            f.result()
    with ProcessPoolExecutor(2) as ex:
        us = timed_per_task(run, 10000)
    result("executor_submit_10k", us, "us/task")


def increment(value, n, go):
    go.wait()
    for _ in range(n):
        with value.get_lock():
            value.value += 1


def counter_rate(n):
    value = mp.Value("l", 0)
    go = mp.Event()
    procs = [mp.Process(target=increment, args=(value, n, go)) for _ in range(2)]
    for p in procs:
        p.start()
    t0 = now()
    go.set()
    for p in procs:
        p.join()
    t = now() - t0
    assert value.value == 2 * n
    return 2 * n / t


def lock_counter_2proc():
    counter_rate(10000)
    result("lock_counter_2proc", counter_rate(100000), "incr/s")


def cpu_primes_speedup():
    workers = len(os.sched_getaffinity(0))
    chunks = [(lo, min(lo + PRIME_CHUNK, PRIME_LIMIT)) for lo in range(0, PRIME_LIMIT, PRIME_CHUNK)]
    t0 = now()
    serial = sum(map(count_primes, chunks))
    t_serial = now() - t0
    with mp.Pool(workers) as pool:
        pool.map(square, range(workers * 4), chunksize=1)  # workers started
        t0 = now()
        parallel = sum(pool.map(count_primes, chunks, chunksize=1))
        t_parallel = now() - t0
    assert serial == parallel == PRIMES_BELOW_2M, (serial, parallel)
    extra("serial", t_serial, "s")
    extra("parallel", t_parallel, "s")
    extra("workers", workers)
    result("cpu_primes_speedup", t_serial / t_parallel, "x")


def private_rss_mib(pid):
    kib = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kib += int(line.split()[1])
    return kib / 1024


def idle_worker_rss():
    with mp.Pool(2) as pool:
        pool.map(square, range(1000))
        time.sleep(0.2)  # let the workers go back to waiting for work
        mib = max(private_rss_mib(p.pid) for p in mp.active_children())
    result("idle_worker_rss", mib, "MiB")


def subprocess_run_true():
    for _ in range(20):
        subprocess.run(["/bin/true"])
    n = 300
    t0 = now()
    for _ in range(n):
        subprocess.run(["/bin/true"])
    result("subprocess_run_true", (now() - t0) / n * 1e6, "us/op")


def through_cat(data):
    t0 = now()
    out = subprocess.run(["cat"], input=data, stdout=subprocess.PIPE).stdout
    t = now() - t0
    assert out == data
    return len(data) / t / 1e9


def subprocess_pipe_256mib():
    data = b"x" * (256 << 20)
    through_cat(data[:16 << 20])
    result("subprocess_pipe_256mib", through_cat(data), "GB/s")


def listener_echo(address):
    from multiprocessing.connection import Client
    echo(Client(address))


def listener_rt(name, address):
    from multiprocessing.connection import Listener
    listener = Listener(address)
    p = mp.Process(target=listener_echo, args=(listener.address,))
    p.start()
    a = listener.accept()
    msg = b"x" * 64
    for _ in range(300):
        a.send_bytes(msg)
        a.recv_bytes()
    n = 3000
    t0 = now()
    for _ in range(n):
        a.send_bytes(msg)
        back = a.recv_bytes()
    t = now() - t0
    a.send_bytes(b"")
    p.join()
    listener.close()
    assert back == msg
    result(name, t / n * 1e6, "us/roundtrip")


def listener_roundtrip_64b():
    listener_rt("listener_roundtrip_64b", None)


def listener_roundtrip_64b_tcp():
    listener_rt("listener_roundtrip_64b_tcp", ("127.0.0.1", 0))


def manager_dict_get():
    with mp.Manager() as m:
        d = m.dict()
        d["k"] = 1
        for _ in range(300):
            d.get("k")
        n = 3000
        t0 = now()
        for _ in range(n):
            d.get("k")
        result("manager_dict_get", (now() - t0) / n * 1e6, "us/op")


def manager_queue_1to1():
    with mp.Manager() as m:
        q = m.Queue()
        warm, count = 200, 3000
        p = mp.Process(target=produce, args=(q, 1, warm + count))
        p.start()
        for _ in range(warm):
            q.get()
        t0 = now()
        for _ in range(count):
            q.get()
        t = now() - t0
        p.join()
        result("manager_queue_1to1", count / t, "items/s")


WORKLOADS = {f.__name__: f for f in [
    process_start_join, process_start_join_spawn, process_start_join_forkserver,
    pipe_roundtrip_64b, queue_int_1to1, queue_64b_1to1, queue_1mib_1to1, queue_4to4,
    pool_map_1m_auto, pool_map_chunk1_100k, apply_async_roundtrip, executor_submit_10k,
    lock_counter_2proc, cpu_primes_speedup, idle_worker_rss, subprocess_run_true,
    subprocess_pipe_256mib, listener_roundtrip_64b, listener_roundtrip_64b_tcp,
    manager_dict_get, manager_queue_1to1]}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in WORKLOADS:
        sys.exit("usage: workloads.py <%s>" % "|".join(WORKLOADS))
    WORKLOADS[sys.argv[1]]()
