"""The ``appliance`` command. Errors are caught once, here, and printed as one clear line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from pathlib import Path

from appliance import __version__
from appliance.config import Config, default_config_path, load_config
from appliance.errors import ApplianceError, AuditChainBroken


def _config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config) if args.config else default_config_path())


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.daemon import run_daemon

    asyncio.run(run_daemon(_config(args)))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"{config.source}: OK (vault: {config.vault.backend} at {config.vault.path}, "
          f"{len(config.dock.slots)} slots, {len(config.profiles)} camera profiles)")
    return 0


def _catalog(config: Config):  # type: ignore[no-untyped-def]
    """The catalog, in a vault made ready first: on ZFS the catalog has its own dataset, and a
    command run before the daemon's first start would otherwise create the file in the
    parent's folder, hidden later by the child's mount and covered by no snapshot."""
    from appliance.catalog.db import Catalog
    from appliance.vault import open_vault

    open_vault(config).prepare()
    return Catalog(config.catalog_path)


def cmd_device_add(args: argparse.Namespace) -> int:
    from appliance.catalog import registry

    catalog = _catalog(_config(args))
    device = catalog.run(registry.add_device, args.serial, officer=args.officer, model=args.model or "",
                         brand=args.brand or "", actor=f"cli:{getpass.getuser()}")
    print(f"{device.serial}: {device.brand} {device.model}, officer {device.officer_name or '-'}")
    return 0


def cmd_device_list(args: argparse.Namespace) -> int:
    from appliance.catalog import registry

    for d in _catalog(_config(args)).run(registry.list_devices):
        print(f"{d.serial}\t{d.brand} {d.model}\t{d.status}\t{d.officer_name or '-'}")
    return 0


def cmd_continuity_rescan(args: argparse.Namespace) -> int:
    from appliance.catalog import continuity

    found = _catalog(_config(args)).run(continuity.rescan, args.device)
    print(f"continuity: {found} new flag(s)")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from appliance.catalog import audit

    state = _catalog(_config(args)).run(audit.verify_chain)
    if not state.ok:
        raise AuditChainBroken(f"row {state.first_broken}: {state.reason} ({state.rows} rows read)")
    print(f"audit chain OK: {state.rows} rows, head {state.head}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from appliance.vault import open_vault
    from appliance.vault.verify import verify_vault

    config = _config(args)
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise ApplianceError(f"--since {args.since!r}: expected a date like 2026-11-01") from None
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    report = verify_vault(_catalog(config), open_vault(config), since)
    for p in report.problems:
        print(f"{p.kind.upper():<9} {p.path}: {p.detail}")
    word = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"verify: {report.files_checked} files, {report.bytes_checked} bytes checked, "
          f"pool {report.pool_health}: {word}")
    return 0 if report.ok else 1


def cmd_dock(args: argparse.Namespace) -> int:
    from appliance.dock.control import send_request

    config = _config(args)
    request: dict = {"action": args.dock_action, "slot": args.slot}
    if args.dock_action == "attach":
        request.update(source=str(Path(args.source).resolve()), serial=args.serial, kind=args.kind)
    reply = asyncio.run(send_request(config.state_dir / "dock.sock", request))
    print(json.dumps(reply, ensure_ascii=False))
    return 0 if reply.get("ok") else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance.demo.run import run_demo

    base = load_config(Path(args.config)) if args.config else None
    return asyncio.run(run_demo(cameras=args.cameras, once=args.once,
                                state=Path(args.state) if args.state else None, port=args.port,
                                base=base))


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    from appliance.bench.ingest import run_bench
    from appliance.config import parse_size

    # The pipeline's settings (hashes, block size, I/O concurrency) come from --config if given.
    base = load_config(Path(args.config)) if args.config else None
    result = run_bench(slots=args.slots, size=parse_size(args.size),
                       workdir=Path(args.dir) if args.dir else None, files_per_slot=args.files,
                       config=base)
    print(json.dumps(result, indent=2))
    return 0


def _read_password(prompt: str) -> str:
    """From the terminal (twice, not echoed), or the first line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if first != getpass.getpass(f"{prompt} (again): "):
            raise ApplianceError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    from appliance.catalog import users

    password = _read_password(f"password for {args.name}")
    digest = users.hash_password(password)
    user = _catalog(_config(args)).run(users.add_user, args.name, args.role, digest,
                                       display_name=args.display_name or "", officer=args.officer,
                                       actor=f"cli:{getpass.getuser()}")
    print(f"{user.name}: {user.role}{', officer ' + user.officer_name if user.officer_name else ''}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from appliance.catalog import users

    catalog = _catalog(_config(args))
    found = catalog.run(users.credentials, args.name)
    if found is None:
        raise ApplianceError(f"{args.name}: no such user")
    digest = users.hash_password(_read_password(f"new password for {args.name}"))
    catalog.run(users.set_password, found[0].id, digest, actor=f"cli:{getpass.getuser()}", reset=True)
    print(f"{args.name}: password set; every session of the account has ended")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from appliance.catalog import users

    for u in _catalog(_config(args)).run(users.list_users):
        state = "disabled" if u.disabled else "active"
        print(f"{u.name}\t{u.role}\t{u.officer_name or '-'}\t{state}\t{u.last_login_at or '-'}")
    return 0


def cmd_bench_web(args: argparse.Namespace) -> int:
    from appliance.bench.web import run_bench

    result = run_bench(recordings=args.recordings, queries=args.queries,
                       workdir=Path(args.dir) if args.dir else None, keep=args.keep)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if result["ok"] else 1


def cmd_burn(args: argparse.Namespace) -> int:
    from appliance.burner.command import BurnArgs, burn

    return burn(_config(args), BurnArgs(case_id=args.case, recording_ids=args.recordings or [],
                                        all_recordings=args.all, medium=args.media, drive=args.drive,
                                        dry_run=args.dry_run))


def cmd_disc_verify(args: argparse.Namespace) -> int:
    from appliance.burner.command import run_disc_verify

    return asyncio.run(run_disc_verify(args.source))


def cmd_replicate(args: argparse.Namespace) -> int:
    """Replication to headquarters: the status, or (--now) one run now."""
    from appliance.vault import replication as rep

    config = _config(args)
    if not args.now:
        status = rep.load_status(rep.Paths.of(config)) or rep.ReplicationStatus()
        status.enabled = config.replication.enabled
        if config.replication.enabled:
            status.target = rep.target_label(config)
        print(json.dumps(status.to_json(), indent=2, ensure_ascii=False) if args.json
              else _replication_text(status))
        return 0
    if not config.replication.enabled:
        raise rep.ReplicationError("replication is not enabled in the configuration (replication.enabled)")
    catalog = _catalog(config)
    actor = f"cli:{getpass.getuser()}"

    async def audit_row(action: str, subject: str, details: dict) -> None:
        from appliance.catalog import audit

        catalog.run(audit.append, actor, action, subject, details)

    async def once() -> "rep.ReplicationStatus":
        replicator = rep.Replicator(config, audit=audit_row, actor=actor)
        return await replicator.run("cli", wait_for_lock=args.wait)

    try:
        status = asyncio.run(once())
    except rep.Busy:
        raise rep.ReplicationError(f"another run is still going (waited {args.wait:.0f} s; "
                                   f"see {rep.Paths.of(config).lock})") from None
    finally:
        catalog.close()
    print(json.dumps(status.to_json(), indent=2, ensure_ascii=False) if args.json
          else _replication_text(status))
    return 0 if status.state == "ok" else 1


def _replication_text(status) -> str:  # type: ignore[no-untyped-def]
    from datetime import datetime

    def when(t: float | None) -> str:
        return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else "never"

    if not status.enabled:
        return "replication: not enabled (replication.enabled in the configuration)"
    lines = [f"replication to {status.target}: {status.state}",
             f"  last run:       {status.run_id} ({status.reason or '-'}), {when(status.finished_at)}, "
             f"{status.seconds if status.seconds is not None else '-'} s, {status.bytes_sent} bytes, "
             f"{status.transfers} snapshot(s) sent ({status.resumed} resumed)",
             f"  last success:   {when(status.last_success_at)}",
             f"  lag:            {status.lag_seconds():.0f} s ({status.pending_ingest} session snapshot(s) "
             f"not yet at HQ); {status.datasets_behind} dataset(s) behind"]
    if status.last_error:
        lines.append(f"  last error:     [{status.last_error_kind}] {status.last_error} "
                     f"({when(status.last_error_at)}, {status.failures_in_a_row} failure(s) in a row)")
    for gap in status.gaps:
        lines.append(f"  missing at HQ:  {gap} (its files are in HQ's later snapshots; the snapshot "
                     f"itself cannot be sent again)")
    for warning in status.warnings:
        lines.append(f"  warning:        {warning}")
    return "\n".join(lines)


def cmd_hq_status(args: argparse.Namespace) -> int:
    """At headquarters: which ingest sessions of which station have arrived."""
    from appliance import hq

    stations = hq.hq_status(args.root, args.station, verify=args.verify)
    if args.json:
        print(json.dumps(hq.to_json(stations), indent=2, ensure_ascii=False))
    else:
        print(hq.format_table(stations))
    bad = any(s.state == "mismatch" for st in stations for s in st.sessions)
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="执法记录仪证据采集工作站 / evidence appliance")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $APPLIANCE_CONFIG, "
                        "/etc/appliance/config.yaml, ./config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", parents=[common], help="run the daemon").set_defaults(fn=cmd_run)
    sub.add_parser("check-config", parents=[common], help="validate the configuration and exit") \
        .set_defaults(fn=cmd_check_config)

    device = sub.add_parser("device", help="the device registry").add_subparsers(dest="device_cmd",
                                                                                 required=True)
    add = device.add_parser("add", parents=[common], help="register a camera or change its officer")
    add.add_argument("serial")
    add.add_argument("--officer", required=True)
    add.add_argument("--model")
    add.add_argument("--brand")
    add.set_defaults(fn=cmd_device_add)
    device.add_parser("list", parents=[common], help="list cameras").set_defaults(fn=cmd_device_list)

    cont = sub.add_parser("continuity", help="gaps between clips (art. 5, 6)").add_subparsers(
        dest="continuity_cmd", required=True)
    rescan = cont.add_parser("rescan", parents=[common], help="walk every device's clips for gaps, overlaps "
                             "and clock jumps (a catalog from before the check); flags found are kept")
    rescan.add_argument("--device", help="only this camera's serial")
    rescan.set_defaults(fn=cmd_continuity_rescan)

    audit_p = sub.add_parser("audit", help="the audit log").add_subparsers(dest="audit_cmd", required=True)
    audit_p.add_parser("verify", parents=[common], help="check the hash chain") \
        .set_defaults(fn=cmd_audit_verify)

    verify = sub.add_parser("verify", parents=[common], help="re-hash the vault against catalog, "
                            "manifests and snapshots")
    verify.add_argument("--since", help="only sessions started on or after this date (ISO 8601)")
    verify.set_defaults(fn=cmd_verify)

    dock = sub.add_parser("dock", help="dock a camera image or folder by hand (card readers, tests)")
    dock_sub = dock.add_subparsers(dest="dock_action", required=True)
    attach = dock_sub.add_parser("attach", parents=[common])
    attach.add_argument("--slot", type=int, required=True)
    attach.add_argument("--serial")
    attach.add_argument("--kind", choices=["block", "image", "directory"])
    attach.add_argument("source")
    attach.set_defaults(fn=cmd_dock)
    detach = dock_sub.add_parser("detach", parents=[common])
    detach.add_argument("--slot", type=int, required=True)
    detach.set_defaults(fn=cmd_dock)

    burn_p = sub.add_parser("burn", parents=[common], help="burn evidence discs (plan, build, burn, verify)")
    what = burn_p.add_mutually_exclusive_group(required=True)
    what.add_argument("--case", type=int, help="every recording of this case (id)")
    what.add_argument("--recordings", type=int, nargs="+", metavar="ID", help="these recordings")
    what.add_argument("--all", action="store_true", help="every recording in the vault")
    burn_p.add_argument("--media", help="cd, dvd, dvd-dl, bd25, bd50, bd100 (default: burner.medium)")
    burn_p.add_argument("--drive", help="/dev/srN or stdio:/path (default: the first drive)")
    burn_p.add_argument("--dry-run", action="store_true", help="only print the plan")
    burn_p.set_defaults(fn=cmd_burn)

    disc = sub.add_parser("disc", help="evidence discs").add_subparsers(dest="disc_cmd", required=True)
    dv = disc.add_parser("verify", help="check a disc or image against its own manifest")
    dv.add_argument("source", help="/dev/srN, stdio:/path or an image file")
    dv.set_defaults(fn=cmd_disc_verify)

    demo = sub.add_parser("demo", parents=[common], help="run on the embedded default with simulated "
                          "cameras (--config: take station, ingest and camera profiles from there)")
    demo.add_argument("--cameras", type=int, default=3)
    demo.add_argument("--once", action="store_true", help="ingest once, print a summary, exit")
    demo.add_argument("--state", help="keep everything in this folder (with a config.yaml)")
    demo.add_argument("--port", type=int, default=8080)
    demo.set_defaults(fn=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_cmd", required=True)
    # Its own options are parsed by appliance.burner.bench (see main()).
    bench.add_parser("burn", help="disc image build vs xorriso -as mkisofs of the same files")
    bi = bench.add_parser("ingest", parents=[common], help="ingest vs cp -r + sync of the same files")
    bi.add_argument("--slots", type=int, default=4)
    bi.add_argument("--size", default="1GiB", help="bytes per camera (default 1GiB)")
    bi.add_argument("--files", type=int, default=8, help="files per camera")
    bi.add_argument("--dir", help="work folder (default: a temporary folder under /var/tmp)")
    bi.set_defaults(fn=cmd_bench_ingest)
    bw = bench.add_parser("web", help="search and list a generated catalog of many recordings (p95)")
    bw.add_argument("--recordings", type=int, default=1_000_000)
    bw.add_argument("--queries", type=int, default=40, help="timed requests per kind of query")
    bw.add_argument("--dir", help="work folder (default: a temporary folder under /var/tmp)")
    bw.add_argument("--keep", action="store_true", help="keep the generated catalog (reused next time)")
    bw.set_defaults(fn=cmd_bench_web)

    user = sub.add_parser("user", help="web page accounts").add_subparsers(dest="user_cmd", required=True)
    ua = user.add_parser("add", parents=[common], help="add an account (password from the terminal or stdin)")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["officer", "device_manager", "leader", "bureau_head",
                                                      "legal", "it_admin", "admin"])
    ua.add_argument("--officer", help="the officer's name in the registry (officer accounts)")
    ua.add_argument("--display-name")
    ua.set_defaults(fn=cmd_user_add)
    up = user.add_parser("passwd", parents=[common], help="set an account's password")
    up.add_argument("name")
    up.set_defaults(fn=cmd_user_passwd)
    user.add_parser("list", parents=[common], help="list accounts").set_defaults(fn=cmd_user_list)

    rp = sub.add_parser("replicate", parents=[common],
                        help="replication to headquarters: the status, or --now to run it now")
    rp.add_argument("--now", action="store_true", help="run zfs-autobackup now (one run; exit 1 if it failed)")
    rp.add_argument("--wait", type=float, default=600.0,
                    help="with --now: seconds to wait for a run already going (default 600)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(fn=cmd_replicate)

    hq_p = sub.add_parser("hq", help="at headquarters").add_subparsers(dest="hq_cmd", required=True)
    hs = hq_p.add_parser("status", help="which ingest sessions of which station have arrived "
                         "(reads the received datasets; needs root to mount their snapshots)")
    hs.add_argument("--root", default="hq/stations", help="the dataset holding one dataset per station")
    hs.add_argument("--station", help="only this station")
    hs.add_argument("--verify", action="store_true", help="re-hash every file against its manifest")
    hs.add_argument("--json", action="store_true")
    hs.set_defaults(fn=cmd_hq_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "burn"]:
        from appliance.burner.bench import main as bench_burn

        return bench_burn(argv[2:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except ApplianceError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
