#!/bin/sh
# dssh job wrapper: runs one job (or build) detached from the head.
# Needs only POSIX sh and coreutils; started as
#   nohup setsid sh wrapper.sh DIR TIMEOUT EVENT_LOG NAME </dev/null >/dev/null 2>&1 &
# DIR/.dssh holds command.sh; this writes pid, started, boot_id, stdout.txt, stderr.txt,
# then finished, timed_out (if so) and, last and atomically, exit_code.
# When it has ended it appends NAME to EVENT_LOG, which a watching head follows.
dir=$1
timeout=${2:-0}
notify=${3:-}
name=${4:-}
cd "$dir" || exit 1
ctl=.dssh
echo $$ > "$ctl/pid"
read -r boot < /proc/sys/kernel/random/boot_id 2>/dev/null && echo "$boot" > "$ctl/boot_id"
date +%s.%N > "$ctl/started"
# The job gets its own session, so its whole tree can be signalled as one group.
setsid sh "$ctl/command.sh" > "$ctl/stdout.txt" 2> "$ctl/stderr.txt" < /dev/null &
job=$!
echo "$job" > "$ctl/job_pid"
# Live members of the job's process group (kill -0 also sees zombies waiting for init).
alive() { ps -eo pgid=,stat= 2>/dev/null | awk -v g="$job" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'; }
mon=
if [ "$timeout" -gt 0 ] 2>/dev/null; then
    (
        start=$(date +%s)
        while :; do
            sleep 1
            now=$(date +%s)
            if [ $((now - start)) -ge "$timeout" ]; then
                : > "$ctl/timed_out"
                kill -TERM "-$job" 2>/dev/null
                i=0
                while [ $i -lt 10 ] && alive; do sleep 1; i=$((i + 1)); done
                kill -KILL "-$job" 2>/dev/null
                exit 0
            fi
        done
    ) &
    mon=$!
fi
wait "$job"
rc=$?
[ -n "$mon" ] && kill "$mon" 2>/dev/null
# Like a batch system, a job ends with its leftovers: processes it left in its group.
if kill -TERM "-$job" 2>/dev/null; then
    i=0
    while [ $i -lt 20 ] && alive; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "-$job" 2>/dev/null
fi
date +%s.%N > "$ctl/finished"
echo "$rc" > "$ctl/exit_code.tmp" && mv -f "$ctl/exit_code.tmp" "$ctl/exit_code"
if [ -n "$notify" ]; then
    echo "$name" >> "$notify"
fi
exit 0
