#!/bin/sh
# dssh watcher: prints the name of every job that ends, as its wrapper appends it to LOG.
# Prints READY once it is listening. With GNU tail it blocks on inotify (no polling) and
# exits when its sshd session ends (--pid); elsewhere it polls every 0.2 s.
log=$1
# (builtins where they do: a hundred hosts connecting at once pay for every process)
dir=${log%/*}
{ [ -d "${dir:-/}" ] || mkdir -p "$dir"; } && : >> "$log" || exit 1
# (a new log, as a new sweep has: no process to say it is empty)
size=0; [ ! -s "$log" ] || size=$(wc -c < "$log")
parent=$PPID
# Jobs' wrappers see that a head follows (see wrapper.sh): this pid stays the watcher's.
echo $$ > "$log.watcher"
case $(tail --version 2>/dev/null) in
    *GNU*)
        echo READY
        exec tail -c +$((size + 1)) --pid="$parent" -F "$log" ;;
esac
echo READY
while :; do
    now=$(wc -c < "$log")
    if [ "$now" -gt "$size" ]; then
        tail -c +$((size + 1)) "$log" | head -c $((now - size)) || exit 0
        size=$now
    fi
    kill -0 "$parent" 2>/dev/null || exit 0
    sleep 0.2
done
