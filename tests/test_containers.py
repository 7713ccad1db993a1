"""SPEC §3 run.container: each job inside an image, on real sshd workstations.

bubblewrap and rootless podman run for real (a root filesystem made offline from the
static busybox). There is no apptainer binary here: the apptainer runtime is checked against a *stand-in*
``apptainer`` that records its arguments and writes through the bind it was given.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import dssh, explain, stand_in_inventory, summary, write

BUSYBOX = Path("/bin/busybox")
APPLETS = ["sh", "cat", "echo", "ls", "mkdir", "pwd", "id", "sleep", "wc"]


def _static_busybox() -> bool:
    if not BUSYBOX.exists() or shutil.which("bwrap") is None:
        return False
    r = subprocess.run(["ldd", str(BUSYBOX)], capture_output=True, text=True)
    return "not a dynamic executable" in (r.stdout + r.stderr) or r.returncode != 0


needs_bwrap = pytest.mark.skipif(not _static_busybox(), reason="needs bwrap and a static "
                                 "/bin/busybox (apt install bubblewrap busybox-static; "
                                 ".ci/run does)")


def make_rootfs(d: Path) -> Path:
    """A minimal root filesystem: the static busybox and a few of its applets."""
    (d / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, d / "bin" / "busybox")
    for a in APPLETS:
        (d / "bin" / a).symlink_to("busybox")
    (d / "etc").mkdir()
    (d / "etc" / "image-name").write_text("tiny-busybox\n")
    return d


@needs_bwrap
def test_bwrap_runs_each_job_inside_the_image(tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    make_rootfs(tmp_path / "rootfs")
    write(tmp_path / "in.txt", "from the head\n")
    write(tmp_path / "sweep.yaml", """
        name: boxed
        build: {command: "echo built-here > artefact"}
        run:
          command: >-
            cat input/in.txt > {output}/copy.txt;
            ls / > {output}/root.txt; pwd > {output}/pwd.txt;
            cat /etc/image-name > {output}/image.txt;
            echo {x} > /scratch/s && cat /scratch/s > {output}/scratch.txt;
            echo "$DSSH_OUTPUT $DSSH_INPUT $DSSH_BUILD" > {output}/env.txt;
            cat {build}/artefact > {output}/build.txt
          files: [in.txt]
          cpus: 1
          container: {image: rootfs, runtime: bwrap, mounts: [/scratch]}
        params: {x: [1, 2, 3]}
        """)
    ws.write_inventory(tmp_path / "inventory.yaml", overrides={
        w.name: {"cpus": 2, "capabilities": ["bwrap"]} for w in ws})
    r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    res = tmp_path / "results" / "default" / "boxed"
    assert [row["status"] for row in summary(res)] == ["COMPLETED"] * 3
    for x in (1, 2, 3):
        out = res / f"x-{x}"
        assert (out / "copy.txt").read_text() == "from the head\n"
        assert (out / "image.txt").read_text() == "tiny-busybox\n"  # the image's own /etc
        assert (out / "pwd.txt").read_text() == "/\n"
        assert (out / "scratch.txt").read_text() == f"{x}\n"
        assert (out / "env.txt").read_text() == "/outputs /input /build\n"
        assert (out / "build.txt").read_text() == "built-here\n"
        root = set((out / "root.txt").read_text().split())
        assert {"bin", "etc", "input", "outputs", "build", "scratch"} <= root
        assert "home" not in root  # not the workstation's own /
    uploads = r.stderr.count("uploading the image rootfs") + r.stdout.count(
        "uploading the image rootfs")
    assert 1 <= uploads <= len(ws)
    again = dssh("run", "sweep.yaml", "-i", "inventory.yaml", "--name", "again",
                 cwd=tmp_path)
    assert again.returncode == 0, explain(again)
    # Cached on each host that ran a job (its image was ready): a host still uploading
    # when the last job ended was cut short and uploads again, if it gets a job now.
    ready = set(re.findall(r"started on (ws\d+)", r.stdout))
    again_up = set(re.findall(r"(ws\d+): uploading the image", again.stderr + again.stdout))
    assert ready and not again_up & ready, (ready, again_up, explain(again))


def podman_images(runtime: str) -> set[str]:
    """The images in root's podman store (empty for other runtimes): a test that imports
    one removes it again, leaving the machine's store as it was."""
    if runtime != "podman":
        return set()
    return set(subprocess.run(["podman", "images", "--format", "{{.Repository}}"],
                              capture_output=True, text=True).stdout.split())


def _podman_works() -> bool:
    if shutil.which("podman") is None or shutil.which("newuidmap") is None:
        return False
    r = subprocess.run(["podman", "info"], capture_output=True, timeout=60)
    return r.returncode == 0


def _rootless_podman_or_skip(w) -> None:
    """Rootless podman needs the workstation user's subordinate ids (useradd gives them
    where login.defs asks for them): skip, saying why, where it cannot run."""
    if os.geteuid() != 0 or not w.has_own_user:
        return
    r = subprocess.run(["runuser", "-u", w.user, "--", "env", f"HOME={w.home}", "podman",
                        "info"], capture_output=True, text=True, timeout=120, cwd="/")
    if r.returncode != 0:
        pytest.skip(f"rootless podman does not run for {w.user} here: "
                    f"{r.stderr.strip()[-300:]}")


@pytest.mark.skipif(not (_static_busybox() and _podman_works()),
                    reason="needs podman with runc, uidmap and a static /bin/busybox "
                           "(.ci/run installs them and writes /etc/containers/containers.conf)")
def test_podman_runs_each_job_inside_the_image(tmp_path: Path, fresh_workdirs) -> None:
    """Rootless podman, as the workstation users, with the image imported once per host
    from a root filesystem tarball made here."""
    import tarfile

    ws = fresh_workdirs
    for w in ws:
        _rootless_podman_or_skip(w)
    make_rootfs(tmp_path / "rootfs")
    with tarfile.open(tmp_path / "rootfs.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "rootfs", arcname=".")
    write(tmp_path / "in.txt", "from the head\n")
    write(tmp_path / "sweep.yaml", """
        name: podded
        run:
          command: >-
            cat input/in.txt > {output}/copy.txt;
            cat /etc/image-name > {output}/image.txt; pwd > {output}/pwd.txt;
            echo {x} > /scratch/s && cat /scratch/s > {output}/scratch.txt;
            echo "$DSSH_OUTPUT $DSSH_JOB" > {output}/env.txt
          files: [in.txt]
          cpus: 1
          container: {image: rootfs.tar.gz, runtime: podman, mounts: [/scratch]}
        params: {x: [1, 2]}
        """)
    ws.write_inventory(tmp_path / "inventory.yaml", overrides={
        w.name: {"cpus": 2, "capabilities": ["podman"]} for w in ws})
    r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, explain(r)
    res = tmp_path / "results" / "default" / "podded"
    assert [row["status"] for row in summary(res)] == ["COMPLETED"] * 2
    for x in (1, 2):
        out = res / f"x-{x}"
        assert (out / "copy.txt").read_text() == "from the head\n"
        assert (out / "image.txt").read_text() == "tiny-busybox\n"
        assert (out / "pwd.txt").read_text() == "/\n"
        assert (out / "scratch.txt").read_text() == f"{x}\n"
        assert (out / "env.txt").read_text() == f"/outputs x-{x}\n"


def _marked(root: str) -> dict[int, str]:
    """pid -> state of every live process carrying a DSSH_RUN mark below ``root``."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        state = stat[stat.rindex(")") + 2:].split()[0]
        if state != "Z" and any(e.startswith(b"DSSH_RUN=" + root.encode()) for e in env):
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            out[int(d)] = f"{comm}:{state}"
    return out


@pytest.mark.skipif(not (_static_busybox() and _podman_works()),
                    reason="needs podman with runc, uidmap and a static /bin/busybox")
def test_podman_jobs_are_paused_and_cancelled_like_any_other(tmp_path: Path,
                                                             fresh_workdirs) -> None:
    """The container's processes are not the podman client's children, but they carry the
    job's mark: the owner's pause file stops them, and dssh cancel ends them."""
    import time

    from helpers import start_head

    ws = fresh_workdirs
    w = ws.hosts[0]
    _rootless_podman_or_skip(w)
    make_rootfs(tmp_path / "rootfs")
    write(tmp_path / "sweep.yaml", """
        name: podpause
        run:
          command: "sleep 30"
          cpus: 1
          container: {image: rootfs, runtime: podman}
        """)
    ws.write_inventory(tmp_path / "inventory.yaml", overrides={
        w.name: {"cpus": 2, "capabilities": ["podman"]}})
    head = start_head(tmp_path, "run", "sweep.yaml", "-i", "inventory.yaml", "--hosts", w.name)
    root = str(w.workdir / "jobs")
    pause = w.home / ".distribute-pause"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                v.startswith("sleep:") for v in _marked(root).values()):
            time.sleep(0.2)
        assert any(v.startswith("sleep:") for v in _marked(root).values()), _marked(root)
        pause.write_text("")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                v.endswith(":T") for v in _marked(root).values() if v.startswith("sleep:")):
            time.sleep(0.2)
        sleeps = [v for v in _marked(root).values() if v.startswith("sleep:")]
        assert sleeps and all(v.endswith(":T") for v in sleeps), _marked(root)
        pause.unlink()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                v.endswith(":T") for v in _marked(root).values() if v.startswith("sleep:")):
            time.sleep(0.2)
        assert not any(v.endswith(":T") for v in _marked(root).values()), _marked(root)
        r = dssh("cancel", "podpause", "-i", "inventory.yaml", cwd=tmp_path)
        assert r.returncode == 0, explain(r)
        head.communicate(timeout=60)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
                v.startswith("sleep:") for v in _marked(root).values()):
            time.sleep(0.2)
        assert not any(v.startswith("sleep:") for v in _marked(root).values()), _marked(root)
    finally:
        pause.unlink(missing_ok=True)
        if head.poll() is None:
            head.kill()
    rows = summary(tmp_path / "results" / "default" / "podpause")
    assert rows[0]["status"] == "CANCELLED"


@pytest.mark.parametrize("runtime", ["bwrap", "podman"])
def test_containers_as_root_on_this_machine(tmp_path: Path, runtime: str) -> None:
    """The same image on a local-connection host, run by root: bwrap, and rootful podman
    (with the containers.conf these machines need, which .ci/run writes)."""
    if os.geteuid() != 0:
        pytest.skip("this is the as-root variant; the sshd tests run as normal users")
    if not _static_busybox() or (runtime == "podman" and not _podman_works()):
        pytest.skip(f"needs {runtime} and a static /bin/busybox")
    make_rootfs(tmp_path / "rootfs")
    write(tmp_path / "sweep.yaml", f"""
        name: asroot-{runtime}
        run:
          command: "id -u > {{output}}/uid.txt; cat /etc/image-name > {{output}}/image.txt"
          cpus: 1
          container: {{image: rootfs, runtime: {runtime}}}
        """)
    write_inv = tmp_path / "inventory.yaml"
    write_inv.write_text(f"hosts:\n  here: {{connection: local, cpus: 2, capabilities: "
                         f"[{runtime}], ledger_dir: {tmp_path}/ledger}}\n")
    before = podman_images(runtime)
    r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path, timeout=300)
    try:
        assert r.returncode == 0, explain(r)
        out = tmp_path / "results" / "default" / f"asroot-{runtime}" / f"asroot-{runtime}"
        assert (out / "image.txt").read_text() == "tiny-busybox\n"
        assert (out / "uid.txt").read_text() == "0\n"
    finally:
        for ref in podman_images(runtime) - before:  # root's image store is the machine's: as it was
            subprocess.run(["podman", "rmi", "-f", ref], capture_output=True)


def test_a_container_needs_its_runtime_as_a_capability(tmp_path: Path,
                                                       fresh_workdirs) -> None:
    (tmp_path / "rootfs").mkdir()
    write(tmp_path / "sweep.yaml", """
        name: nocap
        run: {command: "true", container: {image: rootfs, runtime: bwrap}}
        """)
    fresh_workdirs.write_inventory(tmp_path / "inventory.yaml")
    r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    assert r.returncode == 2, explain(r)
    assert "requires: bwrap" in r.stderr


STAND_IN = r"""#!/bin/sh
# A STAND-IN for apptainer, for tests only (there is no apptainer binary here): records
# its arguments and writes them through the bind for /outputs.
echo "$*" >> "$HOME/apptainer-calls.log"
[ "$1" = exec ] && [ "$2" = --bind ] || exit 64
out=
old_ifs=$IFS; IFS=,
for b in $3; do case $b in *:/outputs) out=${b%:/outputs} ;; esac; done
IFS=$old_ifs
printf '%s\n' "$@" > "$out/args.txt"
"""


def test_apptainer_runtime_command_line_with_a_stand_in(tmp_path: Path,
                                                        fresh_workdirs) -> None:
    ws = fresh_workdirs
    write(tmp_path / "solver.sif", "sif-bytes\n")
    write(tmp_path / "sweep.yaml", """
        name: sif
        run:
          command: "solve --n {n} input"
          cpus: 1
          container: {image: solver.sif, runtime: apptainer, mounts: [/data]}
        params: {n: [7]}
        """)
    stand_in_inventory(ws, tmp_path / "inventory.yaml", STAND_IN)
    r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    args = (tmp_path / "results" / "default" / "sif" / "n-7" / "args.txt").read_text()
    a = args.splitlines()
    assert a[0] == "exec" and a[1] == "--bind"
    binds = a[2].split(",")
    assert binds[0].endswith("/input:/input") and binds[1].endswith("/outputs:/outputs")
    assert binds[2].endswith("/mounts/0:/data") and len(binds) == 3
    assert a[3:5] == ["--pwd", "/"] and a[5].endswith("/solver.sif")
    assert a[6:] == ["/bin/sh", "-c", "solve --n 7 input"]
    assert os.path.basename(a[5]) == "solver.sif"


def test_apptainer_template_runs_as_it_is_with_a_stand_in(tmp_path: Path,
                                                         fresh_workdirs) -> None:
    """`dssh template apptainer`, unchanged, next to an image file (any bytes: the
    stand-in does not read it)."""
    ws = fresh_workdirs
    proc = dssh("template", "apptainer", cwd=tmp_path)
    assert proc.returncode == 0
    (tmp_path / "sweep.yaml").write_text(proc.stdout)
    write(tmp_path / "solver.sif", "an image\n")
    stand_in_inventory(ws, tmp_path / "inventory.yaml", STAND_IN)
    r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    res = tmp_path / "results" / "default" / "apptainer-sweep"
    assert [row["status"] for row in summary(res)] == ["COMPLETED"] * 3
    args = (res / "case-b" / "args.txt").read_text().splitlines()
    assert args[-3:-1] == ["/bin/sh", "-c"]
    # the template's command with the job's values, each quoted, run as it is inside
    out = subprocess.run(["sh", "-c", args[-1].replace("/outputs", str(tmp_path))],
                         capture_output=True, text=True)
    assert out.returncode == 0 and (tmp_path / "case.txt").read_text() == \
        "case b on 2 cpus\n", args[-1]
