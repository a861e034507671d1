"""The Python column of the MPI rows of `make bench`: mpi4py.futures (python3-mpi4py).

usage: mpirun -np 4 python3 -m mpi4py.futures bench/py/mpi_workloads.py <workload>
Rank 0 runs this script, the other ranks are mpi4py's workers. Prints one line
    RESULT <tab> <workload> <tab> <value> <tab> <unit>
as bench/py/workloads.py does; bench/compare launches it.
"""
import sys
import time

from mpi4py.futures import MPIPoolExecutor

TASKS = 20000  # at about 6 k tasks/s: a few seconds (the rate is per task anyway)


def tiny(x):
    return x + 1


def mpi_farm_tiny():
    with MPIPoolExecutor() as ex:
        ex.submit(tiny, 0).result()  # the workers are up
        t0 = time.perf_counter()
        futures = [ex.submit(tiny, i) for i in range(TASKS)]
        total = sum(f.result() for f in futures)
        seconds = time.perf_counter() - t0
    assert total == TASKS * (TASKS + 1) // 2
    print("RESULT\tmpi_farm_tiny\t%.6g\ttasks/s" % (TASKS / seconds), flush=True)


if __name__ == "__main__":
    {"mpi_farm_tiny": mpi_farm_tiny}[sys.argv[1]]()
