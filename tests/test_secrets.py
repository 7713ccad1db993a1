"""Secrets in ``env`` reach the jobs and nowhere else dssh writes (issue "hostile input",
item 5): not its output, its --log, the state file, job.json, summary.csv nor the
notification (which carries the tail of a failed job's stderr off the machine)."""

from __future__ import annotations

from pathlib import Path

from helpers import dssh, explain, write

TOKEN = "tok-AbC123xyz-987"
PASSWORD = "pw-Zz9988qq"


def test_secret_env_values_are_redacted_everywhere_dssh_writes(tmp_path: Path) -> None:
    write(tmp_path / "inventory.yaml", f"""
        hosts:
          here:
            connection: local
            cpus: 2
            workdir: {tmp_path}/host/.dssh
            ledger_dir: {tmp_path}/ledger
            env: {{DB_PASSWORD: "{PASSWORD}", COLOUR: blue-and-long}}
        """)
    write(tmp_path / "sweep.yaml", f"""
        name: secretive
        run:
          command: 'echo "token=$API_TOKEN pw=$DB_PASSWORD c=$COLOUR" > {{output}}/seen.txt;
            echo "auth failed with $API_TOKEN" >&2; exit {{code}}'
          cpus: 1
          env: {{API_TOKEN: "{TOKEN}"}}
        params: {{code: [0, 3]}}
        notify:
          command: 'cat > {tmp_path}/notified-$DSSH_NOTIFY_EVENT.json;
            env | grep ^DSSH_NOTIFY > {tmp_path}/notify-env-$DSSH_NOTIFY_EVENT.txt'
          when: [end, failure]
        """)
    r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", "--log", "run.log", cwd=tmp_path)
    assert r.returncode == 1, explain(r)
    res = tmp_path / "results" / "default" / "secretive"
    # the jobs have them
    assert (res / "code-0" / "seen.txt").read_text() == \
        f"token={TOKEN} pw={PASSWORD} c=blue-and-long\n"
    assert TOKEN in (res / "code-3" / "stderr.txt").read_text()  # the job's own words
    # nothing dssh wrote or said has them
    written = [r.stdout, r.stderr, (tmp_path / "run.log").read_text()]
    written += [p.read_text() for p in res.rglob("job.json")] + [
        (res / "summary.csv").read_text()]
    notified = sorted(tmp_path.glob("notified-*.json")) + sorted(
        tmp_path.glob("notify-env-*.txt"))
    assert len(notified) == 4
    written += [p.read_text() for p in notified]
    assert "***" in (tmp_path / "notified-failure.json").read_text()  # the stderr tail
    state = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    status = dssh("status", "secretive", "--json", cwd=tmp_path)
    events = dssh("status", "secretive", "--events", cwd=tmp_path)
    written += [status.stdout, events.stdout]
    for text in written:
        assert TOKEN not in text and PASSWORD not in text
    assert TOKEN.encode() not in state and PASSWORD.encode() not in state
    assert "blue-and-long" in (res / "code-0" / "seen.txt").read_text()  # not a secret name
