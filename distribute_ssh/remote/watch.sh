#!/bin/sh
# dssh watcher: reports jobs that ended, as wrappers drop their names into DIR.
# Prints "END name" per ended job, and "TICK" every few seconds so it dies of SIGPIPE
# soon after its head goes away; it also stops when its sshd session is gone.
dir=$1
mkdir -p "$dir" && cd "$dir" || exit 1
n=0
while :; do
    for f in *; do
        [ -e "$f" ] || continue
        echo "END $f" || exit 0
        rm -f "$f"
    done
    n=$((n + 1))
    if [ "$n" -ge 25 ]; then
        echo TICK || exit 0
        n=0
    fi
    kill -0 "$PPID" 2>/dev/null || exit 0
    sleep 0.2
done
