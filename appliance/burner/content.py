"""The disc's own files: ``MANIFEST.json``, ``SHA256SUMS``, ``index.html``, ``README.txt``.

They are small and made in memory before the image is written. ``SHA256SUMS`` is in the
format of GNU ``sha256sum`` (``<hex>  <path>``, UTF-8 paths relative to the disc's root)
so that ``sha256sum -c SHA256SUMS`` on any Linux machine checks every file, the
manifest included. The manifest lists the disc set, recordings, sessions, officers,
devices, hashes, the Joliet short names and the audit chain's head hash at burn time.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import quote

from appliance import __version__
from appliance.burner.layout import FORM_HTML, FORM_PDF, INDEX, MANIFEST, README, SHA256SUMS
from appliance.burner.model import DiscRecording, PlannedDisc, RecordSession

MANIFEST_FORMAT = "evidence-appliance-disc/1"

VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/mp4",
               ".webm": "video/webm", ".ogv": "video/ogg"}
AUDIO_TYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".aac": "audio/aac",
               ".m4a": "audio/mp4", ".ogg": "audio/ogg"}
IMAGE_TYPES = (".jpg", ".jpeg", ".png")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def manifest(
    disc: PlannedDisc,
    sessions: Mapping[str, RecordSession],
    *,
    station_name: str,
    created_at: datetime,
    audit_chain_head: str | None,
    volume_id: str,
    joliet_names: Mapping[str, str],
    disc_files: Sequence[tuple[str, bytes, str]],
    generator: str,
) -> dict:
    """The manifest as a JSON-ready dict. ``disc_files`` are the disc's other files
    ``(path, content, role)``; their hashes are listed too."""
    label = disc.label
    officers = sorted({r.officer for r in disc.recordings if r.officer}
                      | {o for s in disc.session_ids for o in _info(sessions, s).officers})
    devices: dict[str, dict] = {}
    for r in disc.recordings:
        if r.device_serial:
            devices.setdefault(r.device_serial, {
                "serial": r.device_serial, "brand": r.device_brand, "model": r.device_model})
    return {
        "format": MANIFEST_FORMAT,
        "generator": generator,
        "created_at": created_at.isoformat(),
        "station": {"id": label.station, "name": station_name},
        "disc": {
            "label": label.text, "set_id": label.set_id, "index": label.index, "count": label.count,
            "medium": disc.medium.key, "medium_name": disc.medium.name, "volume_id": volume_id,
        },
        "audit_chain_head": audit_chain_head,
        "sessions": [
            {
                "session_id": sid,
                "officers": list(_info(sessions, sid).officers),
                "camera_operator": _info(sessions, sid).camera_operator,
                "place": _info(sessions, sid).place,
                "case_number": _info(sessions, sid).case_number,
                "case_name": _info(sessions, sid).case_name,
                "start_time": _iso(_info(sessions, sid).start_time),
                "end_time": _iso(_info(sessions, sid).end_time),
                "notes": _info(sessions, sid).notes,
                "on_discs": list(disc.discs_of_session(sid)),
                "recordings": [r.recording_id for r in disc.recordings if r.session_id == sid],
            }
            for sid in disc.session_ids
        ],
        "recordings": [_recording(r, joliet_names) for r in disc.recordings],
        "officers": officers,
        "devices": list(devices.values()),
        "files": [
            {"path": path, "size": len(content), "sha256": sha256_hex(content), "role": role}
            for path, content, role in disc_files
        ],
        "joliet_names": dict(sorted(joliet_names.items())),
        "verify": "sha256sum -c SHA256SUMS",
    }


def _info(sessions: Mapping[str, RecordSession], sid: str) -> RecordSession:
    return sessions.get(sid) or RecordSession.blank(sid)


def _recording(r: DiscRecording, joliet_names: Mapping[str, str]) -> dict:
    out = {
        "recording_id": r.recording_id,
        "session_id": r.session_id,
        "path": r.disc_path,
        "size": r.size,
        "sha256": r.sha256.lower(),
        "officer": r.officer,
        "device": {"serial": r.device_serial, "brand": r.device_brand, "model": r.device_model},
        "start_time": _iso(r.start_time),
        "end_time": _iso(r.end_time),
        "duration_s": r.duration_s,
        "format": r.format,
    }
    if r.disc_path in joliet_names:
        out["joliet_path"] = joliet_names[r.disc_path]
    return out


def manifest_bytes(data: dict) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def sha256sums(entries: Sequence[tuple[str, str]]) -> bytes:
    """``SHA256SUMS`` for ``(sha256, path)`` pairs. Paths never hold a newline or a
    backslash (:func:`appliance.burner.layout.check_disc_path` refuses them), so no
    escaping is needed."""
    return "".join(f"{sha.lower()}  {path}\n" for sha, path in entries).encode("utf-8")


def _href(path: str) -> str:
    return "/".join(quote(part, safe="") for part in path.split("/"))


def index_html(disc: PlannedDisc, sessions: Mapping[str, RecordSession], *, station_name: str) -> bytes:
    """A page that lists the recordings of the disc by session and plays them in a
    browser straight from the disc (relative links, no script, no network)."""
    e = html.escape
    label = disc.label.text
    out = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>证据光盘 / Evidence disc {e(label)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "video,audio{display:block;max-width:100%;margin:.3em 0 1em}"
        "td,th{padding:.2em .6em;text-align:left;vertical-align:top}"
        ".hash{font-family:monospace;font-size:.8em;word-break:break-all}</style>",
        "</head><body>",
        f"<h1>证据光盘 / Evidence disc {e(label)}</h1>",
        f"<p>{e(station_name)} · {e(disc.medium.name)} · "
        f"{len(disc.recordings)} 个文件 / files</p>",
        "<ul>",
        f'<li><a href="{FORM_PDF}">同步录音录像摄录情况记录表 (PDF)</a> · '
        f'<a href="{FORM_HTML}">HTML</a></li>',
        f'<li><a href="{README}">README.txt</a>：如何校验本光盘 / how to verify this disc</li>',
        f'<li><a href="{MANIFEST}">MANIFEST.json</a> · <a href="{SHA256SUMS}">SHA256SUMS</a></li>',
        "</ul>",
    ]
    for sid in disc.session_ids:
        info = _info(sessions, sid)
        recs = [r for r in disc.recordings if r.session_id == sid]
        head = f"摄录批次 / Session {sid}"
        if info.case_number or info.case_name:
            head += f" · {info.case_number or ''} {info.case_name or ''}".rstrip()
        out.append(f"<h2>{e(head)}</h2>")
        for r in recs:
            href = _href(r.disc_path)
            ext = "." + r.disc_path.rsplit(".", 1)[-1].lower() if "." in r.disc_path else ""
            when = r.start_time.isoformat(sep=" ") if r.start_time else ""
            out.append(f'<h3><a href="{href}">{e(r.disc_path)}</a></h3>')
            out.append(f"<p>{e(r.officer)} · {e(r.device_brand)} {e(r.device_model)} "
                       f"{e(r.device_serial)} · {e(when)} · {r.size:,} bytes<br>"
                       f'<span class="hash">SHA-256 {e(r.sha256)}</span></p>')
            if ext in VIDEO_TYPES:
                out.append(f'<video controls preload="metadata" src="{href}"></video>')
            elif ext in AUDIO_TYPES:
                out.append(f'<audio controls preload="metadata" src="{href}"></audio>')
            elif ext in IMAGE_TYPES:
                out.append(f'<img src="{href}" alt="{e(r.disc_path)}" style="max-width:100%">')
    out.append("</body></html>")
    return ("\n".join(out) + "\n").encode("utf-8")


def readme(disc: PlannedDisc, *, station_name: str, audit_chain_head: str | None) -> bytes:
    """How to check this disc, in Chinese and English, for whoever holds it later."""
    label = disc.label.text
    head = audit_chain_head or "（未提供 / not given）"
    text = f"""证据光盘 {label}
Evidence disc {label}
{station_name}

本光盘由执法音像证据一体机制作，内容如下 / Contents:
  {INDEX:<18} 在浏览器中打开，可列出并播放全部录像 / open in a browser to list and play the recordings
  {FORM_PDF:<18} 同步录音录像摄录情况记录表（PDF，打印后签名盖章）/ the record form (PDF, print, sign, seal)
  {FORM_HTML:<18} 同一记录表的网页版 / the same form as a web page
  {MANIFEST:<18} 光盘清单：光盘组、录像、摄录批次、执法人员、设备、哈希值 / manifest: set, recordings, sessions, officers, devices, hashes
  {SHA256SUMS:<18} 每个文件的 SHA-256 / the SHA-256 of every file
  其余文件夹 / folders: 原始录像文件，未经任何改动 / the original recordings, unchanged

如何校验 / How to verify
------------------------
1. Linux：在光盘根目录执行 / in the disc's root folder run:

       sha256sum -c SHA256SUMS

   每一行都应显示“OK”/“成功”；任何 FAILED 表示文件已损坏或被改动。
   Every line must say OK; any FAILED means a file is damaged or was altered.

2. Windows PowerShell（在光盘根目录 / in the disc's root folder）:

       Get-Content -Encoding UTF8 SHA256SUMS | ForEach-Object {{
         $h, $p = $_ -split '  ', 2
         $a = (Get-FileHash -Algorithm SHA256 -LiteralPath $p).Hash.ToLower()
         if ($a -eq $h) {{ "OK      $p" }} else {{ "FAILED  $p" }} }}

3. 整张光盘 / The whole disc: 光盘映像的 SHA-256 和大小记录在一体机目录及打印的记录表上；
   The image's SHA-256 and size are in the appliance's catalog and on the printed form:

       head -c <大小/size> /dev/sr0 | sha256sum

4. MANIFEST.json 中的 "audit_chain_head" 是刻录时审计日志链的头部哈希，
   可与一体机的审计日志核对，证明该日志此后未被改写：
   "audit_chain_head" in MANIFEST.json is the head hash of the appliance's audit log
   when this disc was burned; the log can be checked against it later.

       audit_chain_head = {head}

文件名 / File names: UDF 与 Rock Ridge 保存原始文件名（含中文）；Joliet 无法容纳的文件名
已按确定规则缩短，对照表见 MANIFEST.json 的 "joliet_names"。
UDF and Rock Ridge keep the original names (Chinese included); names Joliet cannot hold
are shortened deterministically, mapped in "joliet_names" of MANIFEST.json.
"""
    # CRLF and a byte-order mark, so that Windows Notepad shows the Chinese correctly too.
    return b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8")


def generator_name() -> str:
    try:
        from importlib.metadata import version
        return f"evidence-appliance {__version__} (pycdlib {version('pycdlib')})"
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return f"evidence-appliance {__version__}"
