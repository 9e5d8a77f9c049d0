"""Replication to headquarters: the vault's ZFS snapshots sent with zfs-autobackup.

zfs-autobackup is GPLv3: it is run as the ``zfs-autobackup`` command
(``asyncio.create_subprocess_exec``) and never imported. This module builds its command
line and an SSH client configuration from ``config.yaml`` (``replication:``), runs it (one
run at a time, stopped after ``replication.timeout``), parses its output into a
:class:`ReplicationStatus`, feeds the metrics and writes one audit row per run.

What goes to headquarters
    The datasets with ``autobackup:<backup name>=true``: the vault's ``media``,
    ``quarantine`` and ``catalog`` (``discs`` is marked false). They arrive at
    ``<target.path>/media`` ... (``--strip-path``), read-only and never mounted
    (``--set-properties readonly=on,canmount=noauto``; zfs-autobackup receives with ``-u``).

Snapshots
    zfs-autobackup makes its own snapshots (``<backup name>-<UTC time>``) at the start of a
    run and thins them with ``keep_source`` / ``keep_target``. The vault's per-session
    snapshots (``@ingest-<session>``, held with ``appliance-evidence``) go along
    (``--other-snapshots``) and are never thinned on either side: zfs-autobackup only ever
    thins snapshots whose names parse with its own snapshot format, and a held snapshot
    cannot be destroyed anyway. So no keep schedule can remove a session's snapshot.

Transfers are resumable (zfs-autobackup receives with ``zfs recv -s`` and continues from
the receive_resume_token next time). After a mistaken deletion of the newest snapshots at
HQ ("destination has been modified"), the run is repeated once with ``--rollback``, which
returns HQ's dataset to its newest remaining snapshot (never ``-r``: no snapshot is
destroyed by it) so that the missing ones are sent again. Each run first asks HQ once
(``ssh ... zfs list``): an unreachable HQ ends the run at once, without a new snapshot.
Bytes are counted (and, with ``rate_limit``, limited) by ``sendmeter.py`` in the send pipe.
docs/replication.md describes both ends.

The status says: last success, last error (with a kind: ``unreachable``, ``target_full``,
``link_cut``, ``timeout`` ...), bytes sent, datasets behind, and the replication lag: how
long the oldest held ingest snapshot not yet at HQ has existed only on the station (0 when
every session is at HQ).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.vault.zfs import RESEAL_PREFIX, SNAPSHOT_PREFIX

log = logging.getLogger(__name__)

HOST_ALIAS = "appliance-hq"          # the Host entry of the generated ssh config
SNAPSHOT_FORMAT = "{}-%Y%m%d%H%M%S"  # zfs-autobackup's default, in UTC (--utc)
KILL_GRACE_S = 10
MAX_LOG_LINES = 20000
CLOCK_TOLERANCE_S = 300
CLOCK_WARNING = "the station clock is"
START_DELAY_S = 60.0  # the first run after the daemon starts, at the soonest
RELOAD_EVERY_S = 5.0  # how soon the daemon's status and metrics show a run the CLI made

# Kinds of failure, each with what it means for the operator.
OK = "ok"
KINDS: dict[str, str] = {
    "unreachable": "headquarters is unreachable (network, host down, or its SSH server not answering)",
    "auth": "headquarters refused the station's key (authorized_keys at HQ, replication.target.key_file)",
    "host_key": "headquarters' host key does not match replication.target.known_hosts_file",
    "refused": "headquarters' receive-only shell refused a command",
    "target_missing": "the station's dataset does not exist at headquarters (create it there first)",
    "target_full": "headquarters' pool or the station's quota there is full",
    "no_common_snapshot": "headquarters has none of the station's snapshots for a dataset; "
                          "the dataset at HQ must be renamed aside there for a fresh full send",
    "incompatible": "headquarters' dataset has snapshots the station does not have",
    "link_cut": "the connection broke during a transfer; the next run resumes it",
    "timeout": "the run took longer than replication.timeout and was stopped; the next run resumes it",
    "source": "a problem on the station (its pool or its datasets)",
    "busy": "another replication run is still going",
    "failed": "zfs-autobackup failed",
}


class ReplicationError(ApplianceError):
    """同步到总部失败 / replication to headquarters: {}"""


# -- paths and command lines ------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """The replication's files in the state folder."""

    root: Path

    @classmethod
    def of(cls, config: Config) -> "Paths":
        return cls(config.state_dir / "replication")

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def last_log(self) -> Path:
        return self.root / "last-run.log"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def meter(self) -> Path:
        return self.root / "meter"

    @property
    def control_dir(self) -> Path:
        """Where ssh's shared-connection socket lives: the state folder, or, if its path is too
        long for a unix socket name (108 bytes with the 40 characters of %C), a private folder
        in /tmp named after it."""
        if len(str(self.root)) + len("/cm-") + 40 < 100:
            return self.root
        import hashlib
        import tempfile

        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"appliance-ssh-{digest}"

    @property
    def control(self) -> Path:
        return self.control_dir / "cm-%C"

    def prepare(self) -> None:
        """The state folder, and the socket folder (0700, ours) where that is elsewhere."""
        self.root.mkdir(parents=True, exist_ok=True)
        where = self.control_dir
        if where == self.root:
            return
        try:
            where.mkdir(mode=0o700)
        except FileExistsError:
            st = where.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise ReplicationError(f"{where}: not a private folder of this user; remove it") from None


def target_label(config: Config) -> str:
    t = config.replication.target
    assert t is not None
    return f"{t.user}@{t.host}:{t.port}/{t.path}"


def ssh_config_text(config: Config, paths: Paths) -> str:
    """The ssh client configuration zfs-autobackup and the status check use (``ssh -F``)."""
    r = config.replication
    t = r.target
    assert t is not None
    lines = [
        "# Written by the appliance from config.yaml (replication.target) before every run.",
        f"Host {HOST_ALIAS}",
        f"    HostName {t.host}",
        f"    Port {t.port}",
        f"    User {t.user}",
        f"    IdentityFile {t.key_file}",
        "    IdentitiesOnly yes",
        "    IdentityAgent none",
        # HQ's host key must be the pinned one: never trust on first use, never update it.
        "    StrictHostKeyChecking yes",
        f"    UserKnownHostsFile {t.known_hosts_file}",
        "    GlobalKnownHostsFile /dev/null",
        "    UpdateHostKeys no",
        "    CheckHostIP no",
        "    BatchMode yes",
        "    PasswordAuthentication no",
        f"    ConnectTimeout {max(1, int(r.connect_timeout))}",
        # A dead link is noticed within a minute, not after TCP's hours.
        "    ServerAliveInterval 15",
        "    ServerAliveCountMax 4",
        # zfs-autobackup runs dozens of commands per run at HQ: one connection for all.
        "    ControlMaster auto",
        f"    ControlPath {paths.control}",
        "    ControlPersist 60",
        "    Compression no",
        "    ForwardAgent no",
        "    ForwardX11 no",
        "    ClearAllForwardings yes",
        "    LogLevel ERROR",
        "",
    ]
    return "\n".join(lines)


def autobackup_executable() -> str:
    """The zfs-autobackup installed beside this Python (the appliance's venv), else on PATH."""
    beside = Path(sys.executable).parent / "zfs-autobackup"
    if beside.exists():
        return str(beside)
    found = shutil.which("zfs-autobackup")
    if not found:
        raise ReplicationError("zfs-autobackup is not installed (it is a dependency of the appliance)")
    return found


def send_pipe(paths: Paths, rate: int | None) -> str:
    """The ``--send-pipe`` that counts (and limits) the bytes of every send: sendmeter.py."""
    script = Path(__file__).with_name("sendmeter.py")
    words = [sys.executable, "-I", "-S", str(script), str(paths.meter)]
    if rate:
        words.append(str(rate))
    # zfs-autobackup splits the pipe on spaces.
    for w in words:
        if " " in w or not w:
            raise ReplicationError(f"{w!r}: a path with a space cannot be used in a zfs-autobackup pipe")
    return " ".join(words)


def autobackup_argv(config: Config, paths: Paths, executable: str | None = None, *,
                    rollback: bool = False) -> list[str]:
    """zfs-autobackup's command line for one run (``rollback``: the second try after HQ's
    dataset was found changed since its newest snapshot, see :func:`needs_rollback`)."""
    r = config.replication
    t = r.target
    assert t is not None and config.vault.dataset
    strip = len(config.vault.dataset.split("/"))
    argv = [
        executable or autobackup_executable(),
        "--verbose",
        "--utc",  # snapshot names in UTC: the station's time zone and DST never matter
        "--ssh-config", str(paths.ssh_config),
        "--ssh-target", HOST_ALIAS,
        # tank/evidence/media -> <target>/media
        "--strip-path", str(strip),
        # the vault's @ingest-<session> snapshots go too, not only zfs-autobackup's own
        "--other-snapshots",
        # never send on what this machine itself received (a station is never a relay)
        "--exclude-received",
        # a snapshot of every dataset in every run, changed or not: the newest snapshot common
        # with HQ, which zfs-autobackup holds, is then always one of its own, never a session's
        # (a held session snapshot could not be destroyed by an approved retention purge)
        "--allow-empty",
        "--snapshot-format", SNAPSHOT_FORMAT,
        "--keep-source", r.keep_source,
        "--keep-target", r.keep_target,
        # read-only at HQ, never mounted there (zfs-autobackup receives with -u as well)
        "--set-properties", "readonly=on,canmount=noauto",
        "--send-pipe", send_pipe(paths, r.rate_limit),
    ]
    if rollback:
        # after a mistaken deletion of HQ's newest snapshots: back to its newest remaining one
        # (zfs rollback without -r: it destroys no snapshot)
        argv.append("--rollback")
    if r.zfs_compressed:
        argv.append("--zfs-compressed")
    if r.compress:
        argv += ["--compress", r.compress]
    argv += [config.backup_name, t.path]
    return argv


def ssh_argv(paths: Paths, remote: list[str]) -> list[str]:
    """An ssh command to HQ through the generated configuration (what zfs-autobackup does)."""
    return ["ssh", "-F", str(paths.ssh_config), HOST_ALIAS, shlex.join(remote)]


# -- zfs-autobackup's output ----------------------------------------------------------------------

# "  [Source] tank/evidence/media@ingest-...: -> hq/stations/s1/media (new)"
_TRANSFER = re.compile(r"^\s*\[Source\] (?P<snap>\S+@\S+): -> (?P<target>\S+?)(?P<new> \(new\))?\s*$")
# "  [Target] hq/stations/s1/media: resuming" is printed on the source snapshot: see below
_RESUMING = re.compile(r"^\s*\[Source\] (?P<snap>\S+@\S+): resuming\s*$")
_FAILED = re.compile(r"^! \[Source\] (?P<ds>[^@\s]+): FAILED: (?P<msg>.*)$")
_FAILED_COUNT = re.compile(r"^! (?P<n>\d+) dataset\(s\) failed!")
_EXCEPTION = re.compile(r"^! Exception: (?P<msg>.*)$")
_DESTROY = re.compile(r"^\s*\[(?P<side>Source|Target)\] (?P<snap>\S+@\S+): Destroying\s*$")
_SELECTED = re.compile(r"^\s*\[Source\] (?P<ds>[^@\s]+): Selected\s*$")
_ABORT_RESUME = re.compile(r"^\s*\[Target\] (?P<ds>\S+): Aborting resume")


@dataclass
class Transfer:
    """One snapshot zfs-autobackup started to send."""

    snapshot: str          # the station's snapshot, pool/dataset@name
    target: str            # the dataset at HQ
    full: bool             # an initial (full) send, not an incremental one
    resumed: bool = False  # continued from a receive_resume_token


@dataclass
class ParsedRun:
    """What one zfs-autobackup run said."""

    selected: list[str] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)   # source dataset -> FAILED message
    failed_count: int = 0
    exception: str | None = None
    errors: list[str] = field(default_factory=list)          # every "! " line, without the "! "
    aborted_resumes: list[str] = field(default_factory=list)
    completed: bool = False                                  # "All operations completed successfully"


def parse_output(text: str) -> ParsedRun:
    """Parse zfs-autobackup's ``--verbose`` output (stdout and stderr merged, in order)."""
    run = ParsedRun()
    resuming: set[str] = set()
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if line.startswith("! "):
            run.errors.append(line[2:])
            if m := _FAILED.match(line):
                run.failed[m["ds"]] = m["msg"]
            elif m := _FAILED_COUNT.match(line):
                run.failed_count = int(m["n"])
            elif m := _EXCEPTION.match(line):
                run.exception = m["msg"]
            continue
        if m := _RESUMING.match(line):
            resuming.add(m["snap"])
        elif m := _TRANSFER.match(line):
            run.transfers.append(Transfer(m["snap"], m["target"], bool(m["new"]), m["snap"] in resuming))
        elif m := _DESTROY.match(line):
            run.destroyed.append(m["snap"])
        elif m := _SELECTED.match(line):
            run.selected.append(m["ds"])
        elif m := _ABORT_RESUME.match(line):
            run.aborted_resumes.append(m["ds"])
        elif "#### All operations completed successfully" in line:
            run.completed = True
    return run


# The clearest line of an error, by kind, tried in this order. ssh's and zfs's own words.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("host_key", re.compile(r"Host key verification failed", re.I)),
    ("host_key", re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|No \S+ host key is known", re.I)),
    ("auth", re.compile(r"Permission denied \(|Too many authentication failures|"
                        r"Load key .*: (bad permissions|invalid format)|no such identity", re.I)),
    ("unreachable", re.compile(r"ssh: connect to host|Could not resolve hostname|Connection refused|"
                               r"No route to host|Network is unreachable|Connection timed out during banner|"
                               r"Operation timed out|kex_exchange_identification|"
                               r"Connection closed by \S+ port \d+$", re.I)),
    ("refused", re.compile(r"appliance-hq-shell: refused", re.I)),
    ("target_full", re.compile(r"out of space|No space left on device|disk quota exceeded|quota exceeded",
                               re.I)),
    ("target_missing", re.compile(r"Target path '.*' does not exist", re.I)),
    ("no_common_snapshot", re.compile(r"Cant find common snapshot with target", re.I)),
    ("incompatible", re.compile(r"incompatible snapshot|destination \S+ has been modified|"
                                r"destination \S+ exists", re.I)),
    ("link_cut", re.compile(r"Broken pipe|Connection reset|connection closed|Connection to \S+ closed|"
                            r"client_loop: send disconnect|Timeout, server \S+ not responding|"
                            r"incomplete stream|failed to read from stream|checksum mismatch|"
                            r"control socket .* (closed|disconnect)|mux_client_request_session", re.I)),
    ("source", re.compile(r"\[Source\].*(cannot open|dataset does not exist|I/O error)|"
                          r"No source filesystems selected", re.I)),
]


def classify(parsed: ParsedRun, returncode: int | None, timed_out: bool) -> tuple[str, str | None]:
    """(kind, one-line message) of a run; (``ok``, None) when it succeeded."""
    if timed_out:
        return "timeout", KINDS["timeout"]
    if returncode == 0 and parsed.completed:
        # zfs-autobackup's own verdict; "!" lines of a successful run are kept as warnings
        return OK, None
    lines = [e for e in parsed.errors if e.strip()]
    for kind, pattern in _PATTERNS:
        for line in lines:
            if pattern.search(line):
                return kind, _clean(line)
    if parsed.failed:
        ds, msg = next(iter(parsed.failed.items()))
        return "failed", _clean(f"{ds}: {msg}")
    # zfs's or ssh's own words (``STDERR >``) say more than "Last command returned error"
    said = [e for e in lines if "STDERR >" in e]
    if said:
        return "failed", _clean(said[-1])
    if parsed.exception and parsed.exception != "Last command returned error":
        return "failed", _clean(parsed.exception)
    if lines:
        return "failed", _clean(lines[0])
    return "failed", f"zfs-autobackup exited with {returncode} without saying why"


_SSH_FAILED = re.compile(r'Command "ssh .*" returned exit code 255')


def ssh_failed(parsed: ParsedRun) -> bool:
    """ssh itself failed (exit status 255) on a command at HQ. zfs-autobackup hides ssh's own
    message for some commands (its existence checks), so the reason needs asking again."""
    return any(_SSH_FAILED.search(e) for e in parsed.errors)


def link_cut(parsed: ParsedRun) -> tuple[str, str] | None:
    """ssh died (255) under a ``zfs recv`` while HQ answers again: the link broke mid-transfer."""
    cut = [e for e in parsed.errors if _SSH_FAILED.search(e) and "zfs recv" in e]
    if not cut:
        return None
    datasets = ", ".join(parsed.failed) or "a dataset"
    return "link_cut", (f"the connection to HQ broke while sending {datasets}; "
                        f"HQ keeps the partial stream and the next run resumes it")


def classify_probe(output: str, returncode: int | None) -> tuple[str, str] | None:
    """(kind, message) from a plain ``ssh ... zfs list <target>`` after a failed run; None when
    it worked (the link is fine now: the run's own error stands)."""
    if returncode == 0:
        return None
    lines = [ln for ln in output.splitlines() if ln.strip()]
    for kind, pattern in _PATTERNS:
        for line in lines:
            if pattern.search(line):
                return kind, _clean(line)
    if returncode == 255:
        return "unreachable", _clean(lines[-1] if lines else "ssh failed (exit status 255)")
    if any("does not exist" in ln for ln in lines):
        return "target_missing", _clean(lines[-1])
    return None


# zfs recv prints it over two lines: "... destination <ds> has been modified" "since most recent snapshot"
_MODIFIED = re.compile(r"destination \S+ has been modified", re.I)


def needs_rollback(parsed: ParsedRun) -> bool:
    """HQ's dataset is ahead of its newest snapshot: the newest snapshot(s) there were destroyed
    (by mistake) after they were received. Rolling back to the newest remaining one (which HQ
    shares with the station) lets the missing snapshots be sent again."""
    return any(_MODIFIED.search(e) for e in parsed.errors)


def _clean(line: str) -> str:
    line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
    return line[:500]


# -- snapshots on both sides -----------------------------------------------------------------------


@dataclass(frozen=True)
class Snap:
    """One snapshot of the station."""

    dataset: str
    name: str        # after the @
    guid: str
    creation: float
    createtxg: int
    userrefs: int

    @property
    def full(self) -> str:
        return f"{self.dataset}@{self.name}"

    @property
    def held_ingest(self) -> bool:
        """A held snapshot of evidence: a session's, or one that stands in for sessions'
        after a purge (they refer to it then)."""
        return self.name.startswith((SNAPSHOT_PREFIX, RESEAL_PREFIX)) and self.userrefs > 0


LOCAL_COLUMNS = "name,guid,creation,createtxg,userrefs"


def parse_local_snapshots(text: str) -> dict[str, list[Snap]]:
    """``zfs list -H -p -t snapshot -o name,guid,creation,createtxg,userrefs`` by dataset, oldest first."""
    result: dict[str, list[Snap]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 5 or "@" not in parts[0]:
            continue
        ds, name = parts[0].split("@", 1)
        try:
            snap = Snap(ds, name, parts[1], float(parts[2]), int(parts[3]), int(parts[4]))
        except ValueError:
            continue
        result.setdefault(ds, []).append(snap)
    for snaps in result.values():
        snaps.sort(key=lambda s: s.createtxg)
    return result


def parse_remote_snapshots(text: str) -> dict[str, dict[str, str]]:
    """``zfs list -H -p -t snapshot -o name,guid`` at HQ: dataset -> {snapshot name: guid}."""
    result: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 2 or "@" not in parts[0]:
            continue
        ds, name = parts[0].split("@", 1)
        result.setdefault(ds, {})[name] = parts[1]
    return result


def parse_resume_tokens(text: str) -> set[str]:
    """Datasets at HQ holding a partly received stream (``receive_resume_token`` set)."""
    found = set()
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1] not in ("-", ""):
            found.add(parts[0])
    return found


def target_dataset(config: Config, source: str) -> str:
    """Where a station dataset lands at HQ (zfs-autobackup with --strip-path)."""
    t = config.replication.target
    assert t is not None and config.vault.dataset
    strip = len(config.vault.dataset.split("/"))
    rest = "/".join(source.split("/")[strip:])
    return f"{t.path}/{rest}" if rest else t.path


@dataclass
class DatasetState:
    """One replicated dataset: how far HQ is."""

    source: str
    target: str
    newest: str | None = None            # the station's newest snapshot
    newest_at_hq: str | None = None      # the station's newest snapshot that HQ has
    newest_at_hq_created: float | None = None
    behind: bool = False                 # HQ lacks the station's newest snapshot
    pending_ingest: list[str] = field(default_factory=list)   # held ingest snapshots still to send
    oldest_pending_created: float | None = None
    gaps: list[str] = field(default_factory=list)   # ingest snapshots HQ lacks but can no longer get
    partial_at_hq: bool = False          # a resumable, partly received stream waits at HQ


def compare(config: Config, selected: list[str], local: dict[str, list[Snap]],
            remote: dict[str, dict[str, str]] | None, partial: set[str],
            previous: dict[str, DatasetState] | None = None) -> list[DatasetState]:
    """How far HQ is for every replicated dataset.

    ``remote`` None means HQ could not be asked: the newest snapshot HQ was last seen to have
    (``previous``) stands in for it, so the lag keeps growing while HQ is unreachable.
    """
    states = []
    for source in selected:
        snaps = local.get(source, [])
        target = target_dataset(config, source)
        st = DatasetState(source=source, target=target, newest=snaps[-1].name if snaps else None)
        if remote is not None:
            at_hq = remote.get(target, {})
            have = [i for i, s in enumerate(snaps) if at_hq.get(s.name) == s.guid]
            last = have[-1] if have else -1
            st.gaps = [s.name for i, s in enumerate(snaps[:max(last, 0)])
                       if s.held_ingest and at_hq.get(s.name) != s.guid]
            st.partial_at_hq = target in partial
        else:
            prev = (previous or {}).get(source)
            known = prev.newest_at_hq if prev else None
            last = next((i for i, s in enumerate(snaps) if s.name == known), -1)
            st.gaps = list(prev.gaps) if prev else []
        if last >= 0:
            st.newest_at_hq = snaps[last].name
            st.newest_at_hq_created = snaps[last].creation
        pending = [s for s in snaps[last + 1:] if s.held_ingest]
        st.pending_ingest = [s.name for s in pending]
        st.oldest_pending_created = pending[0].creation if pending else None
        st.behind = bool(snaps) and last != len(snaps) - 1
        states.append(st)
    return states


# -- the status --------------------------------------------------------------------------------------


@dataclass
class ReplicationStatus:
    """What the web page, /api/v1/health, `appliance replicate` and the metrics show."""

    enabled: bool = False
    target: str | None = None
    state: str = "never"                 # never, running, ok, failed
    run_id: int = 0
    reason: str | None = None            # schedule, ingest, start, cli, retry
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_kind: str | None = None
    last_error_at: float | None = None
    failures_in_a_row: int = 0
    bytes_sent: int = 0                  # the last run
    bytes_sent_total: int = 0
    transfers: int = 0                   # snapshots the last run sent (or started to)
    resumed: int = 0
    datasets: list[dict[str, Any]] = field(default_factory=list)
    datasets_behind: int = 0
    pending_ingest: int = 0
    oldest_pending_at: float | None = None
    gaps: list[str] = field(default_factory=list)
    hq_checked_at: float | None = None   # when HQ's snapshots were last listed
    warnings: list[str] = field(default_factory=list)

    def lag_seconds(self, now: float | None = None) -> float:
        """How long the oldest held ingest snapshot not yet at HQ has waited (0: none waits)."""
        if not self.enabled or self.oldest_pending_at is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.oldest_pending_at)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lag_seconds"] = round(self.lag_seconds(), 1)
        data["last_error_meaning"] = KINDS.get(self.last_error_kind or "")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ReplicationStatus":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def dataset_states(self) -> dict[str, DatasetState]:
        names = {f.name for f in dataclasses.fields(DatasetState)}
        return {d["source"]: DatasetState(**{k: v for k, v in d.items() if k in names})
                for d in self.datasets if "source" in d}


def _iso(t: float | None) -> str | None:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds") if t else None


def summary(status: ReplicationStatus | None) -> dict[str, Any]:
    """The short form for /api/v1/health and the health page (times as ISO 8601, UTC)."""
    if status is None or not status.enabled:
        return {"enabled": False}
    return {
        "enabled": True, "target": status.target, "state": status.state,
        "last_run_at": _iso(status.finished_at or status.started_at),
        "last_success_at": _iso(status.last_success_at),
        "last_error": status.last_error, "last_error_kind": status.last_error_kind,
        "last_error_at": _iso(status.last_error_at), "failures_in_a_row": status.failures_in_a_row,
        "lag_seconds": round(status.lag_seconds(), 1), "pending_ingest": status.pending_ingest,
        "datasets_behind": status.datasets_behind, "bytes_sent_last_run": status.bytes_sent,
        "bytes_sent_total": status.bytes_sent_total, "missing_at_hq": status.gaps,
        "warnings": status.warnings,
    }


def load_status(paths: Paths) -> ReplicationStatus | None:
    try:
        return ReplicationStatus.from_json(json.loads(paths.status.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("replication status %s unreadable: %s", paths.status, exc)
        return None


def waiting_for_hq(config: Config) -> Callable[[str | None], bool] | None:
    """For the purge: whether a session's snapshot (``pool/…@ingest-…``; None when the
    session was never sealed) still lacks a confirmed copy at headquarters, as the last
    run saw it. None when replication is off. Before HQ was ever asked, every session
    waits: an unknown copy is no copy."""
    if not config.replication.enabled:
        return None
    status = load_status(Paths.of(config))
    if status is None or status.hq_checked_at is None:
        return lambda snapshot: True
    missing = {name for d in status.datasets
               for name in [*d.get("pending_ingest", []), *d.get("gaps", [])]}
    return lambda snapshot: snapshot is None or snapshot.split("@", 1)[-1] in missing


def save_status(paths: Paths, status: ReplicationStatus) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.status.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(status), indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, paths.status)


def apply_states(status: ReplicationStatus, states: list[DatasetState], now: float) -> None:
    """Fold the per-dataset comparison into the status (and clock warnings)."""
    status.datasets = [dataclasses.asdict(s) for s in states]
    status.datasets_behind = sum(1 for s in states if s.behind)
    pending = sorted({n for s in states for n in s.pending_ingest})
    status.pending_ingest = len(pending)
    olds = [s.oldest_pending_created for s in states if s.oldest_pending_created is not None]
    status.oldest_pending_at = min(olds) if olds else None
    status.gaps = sorted({f"{s.target}@{g}" for s in states for g in s.gaps})


def clock_warnings(local: dict[str, list[Snap]], now: float) -> list[str]:
    """A station clock behind its own newest snapshot is worth saying (names and lag use it)."""
    newest = max((s.creation for snaps in local.values() for s in snaps), default=None)
    if newest is not None and newest > now + CLOCK_TOLERANCE_S:
        ahead = int(newest - now)
        return [f"{CLOCK_WARNING} {ahead} s behind its newest snapshot's creation time: "
                f"check time synchronisation (NTP); replication itself does not depend on it"]
    return []


# -- the schedule -----------------------------------------------------------------------------------


@dataclass
class Schedule:
    """When the next run is due, on the monotonic clock (a wrong or jumping wall clock never
    stops replication nor makes it run in a loop).

    A run is due ``interval`` after the last one ended (``retry_interval`` after a failure),
    and ``after_ingest_delay`` after the first ingest session committed since the last run
    started: several cameras docked together go in one run, and a steady stream of dockings
    cannot postpone it forever. The first run after start comes ``first_delay`` later (see
    :func:`first_delay`): soon after a start that follows a failure or a long stop, not at all
    sooner than the interval after a recent successful run.
    """

    interval: float
    after_ingest_delay: float
    retry_interval: float
    started: float
    first_delay: float = START_DELAY_S
    last_end: float | None = None
    last_ok: bool = True
    ingest_at: float | None = None

    def due(self) -> float:
        if self.last_end is None:
            due = self.started + self.first_delay
        else:
            due = self.last_end + (self.interval if self.last_ok else min(self.retry_interval, self.interval))
        if self.ingest_at is not None:
            due = min(due, self.ingest_at + self.after_ingest_delay)
        return due

    def reason(self, now: float) -> str:
        if self.ingest_at is not None and now >= self.ingest_at + self.after_ingest_delay:
            return "ingest"
        if self.last_end is None:
            return "start"
        return "schedule" if self.last_ok else "retry"

    def ingest(self, now: float) -> None:
        if self.ingest_at is None:
            self.ingest_at = now

    def run_started(self, now: float) -> None:
        self.ingest_at = None

    def run_ended(self, now: float, ok: bool) -> None:
        self.last_end = now
        self.last_ok = ok


def first_delay(status: "ReplicationStatus", interval: float, now: float) -> float:
    """Seconds from start to the first run: the box settles first (``START_DELAY_S``); a run
    that succeeded recently with nothing left over waits for its interval to end."""
    if status.state == "ok" and status.finished_at and not status.pending_ingest:
        return min(interval, max(START_DELAY_S, status.finished_at + interval - now))
    return START_DELAY_S


# -- running it -------------------------------------------------------------------------------------

AuditFn = Callable[[str, str, dict[str, Any]], Awaitable[None]]


@dataclass
class CommandResult:
    returncode: int | None
    output: str
    timed_out: bool = False


async def run_command(argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
                      on_line: Callable[[str], None] | None = None) -> CommandResult:
    """Run a command in its own process group, stdout and stderr merged; after ``timeout``
    stop the whole group (SIGTERM, then SIGKILL), whatever it started (zfs send, ssh)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=env)
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(lines) < MAX_LOG_LINES:
                lines.append(line)
            if on_line:
                on_line(line)

    reader = asyncio.create_task(read())
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        timed_out = True
        await _stop_group(proc)
    except asyncio.CancelledError:
        await _stop_group(proc)
        raise
    finally:
        try:
            await asyncio.wait_for(reader, 5)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            reader.cancel()
    return CommandResult(proc.returncode, "\n".join(lines), timed_out)


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), wait)
            # the group's other members (zfs send, ssh) may outlive the leader for a moment
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except asyncio.TimeoutError:
            continue


def _env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PATH", "/usr/bin:/bin")
    for extra in ("/usr/sbin", "/sbin", str(Path(sys.executable).parent)):
        if extra not in path.split(":"):
            path = f"{path}:{extra}"
    env["PATH"] = path
    env["LC_ALL"] = "C.UTF-8"  # zfs's and ssh's messages in English, for the parser
    env.pop("SSH_AUTH_SOCK", None)
    return env


class Busy(Exception):
    """Another replication run holds the lock."""


@contextlib.contextmanager
def run_lock(paths: Paths, wait: float = 0.0):  # type: ignore[no-untyped-def]
    """One run at a time across processes (the daemon and `appliance replicate --now`)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy() from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


class Replicator:
    """Replication of one station's vault: runs, status, schedule."""

    def __init__(self, config: Config, *, metrics: Any = None, audit: AuditFn | None = None,
                 actor: str = "system", executable: str | None = None) -> None:
        if not config.replication.enabled or config.replication.target is None:
            raise ReplicationError("replication is not enabled in the configuration (replication.enabled)")
        self.config = config
        self.r = config.replication
        self.paths = Paths.of(config)
        self.metrics = metrics
        self.audit = audit
        self.actor = actor
        self.executable = executable
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.status = load_status(self.paths) or ReplicationStatus()
        self.status.enabled = True
        self.status.target = target_label(config)
        if self.status.state == "running":  # a run the process did not live to finish
            self.status.state = "failed"
            self.status.last_error_kind = "failed"
            self.status.last_error = "the run was interrupted (the appliance stopped during it)"
        self._status_mtime = self._mtime()
        self.schedule = Schedule(self.r.interval, self.r.after_ingest_delay, self.r.retry_interval,
                                 time.monotonic(), first_delay(self.status, self.r.interval, time.time()))
        if metrics is not None:
            metrics.replication_configured(True)
            self._publish(new_run=False)

    # -- status ----------------------------------------------------------------------------

    def _mtime(self) -> float | None:
        try:
            return self.paths.status.stat().st_mtime
        except OSError:
            return None

    def _publish(self, *, new_run: bool, ok: bool | None = None, run_bytes: int = 0) -> None:
        m = self.metrics
        if m is None:
            return
        s = self.status
        if new_run and ok:
            m.replication_succeeded(bytes_sent=run_bytes, newest_snapshot_at=None,
                                    finished_at=s.finished_at)
        elif new_run:
            m.replication_failed(bytes_sent=run_bytes)
        elif s.last_success_at:
            m.replication_succeeded(bytes_sent=0, newest_snapshot_at=None, finished_at=s.last_success_at)
        m.replication_pending(s.oldest_pending_at)

    def reload(self) -> None:
        """Take in a run another process made (`appliance replicate --now`): status and metrics."""
        mtime = self._mtime()
        if mtime == self._status_mtime or self._lock.locked():
            return
        fresh = load_status(self.paths)
        if fresh is None:
            return
        self._status_mtime = mtime
        new_run = fresh.run_id != self.status.run_id and fresh.state in ("ok", "failed")
        fresh.enabled, fresh.target = True, target_label(self.config)
        self.status = fresh
        self._publish(new_run=new_run, ok=fresh.state == "ok", run_bytes=fresh.bytes_sent)

    # -- one run ---------------------------------------------------------------------------

    async def run(self, reason: str = "cli", *, wait_for_lock: float = 0.0) -> ReplicationStatus:
        """One replication run now; its status. Raises :class:`Busy` if another run holds the lock."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            lock = run_lock(self.paths, wait_for_lock)
            await loop.run_in_executor(None, lock.__enter__)
            try:
                return await self._run(reason)
            finally:
                lock.__exit__(None, None, None)

    async def _run(self, reason: str) -> ReplicationStatus:
        s = self.status
        prior = load_status(self.paths)
        if prior is not None and prior.run_id >= s.run_id:  # runs another process made
            prior.enabled, prior.target = True, s.target
            self.status = s = prior
        s.run_id += 1
        s.state, s.reason, s.started_at = "running", reason, time.time()
        s.finished_at = s.seconds = None
        s.warnings = []
        self.paths.prepare()
        self.paths.ssh_config.write_text(ssh_config_text(self.config, self.paths))
        os.chmod(self.paths.ssh_config, 0o600)
        shutil.rmtree(self.paths.meter, ignore_errors=True)
        self.paths.meter.mkdir(mode=0o700)
        save_status(self.paths, s)
        started = time.monotonic()
        log.info("replication run %d (%s) to %s", s.run_id, reason, s.target)

        log_text = ""
        deadline = time.monotonic() + self.r.timeout
        parsed = ParsedRun()
        # Ask HQ first (this also opens the shared connection zfs-autobackup then uses): while HQ
        # is down, a run neither waits for zfs-autobackup nor leaves a new snapshot behind.
        probe = await run_command(self._probe_argv(), timeout=self.r.connect_timeout * 2 + 10, env=_env())
        refused = classify_probe(probe.output, probe.returncode) if not probe.timed_out else \
            ("unreachable", f"no answer from HQ within {self.r.connect_timeout * 2 + 10:.0f} s")
        if refused:
            kind, message = refused
            await self._close_master()
            log_text = f"$ {shlex.join(self._probe_argv())}\n{probe.output}\n# exit {probe.returncode}\n"
        for rollback in (False, True) if not refused else ():
            argv = autobackup_argv(self.config, self.paths, self.executable, rollback=rollback)
            log.debug("replication: %s", shlex.join(argv))
            result = await run_command(argv, timeout=max(1.0, deadline - time.monotonic()), env=_env(),
                                       on_line=lambda line: log.debug("zfs-autobackup: %s", line))
            await self._close_master()
            parsed = parse_output(result.output)
            kind, message = classify(parsed, result.returncode, result.timed_out)
            log_text += (f"$ {shlex.join(argv)}\n{result.output}\n"
                         f"# exit {result.returncode}{' (stopped: timeout)' if result.timed_out else ''}\n")
            if kind != OK and ssh_failed(parsed):
                kind, message = await self._diagnose(kind, message, parsed)
            if kind == OK or rollback or not needs_rollback(parsed):
                break
            log.warning("replication: a dataset at HQ is ahead of its newest snapshot (snapshots "
                        "destroyed there?); running again with --rollback to its newest remaining one")
            s.warnings = ["HQ's newest snapshot(s) of a dataset had been destroyed there; it was rolled "
                          "back to its newest remaining snapshot and the missing ones sent again"]
        run_bytes = self._metered()
        self.paths.last_log.write_text(log_text)

        now = time.time()
        s.finished_at, s.seconds = now, round(time.monotonic() - started, 1)
        s.bytes_sent = run_bytes
        s.bytes_sent_total += run_bytes
        s.transfers = len(parsed.transfers)
        s.resumed = sum(1 for t in parsed.transfers if t.resumed)
        ok = kind == OK
        if ok:
            s.state, s.last_success_at, s.failures_in_a_row = "ok", now, 0
        else:
            s.state = "failed"
            s.last_error, s.last_error_kind, s.last_error_at = message, kind, now
            s.failures_in_a_row += 1
        try:
            await self.inspect(ask_hq=kind not in ("unreachable", "auth", "host_key", "refused",
                                                   "target_missing"))
        except Exception as exc:  # the run's own result stands; the comparison is best effort
            log.warning("replication: comparing snapshots with HQ failed: %s", exc)
        save_status(self.paths, s)
        self._status_mtime = self._mtime()
        self._publish(new_run=True, ok=ok, run_bytes=run_bytes)
        if ok:
            log.info("replication run %d ok in %.1f s: %d snapshot(s), %d bytes, %d dataset(s) behind",
                     s.run_id, s.seconds, s.transfers, run_bytes, s.datasets_behind)
        else:
            log.error("replication run %d failed (%s): %s", s.run_id, kind, message)
        await self._audit(s, kind, message, parsed)
        return s

    def _probe_argv(self) -> list[str]:
        t = self.config.replication.target
        assert t is not None
        return ssh_argv(self.paths, ["zfs", "list", "-H", "-o", "name", t.path])

    async def _diagnose(self, kind: str, message: str | None,
                        parsed: ParsedRun) -> tuple[str, str | None]:
        """Ask HQ once more, plainly, to name why ssh failed (down, key, host key ...); if HQ
        answers now, an ssh that died under a receive was a connection cut mid-transfer."""
        probe = await run_command(self._probe_argv(), timeout=self.r.connect_timeout * 2 + 10, env=_env())
        await self._close_master()
        found = classify_probe(probe.output, probe.returncode)
        if found:
            return found
        return link_cut(parsed) or (kind, message)

    def _metered(self) -> int:
        total = 0
        for f in self.paths.meter.glob("*"):
            with contextlib.suppress(OSError, ValueError):
                total += int(f.read_text().split()[0])
        return total

    async def _close_master(self) -> None:
        """End the shared SSH connection of the run (it would linger for ControlPersist)."""
        with contextlib.suppress(Exception):
            await run_command(["ssh", "-F", str(self.paths.ssh_config), "-O", "exit", HOST_ALIAS],
                              timeout=15, env=_env())

    async def _audit(self, s: ReplicationStatus, kind: str, message: str | None, parsed: ParsedRun) -> None:
        if self.audit is None:
            return
        details = {"run": s.run_id, "reason": s.reason, "result": kind, "error": message,
                   "seconds": s.seconds, "bytes_sent": s.bytes_sent, "snapshots_sent": s.transfers,
                   "resumed": s.resumed, "datasets_behind": s.datasets_behind,
                   "pending_ingest": s.pending_ingest, "gaps": s.gaps[:20],
                   "destroyed": parsed.destroyed[:50]}
        try:
            await self.audit("replication.run", s.target or "", details)
        except Exception:
            log.exception("replication: audit row for run %d not written", s.run_id)

    # -- comparing with HQ ------------------------------------------------------------------

    async def inspect(self, *, ask_hq: bool = True) -> list[DatasetState]:
        """Compare the station's snapshots with HQ's (or with what HQ was last seen to have)."""
        cfg = self.config
        assert cfg.vault.dataset
        name = cfg.backup_name
        sel = await run_command(["zfs", "get", "-H", "-o", "name,value", "-r", "-t", "filesystem",
                                 f"autobackup:{name}", cfg.vault.dataset], timeout=120, env=_env())
        if sel.returncode != 0:
            raise ReplicationError(f"zfs get autobackup:{name}: {sel.output.strip()}")
        selected = [ln.split("\t")[0] for ln in sel.output.splitlines()
                    if ln.count("\t") == 1 and ln.split("\t")[1] == "true"]
        snaps = await run_command(["zfs", "list", "-H", "-p", "-t", "snapshot", "-o", LOCAL_COLUMNS,
                                   "-r", cfg.vault.dataset], timeout=300, env=_env())
        if snaps.returncode != 0:
            raise ReplicationError(f"zfs list: {snaps.output.strip()}")
        local = parse_local_snapshots(snaps.output)
        remote = partial = None
        if ask_hq:
            remote, partial = await self._ask_hq()
        now = time.time()
        states = compare(cfg, selected, local, remote, partial or set(), self.status.dataset_states())
        apply_states(self.status, states, now)
        if remote is not None:
            self.status.hq_checked_at = now
        self.status.warnings = [w for w in self.status.warnings if not w.startswith(CLOCK_WARNING)]
        self.status.warnings += clock_warnings(local, now)
        return states

    async def _ask_hq(self) -> tuple[dict[str, dict[str, str]] | None, set[str] | None]:
        t = self.config.replication.target
        assert t is not None
        if not self.paths.ssh_config.exists():
            self.paths.prepare()
            self.paths.ssh_config.write_text(ssh_config_text(self.config, self.paths))
            os.chmod(self.paths.ssh_config, 0o600)
        try:
            listed = await run_command(ssh_argv(self.paths, ["zfs", "list", "-H", "-p", "-t", "snapshot",
                                                             "-o", "name,guid", "-r", t.path]),
                                       timeout=max(60.0, self.r.connect_timeout * 3), env=_env())
            tokens = await run_command(ssh_argv(self.paths, ["zfs", "get", "-H", "-p", "-o", "name,value",
                                                             "-r", "-t", "filesystem",
                                                             "receive_resume_token", t.path]),
                                       timeout=max(60.0, self.r.connect_timeout * 3), env=_env())
        finally:
            await self._close_master()
        if listed.returncode != 0 or listed.timed_out:
            log.warning("replication: cannot list HQ's snapshots: %s", listed.output.strip()[-300:])
            return None, None
        return parse_remote_snapshots(listed.output), parse_resume_tokens(tokens.output)

    # -- the daemon's loop -----------------------------------------------------------------

    def ingest_committed(self) -> None:
        """An ingest session committed: a run is due soon (``after_ingest_delay``)."""
        self.schedule.ingest(time.monotonic())
        self._wake.set()

    async def run_forever(self) -> None:
        """Run on the schedule until cancelled; never raises otherwise."""
        while True:
            now = time.monotonic()
            delay = self.schedule.due() - now
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(delay, RELOAD_EVERY_S))
                self.reload()  # a run `appliance replicate --now` made: status and metrics
                continue
            reason = self.schedule.reason(now)
            self.schedule.run_started(now)
            ok = False
            try:
                status = await self.run(reason)
                ok = status.state == "ok"
            except Busy:
                log.info("replication: another run (appliance replicate --now?) holds the lock; "
                         "trying again shortly")
                self.schedule.ingest(time.monotonic())
                await asyncio.sleep(30)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replication run failed unexpectedly")
            self.schedule.run_ended(time.monotonic(), ok)
