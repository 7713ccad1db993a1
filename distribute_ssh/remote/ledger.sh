#!/bin/sh
# dssh ledger: the count of cpus, GPUs and job slots that every user's dssh heads hold on
# this host. One shared, world-writable, sticky directory (LEDGER); each claim is one
# file in it, owned by the user whose job it is:
#
#   c-NAME   a claim: user, head, machine, sweep, job, kind, cpus, gpus, since, cap, dir,
#            boot; the job's wrapper adds "pid" and "pstart" when it starts and "ended"
#            when the job ends (it then counts no more, and its user's heads remove it).
#   w-NAME   a head waiting for room here: head, user, sweep, cpus, gpus, since. Kept
#            fresh (mtime, every second) while the head waits; stale after WAIT_STALE
#            seconds.
#   lock     flock(1) on it makes claims atomic: two heads racing for the last cpus
#            cannot both win.
#
# A claim counts while it is live: its wrapper runs (same boot, /proc/PID with the same
# start time, not a zombie), or, not started yet, it is younger than PENDING_STALE seconds. Other claims
# are reclaimed: not counted, and removed by whoever may remove them.
#
# The capacity in force is the smallest that any live claim, or the head asking, records
# ("cap CPUS SLOTS GPUS"): heads whose inventories disagree never push a host past the
# smallest figure among those sharing it.
#
# Waiting is first come, first served: a claim that fits is still refused ("yield") while
# another head has waited longer and the room now free would fit its job; and once a head
# has waited RESERVE_AFTER seconds, nobody else claims until it has its turn.
#
#   ledger.sh claim  L NAME HEAD USER MACHINE SWEEP JOB KIND CPUS GPUS CAPCPUS CAPSLOTS CAPGPUS DIR WAITER
#       prints "ok NOW", or "full REASON" / "yield REASON"; then the ledger as "show" does
#   ledger.sh claims L HEAD USER MACHINE SWEEP CAPCPUS CAPSLOTS CAPGPUS WAITER < REQUESTS
#       many claims at once, one request per line (NAME JOB KIND CPUS GPUS DIR, by tabs):
#       a decision per request, in order, then the ledger as "show" does
#   ledger.sh show   L [HEAD]        the live claims and waiters, the capacity, a token
#   ledger.sh wait   L TOKEN HEAD USER SWEEP CPUS GPUS WAITER
#       registers HEAD as waiting, returns once the ledger changes (or after 2 s), shows it
#   ledger.sh unwait L WAITER        HEAD no longer waits here
# WAITER is the name of HEAD's waiter file here (w-WAITER): USER-DIGEST of HEAD.
#   ledger.sh forget L HEAD USER     drop HEAD's claims for starts it never made (it died
#                                    in the middle of them), then show
# GPUS and CAPGPUS are comma lists or "-"; CAPSLOTS is a number or "-" (no limit).
PENDING_STALE=60
WAIT_STALE=4
RESERVE_AFTER=120

cmd=$1
L=$2
TAB='	'

fail() { echo "error $*"; exit 0; }

# The ledger dir: created world-writable and sticky by the first head that needs it.
if [ ! -d "$L" ]; then
    mkdir -p "$(dirname "$L")" 2>/dev/null
    mkdir -m 1777 "$L" 2>/dev/null || [ -d "$L" ] || fail "cannot create the ledger dir $L"
fi
[ -w "$L" ] && [ -x "$L" ] || fail "the ledger dir $L is not writable by $(id -un): make it world-writable and sticky (chmod 1777 $L)"

command -v flock >/dev/null 2>&1 || fail "no 'flock' (util-linux) on this host: dssh needs it to share the host with other users' heads"

token() { stat -c %.9Y "$L" 2>/dev/null; }

# Now, to the nanosecond where date can tell: the order of waiters.
stamp() { t=$(date +%s.%N); case $t in *N) date +%s ;; *) echo "$t" ;; esac; }

NL='
'

# Evaluate the ledger: prints one tab-separated line per live claim and waiter, the
# capacity in force, what is in use, a token (the dir's mtime), and DEAD lines for
# reclaimable claims. With needs (NEEDS: "CPUS:GPUS ..."), prints a decision for each
# first, in order: "ok NOW", "full no room" or "yield WHY". Three processes (stat, awk and a subshell): it runs for
# every job start.
evaluate() {
    boot=
    read -r boot < /proc/sys/kernel/random/boot_id 2>/dev/null
    stat -c '%.9Y %s %f %n' -- "$L" "$L"/c-* "$L"/w-* 2>/dev/null |
    awk -v boot="$boot" -v me="${HEAD:-}" -v pstale=$PENDING_STALE \
        -v wstale=$WAIT_STALE -v reserve=$RESERVE_AFTER -v needs="${NEEDS:-}" -v capc="${CAP_CPUS:-}" -v caps="${CAP_SLOTS:-}" \
        -v capg="${CAP_GPUS:-}" -v T="$TAB" '
function field(k) { return (k in v) ? v[k] : "" }
function alive(pid, pstart,   line, n, a, rest) {
    if ((getline line < ("/proc/" pid "/stat")) <= 0) return 0
    close("/proc/" pid "/stat")
    rest = substr(line, index(line, ") ") + 2)
    n = split(rest, a, " ")
    return (n >= 20 && a[20] == pstart && a[1] != "Z" && a[1] != "X")
}
function listset(s, arr,   n, a, i) {
    delete arr
    if (s == "" || s == "-") return 0
    n = split(s, a, ",")
    for (i = 1; i <= n; i++) arr[a[i]] = 1
    return n
}
NR == 1 { tok = $1; srand(); now = srand(); next }
# Only regular files of a claim'"'"'s size are read: another user'"'"'s FIFO, device or symlink
# (to /dev/zero, say) in this shared dir must not stall or flood anyone'"'"'s head.
$3 !~ /^8[0-9a-f][0-9a-f][0-9a-f]$/ || $2 + 0 > 65536 { next }
{
    mt = $1; f = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", f)
    delete v
    while ((getline line < f) > 0) {
        k = line; sub(/ .*/, "", k)
        v[k] = (index(line, " ") ? substr(line, index(line, " ") + 1) : "")
    }
    close(f)
    base = f; sub(/.*\//, "", base)
    if (substr(base, 1, 2) == "w-") {
        if (now - mt >= wstale || field("head") == "") next
        nw++; wh[nw] = field("head"); ws[nw] = field("since") + 0; wst[nw] = field("since")
        wc[nw] = field("cpus") + 0; wg[nw] = field("gpus") + 0
        wu[nw] = field("user"); wsw[nw] = field("sweep")
        next
    }
    pid = field("pid")
    if ("ended" in v) live = 0  # its job has ended: the wrapper gave it back
    else if (field("boot") != "" && boot != "" && field("boot") != boot) live = 0
    else if (pid != "") live = alive(pid, field("pstart"))
    else live = (now - mt < pstale)
    if (!live) { dead[++nd] = f; next }
    n++
    cu[n] = field("user"); cc[n] = field("cpus") + 0; cg[n] = field("gpus")
    if (cg[n] == "") cg[n] = "-"
    ck[n] = field("kind"); csw[n] = field("sweep"); cj[n] = field("job")
    ch[n] = field("head"); cm[n] = field("machine"); cs[n] = field("since")
    cd[n] = field("dir"); cst[n] = (pid != "" ? "running" : "starting")
    cap[n] = field("cap")
}
function inter(x, y,   xs, ys, g, out) {
    if (x == "-" || y == "-") return "-"
    listset(x, xs); listset(y, ys); out = ""
    for (g in xs) if (g in ys) out = out (out == "" ? "" : ",") g
    return (out == "" ? "-" : out)
}
END {
    # The capacity in force: the smallest any live claim (or the asking head) records.
    # "" is unknown (no limit known), "-" none (GPUs) or unlimited (slots).
    ec = capc; es = caps; eg = capg
    for (i = 1; i <= n; i++) {
        m = split(cap[i], a, " ")
        if (m >= 1 && a[1] ~ /^[0-9]+$/ && (ec == "" || a[1] + 0 < ec + 0)) ec = a[1]
        if (m >= 2 && a[2] ~ /^[0-9]+$/ && (es == "" || es == "-" || a[2] + 0 < es + 0)) es = a[2]
        if (m >= 3 && a[3] != "") eg = (eg == "" ? a[3] : inter(eg, a[3]))
    }
    egn = listset(eg, gset)
    used = 0; jobs = 0; delete busy
    for (i = 1; i <= n; i++) {
        used += cc[i]; jobs++
        if (cg[i] != "-") { m = split(cg[i], a, ","); for (k = 1; k <= m; k++) busy[a[k]] = 1 }
    }
    ngfree = 0; freeg = ""
    listset(eg, gset)
    for (g in gset) if (!(g in busy)) { ngfree++; freeg = freeg (freeg == "" ? "" : ",") g }
    # One verdict per need, in order: each one that fits counts against the next.
    used0 = used; jobs0 = jobs
    nneeds = split(needs, nl, " ")
    for (q = 1; q <= nneeds; q++) {
        split(nl[q], nd2, ":"); ncpus = nd2[1] + 0; ngpus = nd2[2]
        verdict = "ok"
        mine = 1e18  # not waiting: anyone who is, waited longer
        for (i = 1; i <= nw; i++) if (wh[i] == me) mine = ws[i]
        fits = (ec == "" || used + ncpus <= ec + 0) && (es == "-" || es == "" || jobs + 1 <= es + 0)
        want = listset(ngpus, need)
        for (g in need) if (!(g in gset) || (g in busy)) fits = 0
        if (!fits) verdict = "full"
        else for (i = 1; i <= nw; i++) {
            if (wh[i] == me || ws[i] >= mine) continue
            wfits = (ec == "" || used + wc[i] <= ec + 0) && (es == "-" || es == "" || jobs + 1 <= es + 0) && wg[i] <= ngfree
            never = (ec != "" && wc[i] > ec + 0) || wg[i] > egn
            if (wfits || (!never && now - ws[i] >= reserve)) {
                verdict = "yield"; why = wu[i] " (" wsw[i] ") has waited longer"
                break
            }
        }
        print verdict " " (verdict == "ok" ? now : verdict == "full" ? "no room" : why)
        if (verdict == "ok") {
            used += ncpus; jobs++
            for (g in need) { busy[g] = 1; ngfree-- }
        }
    }
    for (i = 1; i <= n; i++)
        print "claim" T cu[i] T cc[i] T cg[i] T cs[i] T ck[i] T cst[i] T csw[i] T cj[i] T cm[i] T ch[i] T cd[i]
    for (i = 1; i <= nw; i++)
        print "waiter" T wu[i] T wc[i] T wg[i] T wst[i] T wsw[i] T wh[i]
    print "cap" T ec T es T eg
    print "used" T used0 T jobs0 T freeg
    print "token" T tok
    for (i = 1; i <= nd; i++) print "dead" T dead[i]
}'
}

# Print the evaluation without its DEAD lines; with "rm", remove those files (where this
# user may: their owner's heads remove the rest).
emit() {
    rm=$1
    set --
    while IFS= read -r line; do
        case $line in
            dead"$TAB"*) [ "$rm" = rm ] && set -- "$@" "${line#dead"$TAB"}" ;;
            *) printf '%s\n' "$line" ;;
        esac
    done
    [ $# = 0 ] || rm -f -- "$@" 2>/dev/null
}

lock() {
    [ -e "$L/lock" ] || [ -L "$L/lock" ] || (set -C; : > "$L/lock") 2>/dev/null
    # a FIFO or a symlink put there by someone else would stall or mislead every head
    [ -f "$L/lock" ] && [ ! -L "$L/lock" ] || fail "$L/lock is not a regular file: remove it (it is recreated)"
    exec 9< "$L/lock" || fail "cannot open $L/lock"
    flock -w 20 9 || fail "the ledger $L stayed locked for 20 s"
}

# A waiter's file, created with the time of the first refusal, or kept fresh.
stand() {
    if [ -f "$1" ]; then touch "$1"; return; fi
    # a file of our own (mktemp: never through a name someone else made), renamed into
    # place: a rename never writes through a symlink, and in this sticky dir it cannot
    # replace another user's file
    t=$(mktemp "$L/.w.XXXXXX") || return 0
    printf 'head %s\nuser %s\nsweep %s\ncpus %s\ngpus %s\nsince %s\n' "$HEAD" "$USER_" \
        "$SWEEP" "$2" "$3" "$(stamp)" > "$t" && chmod 644 "$t" && mv -f "$t" "$1" || rm -f "$t"
}

umask 022
case $cmd in
show)
    HEAD=${3:-}
    evaluate | emit
    ;;
claim)
    NAME=$3 HEAD=$4 USER_=$5 MACHINE=$6 SWEEP=$7 JOB=$8 KIND=$9
    shift 9
    NEED_CPUS=$1 NEED_GPUS=$2 CAP_CPUS=$3 CAP_SLOTS=$4 CAP_GPUS=$5 DIR=$6 WAITER=$7
    NEEDS="$NEED_CPUS:$NEED_GPUS"
    lock
    out=$(evaluate)
    verdict=${out%%"$NL"*}
    w="$L/w-$WAITER"
    case $verdict in
    ok*)
        boot=
        read -r boot < /proc/sys/kernel/random/boot_id 2>/dev/null
        c="$L/c-$NAME"
        gl=$NEED_GPUS; [ "$gl" = - ] && gl=
        # Written to a file of our own and renamed into place (see stand): a name someone
        # else put here first (a symlink to one of our files, say) is never written through.
        t=$(mktemp "$L/.c.XXXXXX") || fail "cannot write in $L"
        if ! { printf 'user %s\nhead %s\nmachine %s\nsweep %s\njob %s\nkind %s\ncpus %s\ngpus %s\nsince %s\ncap %s %s %s\ndir %s\nboot %s\n' \
            "$USER_" "$HEAD" "$MACHINE" "$SWEEP" "$JOB" "$KIND" "$NEED_CPUS" "$gl" \
            "${verdict#ok }" "$CAP_CPUS" "$CAP_SLOTS" "$CAP_GPUS" "$DIR" "$boot" > "$t" &&
            chmod 644 "$t" && mv -f "$t" "$c"; }; then
            rm -f "$t"
            fail "cannot write $c"
        fi
        # served: a later wait starts afresh, behind those already waiting
        [ -f "$w" ] && rm -f "$w"
        ;;
    *)
        # Waiting from now on (or still): the first refusal sets the place in the queue.
        gn=0
        if [ "$NEED_GPUS" != - ]; then IFS=,; set -- $NEED_GPUS; gn=$#; IFS=' 	
'; fi
        stand "$w" "$NEED_CPUS" "$gn"
        ;;
    esac
    emit rm <<EOF
$out
EOF
    ;;
claims)
    # Many claims under one lock and one look at the ledger: a head starting a batch of
    # jobs. One request per line on stdin: NAME JOB KIND CPUS GPUS DIR, tab-separated.
    # Prints a decision per request, in order, then the ledger as "show" does.
    HEAD=$3 USER_=$4 MACHINE=$5 SWEEP=$6 CAP_CPUS=$7 CAP_SLOTS=$8 CAP_GPUS=$9
    shift 9
    WAITER=$1
    reqs=
    NEEDS=
    n=0
    while IFS=$TAB read -r name job kind cpus gpus dir; do
        [ -n "$name" ] || continue
        case $name in */*|.*) fail "bad claim name $name" ;; esac
        reqs="$reqs$name$TAB$job$TAB$kind$TAB$cpus$TAB$gpus$TAB$dir$NL"
        NEEDS="$NEEDS $cpus:$gpus"
        n=$((n + 1))
    done
    lock
    out=$(evaluate)
    boot=
    read -r boot < /proc/sys/kernel/random/boot_id 2>/dev/null
    w="$L/w-$WAITER"
    refused=
    served=
    i=0
    verdicts=
    rest=
    # Claims are created with O_EXCL (noclobber): never through a name someone else put
    # here first, and without a process per claim.
    set -C
    while IFS= read -r line; do
        if [ $i -ge $n ]; then rest="$rest$line$NL"; continue; fi
        i=$((i + 1))
        r=${reqs%%"$NL"*}
        reqs=${reqs#*"$NL"}
        IFS=$TAB read -r name job kind cpus gpus dir <<EOF
$r
EOF
        case $line in
        ok*)
            c="$L/c-$name"
            if [ -e "$c" ] || [ -L "$c" ]; then rm -f "$c"; fi
            gl=$gpus; [ "$gl" = - ] && gl=
            # (someone else's file or link by that name: this claim fails, not the others)
            if printf 'user %s\nhead %s\nmachine %s\nsweep %s\njob %s\nkind %s\ncpus %s\ngpus %s\nsince %s\ncap %s %s %s\ndir %s\nboot %s\n' \
                "$USER_" "$HEAD" "$MACHINE" "$SWEEP" "$job" "$kind" "$cpus" "$gl" \
                "${line#ok }" "$CAP_CPUS" "$CAP_SLOTS" "$CAP_GPUS" "$dir" "$boot" > "$c" \
                2>/dev/null; then
                served=1
            else
                line="error cannot write $c"
            fi
            ;;
        *) [ -n "$refused" ] || refused="$cpus $gpus" ;;
        esac
        verdicts="$verdicts$line$NL"
    done <<EOF
$out
EOF
    set +C
    if [ -n "$refused" ]; then
        # Waiting from now on (or still): the first refusal sets the place in the queue.
        gn=0
        g=${refused#* }
        if [ "$g" != - ]; then IFS=,; set -- $g; gn=$#; IFS=' 	
'; fi
        stand "$w" "${refused%% *}" "$gn"
    elif [ -n "$served" ] && [ -f "$w" ]; then
        rm -f "$w"
    fi
    printf '%s' "$verdicts"
    emit rm <<EOF
$rest
EOF
    ;;
wait)
    TOKEN=$3 HEAD=$4 USER_=$5 SWEEP=$6 WAITER=$9
    w="$L/w-$WAITER"
    stand "$w" "$7" "$8"
    # Run with exec by the head's SSH session: when the head is gone, so is our parent,
    # and its place in the queue goes at once (which wakes the others).
    parent=$PPID
    i=0
    while [ "$(token)" = "$TOKEN" ] && [ $i -lt 10 ]; do
        sleep 0.2
        kill -0 "$parent" 2>/dev/null || { rm -f "$w"; exit 0; }
        i=$((i + 1))
        [ $((i % 5)) = 0 ] && touch "$w"
    done
    evaluate | emit
    ;;
forget)
    # A head starting up: drop the claims of this head's earlier life for starts that never
    # got as far as their wrapper (it died in the middle): they would count for a minute.
    HEAD=$3 USER_=$4
    lock
    now=
    for f in "$L/c-$USER_"-*; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        h= d= p=
        while read -r k v; do
            case $k in head) h=$v ;; dir) d=$v ;; pid) p=$v ;; esac
        done < "$f"
        [ "$h" = "$HEAD" ] && [ -z "$p" ] || continue
        if [ -n "$d" ] && [ -e "$d/.dssh/launched" ]; then
            # launched: its wrapper signs the claim in a moment, unless it never ran
            m=$(stat -c %Y "$d/.dssh/launched" 2>/dev/null || echo 0)
            [ -n "$now" ] || now=$(date +%s)  # (only when needed: seldom)
            [ $((now - m)) -lt 30 ] && continue
        fi
        rm -f "$f"
    done
    evaluate | emit
    ;;
unwait)
    rm -f "$L/w-$3"
    ;;
*)
    fail "unknown ledger command $cmd"
    ;;
esac
exit 0
