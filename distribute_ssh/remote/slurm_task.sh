#!/bin/sh
# dssh on Slurm: runs one job of a sweep as one task of a job array (dssh slurm, SPEC §10).
# Needs only POSIX sh and coreutils on the compute node. Called from an array script:
#   sh dssh/task.sh ARRAY          (ARRAY: which tasks-ARRAY list; the task id picks the line)
#   sh dssh/task.sh --setup        (the build, and an image to unpack, once for the sweep)
# The export's root dir is $DSSH_SLURM_DIR (submit.sh sets it), else where sbatch ran.
#
# A job's dir is jobs/JOB: input/ (laid out by dssh slurm), outputs/, and .dssh/ with
# command and env (written by dssh slurm) and, written here: host, slurm_job, started,
# stdout.txt, stderr.txt, then finished, timed_out (if so) and, last and atomically,
# exit_code (the lab's layout). A job whose exit_code is 0 is not run again, so submitting
# the directory again reruns only what did not succeed. Attempts before the last (the
# sweep's retries) are kept under .attempts/N/, as on the lab.
root=${DSSH_SLURM_DIR:-${SLURM_SUBMIT_DIR:-}}
[ -n "$root" ] && [ -d "$root/dssh" ] || { echo "dssh: cannot find the export dir" >&2; exit 2; }
conf=$root/dssh/sweep.conf
. "$conf" || exit 2   # timeout, retries, image (path below root), build (0/1)

now() { date +%s.%N; }

put() {  # put FILE TEXT: write atomically
    printf '%s\n' "$2" > "$1.tmp" && mv -f "$1.tmp" "$1"
}

# cpus this task may use: --cpus-per-task, else --ntasks (the original tool's count), else
# what the node gave the job
cpus=${SLURM_CPUS_PER_TASK:-${SLURM_NTASKS:-}}
if [ -z "$cpus" ]; then
    cpus=${SLURM_JOB_CPUS_PER_NODE:-1}
    cpus=${cpus%%[!0-9]*}
fi
[ -n "$cpus" ] || cpus=1

if [ "${1:-}" = --setup ]; then
    b=$root/build
    c=$b/.dssh
    if [ "$build" = 1 ]; then
        mkdir -p "$c" || exit 3
        if [ -f "$c/exit_code" ] && [ "$(cat "$c/exit_code")" = 0 ]; then
            echo "dssh: the build is done already"
        else
            rm -f "$c/exit_code"
            hostname > "$c/host" 2>/dev/null
            put "$c/slurm_job" "${SLURM_JOB_ID:-}"
            now > "$c/started"
            (
                cd "$b" || exit 3
                export DSSH_BUILD="$b" DSSH_CPUS="$cpus" OMP_NUM_THREADS="$cpus"
                export DSSH_PYTHON="${DSSH_PYTHON:-python3}"
                . "$c/env"
                exec sh -c "$(cat "$c/command")"
            ) > "$c/build.log" 2>&1 < /dev/null
            rc=$?
            now > "$c/finished"
            put "$c/exit_code" "$rc"
            cat "$c/build.log"
            [ "$rc" = 0 ] || { echo "dssh: the build failed (exit $rc)" >&2; exit "$rc"; }
        fi
    fi
    if [ -n "$image" ] && [ ! -f "$root/image/.ready" ]; then
        sh "$root/dssh/image.sh" || { echo "dssh: cannot prepare the image" >&2; exit 3; }
    fi
    exit 0
fi

list=$root/dssh/tasks-${1:?which array}
i=${SLURM_ARRAY_TASK_ID:?not a task of a job array}
job=$(sed -n "$((i + 1))p" "$list")
[ -n "$job" ] || { echo "dssh: no job for task $i in $list" >&2; exit 2; }
d=$root/jobs/$job
c=$d/.dssh
if [ -f "$c/exit_code" ] && [ "$(cat "$c/exit_code")" = 0 ]; then
    echo "dssh: $job succeeded before; not run again"
    exit 0
fi

term() {  # scancel, or the time limit: the job's processes get the same signal from Slurm
    : > "$c/signalled"
    now > "$c/finished"
    exit 143
}
trap term TERM INT

attempts=$((retries + 1))
a=1
while :; do
    if [ -f "$c/stdout.txt" ] || [ -f "$c/exit_code" ]; then
        # an earlier attempt (a retry, or an earlier submission): keep its logs and outputs
        n=1
        while [ -e "$d/.attempts/$n" ]; do n=$((n + 1)); done
        mkdir -p "$d/.attempts/$n" || exit 3
        [ -e "$d/outputs" ] && mv "$d/outputs" "$d/.attempts/$n/"
        for f in stdout.txt stderr.txt exit_code started finished timed_out signalled; do
            [ -e "$c/$f" ] && mv "$c/$f" "$d/.attempts/$n/$f"
        done
        mkdir -p "$d/outputs" || exit 3
    fi
    n=1
    while [ -e "$d/.attempts/$n" ]; do n=$((n + 1)); done
    hostname > "$c/host" 2>/dev/null
    put "$c/slurm_job" "${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-}}_${i}"
    now > "$c/started"
    t0=$(date +%s)
    (
        cd "$d" || exit 3
        export DSSH_ATTEMPT="$n" DSSH_CPUS="$cpus" OMP_NUM_THREADS="$cpus"
        export DSSH_BUILD="$root/build" DSSH_INPUT="$d/input" DSSH_OUTPUT="$d/outputs"
        [ "$build" = 1 ] || DSSH_BUILD=$d
        export DSSH_HOST_BUILD="$DSSH_BUILD"  # a container's env file says /build
        [ -n "$image" ] && export DSSH_IMAGE="$root/image/$image"
        export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-}"
        export DSSH_PYTHON="${DSSH_PYTHON:-python3}"
        . "$c/env"
        if [ "$timeout" -gt 0 ]; then
            # the job's own status, as on the lab (143 when stopped by the timeout)
            exec timeout --preserve-status -k 30 "$timeout" sh -c "$(cat "$c/command")"
        fi
        exec sh -c "$(cat "$c/command")"
    ) > "$c/stdout.txt" 2> "$c/stderr.txt" < /dev/null &
    wait $!
    rc=$?
    now > "$c/finished"
    if [ "$timeout" -gt 0 ] && [ "$rc" != 0 ] && [ $(($(date +%s) - t0)) -ge "$timeout" ]; then
        : > "$c/timed_out"
    fi
    put "$c/exit_code" "$rc"
    [ "$rc" = 0 ] && exit 0
    [ "$a" -lt "$attempts" ] || exit "$rc"
    a=$((a + 1))
done
