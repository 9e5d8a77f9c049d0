"""The receive-only shell of a station's SSH key at headquarters (a forced command).

A station pushes its vault to HQ with zfs-autobackup over SSH as a user of its own
(``zrecv-<station>``). HQ's ``authorized_keys`` entry for the station's key forces this
program, whatever command the station asks for::

    restrict,command="/usr/bin/python3 -I -S /path/to/appliance/hq_shell.py --root hq/stations/st01 --backup-name st01" ssh-ed25519 AAAA... st01

It reads the requested command from ``SSH_ORIGINAL_COMMAND`` and runs it only if it is one
of the commands zfs-autobackup needs on a target, confined to the station's own dataset
(``--root``), without a shell:

- reading: ``zfs list``, ``zfs get``, ``zfs holds``, ``zpool get`` of the root's pool;
- receiving: ``zfs recv -u ... -o readonly=on ...`` (never ``-F``), optionally behind a
  decompressor or mbuffer; ``zfs recv -A`` (drop a partial receive);
- snapshots: ``zfs hold``/``zfs release`` of zfs-autobackup's own tag only; ``zfs destroy``
  of zfs-autobackup's own snapshots only (``<backup-name>-<14 digits>``: its thinning), never
  a session's ``@ingest-...`` snapshot and never a dataset; ``zfs rollback`` to a snapshot
  without ``-r`` (it destroys nothing).

Anything else is refused with ``appliance-hq-shell: refused: ...`` and exit status 126.
After every successful receive, the session snapshot it brought (``@ingest-...``, or the
``@resealed-...`` one that stands in for sessions after a purge, as ``zfs recv -v`` names
it) gets
the same evidence hold as at the station (``appliance-evidence``), which this shell never
releases: a station key cannot remove evidence from HQ, and neither can a casual
``zfs destroy`` there.

Give the user ZFS's own delegation on its dataset only, so that even a flaw here stays
inside it (``docs/replication.md``)::

    zfs allow -u zrecv-st01 create,receive,mount,hold,release,destroy,rollback,userprop,readonly,canmount,compression,recordsize,atime,xattr,exec,setuid,devices hq/stations/st01

Standard library only; started by path with ``python3 -I -S`` it imports nothing else, so
each of the few dozen commands of a run starts quickly. Every command is logged to syslog
(``appliance-hq-shell``), allowed or refused.
"""

from __future__ import annotations

import os
import sys

# Nothing beyond os and sys at start: under a slow CPU each import costs tenths of a second,
# and this runs once per command, a few dozen times per replication run.

REFUSED = 126
EVIDENCE_HOLD = "appliance-evidence"
INGEST_PREFIX = "ingest-"
# A station's snapshot that stands in for its held session snapshots after a purge
# (appliance.vault.zfs.RESEAL_PREFIX): evidence like theirs.
RESEAL_PREFIX = "resealed-"
# zfs-autobackup's probe for `zfs recv -s`: it only needs exit status 0 or 1.
OPTION_PROBE = "zfs_autobackup_option_test"
RECV_SET_ALLOWED = {"readonly=on", "canmount=noauto", "canmount=off"}
DECOMPRESSORS = {("zstdmt", "-dc"), ("zstd", "-dc"), ("zcat",), ("gzip", "-dc"), ("lz4", "-dc"),
                 ("pigz", "-dc"), ("xz", "-d"), ("lzop", "-dfc")}
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.:/-")
_SNAP_CHARS = _ALNUM | frozenset("_.:-")
_VALUE_CHARS = _ALNUM | frozenset("_.:@,/=-")
_SHELL = frozenset("|;&<>()`$\n")


class Refused(Exception):
    """The command is not one a receiving station needs."""


def _valid_name(name: str) -> bool:
    ds, at, snap = name.partition("@")
    if not ds or ds[0] not in _ALNUM or not set(ds) <= _NAME_CHARS:
        return False
    return not at or (bool(snap) and set(snap) <= _SNAP_CHARS)


def _valid_value(value: str) -> bool:
    return bool(value) and set(value) <= _VALUE_CHARS


def split_words(command: str) -> list[tuple[str, bool]]:
    """POSIX shell words (single and double quotes, backslash), each with whether it was quoted.

    Nothing is ever expanded (no shell runs): an unquoted ``$``, backquote or ``;&<>()``, and
    ``$``, backquote or backslash inside double quotes, are refused.
    """
    words: list[tuple[str, bool]] = []
    word: list[str] = []
    in_word = quoted = False
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                raise Refused("unbalanced quote")
            word.append(command[i + 1:end])
            in_word = quoted = True
            i = end + 1
            continue
        if c == '"':
            end = command.find('"', i + 1)
            if end < 0:
                raise Refused("unbalanced quote")
            inner = command[i + 1:end]
            if "$" in inner or "`" in inner or "\\" in inner:
                raise Refused("expansions are not accepted")
            word.append(inner)
            in_word = quoted = True
            i = end + 1
            continue
        if c == "\\":
            if i + 1 >= n:
                raise Refused("a trailing backslash")
            word.append(command[i + 1])
            in_word = quoted = True
            i += 2
            continue
        if c in " \t":
            if in_word:
                words.append(("".join(word), quoted))
                word, in_word, quoted = [], False, False
            i += 1
            continue
        if c == "|":
            if in_word:
                words.append(("".join(word), quoted))
                word, in_word, quoted = [], False, False
            words.append(("|", False))
            i += 1
            continue
        if c in _SHELL:
            raise Refused(f"shell syntax {c!r} is not accepted")
        word.append(c)
        in_word = True
        i += 1
    if in_word:
        words.append(("".join(word), quoted))
    return words


def split_pipeline(command: str) -> list[list[str]]:
    """The command line as a list of commands joined by an unquoted ``|``."""
    pipeline: list[list[str]] = [[]]
    for word, quoted in split_words(command):
        if word == "|" and not quoted:
            pipeline.append([])
        else:
            pipeline[-1].append(word)
    if any(not cmd for cmd in pipeline):
        raise Refused("empty command in a pipeline")
    return pipeline


class Policy:
    """What one station may do under its root dataset."""

    def __init__(self, root: str, backup_name: str) -> None:
        root = root.rstrip("/")
        if not _valid_name(root) or "@" in root or "/" not in root:
            raise SystemExit(f"--root {root!r}: expected a dataset such as hq/stations/st01")
        if not backup_name or not set(backup_name) <= _SNAP_CHARS:
            raise SystemExit(f"--backup-name {backup_name!r}: expected the station's backup name")
        self.root = root
        self.pool = root.split("/")[0]
        self.backup_name = backup_name
        self.own_hold = f"zfs_autobackup:{backup_name}"

    def own_snapshot(self, snap: str) -> bool:
        """zfs-autobackup's own snapshot name: ``<backup name>-<YYYYmmddHHMMSS>``."""
        prefix = self.backup_name + "-"
        stamp = snap[len(prefix):]
        return snap.startswith(prefix) and len(stamp) == 14 and stamp.isdigit()

    # -- names ---------------------------------------------------------------------------

    def inside(self, name: str, *, snapshot: bool | None = None, strictly: bool = False) -> str:
        """``name`` if it is the root or below it (a snapshot where asked), else refuse."""
        if not _valid_name(name):
            raise Refused(f"{name!r} is not a dataset name")
        ds, _, snap = name.partition("@")
        if snapshot is True and not snap:
            raise Refused(f"{name}: a snapshot is needed")
        if snapshot is False and snap:
            raise Refused(f"{name}: a snapshot is not accepted here")
        under = ds.startswith(self.root + "/")
        if not (under or (ds == self.root and not strictly)):
            raise Refused(f"{name} is outside {self.root}")
        if ".." in ds.split("/"):
            raise Refused(f"{name}: not a plain dataset name")
        return name

    # -- commands --------------------------------------------------------------------------

    def check(self, argv: list[str]) -> str:
        """Refuse ``argv`` unless allowed; return what kind of command it is."""
        if not argv:
            raise Refused("empty command")
        if argv[0] == "zpool":
            if argv[1:] != ["get", "-H", "-p", "all", self.pool]:
                raise Refused("only `zpool get -H -p all <pool>` is accepted")
            return "read"
        if argv[0] != "zfs" or len(argv) < 2:
            raise Refused(f"{argv[0]}: not a command a receiving station needs")
        sub, args = argv[1], argv[2:]
        check = {
            "list": self._list, "get": self._get, "holds": self._holds, "hold": self._hold,
            "release": self._hold, "destroy": self._destroy, "rollback": self._rollback,
            "recv": self._recv, "receive": self._recv, "create": self._create,
        }.get(sub)
        if check is None:
            raise Refused(f"zfs {sub}: not a command a receiving station needs")
        return check(args)

    def _options(self, args: list[str], flags: str, valued: str) -> tuple[dict[str, list[str]], list[str]]:
        """getopt-style parsing of ``args`` (``-H -p -o name``, ``-ovalue``, ``-Hp``)."""
        opts: dict[str, list[str]] = {}
        rest = list(args)
        operands: list[str] = []
        while rest:
            a = rest.pop(0)
            if a == "--":
                operands += rest
                break
            if not a.startswith("-") or a == "-":
                operands.append(a)
                continue
            letters = a[1:]
            while letters:
                letter, letters = letters[0], letters[1:]
                if letter in flags:
                    opts.setdefault(letter, []).append("")
                elif letter in valued:
                    value = letters or (rest.pop(0) if rest else None)
                    if value is None:
                        raise Refused(f"-{letter} needs a value")
                    if not _valid_value(value):
                        raise Refused(f"-{letter} {value!r}: unexpected value")
                    opts.setdefault(letter, []).append(value)
                    letters = ""
                else:
                    raise Refused(f"option -{letter} is not accepted")
        return opts, operands

    def _list(self, args: list[str]) -> str:
        _opts, operands = self._options(args, "Hpr", "otdsS")
        if not operands:
            raise Refused("zfs list needs a dataset under the root")
        for name in operands:
            self.inside(name)
        return "read"

    def _get(self, args: list[str]) -> str:
        _opts, operands = self._options(args, "Hpr", "otds")
        if len(operands) < 2 or not _valid_value(operands[0]):
            raise Refused("zfs get needs properties and a dataset under the root")
        for name in operands[1:]:
            self.inside(name)
        return "read"

    def _holds(self, args: list[str]) -> str:
        _opts, operands = self._options(args, "H", "")
        if not operands:
            raise Refused("zfs holds needs a snapshot")
        for name in operands:
            self.inside(name, snapshot=True)
        return "read"

    def _hold(self, args: list[str]) -> str:
        if len(args) != 2:
            raise Refused("zfs hold/release: exactly a tag and a snapshot")
        if args[0] != self.own_hold:
            raise Refused(f"only zfs-autobackup's own hold {self.own_hold!r} may be placed or released")
        self.inside(args[1], snapshot=True)
        return "change"

    def _destroy(self, args: list[str]) -> str:
        opts, operands = self._options(args, "d", "")
        if len(operands) != 1:
            raise Refused("zfs destroy: exactly one snapshot")
        name = self.inside(operands[0], snapshot=True, strictly=True)
        snap = name.split("@", 1)[1]
        if not self.own_snapshot(snap):
            raise Refused(f"{name}: only zfs-autobackup's own snapshots ({self.backup_name}-<time>) "
                          f"may be destroyed; session snapshots are evidence")
        return "change"

    def _rollback(self, args: list[str]) -> str:
        if len(args) != 1 or args[0].startswith("-"):
            raise Refused("zfs rollback: one snapshot, no options (never -r)")
        self.inside(args[0], snapshot=True, strictly=True)
        return "change"

    def _create(self, args: list[str]) -> str:
        if len(args) != 3 or args[:2] != ["-o", "canmount=off"]:
            raise Refused("zfs create: only `-o canmount=off <dataset>` (unmountable parents)")
        self.inside(args[2], snapshot=False, strictly=True)
        return "change"

    def _recv(self, args: list[str]) -> str:
        opts, operands = self._options(args, "uvsAnF", "ox")
        if len(operands) != 1:
            raise Refused("zfs recv: exactly one dataset")
        if operands == [OPTION_PROBE]:
            return "probe"
        if "F" in opts:
            raise Refused("zfs recv -F (forced rollback, destroys snapshots) is not accepted")
        self.inside(operands[0], snapshot=False, strictly=True)
        if "A" in opts:
            if set(opts) != {"A"}:
                raise Refused("zfs recv -A takes no other options")
            return "change"
        if "u" not in opts:
            raise Refused("zfs recv must not mount (-u)")
        sets = set(opts.get("o", []))
        if not sets <= RECV_SET_ALLOWED or "readonly=on" not in sets:
            raise Refused("zfs recv must set -o readonly=on (and may set canmount=noauto), nothing else")
        return "recv"

    def check_pipeline(self, pipeline: list[list[str]]) -> str:
        """The last command decides; before a receive only decompressors and mbuffer may come."""
        kind = self.check(pipeline[-1])
        if len(pipeline) > 1:
            if kind != "recv":
                raise Refused("only a receive may read from a pipe")
            for cmd in pipeline[:-1]:
                if tuple(cmd) in DECOMPRESSORS:
                    continue
                if cmd[0] == "mbuffer" and all(_mbuffer_arg(a) for a in cmd[1:]):
                    continue
                raise Refused(f"{cmd[0]}: only a decompressor or mbuffer may feed a receive")
        return kind


def _mbuffer_arg(arg: str) -> bool:
    """mbuffer's options as zfs-autobackup writes them: -q, -s128k, -m16M, -R1M."""
    if arg == "-q":
        return True
    if len(arg) < 3 or arg[0] != "-" or arg[1] not in "smR":
        return False
    number = arg[2:-1] if arg[-1] in "kKmMgG" else arg[2:]
    return number.isdigit()


def _log(message: str) -> None:
    try:
        import syslog

        syslog.openlog("appliance-hq-shell", syslog.LOG_PID, syslog.LOG_AUTH)
        syslog.syslog(syslog.LOG_INFO, message)
    except Exception:  # no syslog: the refusal still goes to the station on stderr
        pass


def received_snapshot(line: str) -> str | None:
    """What ``zfs recv -v`` says it receives: "receiving full stream of A@x into B@x"."""
    words = line.split()
    if len(words) >= 6 and words[0] == "receiving" and words[-2] == "into" and "@" in words[-1]:
        return words[-1]
    return None


def hold_evidence(snapshots: list[str]) -> None:
    """Put the evidence hold on received evidence snapshots (``@ingest-...`` and
    ``@resealed-...``) that lack it."""
    import subprocess

    snaps = [s for s in snapshots if s.split("@", 1)[-1].startswith((INGEST_PREFIX, RESEAL_PREFIX))]
    if not snaps:
        return
    holds = subprocess.run(["zfs", "holds", "-H", *snaps], capture_output=True, text=True).stdout
    held = {line.split("\t")[0] for line in holds.splitlines()
            if line.count("\t") >= 2 and line.split("\t")[1] == EVIDENCE_HOLD}
    missing = [s for s in snaps if s not in held]
    if missing:
        done = subprocess.run(["zfs", "hold", EVIDENCE_HOLD, *missing], capture_output=True, text=True)
        _log(f"hold {EVIDENCE_HOLD} {' '.join(missing)}: exit {done.returncode} {done.stderr.strip()}")


def run(pipeline: list[list[str]], kind: str) -> int:
    if kind == "probe":
        print("cannot receive: failed to read from stream", file=sys.stderr)
        return 1
    if len(pipeline) == 1 and kind != "recv":
        sys.stdout.flush()
        os.execvp(pipeline[0][0], pipeline[0])
    import subprocess

    procs: list[subprocess.Popen[bytes]] = []
    stdin = None
    for cmd in pipeline:
        # zfs recv -v names what it receives on stdout: read it (and pass it on) to hold evidence
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE)
        if stdin is not None:
            stdin.close()
        stdin = proc.stdout
        procs.append(proc)
    received = []
    assert stdin is not None
    for raw in stdin:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        snap = received_snapshot(raw.decode("utf-8", "replace").strip())
        if snap:
            received.append(snap)
    codes = [p.wait() for p in procs]
    code = codes[-1]
    if code == 0 and kind == "recv":
        hold_evidence(received)
    return code


USAGE = "usage: hq_shell.py --root DATASET --backup-name NAME (as a forced command in authorized_keys)"


def _args(argv: list[str]) -> tuple[str, str]:
    """``--root R --backup-name N`` (argparse would cost a tenth of a second per command)."""
    values: dict[str, str] = {}
    rest = list(argv)
    while rest:
        key = rest.pop(0)
        if key in ("--root", "--backup-name") and rest:
            values[key] = rest.pop(0)
        elif key.startswith(("--root=", "--backup-name=")):
            k, _, v = key.partition("=")
            values[k] = v
        else:
            raise SystemExit(USAGE)
    if set(values) != {"--root", "--backup-name"}:
        raise SystemExit(USAGE)
    return values["--root"], values["--backup-name"]


def main(argv: list[str] | None = None) -> int:
    root, backup_name = _args(sys.argv[1:] if argv is None else argv)
    policy = Policy(root, backup_name)
    # zfs is found where the system keeps it, whatever PATH the SSH session brought
    # (sshd's AcceptEnv never passes this variable; the tests set it to find a fake zfs).
    os.environ["PATH"] = os.environ.get("APPLIANCE_HQ_SHELL_PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    try:
        pipeline = split_pipeline(command)
        kind = policy.check_pipeline(pipeline)
    except Refused as exc:
        _log(f"refused for {policy.root}: {command!r}: {exc}")
        print(f"appliance-hq-shell: refused: {exc}", file=sys.stderr)
        return REFUSED
    _log(f"{kind} for {policy.root}: {command}")
    return run(pipeline, kind)


if __name__ == "__main__":
    sys.exit(main())
