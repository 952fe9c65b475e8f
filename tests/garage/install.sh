#!/usr/bin/env bash
# Installs the Garage S3 server the object-store tests run against, once per machine, and
# prints the path of its binary. Garage 2.5.0 from crates.io takes about 8 minutes to build on
# 2 cores, so it goes to a cache outside the work tree (BUNSAN_TOOLS_DIR, default
# ~/.cache/bunsan-tools) that every checkout and worktree shares. Concurrent callers wait on
# one lock instead of building twice.
set -euo pipefail
version=2.5.0
tools="${BUNSAN_TOOLS_DIR:-$HOME/.cache/bunsan-tools}"
root="$tools/garage-$version"
bin="$root/bin/garage"
mkdir -p "$tools"
exec 9>"$tools/garage-$version.lock"
flock 9
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "installing garage $version into $root (about 8 minutes on 2 cores)" >&2
  # Its own target dir, so a project build does not wait on it nor it on the project's lock.
  CARGO_TARGET_DIR="$tools/garage-build" \
    cargo install garage --locked --version "$version" --root "$root" >&2
  rm -rf "$tools/garage-build"
fi
echo "$bin"
