"""``appliance burn`` and ``appliance disc verify``: the burner from the command line.

The same burn job as the web page (:mod:`appliance.burner.jobs`), run in this process:
plan, build, burn, read back, record, audit. ``--dry-run`` only prints the plan.
"""

from __future__ import annotations

import asyncio
import getpass
from dataclasses import dataclass
from datetime import datetime, timezone

from appliance.burner.drive import verify_disc
from appliance.burner.jobs import BurnRequestError, BurnService, next_serial, selection
from appliance.config import Config
from appliance.daemon import Appliance


@dataclass(frozen=True)
class BurnArgs:
    """What the command line asked for."""

    case_id: int | None
    recording_ids: list[int]
    all_recordings: bool
    medium: str | None
    drive: str | None
    dry_run: bool


def _all_ids(conn) -> list[int]:  # type: ignore[no-untyped-def]
    return [r[0] for r in conn.execute("SELECT id FROM recordings ORDER BY id")]


async def run_burn(config: Config, args: BurnArgs) -> int:
    """Plan (and unless dry-run, burn) a selection; print one line per disc. Exit code."""
    appliance = Appliance(config)
    service = BurnService(appliance)
    try:
        ids = await appliance.catalog.call(_all_ids) if args.all_recordings else args.recording_ids
        recs = await appliance.catalog.call(selection, appliance.vault.root, case_id=args.case_id,
                                            recording_ids=ids)
        if not recs:
            raise BurnRequestError("nothing selected")
        medium_key = args.medium or config.burner.medium
        if args.dry_run:
            year = datetime.now(timezone.utc).year
            serial = await appliance.catalog.call(next_serial, config.station.id, year)
            plan = service.plan(recs, medium_key, serial)
            print(f"plan {plan.set_id}: {len(plan.discs)} × {plan.medium.key} "
                  f"(at least {plan.lower_bound}), {len(recs)} recordings")
            for disc in plan.discs:
                print(f"  {disc.label.text}\t{len(disc.recordings)} recordings\t"
                      f"{disc.estimated_bytes} bytes")
            return 0
        drives = service.drives()
        drive = args.drive or (drives[0] if drives else None)
        if drive is None:
            raise BurnRequestError("no optical drive: set burner.drives in the configuration")
        job_id = await service.start(case_id=args.case_id, recording_ids=ids, medium_key=medium_key,
                                     drive=drive, actor=f"cli:{getpass.getuser()}")
        await service.wait(job_id)
        live = service.live[job_id]
        for label, state in live.discs.items():
            print(f"{label}\t{state}")
        if live.state != "done":
            print(f"burn {live.set_id}: {live.state}: {live.message}")
        return 0 if live.state == "done" else 1
    finally:
        await service.stop()
        appliance.catalog.close()


async def run_disc_verify(source: str) -> int:
    """Check a disc or image file against its own manifest; print every problem."""
    report = await verify_disc(source)
    for check in report.failed:
        print(f"DIFFERS  {check}")
    for name in report.unexpected:
        print(f"NEW      {name}")
    for problem in report.problems:
        print(f"PROBLEM  {problem}")
    word = "OK" if report.ok else "NOT OK"
    print(f"disc {report.label or '?'} ({report.set_id}): {len(report.checked)} files checked: {word}")
    if report.audit_chain_head:
        print(f"audit chain head at burn time: {report.audit_chain_head}")
    return 0 if report.ok else 1


def burn(config: Config, args: BurnArgs) -> int:
    return asyncio.run(run_burn(config, args))
