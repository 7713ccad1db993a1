"""``dssh run`` on a Slurm cluster (SPEC §10): an inventory host of ``kind: slurm`` is a
cluster's login node, reached over SSH like a workstation. The head exports the sweep's
queued jobs (``dssh slurm``), uploads the directory as one tar stream, submits it with its
``submit.sh``, follows the tasks with ``squeue`` and the files they write, and collects
each job's outputs as it ends, into the same results and state as on the lab.

Each submission is a *round*: ``<workdir>/slurm/<namespace>/<sweep>/<stamp>/`` on the
login node (a shared filesystem the compute nodes see, as on every cluster). A job's
``remote_dir`` is its dir in the round, so resuming, ``dssh logs``, ``dssh pull`` and
``dssh cancel`` find it there. Jobs Slurm holds but has not started are STARTING; the
sweep's retries happen inside each task's allocation (see remote/slurm_task.sh).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from shlex import quote as q
from typing import Any

from . import state as st
from .collect import RESERVED, place, select, write_json
from .engine import Head, HostRt, JobRt, RunResult, _epoch, _iso
from .errors import (
    BuildFailed,
    HostError,
    HostUnreachable,
    NoCapableHost,
    ResultsDirError,
)
from .hosts.base import make_connection
from .slurm import export, parse_states, states_script

POLL = 2.0  # seconds between looks at the queue
GONE = 2  # looks in a row a task is out of the queue with no exit code before it is judged


def cancel_script(dirs: list[str]) -> str:
    """``scancel`` the array tasks of these job dirs (each in its round), and mark them
    cancelled so that they are collected as CANCELLED."""
    return ("for d in " + " ".join(q(d) for d in dirs) + r"""; do
  [ -d "$d/.dssh" ] || continue
  : > "$d/.dssh/cancelled"
  r=${d%/jobs/*}; n=${d##*/}
  for f in "$r"/dssh/tasks-*; do
    k=${f##*-}
    t=$(grep -n -x -F -e "$n" "$f" | cut -d: -f1)
    [ -n "$t" ] || continue
    id=$(awk -v a="array-$k" '$1 == a { print $2 }' "$r/dssh/jobids" 2>/dev/null)
    [ -n "$id" ] && scancel "${id}_$((t - 1))"
  done
done
echo done
""")


def _poll_script(round_dir: str, names: list[str]) -> str:
    """What the queue says of a round's tasks, then (after it, so that a task that left
    the queue has written its exit code) what each job's dir says."""
    return (f"r={q(round_dir)}\n" + r"""b=-; [ -f "$r/build/.dssh/exit_code" ] && read -r b < "$r/build/.dssh/exit_code"
echo "-- build $b"
echo '-- queue'
for id in $(awk '{ print $2 }' "$r/dssh/jobids" 2>/dev/null); do
  squeue -h -r -o '%i %T' -j "$id" 2>/dev/null
done
echo '-- files'
for n in """ + " ".join(q(n) for n in names) + r"""; do
  d=$r/jobs/$n; c=$d/.dssh
  e=-; k=-; t=-; s=0; f=0; node=-
  [ -f "$c/exit_code" ] && read -r e < "$c/exit_code"
  [ -f "$c/cancelled" ] && k=c
  [ -f "$c/signalled" ] && [ "$k" = - ] && k=s
  [ -f "$c/timed_out" ] && t=1
  [ -f "$c/started" ] && read -r s < "$c/started"
  [ -f "$c/finished" ] && read -r f < "$c/finished"
  [ -f "$c/host" ] && read -r node < "$c/host"
  a=0; [ -d "$d/.attempts" ] && a=$(ls "$d/.attempts" | wc -l)
  echo "$n $e $k $t $s $f $a $node"
done
""")


class SlurmHead(Head):
    """Drives one sweep on one Slurm cluster through its login node."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.cluster = next(iter(self.inventory.hosts.values()))
        self.rounds: dict[str, dict[str, tuple[int, int]]] = {}  # round -> job -> (array, task)
        self.gone: dict[int, int] = {}
        self.killed: set[int] = set()
        self.built: set[str] = set()  # rounds whose build log was fetched

    def check_hosts(self) -> list[Any]:
        return [self.cluster]

    async def _stop_leftovers(self) -> None:
        """Nothing to stop: Slurm runs the tasks, and ``dssh cancel`` scancels them."""

    async def _drive(self, capable: list[Any]) -> RunResult:
        h = HostRt(self.cluster)
        self.hosts[self.cluster.name] = h
        await self._open(h)
        following = sum(1 for j in self.jobs.values() if j.state in st.ACTIVE_STATES)
        if following:
            self.reporter.event("job", f"following {following} job(s) already submitted "
                                       f"to {h.spec.name}")
        pending = [j for j in self.in_order if j.state == st.PENDING and not j.cancel]
        if pending and not self.halted:
            await self._submit(h, pending)
        self.reporter.update(self)
        while not self._finished():
            if self.fatal is not None:
                raise self.fatal
            self._take_requests()
            for j in self.jobs.values():  # cancelled while Slurm still holds them
                if j.cancel and j.state == st.STARTING:
                    self._spawn(self._kill(j))
            try:
                await self._poll(h)
            except HostUnreachable as e:
                await self._reconnect(h, e)
            self.reporter.update(self)
            if self._finished():
                break
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):  # (not wait_for: see engine._drive)
                async with asyncio.timeout(POLL):
                    await self.wakeup.wait()
        if self.cleanups:
            await asyncio.wait(list(self.cleanups), timeout=60)
        return self.finish()

    async def _open(self, h: HostRt) -> None:
        conn = make_connection(h.spec, accept_new_hostkeys=self.options.accept_new_hostkeys)
        try:
            await conn.connect()
        except HostError as e:
            raise NoCapableHost(f"the Slurm cluster {h.spec.name} cannot be reached: {e}; "
                                f"jobs already submitted keep running there: run "
                                f"`{self.resume_command()}` again to follow them") from e
        h.conn = conn
        h.workdir = conn.expand(h.spec.workdir).rstrip("/")
        res = await conn.run(
            "command -v sbatch >/dev/null || echo nosbatch\n"
            "tar --version 2>/dev/null | head -n 1 | grep -q 'GNU tar' && echo gnutar\n"
            f"umask 077; mkdir -p {q(h.workdir + '/slurm')} || exit 3\n", timeout=30)
        if "nosbatch" in res.text:
            raise NoCapableHost(f"{h.spec.name} (kind: slurm) has no sbatch on its PATH: give "
                                "the address of the cluster's login node, or set PATH in the "
                                "host's env")
        if res.exit_status != 0:
            raise HostError(h.spec.name, f"cannot create {h.workdir}/slurm: "
                                         f"{res.stderr.decode(errors='replace').strip()}")
        h.tar = "gnutar" in res.text
        h.status = "ready"

    async def _reconnect(self, h: HostRt, why: Exception) -> None:
        """The login node stopped answering: the jobs go on under Slurm; look again until
        it answers (Ctrl-C leaves them to Slurm, and the next run follows them)."""
        self.reporter.event("host", f"{h.spec.name}: lost ({why}); the jobs go on under "
                                    "Slurm, reconnecting", host=h.spec.name)
        h.status, h.detail = "lost", str(why)
        if h.conn is not None:
            with contextlib.suppress(Exception):
                await h.conn.close()
            h.conn = None
        while True:
            self.reporter.update(self)
            await asyncio.sleep(POLL * 5)
            try:
                await self._open(h)
            except (HostError, NoCapableHost):
                continue
            self.reporter.event("host", f"{h.spec.name}: back", host=h.spec.name)
            return

    async def _submit(self, h: HostRt, jobs: list[JobRt]) -> None:
        """Export the jobs, upload them as one tar, and submit them (one round)."""
        assert h.conn is not None
        s = self.sweep
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.monotonic_ns() % 100000:05d}"
        rdir = f"{h.workdir}/slurm/{s.namespace}/{s.name}/{stamp}"
        with tempfile.TemporaryDirectory(prefix="dssh-slurm-") as td:
            local = Path(td) / "export"
            done = export(s, local, sweep_file=self.sweep_file, host_env=h.spec.env,
                          python=h.spec.python, cluster=h.spec.slurm,
                          only={j.planned.name for j in jobs})
            for n in done.notes:
                self.reporter.event("warning", n)
            tar = Path(td) / "export.tar"
            with tarfile.open(tar, "w") as tf:  # hard links stay links: inputs travel once
                tf.add(local, arcname=".")
            size = tar.stat().st_size
            self.reporter.event("build", f"{h.spec.name}: uploading {len(jobs)} job(s), "
                                         f"{size / (1 << 20):.1f} MiB", host=h.spec.name)
            await h.conn.run(f"mkdir -p {q(rdir)}\n", timeout=30)
            await h.conn.put(str(tar), f"{rdir}.tar")
            manifest = json.loads((local / "dssh" / "manifest.json").read_text())
        res = await h.conn.run(
            f"cd {q(rdir)} && tar -xf {q(rdir + '.tar')} && rm -f {q(rdir + '.tar')} "
            "&& sh submit.sh\n", timeout=300)
        if res.exit_status != 0:
            raise HostError(h.spec.name, "submitting the sweep failed: "
                            + (res.stderr.decode(errors="replace").strip()
                               or res.text.strip()))
        self.rounds[rdir] = {j["name"]: (j["array"], j["task"]) for j in manifest["jobs"]}
        for line in res.text.splitlines():
            self.reporter.event("job", f"{h.spec.name}: {line}", host=h.spec.name)
        now = time.time()
        for j in jobs:
            attempt = j.attempts + 1
            jdir = f"{rdir}/jobs/{j.planned.name}"
            with self.state.tx() as db:
                db.execute("INSERT OR REPLACE INTO attempts (job_id, attempt, host, remote_dir, "
                           "state, started) VALUES (?,?,?,?,?,?)",
                           (j.id, attempt, h.spec.name, jdir, st.STARTING, now))
            self._set(j, "submitted", state=st.STARTING, attempts=attempt, host=h.spec.name,
                      remote_dir=jdir, cpus=s.run.cpus or 0, gpus=(), exit_code=None,
                      reason="submitted to Slurm")
        self.first_start = self.first_start or now

    async def _round(self, h: HostRt, rdir: str) -> dict[str, tuple[int, int]]:
        """Which array and task each job of a round is (learnt once from its manifest)."""
        if rdir not in self.rounds:
            assert h.conn is not None
            m = json.loads(await h.conn.read_file(f"{rdir}/dssh/manifest.json"))
            self.rounds[rdir] = {j["name"]: (j["array"], j["task"]) for j in m["jobs"]}
        return self.rounds[rdir]

    async def _poll(self, h: HostRt) -> None:
        assert h.conn is not None
        by_round: dict[str, list[JobRt]] = {}
        for j in self.jobs.values():
            if j.state in st.ACTIVE_STATES and j.remote_dir and not j.busy:
                by_round.setdefault(j.remote_dir.rsplit("/jobs/", 1)[0], []).append(j)
        for rdir, jobs in by_round.items():
            tasks = await self._round(h, rdir)
            res = await h.conn.run(_poll_script(rdir, [j.planned.name for j in jobs]),
                                   timeout=60)
            queue_text, _, files = res.text.partition("-- files\n")
            build = queue_text.split("\n", 1)[0].removeprefix("-- build ").strip()
            if build not in ("-", "0"):
                await self._build_failed(h, rdir, jobs, build)
                continue
            if build == "0" and rdir not in self.built:
                self.built.add(rdir)
                await self._build_log(h, rdir)
            queue_text = queue_text.split("-- queue\n", 1)[-1]
            queue: dict[str, str] = {}
            for line in queue_text.splitlines():
                parts = line.split()
                if len(parts) == 2:
                    queue[parts[0]] = parts[1]
            ids = await self._ids(h, rdir)
            lines = {ln.split(" ", 1)[0]: ln.split() for ln in files.splitlines() if ln}
            for j in jobs:
                f = lines.get(j.planned.name)
                if f is None or len(f) < 8:
                    continue
                _, rc, mark, timed, started, finished, earlier, node = f[:8]
                array, task = tasks.get(j.planned.name, (0, 0))
                key = f"{ids.get(array, '')}_{task}"
                word = queue.get(key, "")
                if rc != "-":
                    self.gone.pop(j.id, None)
                    j.busy = True
                    self._spawn(self._collect_job(h, j, int(rc) if rc.lstrip("-").isdigit()
                                                  else None, mark, timed == "1",
                                                  _epoch(started), _epoch(finished),
                                                  int(earlier) + 1, node, ""))
                elif word:
                    self.gone.pop(j.id, None)
                    state = {"RUNNING": st.RUNNING, "COMPLETING": st.RUNNING,
                             "SUSPENDED": st.SUSPENDED}.get(word, st.STARTING)
                    if state != j.state:
                        fields: dict[str, Any] = {"state": state, "reason": None
                                                  if state != st.STARTING else f"Slurm: {word}"}
                        if state == st.RUNNING:
                            fields["started"] = _epoch(started) or time.time()
                            self.reporter.event("job", f"{j.planned.name}: started on "
                                                       f"{h.spec.name} ({node})",
                                                job=j.planned.name, host=h.spec.name)
                        self._set(j, state.lower(), **fields)
                else:
                    # out of the queue without an exit code: cancelled, killed at its time
                    # limit, its node lost. Judged after a second look, from Slurm's word.
                    self.gone[j.id] = self.gone.get(j.id, 0) + 1
                    if self.gone[j.id] >= GONE:
                        self.gone.pop(j.id)
                        j.busy = True
                        self._spawn(self._judge_gone(h, j, key, mark, started, finished,
                                                     int(earlier) + 1, node))

    async def _build_log(self, h: HostRt, rdir: str) -> None:
        assert h.conn is not None
        with contextlib.suppress(FileNotFoundError, OSError):
            log = await h.conn.read_file(f"{rdir}/build/.dssh/build.log")
            self.results_dir.mkdir(parents=True, exist_ok=True)
            (self.results_dir / f"build-{h.spec.name}.log").write_bytes(log)

    async def _build_failed(self, h: HostRt, rdir: str, jobs: list[JobRt], code: str) -> None:
        """The setup job failed: Slurm cancels the arrays that waited for it. Their jobs
        go back to the queue, to be submitted again once the build is fixed."""
        await self._build_log(h, rdir)
        for j in jobs:
            with self.state.tx() as db:
                db.execute("UPDATE attempts SET state=? WHERE job_id=? AND attempt=?",
                           (st.ABANDONED, j.id, j.attempts))
            self._set(j, "requeued", state=st.PENDING, reason="the build failed on "
                      f"{h.spec.name}")
        log = self.results_dir / f"build-{h.spec.name}.log"
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join("  " + ln for ln in log.read_text(errors="replace")
                             .splitlines()[-10:])
        self.write_summary()
        raise BuildFailed(f"the build failed on {h.spec.name} (exit {code}); its log is "
                          f"{log}:\n{tail}\n  fix it and run `{self.resume_command()}` "
                          "again")

    async def _ids(self, h: HostRt, rdir: str) -> dict[int, str]:
        assert h.conn is not None
        try:
            text = (await h.conn.read_file(f"{rdir}/dssh/jobids")).decode()
        except FileNotFoundError:
            return {}
        out = {}
        for line in text.splitlines():
            what, _, jid = line.partition(" ")
            if what.startswith("array-") and what[6:].isdigit():
                out[int(what[6:])] = jid.strip()
        return out

    async def _judge_gone(self, h: HostRt, j: JobRt, key: str, mark: str, started: str,
                          finished: str, attempts: int, node: str) -> None:
        assert h.conn is not None
        try:
            res = await h.conn.run(states_script([key.split("_")[0]]), timeout=60)
        except HostUnreachable:
            j.busy = False
            return
        word, code = parse_states(res.text).get(key, ("", None))
        word = word.split("+")[0]
        if mark == "c" or word in ("CANCELLED", "PREEMPTED"):
            why = "cancelled"
        elif word in ("TIMEOUT", "DEADLINE"):
            why = "timeout"
        else:
            why = {"OUT_OF_MEMORY": "out of memory", "NODE_FAIL": "its node failed",
                   "BOOT_FAIL": "its node failed to boot"}.get(
                word, f"ended without an exit code (Slurm: {word or 'unknown'})")
        await self._collect_job(h, j, code, mark if mark != "-" else "x", why == "timeout",
                                _epoch(started), _epoch(finished), attempts, node, why)

    async def _collect_job(self, h: HostRt, j: JobRt, exit_code: int | None, mark: str,
                           timed_out: bool, started: float | None, finished: float | None,
                           attempts: int, node: str, why: str) -> None:
        assert h.conn is not None and j.remote_dir is not None
        conn, jdir = h.conn, j.remote_dir
        if mark == "c" or why == "cancelled":
            status = st.CANCELLED
        elif timed_out:
            status = st.TIMEOUT
        elif exit_code == 0 and not why:
            status = st.COMPLETED
        else:
            status = st.FAILED
        try:
            entries = await conn.walk(f"{jdir}/outputs")
        except HostUnreachable:
            j.busy = False  # the next look, once reconnected, collects it
            return
        out = self.sweep.outputs
        files, left, notes = select(entries, out.collect, out.exclude)
        clash = [e for e in files if e.path.split("/", 1)[0] in RESERVED]
        notes += [f"{e.path}: an output with this name would hide dssh's own file; not "
                  "collected (write it into a subdirectory)" for e in clash]
        files = [e for e in files if e not in clash]
        staging = self.results_dir / ".incoming" / j.planned.name
        try:
            try:
                got = await self._fetch(h, conn, jdir, files, staging)
            except HostUnreachable:
                shutil.rmtree(staging, ignore_errors=True)
                j.busy = False
                return
            if got.notes:
                notes += got.notes
                left += [e for e in files if e.path not in got.got]
                files = [e for e in files if e.path in got.got]
            write_json(staging / "job.json", {
                "sweep": self.sweep.name, "namespace": self.sweep.namespace,
                "job": j.planned.name, "status": status, "params": j.planned.params,
                "host": h.spec.name, "node": None if node == "-" else node,
                "attempts": attempts, "exit_code": exit_code, "timed_out": timed_out,
                "reason": why or None, "started": _iso(started), "finished": _iso(finished),
                "seconds": round(finished - started, 3) if started and finished else None,
                "cpus": j.cpus, "gpus": [], "remote_dir": jdir,
                "outputs": [e.path for e in files], "skipped": notes,
                "left_on_host": [{"path": e.path, "size": e.size} for e in left],
            })
            await asyncio.to_thread(place, staging, self.results_dir / j.planned.name)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise ResultsDirError(f"{self.results_dir}: {e.strerror or e}") from e
        with contextlib.suppress(OSError):
            staging.parent.rmdir()
        for n in notes:
            self.reporter.event("warning", f"{j.planned.name}: {n}")
        with self.state.tx() as db:
            db.execute("UPDATE attempts SET state=?, exit_code=?, finished=? "
                       "WHERE job_id=? AND attempt=?",
                       (status, exit_code, finished, j.id, j.attempts))
        self._set(j, status.lower(), state=status, exit_code=exit_code,
                  started=started, finished=finished or time.time(),
                  reason=why or ("timed out" if timed_out else None))
        j.finished_here = time.time()
        if status in (st.FAILED, st.TIMEOUT):
            self._failed_for_good(h, j, status, exit_code)
        verb = {st.COMPLETED: "done", st.FAILED: f"FAILED (exit {exit_code})",
                st.TIMEOUT: "TIMEOUT", st.CANCELLED: "CANCELLED"}[status]
        self.reporter.event("job", f"{j.planned.name}: {verb} on {h.spec.name}"
                                   + (f" ({node})" if node != "-" else ""),
                            job=j.planned.name, host=h.spec.name, status=status)
        j.busy = False
        self.wakeup.set()

    async def _kill(self, j: JobRt) -> None:
        """``scancel`` the job's task; it is then collected as CANCELLED."""
        h = self.hosts.get(j.host or "")
        if j.id in self.killed or h is None or h.conn is None or not j.remote_dir:
            return
        self.killed.add(j.id)
        with contextlib.suppress(HostError):
            await h.conn.run(cancel_script([j.remote_dir]), timeout=120)
