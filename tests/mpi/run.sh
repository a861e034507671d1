#!/usr/bin/env bash
# Runs an MPI test program under mpirun as ctest needs it, then checks that no process of
# the job is left (ranks, their pools' zygotes and workers: they all carry a marker in
# their environment). Root and oversubscription are allowed here, in the harness: CI runs
# as root on 2 cores; the library sets neither.
# usage: run.sh <ranks> <program> [args...]   (MPX_MPI_TIMEOUT: seconds for mpirun, 150)
set -u
np=$1
shift
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Sanitizer builds: Open MPI's own leaks at init are not ours (lsan.supp says which).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(dirname "$0")/lsan.supp:print_suppressions=0"
marker="mpx-mpi-test-$$-$RANDOM"
MPX_MPI_TEST=$marker timeout -k 5 "${MPX_MPI_TIMEOUT:-150}" mpirun -x MPX_MPI_TEST -np "$np" "$@"
rc=$?
left=""
for _ in $(seq 100); do  # a rank's pool may take a moment to reap its workers
  left=$(grep -l -a "MPX_MPI_TEST=$marker" /proc/[0-9]*/environ 2>/dev/null)
  [ -z "$left" ] && break
  sleep 0.05
done
if [ -n "$left" ]; then
  echo "run.sh: processes of the job left behind:"
  for f in $left; do
    pid=${f#/proc/}; pid=${pid%/environ}
    echo "  $pid $(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null)"
    kill -9 "$pid" 2>/dev/null
  done
  exit 1
fi
exit $rc
