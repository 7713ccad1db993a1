"""`dssh report`: the HTML page of a sweep that had a failure and a pause, checked as
text and in a real browser (Debian's chromium, headless, screenshot)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import dssh, explain, start_head, summary, wait_until_running, write_yaml


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep on this machine as its own host: 6 jobs, one failing, paused for a while
    by a pause file in the (test's) home; then its report."""
    d = tmp_path_factory.mktemp("report")
    sweep = write_yaml(d / "rep.yaml", {
        "name": "rep", "run": {"command": "sleep 3; echo 'step {re}: residual 1e-3' >&2; "
                                          "[ {re} != 400 ]", "cpus": 1},
        "params": {"re": [100, 200, 400, 800, 1600, 3200], "mesh": ["fine"]}})
    head = start_head(d, "run", sweep)
    pause = d / "home/.distribute-pause"
    try:
        wait_until_running(d, "rep")
        time.sleep(0.5)
        pause.write_text("")  # the workstation's owner wants it for a moment
        time.sleep(3)
        pause.unlink()
    finally:
        out, err = head.communicate(timeout=120)
    assert head.returncode == 1, out + err
    assert {r["status"] for r in summary(d / "results/default/rep")} == {"COMPLETED", "FAILED"}
    proc = dssh("report", "rep", cwd=d)
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip() == "wrote results/default/rep/report.html"
    return d / "results/default/rep/report.html"


def test_the_report_holds_timeline_pauses_utilisation_histogram_failures_and_params(
        reported: Path) -> None:
    page = reported.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # self-contained: nothing fetched from anywhere, no scripts
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=""", page)
    assert "<h2>Timeline</h2>" in page and page.count("<title>re-") >= 6
    assert "paused by the host's owner" in page and ": paused " in page  # hatched spans
    assert "<h2>Utilisation</h2>" in page and "all hosts" in page
    assert "<h2>Job durations</h2>" in page and "5 completed jobs" in page
    assert "<h2>Failures (1)</h2>" in page
    assert "re-400_mesh-fine &mdash; FAILED, exit 1" in page
    assert "step 400: residual 1e-3" in page  # the end of its stderr
    assert "<th>re</th><th>mesh</th>" in page and "<td>3200</td>" in page


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"),
                    reason="no chromium here (CI installs it)")
def test_the_report_renders_in_a_real_browser(reported: Path, tmp_path: Path) -> None:
    browser = _chromium()
    assert browser is not None, "CI must install chromium"
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1400",
         f"--screenshot={shot}", reported.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    keep = os.environ.get("DSSH_TEST_KEEP_SCREENSHOT")
    if keep:  # for a person to look at
        shutil.copy(shot, keep)
    # Some pixels in the colours of the outcomes: the SVG was drawn, not just text.
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
