"""Media facts (duration, start time, codec, resolution) from ``ffprobe``.

Runs after the copy, off the critical path: a file ffprobe cannot read is still
evidence; the failure is stored beside it, never instead of it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

TIMEOUT_S = 60


async def probe(path: Path) -> dict:
    """The facts the catalog keeps for a recording; ``error`` set when ffprobe failed."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
            "--", str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        return {"error": "ffprobe is not installed"}
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return {"error": f"ffprobe took longer than {TIMEOUT_S} s"}
    if proc.returncode != 0:
        return {"error": err.decode("utf-8", "replace").strip()[:500] or f"exit {proc.returncode}"}
    return facts_from_ffprobe(json.loads(out or b"{}"))


def facts_from_ffprobe(data: dict) -> dict:
    """Pick the catalog's fields out of ffprobe's JSON."""
    fmt = data.get("format", {})
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    main = video or audio or {}
    duration = fmt.get("duration") or main.get("duration")
    codec = main.get("codec_name")
    width, height = (video or {}).get("width"), (video or {}).get("height")
    container = (fmt.get("format_name") or "").split(",")[0].upper()
    described = " ".join(x for x in (container, (codec or "").upper(),
                                     f"{width}x{height}" if width and height else "") if x)
    return {
        "duration_s": float(duration) if duration not in (None, "N/A") else None,
        "start_time": (fmt.get("tags") or {}).get("creation_time"),
        "format": described or None,
        "codec": codec,
        "width": width,
        "height": height,
    }
