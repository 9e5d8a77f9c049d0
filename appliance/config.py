"""The appliance's configuration: ``config.yaml`` loaded into typed, validated objects.

One schema (pydantic), defaults inside it, validated once at start-up. After that the
rest of the code only reads validated values from the :class:`Config` object that is
handed down; there is no other global state. A bad value is refused with its key path
and the reason (``dock.slots.3: ...``).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, time, timezone
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.errors import ConfigError

DEFAULT_SYSTEM_CONFIG = Path("/etc/appliance/config.yaml")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}


def parse_size(value: object) -> int:
    """Turn ``8MiB``, ``1.5 GB``, ``4096`` into a byte count; refuse anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8MiB or 1GB, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size such as 8MiB or 1GB")
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (examples: 4096, 8MiB, 1.5GB)")
    number, unit = match.groups()
    unit = (unit or "").upper()
    unit = unit[:-1] if unit.endswith("B") else unit
    return int(float(number) * _UNITS[unit])


Size = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    # Unknown keys are refused: a typo in a key must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationConfig(_Model):
    id: str = Field(default="demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    name: str = "演示执法站"
    timezone: str = "Asia/Shanghai"
    # End of the working day (local time, "HH:MM"): devices not docked that day are
    # "not returned" after it (regulation art. 15.1).
    end_of_day: str = "18:00"

    @field_validator("end_of_day", mode="before")
    @classmethod
    def _hh_mm(cls, v: object) -> str:
        # YAML reads an unquoted 18:00 as the base-60 number 1080: refuse it, say why.
        if not isinstance(v, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"{v!r}: expected a quoted local time \"HH:MM\", e.g. \"18:00\"")
        return v

    @property
    def end_of_day_time(self) -> time:
        hours, minutes = self.end_of_day.split(":")
        return time(int(hours), int(minutes))


class VaultConfig(_Model):
    backend: Literal["directory", "zfs"] = "directory"
    path: Path = Path("/var/lib/appliance/vault")
    dataset: str | None = None
    reserve: Size = 1 << 30

    @field_validator("reserve", mode="before")
    @classmethod
    def _size(cls, v: object) -> int:
        return parse_size(v)

    @model_validator(mode="after")
    def _backend_needs(self) -> "VaultConfig":
        if self.backend == "zfs" and not self.dataset:
            raise ValueError("backend 'zfs' needs 'dataset' (the parent dataset, e.g. tank/evidence)")
        if self.dataset and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*", self.dataset):
            raise ValueError(f"dataset {self.dataset!r} is not a valid ZFS dataset name")
        return self


class WebConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class MetricsTlsConfig(_Model):
    cert_file: Path
    key_file: Path
    # With a CA file, only clients with a certificate it signed may connect (mutual TLS).
    client_ca_file: Path | None = None

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return _absolute_path(v)


class MetricsConfig(_Model):
    # A second listener for /metrics only, "HOST:PORT" ("[::1]:9108" for IPv6); null: none
    # (/metrics is always on the web listener too).
    listen: str | None = None
    # A file whose first line is the bearer token the metrics listener requires.
    bearer_token_file: Path | None = None
    tls: MetricsTlsConfig | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", v)
        if not match or int(match.group(2)) > 65535:
            raise ValueError(f"{v!r}: expected HOST:PORT, e.g. 0.0.0.0:9108 or [::1]:9108")
        return v

    @field_validator("bearer_token_file")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return _absolute_path(v)

    @property
    def host_port(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, port = self.listen.rsplit(":", 1)
        return host.strip("[]"), int(port)


class ClockSyncConfig(_Model):
    path: str = "time.txt"
    format: str = "%Y-%m-%d %H:%M:%S"

    @field_validator("format")
    @classmethod
    def _format_works(cls, v: str) -> str:
        if "%" not in v:
            raise ValueError("the format needs strftime fields such as %Y-%m-%d %H:%M:%S")
        datetime.now(timezone.utc).strftime(v)
        return v

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        return _relative_path(v)


class IdentityConfig(_Model):
    path: str = "DEVICE.TXT"
    pattern: str = r"(?im)^\s*(?:SN|SERIAL|设备编号)\s*[=:：]\s*([A-Za-z0-9_-]+)"

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        if compiled.groups < 1:
            raise ValueError("the pattern needs one group that captures the serial")
        return v

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        return _relative_path(v)


class ProfileMatch(_Model):
    vendor: str | None = None
    model: str | None = None


class CameraProfile(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    brand: str = ""
    model: str = ""
    match: ProfileMatch = ProfileMatch()
    media_dirs: list[str] = Field(default_factory=lambda: ["DCIM", "VIDEO", "AUDIO", "PHOTO", "RECORD"])
    extensions: list[str] = Field(
        default_factory=lambda: [".mp4", ".mov", ".avi", ".ts", ".mkv", ".wav", ".mp3", ".aac",
                                 ".jpg", ".jpeg"])
    identity: IdentityConfig = IdentityConfig()
    clock_sync: ClockSyncConfig | None = ClockSyncConfig()

    @field_validator("extensions")
    @classmethod
    def _dotted(cls, v: list[str]) -> list[str]:
        out = []
        for ext in v:
            if not re.fullmatch(r"\.[A-Za-z0-9]{1,8}", ext):
                raise ValueError(f"{ext!r} is not an extension like .mp4")
            out.append(ext.lower())
        return out

    @field_validator("media_dirs")
    @classmethod
    def _media_dirs(cls, v: list[str]) -> list[str]:
        return [_relative_path(d) for d in v]


class DockConfig(_Model):
    slots: dict[int, str] = Field(default_factory=dict)
    mount_root: Path = Path("/run/appliance/mnt")
    io_concurrency: int = Field(default=4, ge=1, le=64)
    block_size: Size = 8 << 20
    udev: bool = True

    @field_validator("block_size", mode="before")
    @classmethod
    def _size(cls, v: object) -> int:
        size = parse_size(v)
        if size < 64 << 10 or size > 256 << 20 or size % 4096:
            raise ValueError("block_size must be a multiple of 4KiB between 64KiB and 256MiB")
        return size

    @field_validator("slots")
    @classmethod
    def _slots(cls, v: dict[int, str]) -> dict[int, str]:
        seen: dict[str, int] = {}
        for slot, port in v.items():
            if slot < 1 or slot > 64:
                raise ValueError(f"slot number {slot} is outside 1..64")
            if not port.strip():
                raise ValueError(f"slot {slot} has an empty port path")
            if port in seen:
                raise ValueError(f"port {port!r} is mapped to slots {seen[port]} and {slot}")
            seen[port] = slot
        return v


class IngestConfig(_Model):
    hashes: list[Literal["sha256", "sm3"]] = Field(default_factory=lambda: ["sha256"])
    wipe: Literal["never", "after-verify"] = "never"
    ffprobe: bool = True

    @field_validator("hashes")
    @classmethod
    def _sha256_first(cls, v: list[str]) -> list[str]:
        if "sha256" not in v:
            raise ValueError("sha256 is always computed; list it (sm3 may be added)")
        if len(set(v)) != len(v):
            raise ValueError("an algorithm is listed twice")
        return ["sha256"] + [a for a in v if a != "sha256"]


class BurnerConfig(_Model):
    drives: list[str] = Field(default_factory=list)
    medium: str = "dvd"

    @field_validator("drives")
    @classmethod
    def _drives(cls, v: list[str]) -> list[str]:
        for drive in v:
            if not (re.fullmatch(r"/dev/sr[0-9]+", drive)
                    or (drive.startswith("stdio:/") and ".." not in drive)):
                raise ValueError(f"{drive!r}: a drive is /dev/srN or stdio:/absolute/path")
        if len(set(v)) != len(v):
            raise ValueError("a drive is listed twice")
        return v

    @field_validator("medium")
    @classmethod
    def _medium(cls, v: str) -> str:
        from appliance.burner.media import MEDIA

        if v not in MEDIA:
            raise ValueError(f"{v!r} is not a medium; one of {', '.join(MEDIA)}")
        return v


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """Turn ``90``, ``30s``, ``15min``, ``1h``, ``2d`` into seconds; refuse anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15min or 1h, not a boolean")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 15min or 1h")
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration (examples: 90, 30s, 15min, 1h, 2d)")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[(unit or "").lower()]


# zfs-autobackup's thinning schedule: "N" (always keep the last N) or "<period><ttl>" rules such
# as 1d1w (one a day for a week), comma-separated. Checked here without importing it (GPLv3).
_THIN_UNITS = {"y": 3600 * 24 * 365.25, "m": 3600 * 24 * 30, "w": 3600 * 24 * 7, "d": 86400,
               "h": 3600, "min": 60, "s": 1}
_THIN_RULE = re.compile(r"^(\d+)(y|m|w|d|h|min|s)(\d+)(y|m|w|d|h|min|s)$")


def check_thin_schedule(value: str) -> str:
    """A zfs-autobackup keep schedule (``10,1d1w,1w1m,1m1y``), checked as zfs-autobackup does."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a schedule such as 10,1d1w,1w1m,1m1y")
    for rule in value.lower().split(","):
        if rule.isdigit():
            continue
        match = _THIN_RULE.fullmatch(rule)
        if not match:
            raise ValueError(f"{rule!r} is not a rule: a count (10) or <period><ttl> (1d1w, 1w1m, 1m1y)")
        period = int(match.group(1)) * _THIN_UNITS[match.group(2)]
        ttl = int(match.group(3)) * _THIN_UNITS[match.group(4)]
        if period > ttl:
            raise ValueError(f"{rule!r}: the period is longer than the time to keep")
    return value.lower()


class ReplicationTargetConfig(_Model):
    # Headquarters' receiving host, its SSH port and the receiving user (one per station).
    host: str = Field(pattern=r"^[A-Za-z0-9.:_-]+$")
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # The station's private key (mode 0600) and the known_hosts file that pins HQ's host key.
    key_file: Path
    known_hosts_file: Path
    # The station's dataset at HQ (created there beforehand), e.g. hq/stations/<station id>.
    path: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9][A-Za-z0-9_.:-]*)+$")

    @field_validator("key_file", "known_hosts_file")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return _absolute_path(v)  # type: ignore[return-value]


class ReplicationConfig(_Model):
    enabled: bool = False
    # zfs-autobackup's backup name: it selects the datasets with autobackup:<name>=true (the zfs
    # vault sets it on media, quarantine and catalog) and names its own snapshots <name>-<UTC time>.
    # Null: the station id.
    backup_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    target: ReplicationTargetConfig | None = None
    # A run on this schedule, and one shortly after every ingest session (several cameras
    # docked together are sent in one run); after a failed run, the next try comes sooner.
    interval: float = 900.0
    after_ingest_delay: float = 60.0
    retry_interval: float = 300.0
    # A run still going after this long is stopped; the next one resumes the transfer.
    timeout: float = 6 * 3600.0
    # SSH connect timeout (HQ unreachable is reported after this long).
    connect_timeout: float = 20.0
    # Thinning of zfs-autobackup's own snapshots on the station and at HQ. Ingest snapshots
    # (@ingest-<session>, held) are never thinned on either side, whatever these say.
    keep_source: str = "10,1d1w"
    keep_target: str = "10,1d1w,1w1m,1m1y"
    # Send blocks compressed on disk as they are (zfs send -c).
    zfs_compressed: bool = True
    # Compress the stream on the way (needs the tool at both ends); null: none.
    compress: Literal["zstd-fast", "zstd-slow", "zstd-adapt", "gzip"] | None = None
    # Bandwidth limit for thin links, bytes per second (e.g. 2MiB); null: none.
    rate_limit: Size | None = None

    @field_validator("interval", "after_ingest_delay", "retry_interval", "timeout", "connect_timeout",
                     mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return parse_duration(v)

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate(cls, v: object) -> int | None:
        if v is None:
            return None
        rate = parse_size(v)
        if rate < 16 * 1024:
            raise ValueError("a rate limit below 16KiB/s would never finish a send")
        return rate

    @field_validator("keep_source", "keep_target")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return check_thin_schedule(v)

    @field_validator("backup_name")
    @classmethod
    def _not_ingest(cls, v: str | None) -> str | None:
        if v is not None and v.lower() == "ingest":
            raise ValueError("'ingest' is the prefix of the vault's own snapshots; choose another name")
        return v

    @model_validator(mode="after")
    def _needs(self) -> "ReplicationConfig":
        if self.enabled and self.target is None:
            raise ValueError("enabled replication needs 'target' (host, user, key_file, known_hosts_file, path)")
        if self.interval < 60:
            raise ValueError("interval: at least 60 seconds")
        if self.timeout < 30:
            raise ValueError("timeout: at least 30 seconds")
        return self


class RetentionConfig(_Model):
    months: int = Field(default=6, ge=6, le=1200)


class Config(_Model):
    """The validated configuration, handed down to every part of the appliance."""

    station: StationConfig = StationConfig()
    state_dir: Path = Path("/var/lib/appliance/state")
    vault: VaultConfig = VaultConfig()
    web: WebConfig = WebConfig()
    metrics: MetricsConfig = MetricsConfig()
    dock: DockConfig = DockConfig()
    ingest: IngestConfig = IngestConfig()
    burner: BurnerConfig = BurnerConfig()
    retention: RetentionConfig = RetentionConfig()
    replication: ReplicationConfig = ReplicationConfig()
    profiles: list[CameraProfile] = Field(default_factory=lambda: [CameraProfile(name="generic")])
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, v: list[CameraProfile]) -> list[CameraProfile]:
        if not v:
            raise ValueError("at least one camera profile is needed")
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError("two profiles have the same name")
        return v

    @model_validator(mode="after")
    def _replication_name(self) -> "Config":
        if self.replication.enabled and self.station.id.lower() == "ingest" and not self.replication.backup_name:
            raise ValueError("replication: station id 'ingest' cannot be the backup name; set backup_name")
        if self.replication.enabled and self.vault.backend != "zfs":
            raise ValueError("replication: needs vault.backend 'zfs' (it sends ZFS snapshots)")
        return self

    @property
    def backup_name(self) -> str:
        """zfs-autobackup's backup name: ``autobackup:<name>`` marks the datasets that go to HQ."""
        return self.replication.backup_name or self.station.id

    @property
    def catalog_path(self) -> Path:
        """Where the SQLite catalog lives: inside the vault, so it is snapshotted with it."""
        return self.vault.path / "catalog" / "catalog.sqlite"

    def with_overrides(self, **changes: object) -> "Config":
        """A copy with top-level fields replaced (used by the demo and the benchmark)."""
        return self.model_copy(update=changes)


def _absolute_path(v: Path | None) -> Path | None:
    if v is not None and not v.is_absolute():
        raise ValueError(f"{str(v)!r} must be an absolute path")
    return v


def _relative_path(v: str) -> str:
    parts = Path(v).parts
    if not v or Path(v).is_absolute() or ".." in parts:
        raise ValueError(f"{v!r} must be a relative path on the camera without '..'")
    return v


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``source: key.path: reason``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against the documented config.yaml)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def default_config_path(environ: dict[str, str] | None = None) -> Path:
    """``$APPLIANCE_CONFIG``, else ``/etc/appliance/config.yaml`` where it exists, else ``./config.yaml``."""
    env = os.environ if environ is None else environ
    if env.get("APPLIANCE_CONFIG"):
        return Path(env["APPLIANCE_CONFIG"])
    if DEFAULT_SYSTEM_CONFIG.exists():
        return DEFAULT_SYSTEM_CONFIG
    return Path("config.yaml")


def parse_config(data: object, source: str = "config") -> Config:
    """Validate already-parsed YAML data; raise :class:`ConfigError` naming every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, not {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: Path | None = None) -> Config:
    """Read and validate a config file. Relative paths inside it are taken from its folder."""
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    config = parse_config(data, str(path))
    base = path.resolve().parent
    vault = config.vault.model_copy(update={"path": _anchor(config.vault.path, base)})
    dock = config.dock.model_copy(update={"mount_root": _anchor(config.dock.mount_root, base)})
    return config.model_copy(update={
        "state_dir": _anchor(config.state_dir, base), "vault": vault, "dock": dock,
        "source": path.resolve(),
    })


def _anchor(p: Path, base: Path) -> Path:
    return p if p.is_absolute() else base / p
