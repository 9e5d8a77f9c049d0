"""Burn jobs: from a selection in the catalog to verified evidence discs, and the disc register.

The rest of :mod:`appliance.burner` knows nothing of the catalog; this module is the one
glue between them, used by the web page and the command line alike: it turns catalog
rows into :class:`DiscRecording` and :class:`RecordSession`, plans the set, records the job and its discs in the disc register (audited), and runs each
disc through image → burn → read-back → verified, publishing :class:`BurnChanged` on the
bus for the page's live progress.

Drives: every optical drive the kernel shows (``/dev/sr*``) plus the pseudo-drives the IT
admin enables in the settings (``stdio:`` files in the state folder, for trials and tests);
a verified pseudo-disc is moved to ``<state>/pseudo-discs/<label>.iso`` so the drive is
blank again. A set of several discs on a real drive waits for the next blank disc between
discs (``continue``).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.burner import (BurnerError, VerifyFailed, BurnProgress, DiscLabel, DiscPlan, DiscRecording, Medium,
                              PlannedDisc, RecordSession, build_image_async, burn_and_verify, medium,
                              plan_discs)
from appliance.catalog import audit
from appliance.errors import ApplianceError
from appliance.timeutil import iso, utcnow

if TYPE_CHECKING:
    from appliance.daemon import Appliance

log = logging.getLogger(__name__)

MAX_RECORDINGS = 20_000
PSEUDO_DIR = "pseudo-drives"
PSEUDO_DISCS = "pseudo-discs"


class BurnRequestError(ApplianceError):
    """刻录请求无效 / burn request refused: {}"""


@dataclass(frozen=True)
class BurnChanged:
    """Published on the bus whenever a burn job's live state changes."""

    job_id: int
    state: dict


@dataclass
class JobLive:
    """What the job page shows live."""

    job_id: int
    set_id: str
    drive: str
    state: str = "queued"       # queued, building, burning, waiting_media, done, failed
    disc: str = ""
    disc_index: int = 0
    disc_count: int = 0
    phase: str = ""             # building, checking, writing, closing, written, verifying, verified, ejected
    done_bytes: int = 0
    total_bytes: int = 0
    speed: str | None = None
    message: str = ""
    discs: dict[str, str] = field(default_factory=dict)   # label -> state

    def to_json(self) -> dict:
        data = asdict(self)
        data["percent"] = int(100 * self.done_bytes / self.total_bytes) if self.total_bytes else 0
        return data


# -- from the catalog ----------------------------------------------------------------------

def selection(conn: sqlite3.Connection, vault_root: Path, *, case_id: int | None,
              recording_ids: list[int]) -> list[DiscRecording]:
    """The recordings to burn, as the burner wants them."""
    base = ("SELECT r.*, o.name AS officer_name, d.brand, d.model FROM recordings r"
            " LEFT JOIN officers o ON o.id = r.officer_id LEFT JOIN devices d ON d.serial = r.device_serial")
    if case_id is not None:
        rows = conn.execute(base + " JOIN recording_cases x ON x.recording_id = r.id WHERE x.case_id = ?"
                            " ORDER BY r.camera_mtime, r.id LIMIT ?", (case_id, MAX_RECORDINGS + 1)).fetchall()
    else:
        ids = sorted(set(recording_ids))[:MAX_RECORDINGS + 1]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = conn.execute(base + f" WHERE r.id IN ({marks}) ORDER BY r.camera_mtime, r.id", ids).fetchall()
    if len(rows) > MAX_RECORDINGS:
        raise BurnRequestError(f"more than {MAX_RECORDINGS} recordings: burn a smaller selection")
    return [_disc_recording(r, vault_root) for r in rows]


def _disc_recording(r: sqlite3.Row, vault_root: Path) -> DiscRecording:
    end = _dt(r["camera_mtime"])
    start = _dt(r["start_time"]) if r["start_time"] else None
    duration = r["duration_s"]
    if start is None and end is not None and duration:
        from datetime import timedelta
        start = end - timedelta(seconds=duration)
    fmt = " ".join(str(x) for x in (r["format"], r["codec"],
                                     f"{r['width']}x{r['height']}" if r["width"] else None) if x) or None
    return DiscRecording(
        recording_id=r["id"], session_id=r["session_id"], vault_path=vault_root / r["vault_path"],
        disc_path=f"{r['session_id']}/{r['rel_path']}", size=r["size"], sha256=r["sha256"],
        officer=r["officer_name"] or "", device_serial=r["device_serial"], device_brand=r["brand"] or "",
        device_model=r["model"] or "", start_time=start, end_time=end, duration_s=duration, format=fmt)


def _dt(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def record_sessions(conn: sqlite3.Connection, recs: list[DiscRecording],
                    case_id: int | None) -> dict[str, RecordSession]:
    """The form's facts per session: officers from the catalog, the case if there is one;
    what the catalog does not know stays blank for the officers to fill in by hand."""
    case = conn.execute("SELECT number, title FROM cases WHERE id = ?", (case_id,)).fetchone() \
        if case_id is not None else None
    out: dict[str, RecordSession] = {}
    for sid in dict.fromkeys(r.session_id for r in recs):
        officers = tuple(dict.fromkeys(r.officer for r in recs if r.session_id == sid and r.officer))
        out[sid] = RecordSession(session_id=sid, officers=officers,
                                 case_number=case["number"] if case else None,
                                 case_name=case["title"] if case else None)
    return out


def next_serial(conn: sqlite3.Connection, station: str, year: int) -> int:
    prefix = f"{station}-{year}-"
    rows = conn.execute("SELECT set_id FROM burn_jobs WHERE set_id LIKE ? ESCAPE '\\'",
                        (prefix.replace("_", "\\_").replace("%", "\\%") + "%",)).fetchall()
    serials = [int(r[0][len(prefix):]) for r in rows if r[0][len(prefix):].isdigit()]
    return max(serials, default=0) + 1


def record_job(conn: sqlite3.Connection, plan: DiscPlan, *, case_id: int | None, drive: str,
               actor: str) -> tuple[int, dict[str, int]]:
    """The job and its planned discs in the disc register, audited; returns ids."""
    now = iso(utcnow())
    job_id = int(conn.execute(
        "INSERT INTO burn_jobs (set_id, case_id, medium, drive, state, created_at, created_by)"
        " VALUES (?, ?, ?, ?, 'queued', ?, ?)", (plan.set_id, case_id, plan.medium.key, drive, now, actor)
    ).lastrowid)
    disc_ids = {}
    for disc in plan.discs:
        did = int(conn.execute(
            "INSERT INTO discs (job_id, label, disc_index, disc_count, medium, drive, state)"
            " VALUES (?, ?, ?, ?, ?, ?, 'planned')",
            (job_id, disc.label.text, disc.label.index, disc.label.count, plan.medium.key, drive)).lastrowid)
        disc_ids[disc.label.text] = did
        conn.executemany("INSERT INTO disc_recordings (disc_id, recording_id, disc_path) VALUES (?, ?, ?)",
                         [(did, r.recording_id, r.disc_path) for r in disc.recordings])
    audit.append(conn, actor, "burn.start", plan.set_id,
                 {"job": job_id, "case": case_id, "medium": plan.medium.key, "drive": drive,
                  "discs": plan.labels, "recordings": sum(len(d.recordings) for d in plan.discs),
                  "bytes": plan.total_bytes})
    return job_id, disc_ids


def _set_disc(conn: sqlite3.Connection, disc_id: int, actor: str, state: str, **fields: object) -> None:
    sets = ", ".join(f"{k} = ?" for k in ("state", *fields))
    conn.execute(f"UPDATE discs SET {sets} WHERE id = ?", (state, *fields.values(), disc_id))
    label = conn.execute("SELECT label FROM discs WHERE id = ?", (disc_id,)).fetchone()[0]
    if state in ("verified", "failed"):
        audit.append(conn, actor, f"disc.{state}", label, {k: v for k, v in fields.items() if v is not None})


def _set_job(conn: sqlite3.Connection, job_id: int, actor: str, state: str, error: str | None = None) -> None:
    finished = iso(utcnow()) if state in ("done", "failed") else None
    conn.execute("UPDATE burn_jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?",
                 (state, error, finished, job_id))
    if finished:
        set_id = conn.execute("SELECT set_id FROM burn_jobs WHERE id = ?", (job_id,)).fetchone()[0]
        audit.append(conn, actor, f"burn.{state}", set_id, {"job": job_id, "error": error})


INTERRUPTED = "设备重启，刻录中断，请重新刻录 / interrupted by a restart of the appliance: burn again"


def fail_interrupted_jobs(conn: sqlite3.Connection, actor: str) -> list[str]:
    """At start-up, no job is running: any the catalog still shows as queued or running was cut
    off by a crash, a power cut or a restart. Mark it and its unfinished disc failed (audited)
    so the register never shows a burn that will not finish; returns the set ids."""
    jobs = conn.execute("SELECT id, set_id FROM burn_jobs WHERE state IN ('queued', 'running')").fetchall()
    for job_id, _set_id in jobs:
        for (disc_id,) in conn.execute("SELECT id FROM discs WHERE job_id = ? AND state IN"
                                       " ('building', 'burning', 'written')", (job_id,)).fetchall():
            _set_disc(conn, disc_id, actor, "failed", error=INTERRUPTED)
        _set_job(conn, job_id, actor, "failed", INTERRUPTED)
    return [set_id for _id, set_id in jobs]


def disc_for_form(conn: sqlite3.Connection, disc_id: int, vault_root: Path
                  ) -> tuple[PlannedDisc, dict[str, RecordSession], dict] | None:
    """A registered disc rebuilt as the burner's PlannedDisc, to print its record form."""
    d = conn.execute("SELECT d.*, j.set_id, j.case_id FROM discs d JOIN burn_jobs j ON j.id = d.job_id"
                     " WHERE d.id = ?", (disc_id,)).fetchone()
    if d is None:
        return None
    station, year, serial = d["set_id"].rsplit("-", 2)
    rows = conn.execute(
        "SELECT r.*, o.name AS officer_name, dv.brand, dv.model FROM disc_recordings x"
        " JOIN recordings r ON r.id = x.recording_id LEFT JOIN officers o ON o.id = r.officer_id"
        " LEFT JOIN devices dv ON dv.serial = r.device_serial WHERE x.disc_id = ?"
        " ORDER BY r.camera_mtime, r.id", (disc_id,)).fetchall()
    recs = [_disc_recording(r, vault_root) for r in rows]
    label = DiscLabel(station, int(year), int(serial), d["disc_index"], d["disc_count"])
    disc = PlannedDisc(label=label, medium=medium(d["medium"]), recordings=tuple(recs))
    return disc, record_sessions(conn, recs, d["case_id"]), dict(d)


# -- running jobs --------------------------------------------------------------------------

class BurnService:
    """Runs burn jobs in the daemon's loop, one at a time per drive."""

    def __init__(self, appliance: "Appliance") -> None:
        self.appliance = appliance
        self.live: dict[int, JobLive] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._continue: dict[int, asyncio.Event] = {}
        self._busy_drives: set[str] = set()
        self.pseudo_drives = 0

    @property
    def state_dir(self) -> Path:
        return self.appliance.config.state_dir

    async def recover(self) -> None:
        """Before the first job: close the jobs a restart cut off and remove their images."""
        stale = await self.appliance.catalog.call(fail_interrupted_jobs, "system")
        if stale:
            log.warning("burn jobs interrupted by a restart, marked failed: %s", ", ".join(stale))
        await asyncio.to_thread(_remove_images, self.appliance.vault.discs)

    def drives(self) -> list[str]:
        """The configured drives (else every drive the kernel shows), then the enabled pseudo-drives."""
        real = list(self.appliance.config.burner.drives) or sorted(glob.glob("/dev/sr[0-9]*"))
        pseudo = [f"stdio:{self.state_dir / PSEUDO_DIR / f'drive-{n}.iso'}"
                  for n in range(1, self.pseudo_drives + 1)]
        return real + pseudo

    def plan(self, recs: list[DiscRecording], medium_key: str, serial: int) -> DiscPlan:
        try:
            chosen: Medium = medium(medium_key)
            return plan_discs(recs, chosen, station=self.appliance.config.station.id, serial=serial)
        except BurnerError as exc:
            raise BurnRequestError(str(exc)) from None

    async def start(self, *, case_id: int | None, recording_ids: list[int], medium_key: str, drive: str,
                    actor: str) -> int:
        if drive not in self.drives():
            raise BurnRequestError(f"{drive}: not a drive of this appliance")
        if drive in self._busy_drives:
            raise BurnRequestError(f"{drive}: busy with another job")
        catalog = self.appliance.catalog
        vault_root = self.appliance.vault.root
        recs = await catalog.call(selection, vault_root, case_id=case_id, recording_ids=recording_ids)
        if not recs:
            raise BurnRequestError("nothing selected")

        def register(conn):  # type: ignore[no-untyped-def]
            year = datetime.now(timezone.utc).year
            plan = self.plan(recs, medium_key, next_serial(conn, self.appliance.config.station.id, year))
            job_id, disc_ids = record_job(conn, plan, case_id=case_id, drive=drive, actor=actor)
            return plan, job_id, disc_ids, record_sessions(conn, recs, case_id), audit.head(conn)

        plan, job_id, disc_ids, sessions, head = await catalog.call(register)
        live = JobLive(job_id, plan.set_id, drive, disc_count=len(plan.discs),
                       discs={d.label.text: "planned" for d in plan.discs})
        self.live[job_id] = live
        self._busy_drives.add(drive)
        self._continue[job_id] = asyncio.Event()
        task = asyncio.create_task(self._run(live, plan, disc_ids, sessions, head, actor),
                                   name=f"burn-{plan.set_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t, j=job_id, d=drive: (self._tasks.pop(j, None),
                                                               self._busy_drives.discard(d)))
        return job_id

    async def wait(self, job_id: int) -> None:
        """Until a job has ended (the command line waits for its one job)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    @property
    def busy_drives(self) -> list[str]:
        """Drives with a job running (upgrades must not restart the box then)."""
        return sorted(self._busy_drives)

    def resume(self, job_id: int) -> bool:
        """The operator put the next blank disc in."""
        event = self._continue.get(job_id)
        live = self.live.get(job_id)
        if event is None or live is None or live.state != "waiting_media":
            return False
        event.set()
        return True

    def _publish(self, live: JobLive, **changes: object) -> None:
        for k, v in changes.items():
            setattr(live, k, v)
        self.appliance.bus.publish(BurnChanged(live.job_id, live.to_json()))

    async def _run(self, live: JobLive, plan: DiscPlan, disc_ids: dict[str, int],
                   sessions: dict[str, RecordSession], head: str, actor: str) -> None:
        catalog = self.appliance.catalog
        config = self.appliance.config
        metrics = self.appliance.metrics
        work = self.appliance.vault.discs
        actor_sys = f"{actor} (burn)"
        try:
            await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
            if live.drive.startswith("stdio:"):
                await asyncio.to_thread(Path(live.drive[6:]).parent.mkdir, parents=True, exist_ok=True)
            await catalog.call(_set_job, live.job_id, actor_sys, "running")
            for n, disc in enumerate(plan.discs, start=1):
                label = disc.label.text
                did = disc_ids[label]
                if n > 1 and not live.drive.startswith("stdio:"):
                    self._continue[live.job_id].clear()
                    self._publish(live, state="waiting_media", message="insert the next blank disc")
                    await self._continue[live.job_id].wait()
                live.discs[label] = "building"
                self._publish(live, state="building", disc=label, disc_index=n, phase="building",
                              done_bytes=0, total_bytes=disc.estimated_bytes or disc.payload_bytes, message="")
                await catalog.call(_set_disc, did, actor_sys, "building")
                image_path = work / f"{disc.label.file_stem}.iso"
                if image_path.exists():
                    await asyncio.to_thread(image_path.unlink)
                loop = asyncio.get_running_loop()

                def progress(done: int, total: int) -> None:
                    loop.call_soon_threadsafe(lambda: self._publish(live, done_bytes=done, total_bytes=total))

                image = await build_image_async(disc, image_path, sessions=sessions,
                                                station_name=config.station.name, audit_chain_head=head,
                                                tz=config.station.timezone, progress=progress)
                await catalog.call(_set_disc, did, actor_sys, "burning", image_sha256=image.sha256,
                                   image_bytes=image.size, volume_id=image.volume_id)
                live.discs[label] = "burning"
                self._publish(live, state="burning")
                event: BurnProgress
                async for event in burn_and_verify(live.drive, image.path, sha256=image.sha256,
                                                   medium=disc.medium):
                    self._publish(live, phase=event.phase, done_bytes=event.done_bytes,
                                  total_bytes=event.total_bytes, speed=event.speed, message=event.message)
                    metrics.drive_phase(live.drive, event.phase)
                    if event.phase == "written":
                        await catalog.call(_set_disc, did, actor_sys, "written", burned_at=iso(utcnow()))
                await catalog.call(_set_disc, did, actor_sys, "verified", verified_at=iso(utcnow()))
                live.discs[label] = "verified"
                metrics.disc_burned()
                self._publish(live, phase="verified")
                await asyncio.to_thread(self._after_disc, live.drive, image.path, disc.label.file_stem)
            await catalog.call(_set_job, live.job_id, actor_sys, "done")
            metrics.burn_job_finished("done")
            metrics.set_drive_state(live.drive, "idle")
            self._publish(live, state="done", phase="verified", message="")
        except asyncio.CancelledError:
            metrics.burn_job_finished("cancelled")
            metrics.set_drive_state(live.drive, "idle")
            await asyncio.shield(catalog.call(_set_job, live.job_id, actor_sys, "failed", "stopped"))
            self._publish(live, state="failed", message="stopped")
            raise
        except Exception as exc:
            log.exception("burn job %s failed", live.set_id)
            metrics.burn_job_finished("failed")
            metrics.set_drive_state(live.drive, "failed")
            reason = str(exc) or type(exc).__name__
            # A disc that does not read back as its image is bad: the operator needs a new blank.
            bad = isinstance(exc, VerifyFailed)
            if bad:
                metrics.burn_verify_failed()
                reason = f"verify: {reason} — 光盘校验失败，请放入新的空白光盘 / insert a new blank disc"
            label = live.disc
            if label:
                live.discs[label] = "bad" if bad else "failed"
                try:
                    await catalog.call(_set_disc, disc_ids[label], actor_sys, "bad" if bad else "failed",
                                       error=reason[:500])
                except Exception:
                    log.exception("burn job %s: could not record the failed disc", live.set_id)
            await catalog.call(_set_job, live.job_id, actor_sys, "failed", reason[:500])
            self._publish(live, state="failed", message=reason)

    def _after_disc(self, drive: str, image: Path, stem: str) -> None:
        """Remove the scratch image; a pseudo-drive's disc goes to ``pseudo-discs/``."""
        image.unlink(missing_ok=True)
        if drive.startswith("stdio:"):
            done = self.state_dir / PSEUDO_DISCS
            done.mkdir(parents=True, exist_ok=True)
            os.replace(drive[6:], done / f"{stem}.iso")

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def _remove_images(folder: Path) -> None:
    """Scratch images left by a job that did not finish (none is running at start-up)."""
    if folder.is_dir():
        for image in folder.glob("*.iso"):
            image.unlink(missing_ok=True)
