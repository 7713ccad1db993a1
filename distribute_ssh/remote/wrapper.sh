#!/bin/sh
# dssh job wrapper: runs one job (or build) detached from the head.
# Needs only POSIX sh, coreutils, procps (ps), grep and setsid; started as
#   trap "" HUP; sh wrapper.sh DIR TIMEOUT EVENT_LOG NAME PAUSE_CONF [CLAIM] </dev/null >/dev/null 2>&1 &
# DIR/.dssh holds command.sh; this writes pid, started, boot_id,
# stdout.txt, stderr.txt, then finished, timed_out (if so) and, last, exit_code
# (one write: empty means not ended yet). started and finished are empty: their
# modification times are the times. When the job ends it appends "NAME EXIT_CODE" to EVENT_LOG, which a watching
# head follows.
#
# CLAIM is the job's claim in the host's ledger (see ledger.sh): the wrapper signs it with
# its pid and start time, so every head can tell it is live, and marks it ended when the
# job has ended, before it writes exit_code: from then on the cpus are free for anyone.
#
# The workstation belongs to its owner: while a pause file exists (pause.conf lists where
# to look), the job's whole process tree is stopped (SIGSTOP) within about a second and
# continued when the file goes; paused time does not count against the timeout. This
# works with no head connected.
#
#   wrapper.sh --pause-state CONF   prints "paused UNTIL FILE" or "free", for heads.
#   wrapper.sh --pause-report CONF [NOW]  one line per pause file found, and closed homes.
# PAUSE_CONF lines: "max_pause SECONDS", "on_pause suspend|drain", "file PATTERN".
#
# A slot's chain (SPEC §5, "Chains"): when DIR/.dssh/next names another run dir (its
# path, then its job's name, one per line), that run was handed to this host to follow
# this one in the same slot. When this job has ended, the wrapper takes it (creating its
# .dssh/launched, O_EXCL: a head that took it back first wins) and becomes its wrapper,
# keeping the claim: a short job then costs no round trip and no start of its own. While
# the owner has paused the host, it takes nothing: it gives the rest of the chain back
# (each such run's launched says "withdrawn", its dir is removed, and "~withdrawn NAME" goes
# to EVENT_LOG for the head to queue it again).
dir=$1
timeout=${2:-0}
notify=${3:-}
name=${4:-}
pconf=${5:-}
claim=${6:-}
# Moving off a long pause (migrate_after, SPEC §6d): "AFTER:SIGNAL:GRACE", in seconds.
migrate=${7:-}
NL='
'

# ---- pause files ---------------------------------------------------------------------
max_pause=86400
on_pause=suspend
nice=0
act=
astate=
conf=

read_conf() {
    conf=$1
    [ -f "$conf" ] || return 0
    while read -r k v; do
        case $k in
            max_pause) max_pause=$v ;;
            on_pause) on_pause=$v ;;
            nice) nice=$v ;;
            activity) act=$v ;;
            activity_state) astate=$v ;;
        esac
    done < "$conf"
}

# Seconds in a duration like 45m, 2h, 1h30m, 90 (seconds); fails on anything else.
dur_secs() {
    s=$1
    t=0
    n=
    [ -n "$s" ] || return 1
    while [ -n "$s" ]; do
        c=${s%"${s#?}"}
        s=${s#?}
        case $c in
            [0-9]) n=$n$c ;;
            d) [ -n "$n" ] || return 1; t=$((t + n * 86400)); n= ;;
            h) [ -n "$n" ] || return 1; t=$((t + n * 3600)); n= ;;
            m) [ -n "$n" ] || return 1; t=$((t + n * 60)); n= ;;
            s) [ -n "$n" ] || return 1; t=$((t + n)); n= ;;
            *) return 1 ;;
        esac
        [ ${#n} -le 9 ] || return 1
    done
    [ -n "$n" ] && t=$((t + n))
    echo "$t"
}

# Is any pause file in force? Sets pause_until (epoch) and pause_by (the file).
# A file pauses from its modification time for the duration it holds, or for max_pause
# when it is empty, unreadable, a symlink or holds anything else. Expired files are
# ignored. Only a regular file's first 64 bytes are ever read.
pause_check() {
    pause_until=0
    pause_by=
    now=
    [ -f "$conf" ] || return 1
    old_ifs=$IFS
    IFS=$NL
    while read -r line; do
        case $line in
            "file "*) pat=${line#file } ;;
            *) continue ;;
        esac
        for f in $pat; do
            [ -e "$f" ] || [ -L "$f" ] || continue
            [ -n "$now" ] || now=$(date +%s)
            m=$(stat -c %Y -- "$f" 2>/dev/null) || continue
            secs=$max_pause
            if [ -f "$f" ] && [ ! -L "$f" ] && [ -r "$f" ]; then
                txt=$(head -c 64 -- "$f" 2>/dev/null | tr -d ' \t\r\n')
                if [ -n "$txt" ] && d=$(dur_secs "$txt"); then secs=$d; fi
            fi
            u=$((m + secs))
            if [ "$u" -gt "$now" ] && [ "$u" -gt "$pause_until" ]; then
                pause_until=$u
                pause_by=$f
            fi
        done
    done < "$conf"
    IFS=$old_ifs
    [ -n "$act" ] && activity_check
    [ "$pause_until" -gt 0 ]
}

# The owner's activity (pause_when, SPEC §6c): activity.sh looks about once a second for
# all of the host's jobs and keeps its verdict in $astate, read here with builtins.
activity_check() {
    read -r a_up _ < /proc/uptime
    a_up=${a_up%.*}
    a_at=x; a_held=0; areason=
    [ -f "$astate" ] && read -r a_at a_held _ areason < "$astate"
    case $a_at in ''|*[!0-9]*) a_at=-99 ;; esac
    if [ $((a_up - a_at)) -ge 1 ] || [ "$a_at" -gt "$a_up" ]; then
        sh "$act" "$conf" "$astate" 2>/dev/null
        [ -f "$astate" ] && read -r a_at a_held _ areason < "$astate"
    fi
    case $a_held in ''|*[!0-9]*) a_held=0 ;; esac
    [ "$a_held" -gt "$a_up" ] || return 0
    [ -n "$now" ] || now=$(date +%s)
    u=$((now + a_held - a_up))
    if [ "$u" -gt "$pause_until" ]; then
        pause_until=$u
        pause_by="owner activity: $areason"
    fi
}

if [ "$1" = --pause-state ]; then
    read_conf "$2"
    if pause_check; then echo "paused $pause_until $pause_by"; else echo free; fi
    exit 0
fi

# For `dssh hosts`: every pause file with its owner, mtime and end, and the homes whose
# pause file dssh's user cannot see (a home closed to others: chmod o+x fixes it).
if [ "$1" = --pause-report ]; then
    read_conf "$2"
    now=${3:-$(date +%s)}
    IFS=$NL
    while read -r line; do
        case $line in "file "*) pat=${line#file } ;; *) continue ;; esac
        for f in $pat; do
            [ -e "$f" ] || [ -L "$f" ] || continue
            m=$(stat -c '%Y %U' -- "$f" 2>/dev/null) || continue
            o=${m#* }
            m=${m%% *}
            secs=$max_pause
            kind=flag
            if [ -f "$f" ] && [ ! -L "$f" ] && [ -r "$f" ]; then
                txt=$(head -c 64 -- "$f" 2>/dev/null | tr -d ' \t\r\n')
                if [ -n "$txt" ] && d=$(dur_secs "$txt"); then secs=$d; kind=duration; fi
            fi
            u=$((m + secs))
            st=active
            [ "$u" -gt "$now" ] || st=expired
            echo "file $st $u $m $kind ${o:-?} $f"
        done
        case $pat in
            */\**)
                top=${pat%%/\**}
                for d in "$top"/*/; do
                    [ -d "$d" ] || continue
                    [ -x "$d" ] || echo "closed ${d%/}"
                done ;;
        esac
    done < "$conf"
    echo "now $now"
    exit 0
fi

read_conf "$pconf"
# This process: its start time (field 22 of /proc/PID/stat, which tells it from a later
# one that reuses its pid) and its nice level (field 19).
read -r s < /proc/$$/stat
s=${s##*) }
# shellcheck disable=SC2086
set -- $s
pstart=${20}
mynice=${17}
# A chain of runs to follow this one (see above)?
chained=
[ -f "$dir/.dssh/next" ] && chained=1
# The owners' nice level (inventory `nice`, their policy files): gentle to their work.
# A chain's wrapper takes it itself, once, so its jobs inherit it without a process
# each; a single job (or if that did not work) gets its own `nice`.
case $nice in
    [1-9]|1[0-9])
        if [ -n "$chained" ] && [ "$mynice" -lt "$nice" ] 2>/dev/null \
                && [ -z "$DSSH_NICED" ]; then
            export DSSH_NICED=1
            exec nice -n "$nice" sh "$0" "$dir" "$timeout" "$notify" "$name" "$pconf" \
                "$claim" "$migrate"
        fi ;;
esac
unset DSSH_NICED
read -r boot < /proc/sys/kernel/random/boot_id 2>/dev/null

# The job's processes: its descendants, and any process carrying its mark (children that
# called setsid and were re-parented, daemons it started).
tree() {
    {
        ps -eo pid=,ppid= 2>/dev/null | awk -v r="$job" '
            { kids[$2] = kids[$2] " " $1 }
            END {
                q = r
                while (q != "") {
                    n = split(q, a, " "); q = ""
                    for (i = 1; i <= n; i++) {
                        p = a[i]
                        if (p == "" || seen[p]++) continue
                        print p
                        if (p in kids) q = q kids[p]
                    }
                }
            }'
        grep -l -F -x -z -- "$run_mark" /proc/[0-9]*/environ 2>/dev/null |
            sed 's|^/proc/||; s|/environ$||'
    } | sort -u
}
# Live members (kill -0 also sees zombies that init has not reaped yet).
alive() {
    pids=$(tree)
    [ -n "$pids" ] || return 1
    # shellcheck disable=SC2086
    ps -o stat= -p "$(echo $pids | tr ' ' ',')" 2>/dev/null | grep -qv '^Z'
}

signal_tree() {
    kill "-$1" "-$job" 2>/dev/null
    pids=$(tree)
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill "-$1" $pids 2>/dev/null
}

event() {
    [ -n "$notify" ] && echo "$1" >> "$notify"
}

# Give back the rest of a chain, from run dir $1 (job $2) on: each run not taken yet is
# marked withdrawn (O_EXCL, as a take would be), its dir removed, and its head told.
give_back() {
    g_dir=$1
    g_name=$2
    g_dirs=
    g_names=
    set -C
    while [ -n "$g_dir" ] && printf 'withdrawn\n' > "$g_dir/.dssh/launched" 2>/dev/null; do
        g_dirs="$g_dirs$g_dir$NL"
        g_names="$g_names$g_name$NL"
        g_next=
        g_nn=
        [ -f "$g_dir/.dssh/next" ] && { read -r g_next; read -r g_nn; } < "$g_dir/.dssh/next"
        g_dir=$g_next
        g_name=$g_nn
    done
    set +C
    [ -n "$g_dirs" ] || return 0
    old_ifs=$IFS
    IFS=$NL
    set -f
    # shellcheck disable=SC2086
    rm -rf -- $g_dirs
    for g_name in $g_names; do event "~withdrawn $g_name"; done
    set +f
    IFS=$old_ifs
}

# Seconds since boot, from the kernel, with no process: the clock the timeout runs on.
uptime_s() { read -r up _ < /proc/uptime; up=${up%.*}; }

# Like a batch system, a job ends with its leftovers: processes it left behind.
end_leftovers() {
    signal_tree TERM
    signal_tree CONT
    i=0
    while [ $i -lt 20 ] && alive; do sleep 0.1; i=$((i + 1)); done
    signal_tree KILL
}

mig_after=0; mig_sig=TERM; mig_grace=60
case $migrate in
    *:*:*) mig_after=${migrate%%:*}; r=${migrate#*:}; mig_sig=${r%%:*}; mig_grace=${r#*:} ;;
esac
signed=
mon=
# Where the watch learns which run is the current one (next to the event log the head
# follows; the wrapper's pid makes it its own).
cur="${notify:-$dir}.run-$$"

# One run after the other: the first, then those of its slot's chain that it takes.
while :; do
cd "$dir" || exit 1
ctl=.dssh
# What follows in this slot's chain, read before this run can be retired.
nxt=
nname=
[ -f "$ctl/next" ] && { read -r nxt; read -r nname; } < "$ctl/next"
echo $$ > "$ctl/pid"
[ -n "$boot" ] && echo "$boot" > "$ctl/boot_id"
# When the job started and ended are these files' modification times (to the nanosecond):
# written by the shell itself, they cost no process. Every process a job's start or end
# costs is one the host's owner pays for, thousands of times in a sweep of short jobs.
printf '' > "$ctl/started"
if [ -z "$signed" ] && [ -n "$claim" ] && [ -f "$claim" ]; then
    # The claim, signed with this process's pid and start time, so every head can tell
    # it is live. One short append: a reader sees the claim signed or not, never half.
    printf 'pid %s\npstart %s\n' "$$" "$pstart" >> "$claim"
    signed=1
fi
# A mark every process of the job inherits, to find ones that left its process tree.
run_mark="DSSH_RUN=$PWD"
# The job gets its own session, so its whole tree can be signalled as one group.
set --
case $nice in [1-9]|1[0-9]) [ "$mynice" -ge "$nice" ] 2>/dev/null || set -- nice -n "$nice" ;; esac
if [ -f "$ctl/cancelled" ]; then
    # Cancelled before its turn came (a run handed over in a chain): it never runs.
    sh -c 'exit 143' &
else
    DSSH_RUN=$PWD setsid "$@" sh "$ctl/command.sh" > "$ctl/stdout.txt" 2> "$ctl/stderr.txt" < /dev/null &
fi
job=$!
echo "$job" > "$ctl/job_pid"

# The run the watch below is about: its job's pid, its dir, its name. One write per run
# of a chain, by the shell itself: a chain's runs share one watch, not one process each.
[ -z "$chained" ] || printf '%s\n%s\n%s\n' "$job" "$PWD" "$name" > "$cur"
# One loop watches the pause files and the timeout while the jobs run, one after the other.
[ -n "$mon" ] || {
(
    paused=0
    ran=0
    susp=0
    done_with=
    uptime_s
    last=$up
    while :; do
        sleep 1
        kill -0 $$ 2>/dev/null || exit 0  # the wrapper is gone (killed): so is its watch
        m_job=; m_dir=; m_name=
        # (a chain's runs, or a run linked to a lone job later: the file is there)
        [ ! -f "$cur" ] || { read -r m_job; read -r m_dir; read -r m_name; } < "$cur" 2>/dev/null
        [ -n "$m_job" ] || m_job=$job  # (not readable: the run it was started with)
        uptime_s
        if [ "$m_job" != "$job" ]; then  # the next run of the chain: counted afresh
            job=$m_job; ctl=$m_dir/.dssh; name=$m_name; run_mark="DSSH_RUN=$m_dir"
            paused=0; ran=0; susp=0; last=$up
        fi
        [ "$done_with" != "$job" ] || continue  # stopped already: its end is near
        if pause_check; then
            if [ $paused = 0 ]; then
                paused=1
                echo "$pause_until $pause_by" > "$ctl/paused"
                if [ "$on_pause" = suspend ]; then
                    signal_tree STOP
                    signal_tree STOP  # again, for processes forked while the first ran
                    : > "$ctl/suspended"
                    event "~suspend $name"
                else
                    event "~paused $name"
                fi
            elif [ "$on_pause" = suspend ]; then
                signal_tree STOP  # anything that was continued from outside
            fi
        elif [ $paused = 1 ]; then
            paused=0
            susp=0  # migrate_after counts one pause at a time
            rm -f "$ctl/paused"
            if [ -f "$ctl/suspended" ]; then
                signal_tree CONT
                rm -f "$ctl/suspended"
            fi
            event "~resume $name"
        fi
        # Only running time counts against the timeout.
        if [ $paused = 0 ] || [ "$on_pause" != suspend ]; then
            ran=$((ran + up - last))
        else
            susp=$((susp + up - last))
        fi
        last=$up
        if [ "$mig_after" -gt 0 ] 2>/dev/null && [ "$susp" -ge "$mig_after" ]; then
            # Suspended too long: a polite signal (continued, so the solver can save its
            # state into outputs/), a grace period, then stopped; the head runs it on
            # another host with what it saved.
            : > "$ctl/migrated"
            signal_tree "$mig_sig"
            signal_tree CONT
            i=0
            while [ $i -lt "$mig_grace" ] && alive; do sleep 1; i=$((i + 1)); done
            signal_tree KILL
            done_with=$job
            continue
        fi
        [ "$timeout" -gt 0 ] 2>/dev/null || continue
        if [ "$ran" -ge "$timeout" ]; then
            : > "$ctl/timed_out"
            signal_tree TERM
            signal_tree CONT
            i=0
            while [ $i -lt 10 ] && alive; do sleep 1; i=$((i + 1)); done
            signal_tree KILL
            done_with=$job
            continue
        fi
    done
) &
mon=$!
}
wait "$job"
rc=$?
# Those still in its process group first (a builtin check: no cost when there are none)...
if kill -0 "-$job" 2>/dev/null && alive; then end_leftovers; fi
[ -e "$ctl/suspended" ] || [ -e "$ctl/paused" ] && rm -f "$ctl/suspended" "$ctl/paused"
# A run the head linked to this one while it ran (its look-ahead, SPEC §5): the head
# links .dssh/next into place (ln, which fails if the name exists) and this closes it
# (O_EXCL): of the two, exactly one wins. A linked run has .dssh/as-next, which the head
# linked into place.
if [ -z "$nxt" ]; then
    set -C
    # (printf, not ":": a redirection that fails on a special built-in ends the shell)
    if ! printf '' 2>/dev/null > "$ctl/next" && [ -s "$ctl/next" ]; then
        { read -r nxt; read -r nname; } < "$ctl/next"
    fi
    set +C
fi
# The next run of the chain, taken before this job's end is told: a head that hears the
# end knows the slot's next run has started, or hears it given back.
if [ -n "$nxt" ]; then
    if pause_check || [ -f "$ctl/migrated" ]; then
        give_back "$nxt" "$nname"
        nxt=
    else
        set -C
        printf '%s\n' "$$" > "$nxt/.dssh/launched" 2>/dev/null || nxt=
        set +C
        # A linked run taken is told (~took), before this job's end: a head hearing
        # that end knows the slot went on. (A link may have been there when this run
        # began, and read with it: its as-next tells it from a chain's run, and a chain
        # of short jobs pays no line for each.)
        [ -z "$nxt" ] || { chained=1; [ ! -f "$nxt/.dssh/as-next" ] || event "~took $nname"; }
    fi
fi
if [ -z "$nxt" ]; then
    # The claim is given back by marking it ended (heads count it no more, and remove
    # it): an append by the shell itself, where removing it would cost a process.
    [ -n "$claim" ] && [ -f "$claim" ] && [ ! -L "$claim" ] && printf 'ended\n' >> "$claim"
elif [ -n "$claim" ] && [ -f "$claim" ] && [ ! -L "$claim" ]; then
    # The claim goes on, for the next run of the chain: the same process holds the slot.
    printf 'job %s\ndir %s\n' "$nname" "$nxt" >> "$claim"
fi
printf '' > "$ctl/finished"
# One write of a few bytes: a reader finds the file empty (not ended yet) or whole.
echo "$rc" > "$ctl/exit_code"
# (a job moved off a long pause did not fail, whatever its exit code: it says so)
if [ -f "$ctl/migrated" ]; then event "$name migrated"; else event "$name $rc"; fi
# ...then, once the head has heard, any that left the group but carry the job's mark.
# A head following the host looks for those when it collects the job (for a whole batch
# of jobs at once); with none following, the wrapper looks itself.
watched=
if [ -n "$notify" ] && [ -f "$notify.watcher" ] && read -r wp < "$notify.watcher"; then
    kill -0 "$wp" 2>/dev/null && watched=1
fi
if [ -z "$watched" ] && grep -q -l -F -x -z -- "$run_mark" /proc/[0-9]*/environ 2>/dev/null; then
    end_leftovers
fi
if [ -z "$nxt" ]; then
    kill "$mon" 2>/dev/null
    [ -z "$chained" ] || rm -f "$cur"
    exit 0
fi
dir=$nxt
name=$nname
done
