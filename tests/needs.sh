#!/bin/sh
# Usage: tests/needs.sh TOOL... -- COMMAND [ARG...]
# Runs COMMAND where every TOOL (an absolute path found when the build was configured) is still
# executable; otherwise says which is missing and exits 77, which CTest reports as Skipped. A
# build tree run on another machine (e.g. copied to a GPU host without compilers) skips the
# host-side compile gates instead of failing them.
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  if [ ! -x "$1" ]; then
    echo "needs.sh: $1 (found when the build was configured) is not on this machine: skipped"
    exit 77
  fi
  shift
done
[ $# -gt 1 ] || { echo "needs.sh: usage: needs.sh TOOL... -- COMMAND [ARG...]" >&2; exit 2; }
shift
exec "$@"
