#!/usr/bin/env bash
# The loss of a whole rank (tests/mpi/mpi_rank_loss.cpp kills rank 1's own process from a
# task) under mpirun -np 3: the job must end at once and unsuccessfully, not hang (run.sh
# gives mpirun 60 s), mpirun must name the lost rank and its host, and no process of the
# job may be left (run.sh checks that, exiting 1 with "left behind" if one is).
# usage: rank_loss.sh <program>
set -u
host=$(hostname | cut -d. -f1)
start=$SECONDS
out=$(MPX_MPI_TIMEOUT=60 "$(dirname "$0")/run.sh" 3 "$1" 2>&1)
rc=$?
elapsed=$((SECONDS - start))
echo "$out"
echo "rank_loss.sh: exit status $rc after ${elapsed} s"
fail() { echo "rank_loss.sh: FAILED: $*"; exit 1; }
[[ $out != *"left behind"* ]] || fail "processes of the job were left"
[ "$rc" -ne 0 ] || fail "the job succeeded although a rank was lost"
[ "$elapsed" -lt 55 ] || fail "the job did not end when the rank was lost (it hung)"
[[ $out != *"rank 1 was not lost"* ]] || fail "the task did not kill rank 1"
grep -Eq "process rank 1 with PID [0-9]+ on node $host exited on signal 9" <<< "$out" ||
  fail "mpirun's output does not name rank 1 and host $host"
echo "rank_loss.sh: the job ended in ${elapsed} s, naming rank 1 on $host; nothing left"
