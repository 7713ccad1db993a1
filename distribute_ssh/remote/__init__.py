"""What dssh puts on a host: the job wrapper, the watcher, and the shell snippets it runs.

Every snippet is built from quoted pieces (``shlex.quote``), never pasted strings.
Scripts are content-addressed (``bin/wrapper-<hash>.sh``) so hosts shared by heads of
different versions never overwrite each other's copy.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from shlex import quote as q
from typing import Any

from ..durations import parse_duration

# A run dir claimed but not launched for this long was left by a head that died while
# starting it; younger, another head's start may be in flight.
CLAIM_STALE = 30
MARK_DAYS = 7  # how long a collected run's mark stays on its host


@cache
def script(name: str) -> tuple[str, bytes]:
    """(file name on the host, content) of a shipped script."""
    data = resources.files(__package__).joinpath(f"{name}.sh").read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:12]
    return f"{name}-{digest}.sh", data


def install_check(bin_dir_sh: str, names: list[str]) -> str:
    """A script printing the names of shipped scripts missing from the dir that the shell
    expression ``bin_dir_sh`` names (it exists), e.g. ``"$w"/bin``."""
    return "".join(f"[ -f {bin_dir_sh}/{q(script(n)[0])} ] || echo {q(n)}\n"
                   for n in names)


# What tool_facts looks for; a new look (another word, say) needs a new version here.
FACTS_VERSION = "1"


def tool_facts(bin_dir_sh: str) -> str:
    """A script printing ``gnutar`` and ``findprintf`` where the host's tar is GNU tar and
    its find has -printf (jobs' results are then collected in batches).

    Tools change with the software a host runs, and that hardly ever changes without a
    reboot; a look costs two processes at every connection, and with a hundred hosts
    connecting at once each process costs. So the answer is kept in the dir ``bin_dir_sh``
    names (it exists), under the host's boot id, and looked at again after a reboot (or
    where there is no boot id, every time). A home shared by several hosts (NFS) holds one
    answer at a time, each host's under its own boot id: never another host's."""
    return (
        "_fb=; read -r _fb < /proc/sys/kernel/random/boot_id 2>/dev/null\n"
        f"_ff={bin_dir_sh}/facts; _fk=\"boot $_fb {FACTS_VERSION}\"\n"
        # the key and the answer from one open: a file replaced meanwhile is not mixed in
        'if [ -n "$_fb" ] && [ -f "$_ff" ] && { read -r _fx && [ "$_fx" = "$_fk" ] &&\n'
        '    while read -r _fx; do echo "$_fx"; done; } < "$_ff" 2>/dev/null; then :\n'
        "else\n"
        "  _fx=\n"
        "  case $(tar --version 2>/dev/null) in 'tar (GNU tar)'*) _fx=gnutar ;; esac\n"
        "  ! find / -maxdepth 0 -printf '' 2>/dev/null || _fx=\"$_fx findprintf\"\n"
        "  for _w in $_fx; do echo \"$_w\"; done\n"
        # one write (a reader sees it whole, or no key and looks for itself), no process
        '  [ -z "$_fb" ] || printf \'%s\\n\' "$_fk" $_fx 2>/dev/null >| "$_ff" || :\n'
        "fi\n")


INSTALL_FAILED = "@@install-failed"


def install(bin_dir: str, names: list[str]) -> str:
    """Shell that writes the shipped scripts ``names`` into ``bin_dir``, each whole or not
    at all (a script cut short would be taken for the real one: their names are their
    hashes). They are written into a directory of this shell's own and moved into place
    together: a rename is atomic, and two heads installing at once write the same bytes.
    When they could not be written, prints why, then INSTALL_FAILED, and ends the shell.
    One round trip, with what else is to be done then, instead of an SFTP session."""
    writes = "".join(f"  printf '%s' {q(data.decode())} > \"$t\"/{q(fname)} &&\n"
                     for fname, data in map(script, names))
    # (the reasons are kept and said only on failure: the output that follows is parsed)
    return (f"b={q(bin_dir)}; t=\"$b/.new.$$\"\n"
            'if why=$({ mkdir "$t" &&\n' + writes
            + '  chmod 700 "$t"/* && mv -f "$t"/* "$b"/; } 2>&1); then rmdir "$t"\n'
            f'else rm -rf "$t"; printf \'%s\\n\' "$why"; echo {INSTALL_FAILED}; exit 0; fi\n')


def export_lines(env: dict[str, str]) -> str:
    return "".join(f"export {k}={q(v)}\n" for k, v in env.items())


def command_script(workdir: str, env: dict[str, str], command: str, *, merge_stderr=False) -> str:
    """The ``command.sh`` a wrapper runs: environment, working dir, then the command, in
    the same shell (a shell of its own would cost every job one more process)."""
    return ("# written by dssh\n" + export_lines(env) + f"cd {q(workdir)} || exit 1\n"
            + ("exec 2>&1\n" if merge_stderr else "") + command + "\n")


CLEAR_FOR = 300.0  # pause_when: how long the owner's signals must be clear, by default


def pause_conf(home: str, pause_files: tuple[str, ...], max_pause: float, on_pause: str,
               nice: int = 0, when: Any = None, activity: str = "", activity_state: str = "",
               gpus: tuple[int, ...] = (), ledger_dir: str = "") -> str:
    """The host's pause settings as the wrapper reads them (``~`` made absolute), the nice
    level its jobs run at, and the owner's activity that counts as a pause (``when``, an
    inventory ``pause_when``; ``activity`` the path of activity.sh there)."""
    lines = [f"max_pause {int(max_pause)}", f"on_pause {on_pause}", f"nice {int(nice)}"]
    if when is not None and any(
            v is not None for v in (when.owner_active, when.foreign_load, when.gpu_busy)):
        if when.owner_active is not None:
            lines.append(f"when_owner {int(parse_duration(when.owner_active))}")
        if when.foreign_load is not None:
            lines.append(f"when_load {int(round(when.foreign_load * 1000))}")
        if when.gpu_busy:
            lines.append("when_gpu 1")
        clear = parse_duration(when.clear_for) if when.clear_for is not None else CLEAR_FOR
        lines += [f"when_clear {int(clear)}", f"gpus {' '.join(map(str, gpus))}",
                  f"ledger {ledger_dir}"]
        if activity:
            lines += [f"activity {activity}", f"activity_state {activity_state}"]
    for p in pause_files:
        if p == "~" or p.startswith("~/"):
            p = home.rstrip("/") + p[1:]
        lines.append(f"file {p}")
    return "\n".join(lines) + "\n"


_SAFE_GLOB = re.compile(r"[A-Za-z0-9_./*?+@%:,-]+")


def any_pause_file(patterns: list[str]) -> str:
    """A shell test that is true when some pause file might be in force: a quick look
    with builtins only, so a start on a free host costs no extra process."""
    words = []
    for p in patterns:
        if not any(c in p for c in "*?["):
            words.append(q(p))
        elif _SAFE_GLOB.fullmatch(p):
            words.append(p)  # left unquoted so the shell expands it
        else:
            return "true"  # an odd pattern: always ask the wrapper
    if not words:
        return "false"
    return ("{ _p=false; for _f in " + " ".join(words)
            + '; do if [ -e "$_f" ] || [ -L "$_f" ]; then _p=true; break; fi; done; $_p; }')


# What nohup does, without a process of its own: SIGHUP ignored (inherited by the wrapper
# and the job), no terminal output. The wrapper needs no session of its own (no terminal
# can hang up on it); the job gets one, so its whole tree can be signalled.
DETACH = "trap '' HUP\n"


def launch(wrapper: str, dir_: str, timeout: int, notify: str, name: str, pconf: str,
           pause_files: list[str] | None = None, claim: str = "", migrate: str = "") -> str:
    """Start the wrapper detached (own session, no tty, stdio closed) and print
    ``started PID`` — or ``paused UNTIL FILE`` and start nothing, when the host's owner
    has paused it.

    ``.dssh/launched`` is written first: a head that dies right here leaves a dir that
    says a start was attempted, so the next head never starts a second copy blindly.
    ``claim`` is the run's claim in the host's ledger: the wrapper signs it and gives it
    back when the job ends; a start the owner's pause stops gives it back at once.
    """
    drop = f"rm -f {q(claim)}; " if claim else ""
    ctl = f"{dir_}/.dssh"
    check = "true" if pause_files is None else any_pause_file(pause_files)
    return (f"cd {q(dir_)} || exit 1\n" + pause_gate(check, wrapper, pconf, drop)
            + f": > {q(ctl + '/launched')}\n" + DETACH
            + start_wrapper(wrapper, dir_, timeout, notify, name, pconf, claim, migrate)
            + 'echo "started $!"\n')


def inspect(dirs: list[str]) -> str:
    """For each run dir print one line: ``<index> <state> [exit_code timed_out]``.

    states: missing (no dir), new (never launched, or launched but its wrapper never
    started, for over CLAIM_STALE seconds: a head died in the middle of starting it),
    claimed (never launched yet, but claimed moments ago: a start is in flight), ended,
    running, suspended
    (its host is paused), lost (launched, but the wrapper is gone without an exit code:
    killed: ``lost killed``, or the host rebooted: ``lost reboot``), collected (a head took its results and left only a
    mark, ``collected WHO``: see :func:`retire`).
    """
    lines = ["boot=; read -r boot < /proc/sys/kernel/random/boot_id 2>/dev/null", "i=0"]
    lines.append("for d in " + " ".join(q(d) for d in dirs) + "; do")
    lines.append(r"""  c="$d/.dssh"
  if [ ! -d "$d" ]; then echo "$i missing"
  elif [ -f "$c/collected" ]; then echo "$i collected $(head -n 1 "$c/collected")"
  elif [ -s "$c/exit_code" ]; then t=0; [ -f "$c/timed_out" ] && t=1
    echo "$i ended $(cat "$c/exit_code") $t"
  elif [ ! -f "$c/launched" ]; then
    m=$(stat -c %Y "$c" 2>/dev/null || stat -c %Y "$d" 2>/dev/null || echo 0)
    if [ $(( $(date +%s) - m )) -lt """ + str(CLAIM_STALE) + r""" ]; then echo "$i claimed $(cat "$c/claim" 2>/dev/null)"
    else echo "$i new"; fi
  elif [ -s "$c/pid" ]; then
    read -r p < "$c/pid"; b=; [ -f "$c/boot_id" ] && read -r b < "$c/boot_id"
    if [ -n "$boot" ] && [ -n "$b" ] && [ "$b" != "$boot" ]; then echo "$i lost reboot"
    elif kill -0 "$p" 2>/dev/null; then
      if [ -f "$c/suspended" ]; then echo "$i suspended"; else echo "$i running"; fi
    elif [ -s "$c/exit_code" ]; then t=0; [ -f "$c/timed_out" ] && t=1
      echo "$i ended $(cat "$c/exit_code") $t"
    else echo "$i lost killed"; fi
  else  # launched, no pid yet: a start in flight, or one cut short before the wrapper ran
    m=$(stat -c %Y "$c/launched" 2>/dev/null || echo 0)
    if [ $(( $(date +%s) - m )) -lt """ + str(CLAIM_STALE) + r""" ]; then echo "$i starting"
    else echo "$i new"; fi
  fi
  i=$((i + 1))
done""")
    return "\n".join(lines) + "\n"


def withdraw(dirs: list[str]) -> str:
    """Take runs never launched back from a host: for each dir print ``<index> gone`` (taken
    back and removed) or ``<index> launched`` (started, or about to be, by a wrapper).
    Taking one back creates its ``.dssh/launched`` with O_EXCL, as a chain's wrapper does
    to take its next run: of the two, exactly one wins. A launch older than CLAIM_STALE
    with no wrapper's pid is a start cut short: it goes too."""
    return ("set -C; i=0\nfor d in " + " ".join(q(d) for d in dirs) + "; do\n" + r"""  c="$d/.dssh"
  if [ ! -d "$c" ]; then rm -rf -- "$d"; echo "$i gone"
  elif printf 'withdrawn\n' 2>/dev/null > "$c/launched"; then rm -rf -- "$d"; echo "$i gone"
  elif [ -s "$c/pid" ]; then echo "$i launched"
  else
    m=$(stat -c %Y "$c/launched" 2>/dev/null || echo 0)
    if [ $(( $(date +%s) - m )) -lt """ + str(CLAIM_STALE) + r""" ]; then echo "$i launched"
    else rm -rf -- "$d"; echo "$i gone"; fi
  fi
  i=$((i + 1))
done
""")


# What goes from a collected run dir $d: everything but .dssh/ with its marks (collected,
# claim) and, when $k is set (outputs kept for `dssh pull`), outputs/ and .dssh/kept;
# appended to "$@".
_TO_REMOVE = r"""  for f in "$d"/* "$d"/.[!.]* "$d/.dssh"/* "$d/.dssh"/.[!.]*; do
    case $f in
      "$d/.dssh"|"$d/.dssh/collected"|"$d/.dssh/claim"|*"/*"|*"/.[!.]*") ;;
      "$d/outputs"|"$d/.dssh/kept") [ -n "$k" ] || set -- "$@" "$f" ;;
      *) set -- "$@" "$f" ;;
    esac
  done
"""

# A run's state, read by the shell itself from its control dir $c: rc (x while it runs),
# t (1 timed out, v killed from outside, m moved off a long pause), k (1 cancelled), s and f (the start and end
# times the files hold; empty: their modification times are the times).
RUN_STATE = r"""rc=x; t=0; k=0; s=; f=
[ -s "$c/exit_code" ] && read -r rc < "$c/exit_code"
[ -f "$c/timed_out" ] && t=1
[ -f "$c/vanished" ] && t=v
[ -f "$c/migrated" ] && t=m
[ -f "$c/cancelled" ] && k=1
[ -s "$c/started" ] && read -r s < "$c/started"
[ -s "$c/finished" ] && read -r f < "$c/finished"
"""


def start_wrapper(wrapper: str, dir_: str, timeout: int, notify: str, name: str, pconf: str,
                  claim: str, migrate: str = "") -> str:
    """The command that starts a run's wrapper detached (see DETACH), in the background.
    ``migrate`` is ``AFTER:SIGNAL:GRACE`` (migrate_after, in seconds) or empty."""
    return (f"sh {q(wrapper)} {q(dir_)} {int(timeout)} {q(notify)} {q(name)} {q(pconf)} "
            f"{q(claim)}{' ' + q(migrate) if migrate else ''} < /dev/null > /dev/null 2>&1 &\n")


def pause_gate(check: str, wrapper: str, pconf: str, drop: str = "") -> str:
    """Shell: when the owner has paused the host, print ``paused UNTIL FILE``, run
    ``drop`` and leave; a quick look with builtins (``check``) first."""
    return (f"if {check}; then\n"
            f"  st=$(sh {q(wrapper)} --pause-state {q(pconf)})\n"
            f'  case $st in paused*) {drop}echo "$st"; exit 0 ;; esac\n'
            "fi\n")


def retire(dir_: str, who: str) -> str:
    """Empty a collected run dir, leaving only the mark ``.dssh/collected`` (``who``): a
    second head that wants to start the same attempt finds it taken and learns that the
    job ran and by whom its results were taken, instead of running it again.

    A run marked ``.dssh/kept`` (some outputs were left for ``dssh pull``) keeps its
    ``outputs/`` too, less the files listed in ``.dssh/taken`` (NUL-separated: those
    went home).

    ``.dssh/`` and its ``claim`` never go away, not even for a moment: creating them is
    how a start claims the dir, and a gap would let another head's start in."""
    base, sep, _ = dir_.rpartition("/jobs/")
    trash = f"{base}/trash" if sep else ""
    return (f"d={q(dir_)}; w={q(who)}; t={q(trash)}\n" + r"""if [ -d "$d/.dssh" ]; then
  printf '%s\n' "$w" > "$d/.dssh/collected"
  k=; [ -f "$d/.dssh/kept" ] && k=1
  if [ -n "$k" ] && [ -f "$d/.dssh/taken" ]; then
    [ -L "$d/outputs" ] || (cd "$d/outputs" && xargs -0 rm -f -- < "$d/.dssh/taken") 2>/dev/null
    find "$d/outputs" -mindepth 1 -depth -type d -empty -exec rmdir {} + 2>/dev/null
  fi
  # Big trees (thousands of output files) go to the workdir's trash, deleted in the
  # background: the head does not wait for the disk.
  tr="$t/$$.$(date +%s%N)"
  if [ -n "$t" ] && mkdir -p "$tr" 2>/dev/null; then
    mv "$d/input" "$tr/" 2>/dev/null
    [ -n "$k" ] || mv "$d/outputs" "$tr/" 2>/dev/null
    (setsid nohup rm -rf "$tr" </dev/null >/dev/null 2>&1 &)
  fi
  set --
""" + _TO_REMOVE + r"""  [ $# = 0 ] || rm -rf -- "$@"
fi
""")


# Stops what ended jobs left running outside their process group: processes that carry a
# job's mark (DSSH_RUN=its dir, see wrapper.sh). "$@" holds "-e DSSH_RUN=DIR" for each
# ended job; one grep looks for all of them. TERM first, KILL 2 s later.
END_MARKED = r"""if [ $# -gt 0 ]; then
  pids=
  for f in $(grep -l -F -x -z "$@" /proc/[0-9]*/environ 2>/dev/null); do
    f=${f#/proc/}; pids="$pids ${f%/environ}"
  done
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null; kill -CONT $pids 2>/dev/null
    (sleep 2; kill -KILL $pids) > /dev/null 2>&1 &
  fi
fi
"""


def retire_many(root: str, rels: list[str], who: str, claims: list[str] = ()) -> str:
    """:func:`retire` for many collected run dirs below ``root`` that kept nothing for
    ``dssh pull``: their marks written by the shell itself, then one ``rm`` for all, with
    their ended ``claims`` in the host's ledger."""
    return (f"cd {q(root)} || exit 0\nw={q(who)}\nset -- {' '.join(q(c) for c in claims)}\n"
            f"for d in {' '.join(q(r) for r in rels)}; do\n" + r"""  [ -d "$d/.dssh" ] || continue
  printf '%s\n' "$w" > "$d/.dssh/collected"
  k=
""" + _TO_REMOVE + r"""done
[ $# = 0 ] || rm -rf -- "$@"
""")


def clean(dir_: str, who: str) -> str:
    """``dssh clean``: what a run left for ``dssh pull`` goes; the mark stays (see retire)."""
    return f"rm -f {q(dir_ + '/.dssh/kept')}\n" + retire(dir_, who)


def tidy(jobs_dir: str, days: int = MARK_DAYS) -> str:
    """Remove ``collected`` marks older than ``days`` (of any sweep) and the dirs they
    leave empty: a few bytes each, they are kept long enough for any head still driving
    the sweep to find them."""
    return (f"j={q(jobs_dir)}; [ -d \"$j\" ] || exit 0\n"
            f"find \"$j\" -path '*/.dssh/collected' -mtime +{int(days)} 2>/dev/null |\n"
            + r"""while IFS= read -r f; do d=${f%/.dssh/collected}; [ -e "$d/.dssh/kept" ] || rm -rf "$d"; done
find "$j/../trash" -mindepth 1 -maxdepth 1 -mmin +60 -exec rm -rf {} + 2>/dev/null
find "$j" -mindepth 1 -depth -type d -empty -mtime +1 -exec rmdir {} + 2>/dev/null
true
""")


def mark_killed(dir_: str) -> str:
    """A run whose wrapper was killed from outside: stop what is left of its job, and
    give it the exit code a SIGKILL gives (137), marked ``vanished``, so that it is
    collected and retried as the failure it is."""
    return (f"c={q(dir_ + '/.dssh')}\n" + r"""[ -f "$c/job_pid" ] && kill -KILL "-$(cat "$c/job_pid")" 2>/dev/null
if [ ! -s "$c/exit_code" ]; then
  : > "$c/vanished"
  [ -f "$c/finished" ] || : > "$c/finished"
  echo 137 > "$c/exit_code.tmp" && mv -f "$c/exit_code.tmp" "$c/exit_code"
fi
""")


def in_container(runtime: str, image: str, command: str, mounts: list[str],
                 build: str | None, env: list[str] | None = None) -> str:
    """``command`` run inside the image: the job dir's ``input/`` and ``outputs/`` at
    /input and /outputs, the build read-only at /build, a fresh ``mounts/N`` per mount; it
    runs in /, so ``input/...`` means the same as without a container."""
    made = "".join(f"mkdir -p mounts/{i} && " for i in range(len(mounts)))
    inner = q(command)
    if runtime == "bwrap":
        binds = ['--bind "$PWD/input" /input', '--bind "$PWD/outputs" /outputs']
        if build:
            binds.append(f"--ro-bind {q(build)} /build")
        binds += [f'--bind "$PWD/mounts/{i}" {q(m)}' for i, m in enumerate(mounts)]
        return (f"{made}exec bwrap --ro-bind {q(image)} / --dev /dev --proc /proc --tmpfs /tmp "
                + " ".join(binds) + f" --chdir / --die-with-parent /bin/sh -c {inner}")
    if runtime == "podman":
        # The job's processes are the container's, not the podman client's children: they
        # carry DSSH_RUN, the mark the wrapper finds a job's processes by, so that pausing
        # and cancelling reach them.
        vols = ['-v "$PWD/input:/input"', '-v "$PWD/outputs:/outputs"']
        if build:
            vols.append(f"-v {q(build + ':/build:ro')}")
        vols += [f'-v "$PWD/mounts/{i}:"{q(m)}' for i, m in enumerate(mounts)]
        names = [k for k in (env or []) if k not in ("PATH", "HOME")] + ["DSSH_RUN"]
        envs = " ".join(f"--env {k}" for k in names)
        return (f"{made}exec podman run --rm --network none {' '.join(vols)} {envs} -w / "
                f"{q(image)} /bin/sh -c {inner}")

    def dq(text: str) -> str:  # literal inside double quotes
        return "".join("\\" + c if c in '"$`\\' else c for c in text)

    # One word: the build's path is a quoted word of its own between the double-quoted
    # parts, so it may be any shell word (dssh slurm gives "$DSSH_BUILD").
    binds = '"$PWD/input:/input,$PWD/outputs:/outputs'
    if build:
        binds += ',"' + q(build) + '":/build:ro'
    binds += "".join(f",$PWD/mounts/{i}:{dq(m)}" for i, m in enumerate(mounts)) + '"'
    return f"{made}exec apptainer exec --bind {binds} --pwd / {q(image)} /bin/sh -c {inner}"


def prepare_image(tmp: str, final: str, runtime: str, name: str, mounts: list[str]) -> str:
    """After the image was uploaded into ``tmp``: unpack a bwrap root filesystem and make
    its mount points, then move it into place (another head may have been first)."""
    lines = [f"t={q(tmp)}; f={q(final)}", 'cd "$t" || exit 3']
    if runtime in ("bwrap", "podman"):
        points = " ".join(q("rootfs" + p) for p in
                          ["/input", "/outputs", "/build", "/proc", "/dev", "/tmp", *mounts])
        lines += [f"mkdir -p rootfs && tar -xf {q(name)} -C rootfs && rm -f {q(name)} || exit 3",
                  f"mkdir -p {points} || exit 3"]
    if runtime == "podman":  # podman keeps its own copy: import the tree with its points
        lines += ["tar -C rootfs -cf image.tar . && rm -rf rootfs || exit 3"]
    lines += [': > .ready', 'cd .. && { mv "$t" "$f" 2>/dev/null || rm -rf "$t"; }',
              '[ -f "$f/.ready" ] || exit 3']
    return "\n".join(lines) + "\n"


def podman_image(tar: str, ref: str) -> str:
    """Make sure podman (the user's own image store) has the image ``ref``; import it from
    the prepared tar when it has not (a first run, or a store that was reset)."""
    return (f"podman image exists {q(ref)} 2>/dev/null || "
            f"podman import {q(tar)} {q(ref)} >/dev/null || exit 3\n")
