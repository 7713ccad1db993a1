#!/bin/sh
# dssh owner activity (SPEC §6c): is someone other than dssh using this machine?
#   activity.sh CONF STATE           look now, update STATE
#   activity.sh --report CONF STATE  look now, update STATE, and print every signal
# CONF is the host's pause settings (see wrapper.sh); its "when_*" lines say what counts:
#   when_owner SECS  a login session of another user with input in the last SECS seconds
#                    (its terminal's last read, /dev/pts and /dev/tty*; a graphical
#                    session's idle hint from loginctl, where logind runs)
#   when_load MILLI  runnable threads of other users than dssh's, averaged over about
#                    LOAD_TAU seconds, above MILLI/1000
#   when_gpu 1       a process that is not dssh's on a GPU dssh hands out (nvidia-smi)
#   when_clear SECS  how long every signal must be clear before dssh's jobs go on
# STATE holds one line: UPTIME HELD_UNTIL LOAD_MILLI REASON..., in /proc/uptime seconds:
# the host is held (behaves as paused) while HELD_UNTIL is ahead of the uptime. Wrappers
# read it with shell builtins and call this script about once a second.
conf=$1
report=
if [ "$conf" = --report ]; then report=1; conf=$2; state=$3; else state=$2; fi
LOAD_TAU=10
owner=
load=
gpu=
clear=300
gpus=
ledger=
while read -r k v; do
    case $k in
        when_owner) owner=$v ;;
        when_load) load=$v ;;
        when_gpu) gpu=$v ;;
        when_clear) clear=$v ;;
        gpus) gpus=$v ;;
        ledger) ledger=$v ;;
    esac
done < "$conf"
read -r up _ < /proc/uptime
up=${up%.*}
at=0 held=0 ema=0 last=
if [ -f "$state" ]; then read -r at held ema last < "$state" 2>/dev/null; fi
case "$at:$held:$ema" in *[!0-9:]*|:*|*::*|*:) at=0 held=0 ema=0 ;; esac  # (or none yet)
[ "$at" -le "$up" ] || { at=0; held=0; ema=0; }  # the machine rebooted since
me=$(id -u)
now=$(date +%s)
reasons=

say() { [ -n "$report" ] && echo "$*"; }
because() { reasons="${reasons:+$reasons; }$*"; }

# dssh's own users: this one, and whoever holds claims (c-*) in the host's ledger
dssh_uids=" $me "
if [ -n "$ledger" ] && [ -d "$ledger" ]; then
    for u in $(ls -ln "$ledger" 2>/dev/null | awk 'NR > 1 && $9 ~ /^c-/ {print $3}' | sort -u); do
        dssh_uids="$dssh_uids$u "
    done
fi

if [ -n "$owner" ]; then
    # Terminals: a user's terminal is theirs (devpts, login); its atime is their last key.
    best=
    for line in $(stat -c '%u:%X:%U:%n' /dev/pts/[0-9]* /dev/tty[0-9]* 2>/dev/null); do
        uid=${line%%:*}; rest=${line#*:}; t=${rest%%:*}; rest=${rest#*:}
        user=${rest%%:*}; dev=${rest#*:}
        case $dssh_uids in *" $uid "*) continue ;; esac
        [ "$uid" = 0 ] && continue
        idle=$((now - t)); [ "$idle" -ge 0 ] || idle=0
        if [ -z "$best" ] || [ "$idle" -lt "${best%% *}" ]; then best="$idle $user ${dev#/dev/}"; fi
    done
    if [ -n "$best" ]; then
        say "signal terminal ok $best"
        set -- $best
        [ "$1" -lt "$owner" ] && because "$2 typed on $3 $1 s ago"
    else
        say "signal terminal ok none"
    fi
    # Graphical sessions: logind's idle hint, where logind runs.
    if command -v loginctl >/dev/null 2>&1 && ids=$(loginctl list-sessions --no-legend 2>/dev/null); then
        n=0
        for id in $(echo "$ids" | awk '{print $1}'); do
            info=$(loginctl show-session "$id" -p Name -p Type -p Active -p IdleHint -p IdleSinceHint -p User 2>/dev/null) || continue
            suid=$(echo "$info" | sed -n 's/^User=//p'); name=$(echo "$info" | sed -n 's/^Name=//p')
            case $dssh_uids in *" $suid "*) continue ;; esac
            [ "$suid" = 0 ] && continue
            typ=$(echo "$info" | sed -n 's/^Type=//p')
            case $typ in x11|wayland|mir) ;; *) continue ;; esac
            n=$((n + 1))
            [ "$(echo "$info" | sed -n 's/^Active=//p')" = yes ] || continue
            if [ "$(echo "$info" | sed -n 's/^IdleHint=//p')" = yes ]; then
                since=$(echo "$info" | sed -n 's/^IdleSinceHint=//p'); since=$((since / 1000000))
                idle=$((now - since))
            else
                idle=0
            fi
            say "signal graphical ok $idle $name $typ"
            [ "$idle" -lt "$owner" ] && because "$name active in a graphical session ($idle s idle)"
        done
        [ "$n" -gt 0 ] || say "signal graphical ok none"
    else
        say "signal graphical unreadable no logind here (loginctl list-sessions fails): graphical sessions are not seen"
    fi
fi

runnable() {
    ps -e -L -o uid=,stat= 2>/dev/null | awk -v skip="$dssh_uids" '
        BEGIN { n = split(skip, s, " "); for (i = 1; i <= n; i++) mine[s[i]] = 1 }
        $2 ~ /^R/ && !($1 in mine) { c++ } END { print c + 0 }'
}

if [ -n "$load" ]; then
    if runnable=$(runnable) && [ -n "$runnable" ]; then
        dt=$((up - at)); [ "$at" -gt 0 ] || dt=$LOAD_TAU
        if [ "$dt" -ge "$LOAD_TAU" ]; then
            # No recent average: what keeps running, not a moment's spike (the least of
            # two looks).
            dt=$LOAD_TAU
            sleep 0.2
            r=$(runnable)
            [ -n "$r" ] && [ "$r" -lt "$runnable" ] && runnable=$r
        fi
        ema=$((ema + (runnable * 1000 - ema) * dt / LOAD_TAU))
        say "signal load ok $ema $runnable"
        [ "$ema" -gt "$load" ] && because "load of other users' processes $(awk -v e="$ema" 'BEGIN { printf "%.1f", e / 1000 }')"
    else
        say "signal load unreadable ps -L does not work here"
    fi
fi

if [ "$gpu" = 1 ]; then
    if command -v nvidia-smi >/dev/null 2>&1 &&
            map=$(nvidia-smi --query-gpu=index,uuid --format=csv,noheader 2>/dev/null) &&
            apps=$(nvidia-smi --query-compute-apps=gpu_uuid,pid --format=csv,noheader 2>/dev/null); then
        busy=
        for a in $(echo "$apps" | tr -d ' '); do
            uuid=${a%,*}; pid=${a#*,}
            uid=$(stat -c %u "/proc/$pid" 2>/dev/null) || continue
            case $dssh_uids in *" $uid "*) continue ;; esac
            idx=$(echo "$map" | tr -d ' ' | awk -F, -v u="$uuid" '$2 == u {print $1}')
            case " $gpus " in *" $idx "*) busy="${busy:+$busy,}$idx" ;; esac
        done
        say "signal gpu ok ${busy:-none}"
        [ -n "$busy" ] && because "GPU $busy busy with another user's process"
    else
        say "signal gpu unreadable nvidia-smi is missing or fails"
    fi
fi

if [ -n "$reasons" ]; then
    held=$((up + clear))
elif [ "$held" -gt "$up" ]; then
    reasons=$last  # clear now, but not yet for long enough
fi
tmp="$state.$$"
printf '%s %s %s %s\n' "$up" "$held" "$ema" "${reasons:-clear}" > "$tmp" && mv -f "$tmp" "$state"
if [ -n "$report" ]; then
    left=$((held - up)); [ "$left" -gt 0 ] || left=0
    echo "held $left ${reasons:-clear}"
fi
exit 0
