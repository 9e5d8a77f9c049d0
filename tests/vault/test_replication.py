"""Replication to headquarters on the host: zfs-autobackup's recorded output, the status and
lag, the schedule, the command lines, one run at a time, a hung run stopped, the send meter,
HQ's receive-only shell and `appliance hq status`'s reading of received snapshots.

The recorded runs in data/replication/ come from the QEMU test machine (see its README);
the runs themselves are tested end to end in tests/system/test_replication.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from appliance import hq, hq_shell
from appliance.config import ReplicationConfig, parse_config
from appliance.errors import ConfigError
from appliance.metrics import Metrics
from appliance.events import EventBus
from appliance.vault import replication as rep

DATA = Path(__file__).parent / "data" / "replication"
STATION = "station"
TARGET = {"host": "127.0.0.1", "port": 2222, "user": "zrecv-station",
          "key_file": "/etc/appliance/replication/id_ed25519",
          "known_hosts_file": "/etc/appliance/replication/known_hosts", "path": "hq/stations/station"}


def config(tmp_path: Path | None = None, **replication):
    data = {"station": {"id": STATION},
            "vault": {"backend": "zfs", "dataset": "tank/evidence", "path": "/tank/evidence"},
            "replication": {"enabled": True, "target": TARGET, **replication}}
    if tmp_path is not None:
        data["state_dir"] = str(tmp_path / "state")
    return parse_config(data)


def sample(name: str) -> str:
    return (DATA / name).read_text()


def runs(name: str) -> list[tuple[str, int]]:
    """(output, exit status) of each command in a recorded last-run.log."""
    out, current, code = [], [], None
    for line in sample(name).splitlines():
        if line.startswith("$ "):
            current = []
        elif line.startswith("# exit "):
            code = int(line.split()[2])
            out.append(("\n".join(current), code))
        else:
            current.append(line)
    return out


# -- the recorded output ---------------------------------------------------------------------------


def test_a_successful_run_is_ok_and_names_what_it_sent():
    (text, code), = runs("ok-nochange.log")
    parsed = rep.parse_output(text)
    assert parsed.completed and code == 0
    assert parsed.selected == ["tank/evidence/catalog", "tank/evidence/media", "tank/evidence/quarantine"]
    assert [t.snapshot for t in parsed.transfers] == ["tank/evidence/catalog@station-20261127175958"]
    assert parsed.transfers[0].target == "hq/stations/station/catalog" and not parsed.transfers[0].full
    assert rep.classify(parsed, code, False) == ("ok", None)


def test_thinning_is_parsed_and_never_touches_session_snapshots():
    (text, code), = runs("resume-after-full.log")
    parsed = rep.parse_output(text)
    assert parsed.destroyed == ["tank/evidence/catalog@station-20261127175730",
                                "hq/stations/station/catalog@station-20261127175730"]
    # In every recorded run, whatever zfs-autobackup destroyed was its own snapshot.
    for path in DATA.glob("*.log"):
        for text, _code in runs(path.name):
            for snap in rep.parse_output(text).destroyed:
                assert "@ingest-" not in snap, (path.name, snap)


def test_hq_full_is_target_full_with_zfs_own_words():
    (text, code), = runs("full.log")
    parsed = rep.parse_output(text)
    kind, message = rep.classify(parsed, code, False)
    assert kind == "target_full" and "space quota exceeded" in message
    assert parsed.failed == {"tank/evidence/media": "Last command returned error"}
    assert parsed.failed_count == 1 and not parsed.completed


def test_a_resumed_transfer_is_counted():
    for name in ("resume-after-full.log", "resume-after-cut.log"):
        (text, code), = runs(name)
        parsed = rep.parse_output(text)
        assert rep.classify(parsed, code, False)[0] == "ok"
        resumed = [t for t in parsed.transfers if t.resumed]
        assert [t.target for t in resumed] == ["hq/stations/station/media"], name


def test_a_stopped_run_is_a_timeout():
    (text, code), = runs("timeout.log")
    assert code == -15
    assert rep.classify(rep.parse_output(text), code, True)[0] == "timeout"


def test_a_link_cut_under_a_receive_is_link_cut():
    (text, code), = runs("linkcut.log")
    parsed = rep.parse_output(text)
    assert rep.ssh_failed(parsed)
    kind, message = rep.link_cut(parsed)
    assert kind == "link_cut" and "tank/evidence/media" in message
    # the quarantine transfer after the cut still went (a new connection)
    assert parsed.transfers[-1].target == "hq/stations/station/quarantine"


def test_snapshots_destroyed_at_hq_need_a_rollback_then_succeed():
    (text, code), = runs("deleted-newest-norollback.log")
    parsed = rep.parse_output(text)
    assert rep.needs_rollback(parsed)
    assert rep.classify(parsed, code, False)[0] == "incompatible"
    first, second = runs("deleted-newest.log")
    assert rep.needs_rollback(rep.parse_output(first[0]))
    assert rep.classify(rep.parse_output(second[0]), second[1], False)[0] == "ok"
    assert "--rollback" in sample("deleted-newest.log").split("\n$ ")[1].splitlines()[0]


def test_a_dataset_without_any_snapshot_at_hq_needs_a_person():
    (text, code), = runs("hq-all-snapshots-gone.log")
    parsed = rep.parse_output(text)
    kind, message = rep.classify(parsed, code, False)
    assert kind == "incompatible" and "exists" in message
    assert not rep.needs_rollback(parsed)  # a rollback would not help: rename it aside at HQ


def test_a_refusal_of_hqs_shell_is_refused():
    (text, code), = runs("refused.log")
    kind, message = rep.classify(rep.parse_output(text), code, False)
    assert kind == "refused" and "appliance-hq-shell: refused" in message


def test_zfs_autobackup_hides_sshs_reason_so_it_is_asked_again():
    for name in ("auth-during-run.log", "hostkey-during-run.log"):
        (text, code), = runs(name)
        parsed = rep.parse_output(text)
        assert code == 255 and rep.ssh_failed(parsed), name
        assert "Permission denied" not in text and "Host key verification" not in text


@pytest.mark.parametrize("name,kind,words", [
    ("unreachable-probe.log", "unreachable", "Connection refused"),
    ("auth-probe.log", "auth", "Permission denied (publickey)"),
    ("hostkey-probe.log", "host_key", "Host key verification failed"),
])
def test_the_probe_names_why_hq_cannot_be_reached(name, kind, words):
    (text, code), = runs(name)
    assert rep.classify_probe(text, code) == (kind, rep._clean(next(
        ln for ln in text.splitlines() if words in ln)))


def test_probe_that_works_and_odd_failures():
    assert rep.classify_probe("hq/stations/station\n", 0) is None
    assert rep.classify_probe("cannot open 'hq/stations/x': dataset does not exist", 1) == \
        ("target_missing", "cannot open 'hq/stations/x': dataset does not exist")
    assert rep.classify_probe("", 255) == ("unreachable", "ssh failed (exit status 255)")
    assert rep.classify_probe("ssh: Could not resolve hostname hq: Name or service not known", 255)[0] \
        == "unreachable"


def test_every_kind_has_an_explanation():
    for path in DATA.glob("*.log"):
        for text, code in runs(path.name):
            kind, _ = rep.classify(rep.parse_output(text), code, code == -15)
            assert kind == "ok" or kind in rep.KINDS, (path.name, kind)


# -- snapshots at both ends: lag, datasets behind, gaps --------------------------------------------


def _listings():
    local = rep.parse_local_snapshots(sample("local-snapshots.txt"))
    remote = rep.parse_remote_snapshots(sample("hq-snapshots.txt"))
    selected = [ln.split("\t")[0] for ln in sample("local-selected.txt").splitlines()
                if ln.split("\t")[1] == "true"]
    return selected, local, remote


def test_everything_at_hq_means_no_lag():
    selected, local, remote = _listings()
    assert selected == ["tank/evidence/catalog", "tank/evidence/media", "tank/evidence/quarantine"]
    states = rep.compare(config(), selected, local, remote, rep.parse_resume_tokens(sample("hq-resume-tokens.txt")))
    assert [s.target for s in states] == ["hq/stations/station/catalog", "hq/stations/station/media",
                                          "hq/stations/station/quarantine"]
    assert not any(s.behind or s.pending_ingest or s.gaps or s.partial_at_hq for s in states)
    status = rep.ReplicationStatus(enabled=True)
    rep.apply_states(status, states, time.time())
    assert status.lag_seconds() == 0 and status.datasets_behind == 0 and status.pending_ingest == 0


def test_a_session_not_yet_at_hq_makes_the_lag_grow():
    selected, local, remote = _listings()
    media = local["tank/evidence/media"]
    newest_ingest = [s for s in media if s.name.startswith("ingest-")][-1]
    # HQ as it was before the newest session arrived: drop it and everything after it
    cut = media.index(newest_ingest)
    for s in media[cut:]:
        del remote["hq/stations/station/media"][s.name]
    states = rep.compare(config(), selected, local, remote, {"hq/stations/station/media"})
    m = states[1]
    assert m.behind and m.pending_ingest == [newest_ingest.name] and not m.gaps and m.partial_at_hq
    assert m.newest_at_hq == media[cut - 1].name
    status = rep.ReplicationStatus(enabled=True)
    rep.apply_states(status, states, time.time())
    assert status.pending_ingest == 1 and status.datasets_behind == 1
    assert status.oldest_pending_at == newest_ingest.creation
    now = newest_ingest.creation + 600
    assert status.lag_seconds(now) == 600 and status.lag_seconds(now + 60) == 660

    # HQ unreachable now: what HQ was last seen to have stands in, and the lag keeps growing
    again = rep.compare(config(), selected, local, None, set(), {s.source: s for s in states})
    assert again[1].pending_ingest == [newest_ingest.name] and again[1].newest_at_hq == m.newest_at_hq


def test_a_session_snapshot_destroyed_at_hq_is_a_gap_not_lag():
    selected, local, remote = _listings()
    media = local["tank/evidence/media"]
    middle = [s for s in media if s.name.startswith("ingest-")][0]
    del remote["hq/stations/station/media"][middle.name]
    states = rep.compare(config(), selected, local, remote, set())
    assert states[1].gaps == [middle.name] and not states[1].pending_ingest and not states[1].behind
    status = rep.ReplicationStatus(enabled=True)
    rep.apply_states(status, states, time.time())
    assert status.gaps == [f"hq/stations/station/media@{middle.name}"] and status.lag_seconds() == 0


def test_the_purge_waits_for_sessions_hq_lacks_or_lost_and_for_an_hq_never_asked(tmp_path):
    cfg = config(tmp_path)
    waits = rep.waiting_for_hq(cfg)
    assert waits is not None and waits("tank/evidence/media@ingest-A") and waits(None)  # never asked

    selected, local, remote = _listings()
    media = local["tank/evidence/media"]
    ingest = [s for s in media if s.name.startswith("ingest-")]
    newest, lost = ingest[-1], ingest[0]
    for s in media[media.index(newest):]:
        del remote["hq/stations/station/media"][s.name]
    del remote["hq/stations/station/media"][lost.name]
    status = rep.ReplicationStatus(enabled=True, hq_checked_at=time.time())
    rep.apply_states(status, rep.compare(cfg, selected, local, remote, set()), time.time())
    rep.save_status(rep.Paths.of(cfg), status)
    waits = rep.waiting_for_hq(cfg)
    arrived = [s for s in ingest if s not in (newest, lost)]
    assert arrived, "the sample needs a session that reached HQ"
    assert waits(f"tank/evidence/media@{newest.name}") and waits(f"tank/evidence/media@{lost.name}")
    assert not any(waits(f"tank/evidence/media@{s.name}") for s in arrived)
    assert waits(None)  # a session never sealed has no snapshot to send

    assert rep.waiting_for_hq(config(tmp_path, enabled=False)) is None


def test_a_resealed_snapshot_is_evidence_that_hq_must_receive():
    resealed = rep.Snap("tank/evidence/media", "resealed-P2026-0001", "9", 1.0, 9, 1)
    autobackup = rep.Snap("tank/evidence/media", "station-20261127120000", "8", 1.0, 8, 1)
    assert resealed.held_ingest and not autobackup.held_ingest
    states = rep.compare(config(), ["tank/evidence/media"], {"tank/evidence/media": [resealed]},
                         {"hq/stations/station/media": {}}, set())
    assert states[0].pending_ingest == ["resealed-P2026-0001"]


def test_a_snapshot_of_the_same_name_but_another_guid_is_not_at_hq():
    selected, local, remote = _listings()
    newest = local["tank/evidence/catalog"][-1]
    remote["hq/stations/station/catalog"][newest.name] = "123"
    states = rep.compare(config(), selected, local, remote, set())
    assert states[0].behind and states[0].newest_at_hq == local["tank/evidence/catalog"][-2].name


def test_the_station_clock_behind_its_snapshots_is_warned_about():
    _, local, _ = _listings()
    newest = max(s.creation for snaps in local.values() for s in snaps)
    assert rep.clock_warnings(local, newest + 10) == []
    warning, = rep.clock_warnings(local, newest - 86400)
    assert warning.startswith(rep.CLOCK_WARNING) and "86400 s behind" in warning


def test_session_snapshots_never_look_like_zfs_autobackups_own():
    """zfs-autobackup thins only snapshots whose name parses with its format (its is_ours()):
    a session snapshot can therefore never be thinned, whatever keep_source/keep_target say."""
    _, local, _ = _listings()
    fmt = rep.SNAPSHOT_FORMAT.format(STATION)
    ingest = [s.name for snaps in local.values() for s in snaps if s.name.startswith("ingest-")]
    ours = [s.name for snaps in local.values() for s in snaps if s.name.startswith(f"{STATION}-")]
    assert ingest and ours
    for name in ours:
        datetime.strptime(name, fmt)
    for name in ingest:
        with pytest.raises(ValueError):
            datetime.strptime(name, fmt)
    assert all(s.held_ingest for snaps in local.values() for s in snaps if s.name in ingest)
    with pytest.raises(ConfigError, match="prefix of the vault's own snapshots"):
        config(backup_name="ingest")


# -- the schedule ---------------------------------------------------------------------------------


def test_schedule_first_run_soon_then_on_the_interval():
    s = rep.Schedule(interval=900, after_ingest_delay=30, retry_interval=300, started=1000, first_delay=60)
    assert s.due() == 1060 and s.reason(1060) == "start"
    s.run_started(1060)
    s.run_ended(1100, ok=True)
    assert s.due() == 2000 and s.reason(2000) == "schedule"


def test_schedule_an_ingest_right_after_start_is_one_run():
    s = rep.Schedule(interval=900, after_ingest_delay=10, retry_interval=300, started=0, first_delay=60)
    s.ingest(20)
    assert s.due() == 30 and s.reason(30) == "ingest"
    s.run_started(30)
    s.run_ended(80, ok=True)
    assert s.due() == 980  # no separate start run


def test_first_run_after_a_restart():
    now = 10_000.0
    never = rep.ReplicationStatus()
    assert rep.first_delay(never, 900, now) == rep.START_DELAY_S
    recent = rep.ReplicationStatus(state="ok", finished_at=now - 100)
    assert rep.first_delay(recent, 900, now) == 800        # the rest of its interval
    old = rep.ReplicationStatus(state="ok", finished_at=now - 5000)
    assert rep.first_delay(old, 900, now) == rep.START_DELAY_S
    behind = rep.ReplicationStatus(state="ok", finished_at=now - 100, pending_ingest=2)
    failed = rep.ReplicationStatus(state="failed", finished_at=now - 100)
    assert rep.first_delay(behind, 900, now) == rep.first_delay(failed, 900, now) == rep.START_DELAY_S


def test_schedule_after_ingest_and_not_postponed_by_more_dockings():
    s = rep.Schedule(interval=900, after_ingest_delay=60, retry_interval=300, started=0)
    s.run_ended(100, ok=True)
    s.ingest(200)
    s.ingest(230)   # a second camera docked: the same run
    s.ingest(250)
    assert s.due() == 260 and s.reason(260) == "ingest"
    s.run_started(260)
    s.ingest(270)   # docked during the run: another run soon after it
    s.run_ended(300, ok=True)
    assert s.due() == 330


def test_schedule_retries_sooner_after_a_failure():
    s = rep.Schedule(interval=3600, after_ingest_delay=60, retry_interval=300, started=0)
    s.run_ended(100, ok=False)
    assert s.due() == 400 and s.reason(400) == "retry"
    s.run_ended(500, ok=True)
    assert s.due() == 4100


# -- command lines and configuration --------------------------------------------------------------


def test_autobackup_command_line(tmp_path):
    c = config(tmp_path, keep_source="5,1d1w", compress="zstd-fast", rate_limit="1MiB")
    paths = rep.Paths.of(c)
    argv = rep.autobackup_argv(c, paths, "/venv/bin/zfs-autobackup")
    assert argv[0] == "/venv/bin/zfs-autobackup" and argv[-2:] == [STATION, "hq/stations/station"]
    joined = " ".join(argv)
    for part in ("--utc", "--other-snapshots", "--exclude-received", "--allow-empty", "--strip-path 2",
                 "--keep-source 5,1d1w", "--keep-target 10,1d1w,1w1m,1m1y",
                 "--set-properties readonly=on,canmount=noauto", "--zfs-compressed",
                 "--compress zstd-fast", f"--ssh-config {paths.ssh_config}", "--ssh-target appliance-hq"):
        assert part in joined, part
    assert "--rollback" not in argv and "--rollback" in rep.autobackup_argv(c, paths, "x", rollback=True)
    pipe = argv[argv.index("--send-pipe") + 1].split(" ")
    assert pipe[1:4] == ["-I", "-S", str(Path(rep.__file__).with_name("sendmeter.py"))]
    assert pipe[-2:] == [str(paths.meter), str(1 << 20)]
    assert "--force" not in argv and "-F" not in argv and "--destroy-incompatible" not in argv


def test_ssh_config_pins_the_host_key_and_shares_one_connection(tmp_path):
    c = config(tmp_path, connect_timeout="15s")
    text = rep.ssh_config_text(c, rep.Paths.of(c))
    for line in ("Host appliance-hq", "HostName 127.0.0.1", "Port 2222", "User zrecv-station",
                 "IdentityFile /etc/appliance/replication/id_ed25519", "IdentitiesOnly yes",
                 "StrictHostKeyChecking yes", "UserKnownHostsFile /etc/appliance/replication/known_hosts",
                 "BatchMode yes", "ConnectTimeout 15", "ControlMaster auto", "UpdateHostKeys no"):
        assert f"    {line}" in text or line in text, line
    control = next(ln.split()[1] for ln in text.splitlines() if "ControlPath" in ln)
    assert len(control.replace("%C", "x" * 40)) < 100  # a unix socket name
    assert control.startswith("/tmp/appliance-ssh-")   # this state folder's path is too long for one
    rep.Paths.of(c).prepare()
    assert oct(Path(control).parent.stat().st_mode & 0o777) == "0o700"
    short = config(None)
    assert rep.Paths.of(short).control == Path("/var/lib/appliance/state/replication/cm-%C")


@pytest.mark.parametrize("bad,words", [
    ({"enabled": True, "target": None}, "needs 'target'"),
    ({"keep_target": "10,1w1d"}, "period is longer"),
    ({"keep_source": "daily"}, "is not a rule"),
    ({"interval": "10s"}, "interval: at least 60 seconds"),
    ({"timeout": "soon"}, "is not a duration"),
    ({"rate_limit": "1KiB"}, "would never finish"),
    ({"compress": "brotli"}, "compress"),
    ({"target": {**TARGET, "key_file": "relative/key"}}, "must be an absolute path"),
    ({"target": {**TARGET, "path": "/hq/stations"}}, "path"),
])
def test_bad_replication_settings_are_refused_with_the_key(bad, words):
    with pytest.raises(ConfigError, match="replication") as exc:
        config(**bad)
    assert words in str(exc.value)


def test_replication_needs_the_zfs_vault():
    with pytest.raises(ConfigError, match="needs vault.backend 'zfs'"):
        parse_config({"replication": {"enabled": True, "target": TARGET}})
    assert config(interval="15min", after_ingest_delay=30, timeout="2h").replication.interval == 900
    assert parse_config({}).replication.enabled is False


def test_the_documented_config_yaml_parses_and_keeps_replication_off():
    import yaml

    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "config.yaml").read_text())
    c = parse_config(data)
    assert c.replication.enabled is False and c.replication.keep_source == "10,1d1w"
    documented = (repo / "config.yaml").read_text()
    for key in ReplicationConfig.model_fields:
        assert f"  {key}:" in documented or f"# {key}:" in documented, key
    for key in ReplicationConfig.model_fields["target"].annotation.__args__[0].model_fields:
        assert f"{key}:" in documented, key


# -- running it: fake zfs-autobackup, zfs and ssh --------------------------------------------------

FAKE_ZFS = f"""#!/bin/sh
case "$*" in
  *"get -H -o name,value -r -t filesystem autobackup"*) cat {DATA / 'local-selected.txt'} ;;
  *"list -H -p -t snapshot"*) cat {DATA / 'local-snapshots.txt'} ;;
  *) echo "fake zfs: $*" >&2; exit 1 ;;
esac
"""
FAKE_SSH = f"""#!/bin/sh
# ssh -F CONFIG HOST COMMAND  |  ssh -F CONFIG -O exit HOST
[ "$3" = "-O" ] && exit 0
[ -e "$FAKE_HQ_DOWN" ] && {{ echo "ssh: connect to host 127.0.0.1 port 2222: Connection refused" >&2; exit 255; }}
case "$4" in
  *"-o name,guid"*) cat {DATA / 'hq-snapshots.txt'} ;;
  *"receive_resume_token"*) cat {DATA / 'hq-resume-tokens.txt'} ;;
  *"zfs list -H -o name"*) echo hq/stations/station ;;
  *) echo "fake ssh: $*" >&2; exit 1 ;;
esac
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "zfs", FAKE_ZFS)
    _script(bin_dir / "ssh", FAKE_SSH)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_HQ_DOWN", str(tmp_path / "hq-down"))
    return tmp_path


def fake_autobackup(tmp_path: Path, log: str, *, sleep: float = 0, meter_bytes: int = 0) -> str:
    """A zfs-autobackup that replays a recorded run (and writes a meter file as sendmeter would)."""
    (text, code), = runs(log)
    out = tmp_path / f"{log}.out"
    out.write_text(text + "\n")
    meter = f'echo {meter_bytes} > "$(dirname "$0")/../state/replication/meter/$$"' if meter_bytes else ""
    return str(_script(tmp_path / "bin" / f"zab-{log}-{sleep}-{meter_bytes}", f"""#!/bin/sh
echo $$ > "$(dirname "$0")/zab.pid"
{meter}
sleep {sleep}
cat {out}
exit {code if code >= 0 else 1}
"""))


class Recorder:
    def __init__(self):
        self.rows = []

    async def __call__(self, action, subject, details):
        self.rows.append((action, subject, details))


def metric(m: Metrics, name: str) -> float:
    return m.registry.get_sample_value(name) or 0.0


async def test_a_run_feeds_status_metrics_and_audit(fakes):
    c = config(fakes)
    m = Metrics(EventBus(), [], station=STATION)
    audit = Recorder()
    r = rep.Replicator(c, metrics=m, audit=audit,
                       executable=fake_autobackup(fakes, "resume-after-cut.log", meter_bytes=6324504))
    assert metric(m, "appliance_replication_enabled") == 1
    status = await r.run("cli")
    assert status.state == "ok" and status.run_id == 1 and status.bytes_sent == 6324504
    assert status.transfers == 3 and status.resumed == 1 and status.datasets_behind == 0
    assert status.hq_checked_at and status.lag_seconds() == 0
    assert metric(m, "appliance_replication_bytes_sent_total") == 6324504
    assert metric(m, "appliance_replication_last_success_timestamp_seconds") == status.last_success_at
    assert metric(m, "appliance_replication_lag_seconds") == 0
    (action, subject, details), = audit.rows
    assert action == "replication.run" and subject == "zrecv-station@127.0.0.1:2222/hq/stations/station"
    assert details["result"] == "ok" and details["bytes_sent"] == 6324504 and details["resumed"] == 1
    saved = json.loads(rep.Paths.of(c).status.read_text())
    assert saved["state"] == "ok" and saved["bytes_sent_total"] == 6324504
    assert rep.Paths.of(c).last_log.read_text().startswith("$ ")
    assert oct(rep.Paths.of(c).ssh_config.stat().st_mode & 0o777) == "0o600"


async def test_hq_down_fails_fast_without_running_zfs_autobackup(fakes):
    c = config(fakes)
    (fakes / "hq-down").touch()
    m = Metrics(EventBus(), [], station=STATION)
    never = _script(fakes / "bin" / "never", "#!/bin/sh\ntouch \"$0.ran\"\n")
    r = rep.Replicator(c, metrics=m, executable=str(never))
    status = await r.run("schedule")
    assert status.state == "failed" and status.last_error_kind == "unreachable"
    assert "Connection refused" in status.last_error and not Path(f"{never}.ran").exists()
    assert metric(m, "appliance_replication_errors_total") == 1
    # HQ's snapshots were not listed: nothing is known to be pending (no run ever reached HQ)
    assert status.hq_checked_at is None


async def test_a_failed_run_keeps_the_lag_growing_and_the_next_one_catches_up(fakes):
    c = config(fakes)
    m = Metrics(EventBus(), [], station=STATION)
    r = rep.Replicator(c, metrics=m, executable=fake_autobackup(fakes, "full.log", meter_bytes=8579540))
    # HQ as seen after the failed run: the newest media snapshots are missing there
    hq_now = fakes / "hq-now.txt"
    lines = [ln for ln in sample("hq-snapshots.txt").splitlines()
             if not (ln.startswith("hq/stations/station/media@") and "20261128T021012" in ln)
             and "media@station-20261127181045" not in ln]
    hq_now.write_text("\n".join(lines) + "\n")
    (fakes / "bin" / "ssh").write_text(FAKE_SSH.replace(str(DATA / "hq-snapshots.txt"), str(hq_now)))
    status = await r.run("ingest")
    assert status.state == "failed" and status.last_error_kind == "target_full"
    assert status.pending_ingest == 1 and status.datasets_behind == 1
    assert metric(m, "appliance_replication_bytes_sent_total") == 8579540  # what went before it failed
    lag = metric(m, "appliance_replication_lag_seconds")
    assert lag > 0 and lag == pytest.approx(time.time() - status.oldest_pending_at, abs=5)

    (fakes / "bin" / "ssh").write_text(FAKE_SSH)
    r.executable = fake_autobackup(fakes, "resume-after-full.log")
    status = await r.run("retry")
    assert status.state == "ok" and status.pending_ingest == 0 and status.failures_in_a_row == 0
    assert metric(m, "appliance_replication_lag_seconds") == 0
    assert metric(m, "appliance_replication_errors_total") == 1


async def test_a_hung_run_is_stopped_with_everything_it_started(fakes):
    c = config(fakes, timeout=30)
    r = rep.Replicator(c, executable=fake_autobackup(fakes, "timeout.log", sleep=300))
    r.r = r.r.model_copy(update={"timeout": 1.5})
    started = time.monotonic()
    status = await r.run("schedule")
    assert time.monotonic() - started < 20
    assert status.state == "failed" and status.last_error_kind == "timeout"
    pid = int((fakes / "bin" / "zab.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_only_one_run_at_a_time(fakes):
    c = config(fakes)
    slow = rep.Replicator(c, executable=fake_autobackup(fakes, "ok-nochange.log", sleep=3))
    other = rep.Replicator(c, executable=fake_autobackup(fakes, "ok-nochange.log"))
    first = asyncio.create_task(slow.run("schedule"))
    await asyncio.sleep(1)
    with pytest.raises(rep.Busy):
        await other.run("cli")
    assert (await first).state == "ok"
    # with a wait, the second one runs after the first (the CLI while the daemon runs)
    third = asyncio.create_task(slow.run("schedule"))
    await asyncio.sleep(1)
    status = await other.run("cli", wait_for_lock=30)
    await third
    assert status.state == "ok" and status.run_id == 3


async def test_the_daemon_picks_up_a_run_the_cli_made(fakes):
    c = config(fakes)
    m = Metrics(EventBus(), [], station=STATION)
    daemon = rep.Replicator(c, metrics=m)
    cli = rep.Replicator(c, executable=fake_autobackup(fakes, "ok-nochange.log", meter_bytes=10180))
    await cli.run("cli")
    time.sleep(0.01)
    daemon.reload()
    assert daemon.status.run_id == 1 and daemon.status.state == "ok"
    assert metric(m, "appliance_replication_bytes_sent_total") == 10180
    daemon.reload()  # the same run is not counted twice
    assert metric(m, "appliance_replication_bytes_sent_total") == 10180


async def test_the_daemon_loop_runs_after_an_ingest(fakes):
    c = config(fakes, after_ingest_delay=0.2, interval=3600)
    r = rep.Replicator(c, executable=fake_autobackup(fakes, "ok-nochange.log"))
    r.schedule.started = time.monotonic() + 3600  # no start run in this test
    task = asyncio.create_task(r.run_forever())
    try:
        await asyncio.sleep(0.5)
        assert r.status.run_id == 0
        r.ingest_committed()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if r.status.state == "ok":
                break
        assert r.status.state == "ok" and r.status.reason == "ingest"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_status_survives_a_restart_and_an_interrupted_run_says_so(fakes):
    c = config(fakes)
    paths = rep.Paths.of(c)
    rep.save_status(paths, rep.ReplicationStatus(enabled=True, state="running", run_id=7,
                                                 last_success_at=1000.0, oldest_pending_at=time.time() - 50))
    m = Metrics(EventBus(), [], station=STATION)
    r = rep.Replicator(c, metrics=m)
    assert r.status.state == "failed" and "interrupted" in r.status.last_error and r.status.run_id == 7
    assert metric(m, "appliance_replication_last_success_timestamp_seconds") == 1000.0
    assert 49 <= metric(m, "appliance_replication_lag_seconds") < 120
    summary = rep.summary(r.status)
    assert summary["enabled"] and summary["last_success_at"] == "1970-01-01T00:16:40+00:00"
    assert rep.summary(None) == {"enabled": False}


# -- the send meter --------------------------------------------------------------------------------


def test_sendmeter_counts_and_limits(tmp_path):
    script = Path(rep.__file__).with_name("sendmeter.py")
    data = os.urandom(300 * 1024)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-I", "-S", str(script), str(tmp_path), str(100 * 1024)],
                          input=data, capture_output=True, timeout=60)
    seconds = time.monotonic() - started
    assert proc.returncode == 0 and proc.stdout == data
    (meter,) = tmp_path.iterdir()
    assert int(meter.read_text()) == len(data)
    assert 1.8 <= seconds < 20  # 300 KiB at 100 KiB/s
    fast = subprocess.run([sys.executable, "-I", "-S", str(script), str(tmp_path)], input=data,
                          capture_output=True, timeout=60)
    assert fast.stdout == data


# -- headquarters: the receive-only shell ------------------------------------------------------------

ALLOWED = [
    "zfs list hq/stations/st01",
    "zfs list -d 1 -r -t snapshot -H -o name hq/stations/st01/media",
    "zfs list -r -t filesystem,volume -o name -H hq/stations/st01",
    "zfs list -H -p -t snapshot -o name,guid -r hq/stations/st01",
    "zfs get -H -o property,value -p all hq/stations/st01/media@ingest-20261128T015121-DSJ00001A-4c7b",
    "zfs get -H -p -o name,value -r -t filesystem receive_resume_token hq/stations/st01",
    "zpool get -H -p all hq",
    "zfs holds -H hq/stations/st01/media@st01-20261127175541",
    "zfs hold zfs_autobackup:st01 hq/stations/st01/media@ingest-x",
    "zfs release zfs_autobackup:st01 hq/stations/st01/media@st01-20261127175541",
    "zfs destroy hq/stations/st01/catalog@st01-20261127175541",
    "zfs rollback hq/stations/st01/media@st01-20261127175541",
    "zfs recv -s zfs_autobackup_option_test",
    "zfs recv -u -o readonly=on -o canmount=noauto -v -s hq/stations/st01/media",
    "zfs recv -A hq/stations/st01/media",
    "zstdmt -dc | zfs recv -u -o readonly=on -o canmount=noauto -v -s hq/stations/st01/media",
    "mbuffer -q -s128k -m16M | zfs recv -u -o readonly=on -v -s hq/stations/st01/media",
    "zfs create -o canmount=off hq/stations/st01/sub",
]
REFUSED = [
    ("zfs list", "needs a dataset"),
    ("zfs list -r hq", "outside"),
    ("zfs list hq/stations/st02", "outside"),
    ("zfs list hq/stations/st01x", "outside"),
    ("zfs list hq/stations/st01/../st02", "not a plain dataset name"),
    ("zfs destroy hq/stations/st01/media@ingest-20261128T015121-DSJ00001A-4c7b", "session snapshots"),
    ("zfs destroy hq/stations/st01/media", "a snapshot is needed"),
    ("zfs destroy -r hq/stations/st01/media@st01-20261127175541", "option -r"),
    ("zfs destroy hq/stations/st01/media@st02-20261127175541", "own snapshots"),
    ("zfs release appliance-evidence hq/stations/st01/media@ingest-x", "own hold"),
    ("zfs rollback -r hq/stations/st01/media@st01-20261127175541", "never -r"),
    ("zfs recv -F -u -o readonly=on hq/stations/st01/media", "-F"),
    ("zfs recv -o readonly=on -v hq/stations/st01/media", "must not mount"),
    ("zfs recv -u -v hq/stations/st01/media", "readonly=on"),
    ("zfs recv -u -o readonly=on -o mountpoint=/ hq/stations/st01/media", "readonly=on"),
    ("zfs recv -u -o readonly=on hq/stations/st01", "outside"),
    ("zfs send hq/stations/st01/media@x", "not a command"),
    ("zfs set readonly=off hq/stations/st01/media", "not a command"),
    ("zfs mount hq/stations/st01/media", "not a command"),
    ("zpool get -H -p all rpool", "only"),
    ("sh -c id", "not a command"),
    ("zfs list hq/stations/st01; id", "shell syntax"),
    ("zfs list hq/stations/st01 && id", "shell syntax"),
    ("zfs list $(id)", "shell syntax"),
    ("zfs list `id`", "shell syntax"),
    ('zfs list "hq/stations/$HOME"', "expansions"),
    ("zfs list hq/stations/st01 > /etc/passwd", "shell syntax"),
    ("cat /etc/shadow | zfs recv -u -o readonly=on hq/stations/st01/media", "decompressor"),
    ("zfs list hq/stations/st01 | zfs list hq/stations/st01", "only a receive"),
    ("zfs list 'hq/stations/st01", "unbalanced"),
    ("", "empty"),
]


@pytest.mark.parametrize("command", ALLOWED)
def test_hq_shell_allows_what_zfs_autobackup_needs(command):
    policy = hq_shell.Policy("hq/stations/st01", "st01")
    assert policy.check_pipeline(hq_shell.split_pipeline(command))


@pytest.mark.parametrize("command,words", REFUSED)
def test_hq_shell_refuses_everything_else(command, words):
    policy = hq_shell.Policy("hq/stations/st01", "st01")
    with pytest.raises(hq_shell.Refused, match=None) as exc:
        policy.check_pipeline(hq_shell.split_pipeline(command))
    assert words in str(exc.value)


def test_hq_shell_reads_quoted_words_as_zfs_autobackup_quotes_them():
    assert hq_shell.split_pipeline("zfs hold 'zfs_autobackup:st01' 'hq/stations/st01/a@b'") == \
        [["zfs", "hold", "zfs_autobackup:st01", "hq/stations/st01/a@b"]]
    assert hq_shell.split_pipeline("zstdmt -dc|zfs recv -u x") == [["zstdmt", "-dc"], ["zfs", "recv", "-u", "x"]]
    assert hq_shell.split_pipeline("zfs list 'a|b'") == [["zfs", "list", "a|b"]]  # then refused by name


def _run_shell(tmp_path, command, zfs_script, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _script(bin_dir / "zfs", zfs_script)
    env = {**os.environ, "PATH": "/nowhere", "APPLIANCE_HQ_SHELL_PATH": f"{bin_dir}:/usr/bin:/bin",
           "SSH_ORIGINAL_COMMAND": command}
    return subprocess.run([sys.executable, "-I", "-S", hq_shell.__file__, "--root", "hq/stations/st01",
                           "--backup-name", "st01"], env=env, capture_output=True, text=True,
                          input="stream", timeout=60)


def test_hq_shell_runs_allowed_commands_and_refuses_with_126(tmp_path, monkeypatch):
    log = tmp_path / "zfs.log"
    zfs = f'#!/bin/sh\necho "$*" >> {log}\necho listed\n'
    ok = _run_shell(tmp_path, "zfs list -H hq/stations/st01", zfs, monkeypatch)
    assert ok.returncode == 0 and ok.stdout == "listed\n"
    refused = _run_shell(tmp_path, "zfs destroy -r hq/stations/st01", zfs, monkeypatch)
    assert refused.returncode == 126 and "appliance-hq-shell: refused" in refused.stderr
    assert log.read_text() == "list -H hq/stations/st01\n"  # the refused one never reached zfs


def test_hq_shell_holds_a_received_session_or_resealed_snapshot(tmp_path, monkeypatch):
    log = tmp_path / "zfs.log"
    zfs = f"""#!/bin/sh
echo "$*" >> {log}
case "$1" in
  recv) cat > /dev/null; echo "receiving incremental stream of tank/evidence/media@ingest-S2 into hq/stations/st01/media@ingest-S2"; echo "received 2.1M stream in 1 seconds" ;;
  holds) printf 'hq/stations/st01/media@ingest-S2\\tzfs_autobackup:st01\\tFri Nov 27 17:44 2026\\n' ;;
esac
"""
    done = _run_shell(tmp_path, "zfs recv -u -o readonly=on -o canmount=noauto -v -s hq/stations/st01/media",
                      zfs, monkeypatch)
    assert done.returncode == 0 and "receiving incremental stream" in done.stdout
    calls = log.read_text().splitlines()
    assert calls[0] == "recv -u -o readonly=on -o canmount=noauto -v -s hq/stations/st01/media"
    assert calls[-1] == "hold appliance-evidence hq/stations/st01/media@ingest-S2"
    # so does the snapshot that stands in for the sessions after a purge
    log.unlink()
    _run_shell(tmp_path, "zfs recv -u -o readonly=on -v -s hq/stations/st01/media",
               zfs.replace("@ingest-S2", "@resealed-P2026-0001"), monkeypatch)
    assert log.read_text().splitlines()[-1] == "hold appliance-evidence hq/stations/st01/media@resealed-P2026-0001"
    # an autobackup snapshot gets no evidence hold
    log.unlink()
    zfs2 = zfs.replace("@ingest-S2", "@st01-20261127175541")
    _run_shell(tmp_path, "zfs recv -u -o readonly=on -v -s hq/stations/st01/media", zfs2, monkeypatch)
    assert not any(c.startswith(("hold", "holds")) for c in log.read_text().splitlines())


def test_hq_shell_starts_without_heavy_imports():
    out = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", hq_shell.__file__, "--help"],
                         capture_output=True, text=True, timeout=60)
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"re", "subprocess", "argparse", "shlex"}, imported


# -- headquarters: `appliance hq status` --------------------------------------------------------------


def _station_tree(tmp_path: Path):
    """A received station as `hq status` sees it, with snapshot mounts faked by folders."""
    from appliance.catalog.db import Catalog

    sid_a, sid_b, sid_c = "20261128T015121-DSJ00001A-4c7b", "20261128T015537-DSJ00002B-8896", \
        "20261128T020432-DSJ00003C-9157"
    media = tmp_path / "media-newest"
    catalog_dir = tmp_path / "catalog-newest"
    catalog_dir.mkdir()
    cat = Catalog(catalog_dir / "catalog.sqlite")
    manifests = {}
    for sid, serial in ((sid_a, "DSJ00001A"), (sid_b, "DSJ00002B"), (sid_c, "DSJ00003C")):
        rel = Path("media/2026/11/28") / serial / sid
        files = {"files/DCIM/REC0000.MP4": b"clip of " + sid.encode()}
        doc = {"session": {"id": sid, "started_at": "2026-11-28T01:51:21+00:00"},
               "device": {"serial": serial}, "officer": "张三", "totals": {"files": 1, "bytes": len(b"clip of ") + len(sid)},
               "files": [{"vault_path": str(rel / name), "size": len(data),
                          "sha256": __import__("hashlib").sha256(data).hexdigest()}
                         for name, data in files.items()]}
        data = json.dumps(doc).encode()
        manifests[sid] = __import__("hashlib").sha256(data).hexdigest()
        if sid != sid_c:  # session C: the catalog at HQ knows it, its files are not there yet
            folder = media / rel.relative_to("media")
            (folder / "files/DCIM").mkdir(parents=True)
            (folder / "manifest.json").write_bytes(data)
            for name, content in files.items():
                (folder / name).write_bytes(content)

        def add(conn, sid=sid, serial=serial, rel=rel):
            conn.execute("INSERT INTO sessions (id, device_serial, slot, profile, state, vault_dir, started_at,"
                         " updated_at, files_total, bytes_total, manifest_sha256) VALUES"
                         " (?, ?, '1', 'generic', 'done', ?, '2026-11-28T01:51:21+00:00',"
                         " '2026-11-28T01:51:21+00:00', 1, 10, ?)", (sid, serial, str(rel), manifests[sid]))
        cat.run(add)
    cat.close()
    snaps = hq.Snapshots({
        "media": [(f"ingest-{sid_a}", 1), ("station-20261127175541", 2)],   # B's own snapshot destroyed at HQ
        "catalog": [(f"ingest-{sid_a}", 1), ("station-20261127175541", 2)],
        "quarantine": [],
    })
    folders = {"hq/stations/station/media@station-20261127175541": media,
               f"hq/stations/station/media@ingest-{sid_a}": media,
               "hq/stations/station/catalog@station-20261127175541": catalog_dir}
    return (sid_a, sid_b, sid_c), snaps, folders


def test_hq_status_reads_received_snapshots(tmp_path, monkeypatch):
    (a, b, c), snaps, folders = _station_tree(tmp_path)
    monkeypatch.setattr(hq, "list_snapshots", lambda ds: snaps)
    monkeypatch.setattr(hq, "partial_receives", lambda ds: ["hq/stations/station/media"])
    monkeypatch.setattr(hq.SnapshotMounts, "path", lambda self, snap: folders[snap])
    st = hq.station_status("hq/stations/station", verify=True)
    by_id = {s.session: s for s in st.sessions}
    assert by_id[a].state == "arrived" and by_id[a].manifest == "ok" and by_id[a].verified == "ok"
    assert by_id[a].snapshot == f"hq/stations/station/media@ingest-{a}"
    assert by_id[b].state == "arrived-no-snapshot" and by_id[b].snapshot is None
    assert by_id[c].state == "pending" and by_id[c].manifest == "missing"
    assert st.counts() == {"arrived": 1, "arrived-no-snapshot": 1, "pending": 1}
    assert st.partial_receive == ["hq/stations/station/media"]
    text = hq.format_table([st])
    assert "partial receive waiting" in text and f"{a}\tarrived\tDSJ00001A\t张三" in text
    assert json.loads(json.dumps(hq.to_json([st])))[0]["counts"]["pending"] == 1


def test_hq_status_finds_changed_files(tmp_path, monkeypatch):
    (a, b, c), snaps, folders = _station_tree(tmp_path)
    victim = next(folders["hq/stations/station/media@station-20261127175541"].glob(f"**/{a}/files/DCIM/*"))
    victim.chmod(0o644)
    victim.write_bytes(b"tampered")
    monkeypatch.setattr(hq, "list_snapshots", lambda ds: snaps)
    monkeypatch.setattr(hq, "partial_receives", lambda ds: [])
    monkeypatch.setattr(hq.SnapshotMounts, "path", lambda self, snap: folders[snap])
    st = hq.station_status("hq/stations/station", verify=True)
    s = next(x for x in st.sessions if x.session == a)
    assert s.state == "mismatch" and "1 file(s) differ" in s.verified


def test_hq_catalog_is_read_with_its_wal(tmp_path):
    """The catalog in a snapshot is in WAL mode: its newest commits may be only in the -wal file."""
    db = tmp_path / "live" / "catalog.sqlite"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executescript("CREATE TABLE officers (id INTEGER PRIMARY KEY, name TEXT);"
                       "CREATE TABLE sessions (id TEXT, device_serial TEXT, state TEXT, started_at TEXT,"
                       " files_total INT, bytes_total INT, quarantined INT, vault_dir TEXT,"
                       " manifest_sha256 TEXT, officer_id INT);")
    conn.execute("INSERT INTO sessions VALUES ('S1', 'CAM', 'done', 't', 1, 2, 0, 'media/x', 'abc', NULL)")
    conn.commit()
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    for suffix in ("", "-wal"):
        (snapshot / f"catalog.sqlite{suffix}").write_bytes((db.parent / f"catalog.sqlite{suffix}").read_bytes())
    conn.close()
    for f in snapshot.iterdir():
        f.chmod(0o444)
    assert [r["id"] for r in hq.read_catalog(snapshot)] == ["S1"]


# -- metrics ---------------------------------------------------------------------------------------


def test_lag_metric_is_the_age_of_the_oldest_session_not_at_hq():
    m = Metrics(EventBus(), [], station=STATION)
    m.replication_configured(True)
    m.replication_pending(time.time() - 300)
    assert 299 <= metric(m, "appliance_replication_lag_seconds") < 400
    m.replication_pending(None)
    assert metric(m, "appliance_replication_lag_seconds") == 0
    m.replication_failed(bytes_sent=1234)
    assert metric(m, "appliance_replication_bytes_sent_total") == 1234
    assert metric(m, "appliance_replication_errors_total") == 1


# -- the command line --------------------------------------------------------------------------------


def test_cli_replicate_shows_the_status(tmp_path, capsys):
    import yaml

    from appliance.cli import main

    cfg = tmp_path / "config.yaml"
    data = {"station": {"id": STATION}, "state_dir": str(tmp_path / "state"),
            "vault": {"backend": "zfs", "dataset": "tank/evidence", "path": str(tmp_path / "vault")},
            "replication": {"enabled": True, "target": TARGET}}
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True))
    assert main(["replicate", "--config", str(cfg)]) == 0
    assert "replication to zrecv-station@127.0.0.1:2222/hq/stations/station: never" in capsys.readouterr().out
    now = time.time()
    rep.save_status(rep.Paths.of(parse_config(data)), rep.ReplicationStatus(
        enabled=True, state="failed", run_id=3, reason="retry", finished_at=now, seconds=0.3,
        last_error="ssh: connect to host 127.0.0.1 port 2222: Connection refused",
        last_error_kind="unreachable", last_error_at=now, failures_in_a_row=2, pending_ingest=1,
        oldest_pending_at=now - 120, gaps=["hq/stations/station/media@ingest-X"]))
    assert main(["replicate", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert ": failed" in out and "[unreachable] ssh: connect to host" in out and "2 failure(s) in a row" in out
    assert "missing at HQ:  hq/stations/station/media@ingest-X" in out and "1 session snapshot(s)" in out
    assert main(["replicate", "--json", "--config", str(cfg)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["last_error_kind"] == "unreachable" and 110 < doc["lag_seconds"] < 200
    assert doc["last_error_meaning"] == rep.KINDS["unreachable"]

    data["replication"]["enabled"] = False
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True))
    assert main(["replicate", "--config", str(cfg)]) == 0
    assert "not enabled" in capsys.readouterr().out
    assert main(["replicate", "--now", "--config", str(cfg)]) != 0
    assert "not enabled" in capsys.readouterr().err


def test_hq_orders_snapshots_as_zfs_does_not_by_a_wrong_clock(monkeypatch):
    listing = ("hq/stations/s1/media@ingest-A\t1795800000\t100\n"
               "hq/stations/s1/catalog@s1-20261127183340\t1795804000\t120\n"
               # made while the station's clock was a day behind: older creation, newer txg
               "hq/stations/s1/catalog@s1-20261126183500\t1795717000\t130\n"
               "hq/stations/s1/discs@x\t1\t140\n")
    monkeypatch.setattr(hq, "_zfs", lambda *args: listing)
    snaps = hq.list_snapshots("hq/stations/s1")
    assert snaps.newest("catalog") == "s1-20261126183500"
    assert snaps.newest_overall == ("catalog", "s1-20261126183500", 1795717000)
    assert snaps.has("media", "ingest-A") and "discs" not in snaps.by_child
