"""The ``dssh`` command: argument parsing and printing only; the work is in the API.

Imports stay light at the top so ``dssh --help`` and ``dssh status`` start fast;
SSH and asyncio are imported only by the commands that connect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_NO_HOST, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 2, as the spec says
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"dssh: error: {message}\n")


class _StateOrFilter(argparse.Action):
    """``dssh status --state``: a job state to show (``--state failed``), or, as for every
    command, the state file (``--state PATH``). State words win; write ``./failed`` for a
    state file of that name."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        words = [w.strip().lower() for w in str(values).split(",") if w.strip()]
        if words and all(w in _STATE_WORDS for w in words):
            namespace.states = [*(getattr(namespace, "states", None) or []), str(values)]
        else:
            namespace.state = values


def _common(p: argparse.ArgumentParser, *, results: bool = True, connects: bool = True,
            state_filter: bool = False) -> None:
    p.add_argument("-i", "--inventory", metavar="PATH",
                   help="inventory file (default: $DSSH_INVENTORY, ./inventory.yaml, "
                        "the user config dir, else this machine alone)")
    if state_filter:
        p.add_argument("--state", metavar="STATE|PATH", action=_StateOrFilter,
                       help="only jobs in STATE: running, failed, queued, done, cancelled, "
                            "timeout, suspended (repeatable, or a,b); anything else is the "
                            "state file (default: $DSSH_STATE, else the user state dir)")
        p.set_defaults(states=[])
    else:
        p.add_argument("--state", metavar="PATH",
                       help="state file (default: $DSSH_STATE, else the user state dir)")
    if results:
        p.add_argument("--results", metavar="DIR",
                       help="results root (default: results/ next to the sweep file)")
    if connects:
        p.add_argument("--accept-new-hostkeys", action="store_true",
                       help="trust hosts not yet in known_hosts (OpenSSH's accept-new); "
                            "changed keys are still refused")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the summary")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail; tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dssh", description="Run parameter sweeps across a lab's workstations over "
                "SSH, with nothing installed on them.",
                epilog="Exit codes: 0 all jobs succeeded, 1 some job failed or was cancelled, "
                       "2 bad input, 3 another head runs the sweep, 4 no reachable host can run "
                       "the jobs, 130 interrupted.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"dssh {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run a sweep, or resume it", description="Run the sweep, or "
                       "resume it: finished jobs are not rerun, running ones are re-attached.")
    r.add_argument("sweep", metavar="SWEEP", help="sweep file (sweep.yaml)")
    _common(r)
    r.add_argument("--name", help="run the sweep file under another name "
                                  "(e.g. nightly-$(date +%%F))")
    r.add_argument("--dry-run", action="store_true",
                   help="validate, expand, match jobs to hosts and print the plan; touch nothing")
    r.add_argument("--hosts", metavar="A,B", help="use only these hosts")
    r.add_argument("--rerun-failed", action="store_true",
                   help="queue the sweep's FAILED, TIMEOUT and CANCELLED jobs again, each "
                        "with its retries renewed")
    r.add_argument("--restart", action="store_true",
                   help="start the sweep over: stop its running jobs, forget every job's "
                        "state, move its old results aside (asks first on a terminal)")
    r.add_argument("--yes", action="store_true", help="with --restart: do not ask")
    r.add_argument("--log", metavar="FILE",
                   help="also append one timestamped line per event to FILE (for cron)")
    r.add_argument("--max-failures", type=int, metavar="N",
                   help="stop starting jobs once N have failed for good (running ones "
                        "finish); overrides the sweep's max_failures")
    r.add_argument("--verify", action="store_true",
                   help="compare SHA-256 of every collected file on both ends (sizes are "
                        "always checked)")
    r.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")

    s = sub.add_parser("status", help="sweeps, or one sweep's jobs, from the local state")
    s.add_argument("sweep", nargs="?", metavar="SWEEP", help="sweep file, namespace/name or name")
    _common(s, results=False, connects=False, state_filter=True)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--events", action="store_true", help="list every job transition")
    s.add_argument("--host", dest="hosts", action="append", default=[], metavar="HOST",
                   help="only jobs on this host (repeatable, or a,b)")

    h = sub.add_parser("hosts", help="probe every host of the inventory")
    _common(h, results=False)
    h.add_argument("--json", action="store_true", help="machine-readable output")
    h.add_argument("--trust", action="store_true",
                   help="first contact: fetch every host's key at once, show the "
                        "fingerprints, and pin the new ones to known_hosts on one confirmation")
    h.add_argument("--yes", action="store_true",
                   help="with --trust: pin without asking (after checking the fingerprints)")

    c = sub.add_parser("cancel", help="stop a sweep's running jobs and drop queued ones",
                       description="Stop running jobs (their whole process trees) and drop "
                       "queued ones; all become CANCELLED. With a head driving the sweep, "
                       "that head does it; without one (after Ctrl-C, or when the laptop was "
                       "closed), this command connects to the hosts itself.")
    c.add_argument("sweep", metavar="SWEEP", help="sweep file, namespace/name or name")
    c.add_argument("jobs", nargs="*", metavar="JOB", help="only these jobs (default: all)")
    _common(c, results=False)

    wy = sub.add_parser("why", help="why queued jobs are not running, host by host",
                        description="For each host of the inventory: whether it could take a "
                        "queued job of SWEEP now, or why not (a capability missing, too few "
                        "cpus or GPUs, unreachable, paused by whom and until when, busy with "
                        "whose jobs, its build failed, quarantined, the job failed there).")
    wy.add_argument("sweep", metavar="SWEEP", help="sweep file, namespace/name or name")
    wy.add_argument("job", nargs="?", metavar="JOB", help="about this job")
    wy.add_argument("--json", action="store_true", help="machine-readable output")
    _common(wy, results=False)

    rp = sub.add_parser("report", help="write a self-contained HTML report of a sweep",
                        description="Write report.html into the sweep's results (or -o "
                        "FILE): a timeline with one lane per host slot (pauses hatched), "
                        "utilisation per host, a histogram of job durations, the failures "
                        "with the end of their stderr, and every job with its parameters. "
                        "From the local state and results only; no network, no scripts.")
    rp.add_argument("sweep", metavar="SWEEP", help="sweep file, namespace/name or name")
    rp.add_argument("-o", "--output", metavar="FILE", help="where to write it")
    _common(rp, results=False, connects=False)

    lg = sub.add_parser("logs", help="a job's stdout or stderr, or a host's build log",
                        description="Print a job's stdout (or --stderr): from the results "
                        "once the attempt is collected, from its host while it runs; "
                        "--follow streams it like tail -f until the job ends. --attempt N "
                        "shows an earlier attempt. --build HOST prints that host's build log.")
    lg.add_argument("sweep", metavar="SWEEP", help="sweep file, namespace/name or name")
    lg.add_argument("job", nargs="?", metavar="JOB")
    lg.add_argument("--stderr", action="store_true", help="stderr instead of stdout")
    lg.add_argument("-f", "--follow", action="store_true",
                    help="keep printing what the running job writes, until it ends")
    lg.add_argument("--attempt", type=int, metavar="N", help="attempt N (default: the last)")
    lg.add_argument("--build", metavar="HOST", help="the build log of HOST instead")
    _common(lg, results=False)

    pu = sub.add_parser("pull", help="fetch the outputs a sweep left on its hosts",
                        description="Fetch output files that stayed on the hosts (those the "
                        "sweep's outputs.collect did not select, or outputs.exclude kept "
                        "back) into the results dir, or --to DIR. Straight from the hosts; "
                        "files already there are replaced whole. Patterns are globs as in "
                        "outputs.collect ('*.vtk', 'flow/**', '/top-level.csv').")
    pu.add_argument("sweep", metavar="SWEEP", help="sweep file, namespace/name or name")
    pu.add_argument("jobs", nargs="*", metavar="JOB", help="only these jobs (default: all)")
    pu.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="only files matching GLOB (repeatable; default: every file)")
    pu.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="not files matching GLOB (repeatable)")
    pu.add_argument("--to", metavar="DIR", help="put JOB's files in DIR/JOB/ "
                                                "(default: the sweep's results dir)")
    pu.add_argument("--list", action="store_true",
                    help="only show what is where and how big; fetch nothing")
    pu.add_argument("--verify", action="store_true",
                    help="also compare SHA-256 checksums on both ends")
    pu.add_argument("--json", action="store_true", help="with --list: machine-readable")
    _common(pu, results=False)

    cl = sub.add_parser("clean", help="remove what a sweep left on its hosts",
                        description="Remove the dirs the sweep's ended jobs left on their "
                        "hosts (outputs not collected or pulled go with them) and its builds "
                        "that no other sweep uses. Jobs still running are not touched.")
    cl.add_argument("sweep", metavar="SWEEP", help="sweep file, namespace/name or name")
    cl.add_argument("jobs", nargs="*", metavar="JOB", help="only these jobs (default: all; "
                                                           "builds go only with all)")
    _common(cl, results=False)

    pa = sub.add_parser("pause", help="pause a host: its dssh jobs stop, nothing new starts",
                        description="Write the SSH user's ~/.distribute-pause on HOST. Jobs "
                        "there are suspended within a second, head or no head.")
    pa.add_argument("host", metavar="HOST")
    pa.add_argument("--for", dest="duration", metavar="DURATION",
                    help="how long, e.g. 45m, 2h, 1h30m (default: until resumed, at most "
                         "the host's max_pause)")
    _common(pa, results=False)
    re_ = sub.add_parser("resume", help="remove the pause file 'dssh pause' wrote",
                         description="Remove the SSH user's ~/.distribute-pause on HOST. "
                         "Pause files of the host's own users are theirs to remove.")
    re_.add_argument("host", metavar="HOST")
    _common(re_, results=False)

    sl = sub.add_parser("slurm", help="write the sweep as Slurm job arrays, or collect "
                                      "what they produced",
                        description="'dssh slurm SWEEP -o DIR' writes the sweep as a "
                        "self-contained directory of Slurm job arrays (submit with 'sh "
                        "DIR/submit.sh' on the cluster); 'dssh slurm collect DIR' brings what "
                        "they produced into results/<namespace>/<sweep>/, as 'dssh run' does. "
                        "See docs/slurm.md.")
    sl.add_argument("sweep", metavar="SWEEP|collect",
                    help="sweep file (sweep.yaml or distribute-jobs.yaml), or 'collect'")
    sl.add_argument("dir", metavar="DIR", nargs="?", help="with collect: the exported dir")
    sl.add_argument("-o", "--output", metavar="DIR", help="the directory to write")
    sl.add_argument("--max-parallel", type=int, metavar="N",
                    help="at most N tasks of each array at once (sbatch --array=...%%N)")
    sl.add_argument("--name", help="export the sweep under another name")
    sl.add_argument("--force", action="store_true",
                    help="replace an earlier export in DIR (and what its jobs produced)")
    sl.add_argument("--results", metavar="DIR",
                    help="with collect: results root (default: results/ next to the sweep "
                         "file where it exists here, else DIR/results)")
    sl.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sl.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")

    cv = sub.add_parser("convert", help="print a job file of the original distribute as a "
                                        "dssh sweep file",
                        description="Read a distribute-jobs.yaml of the original distribute "
                        "(which dssh also runs as it is) and print the equivalent dssh sweep "
                        "file. Paths stay relative to the job file's directory: save the "
                        "output next to it.")
    cv.add_argument("file", metavar="FILE")
    co = sub.add_parser("completion", help="print a shell completion script",
                        description="Print the completion script for bash or zsh: add "
                        "'eval \"$(dssh completion bash)\"' to ~/.bashrc (or zsh and "
                        "~/.zshrc). It completes commands, options, sweep files and names, "
                        "job names and host names.")
    co.add_argument("shell", choices=["bash", "zsh"])
    cx = sub.add_parser("_complete")  # no help: not listed (the completion script uses it)
    cx.add_argument("what", choices=["commands", "options", "hosts", "sweeps", "jobs"])
    cx.add_argument("arg", nargs="?")
    cx.add_argument("-i", "--inventory")
    cx.add_argument("--state")
    t = sub.add_parser("template", help="print a commented example sweep file")
    t.add_argument("kind", nargs="?", default="native",
                   choices=["native", "python", "apptainer"],
                   help="which example (default: native)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    from .errors import DsshError

    if args.command in ("completion", "_complete"):
        from . import completion

        if args.command == "completion":
            print(completion.script(args.shell), end="")
            return EXIT_OK
        return completion.main(parser, args)
    try:
        return {"run": cmd_run, "status": cmd_status, "hosts": cmd_hosts,
                "cancel": cmd_cancel, "logs": cmd_logs, "why": cmd_why, "report": cmd_report, "pull": cmd_pull, "clean": cmd_clean, "pause": cmd_pause, "resume": cmd_resume,
                "template": cmd_template, "convert": cmd_convert, "slurm": cmd_slurm}[args.command](args)
    except DsshError as e:
        if verbose:
            import traceback

            traceback.print_exc()
        _print_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        print("dssh: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def _print_error(e: Exception) -> None:
    from .redact import redact

    lines = redact(str(e)).splitlines() or [type(e).__name__]
    print(f"dssh: error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}" if not line.startswith("  ") else line, file=sys.stderr)


def _state_path(args: argparse.Namespace) -> Path:
    from .state import default_state_path

    return Path(args.state) if args.state else default_state_path()


# -- run ----------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from .errors import ConfigError, DsshError

    log = None
    if args.log:
        try:
            log = open(args.log, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as e:
            raise ConfigError(f"--log {args.log}: cannot write to it: {e.strerror}",
                              key="--log") from None
    try:
        if log:
            _log(log, "start", f"dssh run {args.sweep}"
                               + (f" --name {args.name}" if args.name else "")
                               + f" (pid {os.getpid()})")
        return _run(args, log)
    except DsshError as e:
        if log:
            _log(log, "error", f"{e} (exit {e.exit_code})".replace("\n", " "))
        raise
    except KeyboardInterrupt:
        if log:
            _log(log, "stop", "interrupted; jobs keep running on the hosts")
        raise
    finally:
        if log:
            log.close()


def _log(log: Any, kind: str, message: str) -> None:
    import time

    log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {kind:<7} {message}\n")
    log.flush()


def _run(args: argparse.Namespace, log: Any) -> int:
    import gc

    # Off for the start (imports, the sweep, the connections, the first starts: many
    # objects, few cycles); the head turns it on again (RunOptions.gc_held).
    gc.disable()
    from .errors import ConfigError
    from .model.inventory import load_inventory
    from .model.sweep import NAME_RE, load_sweep

    inventory = load_inventory(args.inventory)
    sweep = load_sweep(args.sweep)
    if args.name is not None and (not NAME_RE.match(args.name) or args.name in (".", "..")):
        raise ConfigError(f"--name {args.name!r}: use only letters, digits, '.', '_' and '-'",
                          key="--name")
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()] if args.hosts else None
    if hosts is not None and not hosts:
        raise ConfigError("--hosts: give at least one host name, e.g. --hosts lab1,lab2",
                          key="--hosts")
    inventory = inventory.select(hosts)
    if args.max_failures is not None and args.max_failures < 1:
        raise ConfigError(f"--max-failures {args.max_failures}: give 1 or more (leave it out "
                          "to never stop early)", key="--max-failures")
    inventory, cluster = _workstations_or_cluster(inventory, hosts is not None)
    if args.dry_run:
        if cluster:
            return _dry_run_slurm(args, sweep, inventory)
        return _dry_run(args, sweep, inventory)
    if args.restart:
        _restart(args, sweep.namespace, args.name or sweep.name, inventory)

    import asyncio

    from .engine import Head, RunOptions
    from .progress import LiveReporter, PlainReporter

    options = RunOptions(results=Path(args.results) if args.results else None,
                         state_path=_state_path(args), name=args.name,
                         accept_new_hostkeys=args.accept_new_hostkeys,
                         rerun_failed=args.rerun_failed, verify=args.verify,
                         max_failures=args.max_failures, gc_held=True)
    live = sys.stdout.isatty() and not args.quiet and not os.environ.get("DSSH_PLAIN")
    shown = LiveReporter() if live else PlainReporter(quiet=args.quiet, verbose=args.verbose)
    reporter: Any = shown
    if log:
        from .progress import TeeReporter

        reporter = TeeReporter(shown, PlainReporter(log))
    if cluster:
        from .slurm_run import SlurmHead

        head = SlurmHead(sweep, inventory, options, reporter, sweep_file=args.sweep)
    else:
        head = Head(sweep, inventory, options, reporter, sweep_file=args.sweep)
    try:
        result = asyncio.run(head.run())
    except KeyboardInterrupt:
        _interrupted(head)
        if log:
            _log(log, "stop", "interrupted; jobs keep running on the hosts")
        return EXIT_INTERRUPTED
    finally:
        if isinstance(shown, LiveReporter):
            shown.close()
        head.close()
    counts: dict[str, int] = {}
    for j in result.jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    prefix = "already complete: " if result.message == "already complete" else ""
    line = (f"{result.sweep}: {prefix}{len(result.jobs)} jobs: {text}; results in "
            f"{_rel(result.results_dir)}")
    print(line)
    if log:
        _log(log, "end", f"{line} (exit {result.exit_code})")
    failed = [j for j in result.jobs if j.status != "COMPLETED"]
    if failed:  # with -q too: failures are what a quiet run is for
        rows = [(j.name, j.status, "" if j.exit_code is None else str(j.exit_code),
                 j.host or "", "not started (too many failures; run again to start it)"
                 if j.status == "PENDING" else f"{_rel(j.results_dir)}/stderr.txt")
                for j in failed[:20]]
        head = ("job", "status", "exit", "host", "see")
        w = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
        for r in [head, *rows]:
            print(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]:<{w[3]}}  {r[4]}")
        if len(failed) > 20:
            print(f"  ... and {len(failed) - 20} more (dssh status {result.sweep} --state "
                  "failed)")
    return result.exit_code


def _workstations_or_cluster(inventory: Any, chosen: bool) -> tuple[Any, bool]:
    """A run uses workstations, or one Slurm cluster (hosts of kind: slurm): which one.
    Without --hosts, an inventory of both runs on its workstations."""
    from .errors import ConfigError

    clusters = [h.name for h in inventory.hosts.values() if h.kind == "slurm"]
    if not clusters:
        return inventory, False
    stations = [h.name for h in inventory.hosts.values() if h.kind != "slurm"]
    if stations and not chosen:
        print(f"dssh: note: {', '.join(clusters)} (kind: slurm) not used: a run uses the "
              f"workstations or one cluster; run there with --hosts {clusters[0]}",
              file=sys.stderr)
        return inventory.select(stations), False
    if stations:
        raise ConfigError(f"--hosts: {', '.join(stations)} are workstations and "
                          f"{', '.join(clusters)} a Slurm cluster (kind: slurm): a run uses "
                          f"the workstations or one cluster, e.g. --hosts {clusters[0]}",
                          key="--hosts")
    if len(clusters) > 1:
        raise ConfigError(f"--hosts: {', '.join(clusters)} are all Slurm clusters: a run uses "
                          f"one, e.g. --hosts {clusters[0]}", key="--hosts")
    return inventory, True


def _dry_run_slurm(args: argparse.Namespace, sweep: Any, inventory: Any) -> int:
    import tempfile

    import attrs

    from .slurm import export

    host = next(iter(inventory.hosts.values()))
    if args.name:
        sweep = attrs.evolve(sweep, name=args.name)
    with tempfile.TemporaryDirectory() as td:
        done = export(sweep, Path(td) / "x", sweep_file=args.sweep, host_env=host.env,
                      python=host.python, cluster=host.slurm)
        arrays = {s: (Path(td) / "x" / s).read_text() for s, _ in done.arrays}
    if args.json:
        print(json.dumps({"sweep": sweep.key, "cluster": host.name, "jobs": done.jobs,
                          "arrays": [{"script": s, "tasks": n} for s, n in done.arrays],
                          "build": done.setup, "notes": done.notes}, indent=2))
        return EXIT_OK
    print(f"{sweep.key}: {done.jobs} job(s) for the Slurm cluster {host.name}, as "
          f"{len(done.arrays)} job array(s){' after a setup job (the build)' if done.setup else ''}"
          "; nothing was submitted")
    for s, text in arrays.items():
        print(f"  {s}:")
        for line in text.splitlines():
            if line.startswith("#SBATCH"):
                print(f"    {line}")
    for n in done.notes:
        print(f"note: {n}")
    return EXIT_OK


def _restart(args: argparse.Namespace, namespace: str, name: str, inventory: Any) -> None:
    """Start a sweep over: stop what runs, forget every job, keep old results aside."""
    import asyncio
    import time

    from .cancel import cancel
    from .errors import ConfigError
    from .lock import SweepLock
    from .state import ACTIVE_STATES, State

    state = State(_state_path(args))
    try:
        row = state.find_sweep(namespace, name)
        if row is None:
            return  # nothing to start over: this is its first run
        counts = state.counts(row["id"])
        active = sum(counts.get(s, 0) for s in ACTIVE_STATES)
        total = sum(counts.values())
        results = Path(row["results_dir"])
        what = (f"start {namespace}/{name} over: stop {active} running job(s), forget "
                f"{total} job(s)' state" + (f", move {results} aside" if results.exists()
                                             else ""))
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError(f"--restart would {what}; add --yes to do so from a script",
                                  key="--restart")
            answer = input(f"dssh: {what}. Go ahead? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                raise ConfigError("--restart: not confirmed; nothing was changed",
                                  key="--restart")
        if active:
            asyncio.run(cancel(state, row["id"], namespace, name, inventory,
                               accept_new_hostkeys=args.accept_new_hostkeys))
        lock = SweepLock(state.path, namespace, name)
        lock.acquire()
        try:
            with state.tx() as db:
                # Every job queued afresh with new retries; attempt numbers go on, so a new
                # run never meets the dirs (or the marks) its old runs left on the hosts.
                db.execute("UPDATE jobs SET state='PENDING', retry_base=attempts, host=NULL, "
                           "remote_dir=NULL, exit_code=NULL, started=NULL, finished=NULL, "
                           "reason='restarted' WHERE sweep_id=?", (row["id"],))
                db.execute("DELETE FROM builds WHERE sweep_id=?", (row["id"],))
                db.execute("DELETE FROM events WHERE sweep_id=?", (row["id"],))
                state.event(db, row["id"], None, "restarted", None, {"forgot": total})
            if results.exists():
                aside = results.with_name(
                    f"{results.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(results, aside)
                print(f"dssh: the old results of {namespace}/{name} are in {_rel(aside)}")
        finally:
            lock.release()
    finally:
        state.close()


def _interrupted(head: Any) -> None:
    from .state import State

    try:
        s = State(head.state_path, readonly=True)
        counts = s.counts(head.sweep_id) if head.sweep_id else {}
        s.close()
    except Exception:  # the message matters more than the count
        counts = {}
    running = counts.get("RUNNING", 0) + counts.get("STARTING", 0)
    key = head.sweep.key
    print(f"\ndssh: interrupted. {running} job(s) keep running on the hosts; "
          f"{counts.get('PENDING', 0)} queued job(s) wait.\n"
          f"  resume:  {head.resume_command()}\n"
          f"  cancel:  dssh cancel {key}" + (f" -i {head.inventory.source}" if
                                              head.inventory.source.endswith((".yaml", ".yml"))
                                              else ""), file=sys.stderr)


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _dry_run(args: argparse.Namespace, sweep: Any, inventory: Any) -> int:
    from .engine import capable_hosts
    from .plan import build_id, expand, outside_inputs, value_text

    if args.name:
        import attrs

        sweep = attrs.evolve(sweep, name=args.name)
    capable = capable_hosts(sweep, inventory, args.sweep)

    jobs = expand(sweep)
    names = [h.name for h in capable]
    bid = build_id(sweep)
    plan = {
        "sweep": sweep.key, "jobs": [],  # (each job's entry only for --json: see below)
        "hosts": {h.name: {"connection": h.connection, "cpus": h.cpus, "slots": h.slots,
                           "gpus": list(h.gpus), "build": bid} for h in capable},
        "excluded_hosts": sorted(set(inventory.hosts) - set(names)),
        "build": bid, "cpus_per_job": sweep.run.cpus, "gpus_per_job": sweep.run.gpus,
        "outside_inputs": outside_inputs(sweep, jobs),
    }
    if args.json:
        plan["jobs"] = [{"name": j.name, "params": j.params, "files": [t for _, t in j.files],
                         "hosts": names} for j in jobs]
        print(json.dumps(plan, indent=2))
        return EXIT_OK
    from tabulate import tabulate

    # Every job of a sweep can go to the same hosts (its requirements are the sweep's): they
    # are listed once, below, not on each job's line, which would make the plan of 100,000
    # jobs on 100 hosts some 60 MB. The job lines are laid out here, not by tabulate, which
    # takes seconds to guess the type of each cell of a table that long.
    rows = [(j.name, " ".join(f"{k}={value_text(v)}" for k, v in j.params.items()) or "-",
             ", ".join(t for _, t in j.files) or "-") for j in jobs]
    print(f"sweep {sweep.key}: {len(jobs)} jobs, each {sweep.run.cpus or 'all'} cpus"
          f"{f', {sweep.run.gpus} gpus' if sweep.run.gpus else ''}")
    jw = max([len("job"), *(len(r[0]) for r in rows)])
    pw = max([len("params"), *(len(r[1]) for r in rows)])
    fmt = f"%-{jw}s  %-{pw}s  %s"
    sys.stdout.write("\n".join([fmt % ("job", "params", "input files"),
                                fmt % ("-" * jw, "-" * pw, "-" * len("input files"))]
                               + [fmt % r for r in rows]) + "\n")
    print(f"\n{len(names)} of {len(inventory.hosts)} hosts can take these jobs:")
    hrows = [[h.name, h.connection, h.cpus or "probed", h.slots or "-",
              ",".join(map(str, h.gpus)) or "-", bid or "-"] for h in capable]
    print(tabulate(hrows, headers=["host", "connection", "cpus", "slots", "gpus", "build"]))
    if plan["excluded_hosts"]:
        print(f"\nnot used (missing {', '.join(sweep.needs)}): "
              f"{', '.join(plan['excluded_hosts'])}")
    if plan["outside_inputs"]:
        print("\nsent from outside the sweep's directory (as written in it):")
        for p in plan["outside_inputs"]:
            print(f"  {p}")
    print("\ndry run: nothing was started.")
    return EXIT_OK


# -- status -------------------------------------------------------------------------------------
def _find_sweep(state: Any, arg: str) -> Any:
    from .errors import ConfigError

    p = Path(arg)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        from .model.sweep import load_sweep

        sw = load_sweep(p)
        row = state.find_sweep(sw.namespace, sw.name)
    elif "/" in arg:
        ns, _, name = arg.partition("/")
        row = state.find_sweep(ns, name)
    else:
        row = state.find_sweep(None, arg)
    if row is None:
        known = ", ".join(f"{r['namespace']}/{r['name']}" for r in state.sweeps()) or "none yet"
        raise ConfigError(f"no sweep {arg!r} in the state file {state.path} (known: {known})")
    return row


def cmd_status(args: argparse.Namespace) -> int:
    from .state import State

    if args.state and not Path(args.state).exists() and "/" not in args.state \
            and "." not in args.state:
        from .errors import ConfigError

        raise ConfigError(f"--state {args.state}: neither a job state ({', '.join(_STATE_WORDS)})"
                          " nor an existing state file", key="--state")

    state = State(_state_path(args), readonly=True)
    try:
        if args.sweep is None:
            return _status_all(state, args)
        row = _find_sweep(state, args.sweep)
        if args.events:
            return _status_events(state, row, args)
        return _status_one(state, row, args)
    finally:
        state.close()


def _fmt_time(t: float | None) -> str:
    if not t:
        return ""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _status_all(state: Any, args: argparse.Namespace) -> int:
    out = []
    for r in state.sweeps():
        c = state.counts(r["id"])
        on_hosts = state.queued_on_hosts(r["id"]) if c.get("STARTING") else 0
        out.append({"sweep": f"{r['namespace']}/{r['name']}", "jobs": sum(c.values()),
                    "completed": c.get("COMPLETED", 0),
                    "running": c.get("RUNNING", 0) + c.get("STARTING", 0) - on_hosts,
                    "queued_on_hosts": on_hosts,
                    "pending": c.get("PENDING", 0),
                    "failed": c.get("FAILED", 0) + c.get("TIMEOUT", 0),
                    "cancelled": c.get("CANCELLED", 0), "updated": _fmt_time(r["updated"]),
                    "results": r["results_dir"]})
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    if not out:
        print(f"no sweeps yet (state file: {state.path})")
        return EXIT_OK
    from tabulate import tabulate

    print(tabulate([list(o.values()) for o in out], headers=list(out[0].keys())))
    return EXIT_OK


# What `--state` accepts, and the order jobs are listed in: what needs a look first.
_STATE_WORDS = {
    "running": ("RUNNING", "STARTING", "SUSPENDED"), "suspended": ("SUSPENDED",),
    "failed": ("FAILED", "TIMEOUT"), "queued": ("PENDING",), "pending": ("PENDING",),
    "done": ("COMPLETED",), "completed": ("COMPLETED",), "cancelled": ("CANCELLED",),
    "timeout": ("TIMEOUT",), "starting": ("STARTING",),
}
_STATE_ORDER = {"RUNNING": 0, "STARTING": 0, "SUSPENDED": 0, "FAILED": 1, "TIMEOUT": 1,
                "PENDING": 2, "CANCELLED": 3, "COMPLETED": 4}


def _words(values: list[str]) -> list[str]:
    return [w.strip() for v in values for w in v.split(",") if w.strip()]


def _state_filter(values: list[str]) -> set[str] | None:
    from .errors import ConfigError

    if not values:
        return None
    out: set[str] = set()
    for w in _words(values):
        if w.lower() not in _STATE_WORDS:
            raise ConfigError(f"--state {w}: use one of {', '.join(_STATE_WORDS)}",
                              key="--state")
        out.update(_STATE_WORDS[w.lower()])
    return out


def _status_one(state: Any, row: Any, args: argparse.Namespace) -> int:
    import time

    wanted = _state_filter(args.states)
    hosts = set(_words(args.hosts)) or None
    counts = state.counts(row["id"])
    now = time.time()
    cur = state.db.cursor()
    cur.row_factory = None  # plain tuples: 100,000 rows in well under a second
    rows = cur.execute(
        "SELECT name, state, host, attempts, exit_code, started, finished, reason"
        + (", params" if args.json else "") + " FROM jobs WHERE sweep_id=? ORDER BY seq",
        (row["id"],)).fetchall()
    used = {r[2] for r in rows if r[2]}
    on_hosts = state.queued_on_hosts(row["id"]) if counts.get("STARTING") else 0
    if wanted is not None:
        rows = [r for r in rows if r[1] in wanted]
    if hosts is not None:
        rows = [r for r in rows if r[2] in hosts]

    def seconds(r: tuple) -> float | None:
        if r[6] and r[5]:
            return r[6] - r[5]
        if r[5] and r[1] in ("RUNNING", "SUSPENDED"):
            return now - r[5]
        return None

    paused = [{"host": h["name"], "paused_by": h["paused_by"], "until": h["paused_until"],
               "seen": _fmt_time(h["updated"])}
              for h in state.hosts() if h["status"] == "paused" and h["name"] in used]
    if args.json:
        jobs = []
        for r in rows:
            secs = seconds(r)
            jobs.append({"job": r[0], "state": r[1], "host": r[2], "attempts": r[3],
                         "exit_code": r[4], "started": _fmt_time(r[5]),
                         "seconds": None if secs is None else round(secs, 1),
                         "reason": r[7], "params": json.loads(r[8])})
        print(json.dumps({"sweep": f"{row['namespace']}/{row['name']}",
                          "results": row["results_dir"], "counts": counts,
                          "queued_on_hosts": on_hosts, "jobs": jobs,
                          "paused_hosts": paused}, indent=2))
        return EXIT_OK
    rows.sort(key=lambda r: _STATE_ORDER.get(r[1], 5))  # stable: job order within a state
    import shutil
    import textwrap

    from .state import summary_counts

    width = max(60, shutil.get_terminal_size((80, 24)).columns) - 1
    total = sum(counts.values())
    shown = f"; {len(rows)} shown" if len(rows) != total else ""
    print(textwrap.fill(f"{row['namespace']}/{row['name']}: {total} jobs: "
                        f"{summary_counts(counts, on_hosts)}{shown}", width,
                        subsequent_indent="  "))
    _print_jobs(rows, seconds, width)
    if paused:
        from .durations import format_until

        for p in paused:
            until = format_until(p["until"]) if p["until"] else "?"
            print(f"host {p['host']} is paused by {p['paused_by']} until {until} "
                  f"(as last seen, {p['seen']})")
    return EXIT_OK


def _print_jobs(rows: list[tuple], seconds: Any, width: int) -> None:
    """One line per job in at most ``width`` columns: the job and host names and the
    note are cut to fit, with a '~' where they were cut."""
    from .durations import format_seconds  # once, not per row

    if not rows:
        print("no jobs match")
        return
    jw = min(max(3, max(len(r[0]) for r in rows)), 28)
    hw = min(max(4, max(len(r[2] or "") for r in rows)), 12)
    nw = max(10, width - (jw + hw + 31))
    fmt = f"%-{jw}s %-9s %-{hw}s %3s %4s %7s %s"
    out = [(fmt % ("job", "state", "host", "att", "exit", "time", "note")).rstrip()]
    add = out.append
    for r in rows:
        name, host, note = r[0], r[2] or "", r[7] or ""
        if len(name) > jw:
            name = name[:jw - 1] + "~"
        if len(host) > hw:
            host = host[:hw - 1] + "~"
        if len(note) > nw:
            note = note[:nw - 1] + "~"
        line = fmt % (name, r[1], host, r[3], "" if r[4] is None else r[4],
                      format_seconds(seconds(r), compact=True), note)
        add(line.rstrip() if not note else line)
    sys.stdout.write("\n".join(out) + "\n")


def _status_events(state: Any, row: Any, args: argparse.Namespace) -> int:
    evs = [{"time": _fmt_time(e["time"]), "job": e["job"], "event": e["kind"], "host": e["host"],
            "detail": json.loads(e["detail"]) if e["detail"] else None}
           for e in state.events(row["id"])]
    if args.json:
        print(json.dumps(evs, indent=2))
        return EXIT_OK
    for e in evs:
        detail = " ".join(f"{k}={v}" for k, v in (e["detail"] or {}).items())
        print(f"{e['time']}  {e['event']:<11} {e['job'] or '-':<24} {e['host'] or '-':<12} {detail}")
    return EXIT_OK


# -- hosts --------------------------------------------------------------------------------------
def cmd_hosts(args: argparse.Namespace) -> int:
    import asyncio

    from .durations import format_until
    from .model.inventory import load_inventory
    from .probe import claims_text, free_text, probe_all

    inventory = load_inventory(args.inventory)
    if args.trust:
        return _trust(args, inventory)
    rows = asyncio.run(probe_all(inventory, accept_new_hostkeys=args.accept_new_hostkeys))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from tabulate import tabulate

        table = []
        for r in rows:
            if not r["reachable"]:
                table.append([r["host"], "no", "", "", "", "", "", "", "", "", "", r["error"]])
                continue
            if r.get("kind") == "slurm":
                cluster = "; ".join(f"{p['partition']} {p['avail']}: {p['cpus_idle']}/"
                                    f"{p['cpus_total']} cpus idle" for p in r["partitions"])
                table.append([r["host"], "yes", "slurm", "", "", "", f"{r['disk_free_gb']:.1f}G"
                              if r.get("disk_free_gb") is not None else "", "-", "-",
                              f"{r['jobs_running']} (Slurm tasks)", cluster or "-", ""])
                continue
            mem = f"{r['mem_available_gb']:.1f}/{r['mem_total_gb']:.1f}G" \
                if r.get("mem_total_gb") else ""
            paused = "; ".join(f"{p['file']} ({p['owner']}) until {format_until(p['until'])}"
                               for p in r["paused_by"]) or "no"
            table.append([r["host"], "yes", r["cpus"], mem, r.get("load", ""),
                          ",".join(map(str, r["gpus"])) or "-",
                          f"{r['disk_free_gb']:.1f}G" if r.get("disk_free_gb") is not None else "",
                          ",".join(r["capabilities"]) or "-", paused, r["jobs_running"],
                          claims_text(r), free_text(r)])
        print(tabulate(table, headers=["host", "up", "cpus", "mem free", "load", "gpus",
                                       "disk free", "capabilities", "paused", "my dssh jobs",
                                       "claims (all users)", "free"]))
        for r in rows:
            if r.get("policy_text"):
                files = [f"{f['owner']}: {f['path']}" for f in r["policy"]["files"]]
                blocks = r.get("policy_blocks") or []
                print(f"policy: {r['host']}: {r['policy_text']}"
                      + (f" (from the inventory and {', '.join(files)})" if files else
                         " (the inventory; no owner's policy file)")
                      + (f"; now: {'; '.join(blocks)}" if blocks else ""))
            if r.get("signals"):
                print(f"signals: {r['host']}: " + "; ".join(x["text"] for x in r["signals"])
                      + (f"; so: held (as paused) for {r['activity_held']} s more, until "
                         "every signal is clear" if r.get("activity_held") else
                         "; so: no hold"))
        for r in rows:
            for note in r.get("notes", []):
                print(f"note: {r['host']}: {note}")
    return EXIT_OK if all(r["reachable"] for r in rows) else EXIT_FAILED


def _trust(args: argparse.Namespace, inventory: Any) -> int:
    import asyncio

    from tabulate import tabulate

    from .errors import ConfigError
    from .trust import pin, scan_all

    rows = asyncio.run(scan_all(inventory))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(tabulate([[r["host"], r.get("address", ""), r["key_type"], r["fingerprint"],
                         r["status"] if r["status"] != "unreachable" else
                         f"unreachable: {r['error']}"] for r in rows],
                       headers=["host", "address", "key", "fingerprint (SHA256)", "status"]))
    bad = [r for r in rows if r["status"] in ("CHANGED", "REVOKED", "unreachable")]
    for r in bad:
        if r["status"] == "CHANGED":
            print(f"{r['host']}: the key differs from the one recorded in {r['file']}: not "
                  "pinned. If the machine was reinstalled, remove the old line ('ssh-keygen "
                  f"-R {r['line'].split()[0]} -f {r['file']}') and run --trust again",
                  file=sys.stderr)
        elif r["status"] == "REVOKED":
            print(f"{r['host']}: the key is revoked in {r['file']}: never pinned",
                  file=sys.stderr)
    new = [r for r in rows if r["status"] == "new"]
    if not new:
        if not args.json:
            print("no new host keys to pin")
        return EXIT_FAILED if bad else EXIT_OK
    files = sorted({r["file"] for r in new})
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"{len(new)} new host key(s) shown above: compare the "
                              "fingerprints with the machines' (ssh-keygen -lf "
                              "/etc/ssh/ssh_host_ed25519_key.pub there), then pin them with "
                              "dssh hosts --trust --yes", key="--yes")
        answer = input(f"Pin the {len(new)} new key(s) above to {', '.join(files)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing pinned")
            return EXIT_FAILED
    for f, n in pin(new).items():
        print(f"pinned {n} host key(s) to {f}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_FAILED if bad else EXIT_OK


# -- cancel -------------------------------------------------------------------------------------
def cmd_cancel(args: argparse.Namespace) -> int:
    import asyncio

    from .cancel import cancel
    from .model.inventory import load_inventory
    from .state import State

    state = State(_state_path(args))
    try:
        row = _find_sweep(state, args.sweep)
        inventory = load_inventory(args.inventory)
        res = asyncio.run(cancel(state, row["id"], row["namespace"], row["name"], inventory,
                                 args.jobs or None, args.accept_new_hostkeys))
    finally:
        state.close()
    print(f"{row['namespace']}/{row['name']}: stopped {res['stopped']} running job(s), dropped "
          f"{res['dropped']} queued job(s)"
          + (f"; {res['unreachable']} on unreachable hosts are left as they were"
             if res["unreachable"] else ""))
    return EXIT_OK if not res["unreachable"] else EXIT_FAILED


# -- report -------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from .report import write
    from .state import State

    state = State(_state_path(args), readonly=True)
    try:
        row = _find_sweep(state, args.sweep)
        try:
            out = write(state, row, Path(args.output) if args.output else None)
        except OSError as e:
            from .errors import DsshError

            raise DsshError(f"cannot write the report: {e}") from None
    finally:
        state.close()
    print(f"wrote {_rel(out.resolve())}")
    return EXIT_OK


# -- why ----------------------------------------------------------------------------------------
def cmd_why(args: argparse.Namespace) -> int:
    import asyncio

    from .model.inventory import load_inventory
    from .state import State
    from .why import explain, text

    state = State(_state_path(args), readonly=True)
    try:
        row = _find_sweep(state, args.sweep)
        inventory = load_inventory(args.inventory)
        report = asyncio.run(explain(state, row, inventory, args.job,
                                     args.accept_new_hostkeys))
    finally:
        state.close()
    print(json.dumps(report, indent=2) if args.json else text(report))
    return EXIT_OK


# -- logs ---------------------------------------------------------------------------------------
def cmd_logs(args: argparse.Namespace) -> int:
    import asyncio

    from .errors import ConfigError
    from .logs import build_log, job_log, stdout_writer
    from .model.inventory import load_inventory
    from .state import State

    if (args.job is None) == (args.build is None):
        raise ConfigError("name a JOB, or a host with --build HOST (not both)")
    state = State(_state_path(args), readonly=True)
    try:
        row = _find_sweep(state, args.sweep)
        inventory = load_inventory(args.inventory)
        write = stdout_writer()
        if args.build:
            asyncio.run(build_log(state, row, inventory, args.build, write=write,
                                  accept_new=args.accept_new_hostkeys))
        else:
            asyncio.run(job_log(state, row, inventory, args.job,
                                stream="stderr" if args.stderr else "stdout",
                                attempt=args.attempt, follow=args.follow, write=write,
                                accept_new=args.accept_new_hostkeys))
    finally:
        state.close()
    return EXIT_OK


# -- pull, clean --------------------------------------------------------------------------------
def cmd_pull(args: argparse.Namespace) -> int:
    import asyncio

    from .model.inventory import load_inventory
    from .pull import pick_jobs, survey
    from .state import State

    state = State(_state_path(args), readonly=True)
    try:
        row = _find_sweep(state, args.sweep)
        rows, notes = pick_jobs(state, row, args.jobs or None)
    finally:
        state.close()
    inventory = load_inventory(args.inventory)
    dest = Path(args.to) if args.to else Path(row["results_dir"])

    async def go() -> int:
        conns, jobs = await survey(inventory, rows, args.include, args.exclude,
                                   args.accept_new_hostkeys)
        try:
            if args.list:
                return _pull_list(jobs, notes, args)
            return await _pull_fetch(conns, jobs, notes, dest, args)
        finally:
            await asyncio.gather(*(c.close() for c in conns.values()))

    return asyncio.run(go())


def _pull_list(jobs: list[Any], notes: list[str], args: argparse.Namespace) -> int:
    from .pull import size_text

    if args.json:
        print(json.dumps([{"job": j.job, "host": j.host, "remote_dir": j.remote_dir,
                           "error": j.error or None, "bytes": j.size,
                           "files": [{"path": e.path, "size": e.size} for e in j.files]}
                          for j in jobs], indent=2))
    else:
        from tabulate import tabulate

        table = [[j.job, j.host, "?" if j.error else len(j.files),
                  "?" if j.error else size_text(j.size), j.error or j.remote_dir]
                 for j in jobs if j.files or j.error]
        total = sum(j.size for j in jobs)
        print(tabulate(table, headers=["job", "host", "files", "size", "where on the host"]))
        print(f"{sum(len(j.files) for j in jobs)} file(s), {size_text(total)} in all"
              + ("" if args.quiet else "; fetch them with the same command without --list"))
        for n in notes:
            print(f"note: {n}")
    return EXIT_FAILED if any(j.error for j in jobs) else EXIT_OK


async def _pull_fetch(conns: dict, jobs: list[Any], notes: list[str], dest: Path,
                      args: argparse.Namespace) -> int:
    import asyncio

    from .pull import check_space, pull, size_text
    from .transfer import Meter

    total = sum(j.size for j in jobs)
    nfiles = sum(len(j.files) for j in jobs)
    check_space(dest, total)
    meter = Meter()
    bar = None
    if sys.stderr.isatty() and not args.quiet:
        import shutil

        from tqdm import tqdm

        size = shutil.get_terminal_size((80, 24))  # a terminal that reports 0x0: 80x24
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="pull",
                   file=sys.stderr, ncols=min(100, size.columns), nrows=size.lines)
    lines: list[str] = []

    def on_job(j: Any, problem: str) -> None:
        msg = (f"{j.job}: {problem}" if problem else
               f"{j.job}: {len(j.files)} file(s), {size_text(j.size)} from {j.host}")
        if bar is not None:
            if problem:
                bar.write(msg)
        elif not args.quiet or problem:
            print(msg, flush=True)
        if problem:
            lines.append(msg)

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.2)
            if bar is not None:
                bar.update(meter.total - bar.n)

    ticker = asyncio.ensure_future(tick())
    try:
        failed = await pull(conns, jobs, dest, verify=args.verify, meter=meter, on_job=on_job)
    finally:
        ticker.cancel()
        if bar is not None:
            bar.update(meter.total - bar.n)
            bar.close()
    for n in notes:
        print(f"note: {n}")
    print(f"pulled {nfiles} file(s), {size_text(meter.total)} into {_rel(dest)}"
          + (f"; {failed} job(s) failed: {lines[0]}" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    import asyncio

    from .model.inventory import load_inventory
    from .pull import clean
    from .state import State

    state = State(_state_path(args), readonly=True)
    try:
        row = _find_sweep(state, args.sweep)
        inventory = load_inventory(args.inventory)
        res = asyncio.run(clean(state, row, inventory, args.jobs or None,
                                args.accept_new_hostkeys))
    finally:
        state.close()
    print(f"{row['namespace']}/{row['name']}: removed {res['dirs']} job dir(s) and "
          f"{res['builds']} build(s) from the hosts")
    for n in res["notes"]:
        print(f"note: {n}")
    for e in res["unreachable"]:
        print(f"dssh: could not clean {e}; run it again when the host answers", file=sys.stderr)
    return EXIT_FAILED if res["unreachable"] else EXIT_OK


# -- pause, resume -------------------------------------------------------------------------------
def cmd_pause(args: argparse.Namespace) -> int:
    import asyncio

    from .model.inventory import load_inventory
    from .owner import duration_text, pause

    if args.duration is not None:
        duration_text(args.duration)  # bad input fails before connecting
    inventory = load_inventory(args.inventory)
    print(asyncio.run(pause(inventory, args.host, args.duration, args.accept_new_hostkeys)))
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    import asyncio

    from .model.inventory import load_inventory
    from .owner import resume

    inventory = load_inventory(args.inventory)
    print(asyncio.run(resume(inventory, args.host, args.accept_new_hostkeys)))
    return EXIT_OK


# -- slurm --------------------------------------------------------------------------------------
def cmd_slurm(args: argparse.Namespace) -> int:
    from .errors import ConfigError

    if args.sweep == "collect" and args.dir is not None:
        return _slurm_collect(args)
    if args.dir is not None:
        raise ConfigError(f"dssh slurm {args.sweep} {args.dir}: give the directory with -o "
                          f"(dssh slurm {args.sweep} -o {args.dir}), or collect one with "
                          f"dssh slurm collect {args.dir}", key="-o")
    if not args.output:
        raise ConfigError(f"dssh slurm {args.sweep}: say where to write the job arrays: "
                          f"dssh slurm {args.sweep} -o DIR", key="-o")
    if args.max_parallel is not None and args.max_parallel < 1:
        raise ConfigError(f"--max-parallel {args.max_parallel}: give 1 or more (leave it out "
                          "for no limit)", key="--max-parallel")
    import attrs

    from .model.sweep import NAME_RE, load_sweep
    from .slurm import export

    sweep = load_sweep(args.sweep)
    if args.name is not None:
        if not NAME_RE.match(args.name) or args.name in (".", ".."):
            raise ConfigError(f"--name {args.name!r}: use only letters, digits, '.', '_' and "
                              "'-'", key="--name")
        sweep = attrs.evolve(sweep, name=args.name)
    done = export(sweep, args.output, max_parallel=args.max_parallel, force=args.force,
                  sweep_file=args.sweep)
    for n in done.notes:
        print(f"dssh: note: {n}", file=sys.stderr)
    if not args.quiet:
        arrays = ", ".join(f"{s} ({n} task{'s' if n != 1 else ''})" for s, n in done.arrays)
        print(f"wrote {done.out_dir}: {done.jobs} job(s) in {arrays}"
              + (", after setup.sbatch (the build)" if done.setup else ""))
        print(f"next: copy it to the cluster (rsync -aH {done.out_dir} CLUSTER:PATH/), run "
              f"'sh {done.out_dir.name}/submit.sh' there, then 'dssh slurm collect "
              f"{done.out_dir}' with the directory back here")
    return EXIT_OK


def _slurm_collect(args: argparse.Namespace) -> int:
    from .slurm import collect

    got = collect(args.dir, args.results)
    for n in got.notes:
        print(f"dssh: warning: {n}", file=sys.stderr)
    counts: dict[str, int] = {}
    for r in got.rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    if not args.quiet:
        failed = [r for r in got.rows if r["status"] in ("FAILED", "TIMEOUT", "CANCELLED")]
        for r in failed:
            code = "" if r["exit_code"] is None else f" (exit {r['exit_code']})"
            print(f"{r['job']}: {r['status']}{code}: {got.results_dir / r['job'] / 'stderr.txt'}")
    print(f"{got.results_dir}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(
        counts.items())) + (f"; {got.unfinished} not ended yet: collect again later"
                            if got.unfinished else ""))
    return got.exit_code


# -- convert ------------------------------------------------------------------------------------
def cmd_convert(args: argparse.Namespace) -> int:
    from .model.dump import to_yaml
    from .model.sweep import load_sweep

    sweep = load_sweep(args.file)
    print(f"# dssh sweep file converted from {args.file} (dssh convert)")
    print(to_yaml(sweep), end="")
    return EXIT_OK


# -- template -----------------------------------------------------------------------------------
def cmd_template(args: argparse.Namespace) -> int:
    from importlib import resources

    print(resources.files("distribute_ssh").joinpath("templates", f"{args.kind}.yaml")
          .read_text(), end="")
    return EXIT_OK


def entry() -> None:
    """The console script: run, flush, and leave without the interpreter's teardown.

    Finalizing the SSH and crypto modules costs tens of milliseconds on every command and
    does nothing useful here: by the time ``main`` returns, the state file is closed, the
    lock released and the connections shut.
    """
    try:
        rc = main()
    except SystemExit as e:  # argparse's --help and usage errors
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(rc)


if __name__ == "__main__":
    entry()
