"""《同步录音录像摄录情况记录表》: the record form of article 15.2, as HTML and as PDF.

One form per recording session on a disc, Chinese first and English second. The fields
are those the article names: the enforcement officers, the person filming, start and end
time, place, brand and model of the device, recording format and length; then the disc
label, the files with their SHA-256, and blank fields for the signatures, the date and
the unit's seal.

Nothing is invented: a fact the catalog does not have (the place, the person filming...)
is printed as an empty field to be filled in by hand. Facts that come from the
recordings (times, devices, formats, lengths) are computed from them.

:func:`form_document` gathers the facts once; :func:`render_html` and :func:`render_pdf`
only lay them out. The PDF embeds a subset of a CJK TrueType font (Debian's
``fonts-wqy-zenhei`` by default), so it prints the same on any machine.
"""

from __future__ import annotations

import html
import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from appliance.burner.errors import FormError
from appliance.burner.media import human_bytes
from appliance.burner.model import DiscRecording, PlannedDisc, RecordSession

TITLE_ZH = "同步录音录像摄录情况记录表"
TITLE_EN = "Record of Synchronous Audio and Video Recording"

#: (path, index in a TrueType collection) tried in order; the first that exists is used.
FONT_CANDIDATES: tuple[tuple[str, int, int], ...] = (
    # path, index of the regular face, index of the monospaced face
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0, 1),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0, 1),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0, 0),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0, 0),
)

# Field labels: (Chinese, English). Tests and the web page refer to these.
L_UNIT = ("单位", "Unit")
L_DISC = ("光盘编号", "Disc label")
L_CASE_NO = ("案件编号", "Case number")
L_CASE_NAME = ("案件名称", "Case name")
L_OFFICERS = ("执法人员姓名", "Names of the enforcement officers")
L_OPERATOR = ("摄录人员姓名", "Name of the person filming")
L_TIME = ("摄录起止时间", "Start and end of recording")
L_PLACE = ("地点", "Place")
L_DEVICE = ("录音录像设备品牌型号", "Brand and model of the recording device")
L_HOLDER = ("设备编号及使用人", "Device serial number and holder")
L_FORMAT = ("录音录像格式", "Recording format")
L_LENGTH = ("长度", "Length")
L_FILES = ("文件数量及大小", "Number and size of files")
L_NOTES = ("备注", "Notes")
L_SIGN_OFFICERS = ("执法人员签名", "Signatures of the enforcement officers")
L_SIGN_OPERATOR = ("摄录人员签名", "Signature of the person filming")
L_SIGN_BURNER = ("刻录人签名", "Signature of the person who burned the disc")
L_DATE = ("日期", "Date")
L_SEAL = ("单位印章", "Seal of the unit")

FIELD_LABELS = (L_UNIT, L_DISC, L_CASE_NO, L_CASE_NAME, L_OFFICERS, L_OPERATOR, L_TIME,
                L_PLACE, L_DEVICE, L_HOLDER, L_FORMAT, L_LENGTH, L_FILES, L_NOTES)
SIGNATURE_LABELS = (L_SIGN_OFFICERS, L_SIGN_OPERATOR, L_SIGN_BURNER, L_DATE, L_SEAL)


@dataclass(frozen=True)
class FormFile:
    number: int
    disc_path: str
    size: int
    start: str
    length: str
    sha256: str


@dataclass(frozen=True)
class SessionForm:
    session_id: str
    fields: tuple[tuple[tuple[str, str], str | None], ...]   # (label, value or None = blank)
    files: tuple[FormFile, ...]


@dataclass(frozen=True)
class FormDocument:
    unit_name: str
    label: str
    set_id: str
    medium: str
    created_at: str
    audit_chain_head: str | None
    image_sha256: str | None
    sessions: tuple[SessionForm, ...]


def form_document(
    disc: PlannedDisc,
    sessions: Mapping[str, RecordSession],
    *,
    unit_name: str,
    created_at: datetime,
    tz: str = "Asia/Shanghai",
    audit_chain_head: str | None = None,
    image_sha256: str | None = None,
) -> FormDocument:
    """The facts of the form for every session on ``disc``. ``image_sha256`` is only known
    after the image is built: the form on the disc leaves it out, a printed copy for the
    case file can carry it."""
    zone = ZoneInfo(tz)
    by_session: dict[str, list[DiscRecording]] = {}
    for rec in disc.recordings:
        by_session.setdefault(rec.session_id, []).append(rec)
    forms = []
    for sid, recs in by_session.items():
        info = sessions.get(sid) or RecordSession.blank(sid)
        forms.append(_session_form(disc, info, recs, unit_name, zone))
    return FormDocument(
        unit_name=unit_name,
        label=disc.label.text,
        set_id=disc.label.set_id,
        medium=disc.medium.name,
        created_at=_fmt_time(created_at, zone) or "",
        audit_chain_head=audit_chain_head,
        image_sha256=image_sha256,
        sessions=tuple(forms),
    )


def _session_form(disc: PlannedDisc, info: RecordSession, recs: Sequence[DiscRecording],
                  unit_name: str, zone: ZoneInfo) -> SessionForm:
    starts = [r.start_time for r in recs if r.start_time is not None]
    ends = [r.end_time for r in recs if r.end_time is not None]
    start = info.start_time or (min(starts, key=_sortable) if starts else None)
    end = info.end_time or (max(ends, key=_sortable) if ends else None)
    time_text = None
    if start or end:
        time_text = f"{_fmt_time(start, zone) or '＿＿＿＿'} 至 to {_fmt_time(end, zone) or '＿＿＿＿'}"

    devices = _unique(f"{r.device_brand} {r.device_model}".strip() for r in recs)
    holders = _unique(
        f"{r.device_serial}（{r.officer}）" if r.officer else r.device_serial
        for r in recs if r.device_serial)
    formats = _unique(r.format for r in recs if r.format)

    known = [r.duration_s for r in recs if r.duration_s is not None]
    unknown = len(recs) - len(known)
    length = None
    if known:
        length = _fmt_duration(sum(known))
        if unknown:
            length += f"（另有 {unknown} 个文件时长未知 / {unknown} more of unknown length）"

    discs = disc.discs_of_session(info.session_id)
    disc_text = disc.label.text
    if len(discs) > 1:
        others = "、".join(f"{i}/{disc.label.count}" for i in discs)
        disc_text += f"（本次摄录分刻于第 {others} 张 / this session spans discs {others}）"

    total = sum(r.size for r in recs)
    fields = (
        (L_UNIT, unit_name or None),
        (L_DISC, disc_text),
        (L_CASE_NO, info.case_number),
        (L_CASE_NAME, info.case_name),
        (L_OFFICERS, "、".join(info.officers) if info.officers else None),
        (L_OPERATOR, info.camera_operator),
        (L_TIME, time_text),
        (L_PLACE, info.place),
        (L_DEVICE, "；".join(d for d in devices if d) or None),
        (L_HOLDER, "；".join(holders) or None),
        (L_FORMAT, "；".join(formats) or None),
        (L_LENGTH, length),
        (L_FILES, f"{len(recs)} 个 / files, {human_bytes(total)} ({total:,} bytes)"),
        (L_NOTES, info.notes),
    )
    files = tuple(
        FormFile(
            number=i,
            disc_path=r.disc_path,
            size=r.size,
            start=_fmt_time(r.start_time, zone) or "",
            length=_fmt_clock(r.duration_s) if r.duration_s is not None else "",
            sha256=r.sha256,
        )
        for i, r in enumerate(recs, start=1)
    )
    return SessionForm(session_id=info.session_id, fields=fields, files=files)


def _sortable(dt: datetime) -> float:
    return dt.timestamp() if dt.tzinfo else dt.replace(tzinfo=ZoneInfo("UTC")).timestamp()


def _unique(values) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _fmt_time(dt: datetime | None, zone: ZoneInfo) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(zone)
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def _fmt_clock(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def _fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    zh = (f"{h}小时" if h else "") + (f"{m}分" if h or m else "") + f"{sec}秒"
    return f"{zh} ({h}:{m:02d}:{sec:02d})"


# --- HTML ------------------------------------------------------------------------------

_CSS = """
body { font-family: "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Microsoft YaHei", sans-serif;
       margin: 2em; color: #000; }
h1 { font-size: 1.5em; text-align: center; margin-bottom: 0; }
h2 { font-size: 1em; text-align: center; font-weight: normal; margin-top: .2em; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; }
th, td { border: 1px solid #000; padding: .35em .5em; vertical-align: top; text-align: left; }
th { width: 32%; font-weight: normal; background: #f2f2f2; }
th .en, td .en { display: block; font-size: .8em; color: #333; }
td.blank { height: 2.2em; }
td.seal { height: 9em; }
.files td, .files th { font-size: .8em; width: auto; }
.hash { font-family: "WenQuanYi Zen Hei Mono", monospace; word-break: break-all; }
.meta { font-size: .8em; color: #333; }
section { page-break-after: always; }
section:last-child { page-break-after: auto; }
@media print { body { margin: 0; } }
"""


def render_html(doc: FormDocument) -> str:
    """The form as one self-contained HTML page (no external resources)."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{e(TITLE_ZH)} / {e(TITLE_EN)} · {e(doc.label)}</title>",
        f"<style>{_CSS}</style></head><body>",
    ]
    for form in doc.sessions:
        out.append("<section>")
        out.append(f"<h1>{e(TITLE_ZH)}</h1><h2>{e(TITLE_EN)}</h2>")
        out.append(f'<p class="meta">摄录批次 / Session: {e(form.session_id)}</p>')
        out.append("<table>")
        for (zh, en), value in form.fields:
            if value is None:
                cell = '<td class="blank"></td>'
            else:
                cell = f"<td>{e(value)}</td>"
            out.append(f'<tr><th>{e(zh)}<span class="en">{e(en)}</span></th>{cell}</tr>')
        out.append("</table>")
        out.append('<table class="files"><tr><th>序号<span class="en">No.</span></th>'
                   '<th>文件<span class="en">File</span></th><th>大小<span class="en">Size</span></th>'
                   '<th>开始时间<span class="en">Start</span></th><th>时长<span class="en">Length</span></th>'
                   '<th>SHA-256</th></tr>')
        for f in form.files:
            out.append(
                f"<tr><td>{f.number}</td><td>{e(f.disc_path)}</td><td>{f.size:,}</td>"
                f"<td>{e(f.start)}</td><td>{e(f.length)}</td><td class=\"hash\">{e(f.sha256)}</td></tr>")
        out.append("</table><table>")
        for zh, en in SIGNATURE_LABELS:
            css = "seal" if (zh, en) == L_SEAL else "blank"
            out.append(f'<tr><th>{e(zh)}<span class="en">{e(en)}</span></th><td class="{css}"></td></tr>')
        out.append("</table>")
        out.append(_html_footer(doc))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_footer(doc: FormDocument) -> str:
    e = html.escape
    lines = [f"光盘 / Disc {e(doc.label)} · {e(doc.medium)} · 制作时间 / made {e(doc.created_at)}"]
    if doc.audit_chain_head:
        lines.append(f'审计日志链头 / audit chain head: <span class="hash">{e(doc.audit_chain_head)}</span>')
    if doc.image_sha256:
        lines.append(f'光盘映像 SHA-256 / image SHA-256: <span class="hash">{e(doc.image_sha256)}</span>')
    else:
        lines.append("各文件的 SHA-256 见光盘 SHA256SUMS 与 MANIFEST.json / "
                     "every file's SHA-256 is in SHA256SUMS and MANIFEST.json on the disc")
    return '<p class="meta">' + "<br>".join(lines) + "</p>"


# --- PDF -------------------------------------------------------------------------------

_FONT_LOCK = threading.Lock()
_REGISTERED: dict[tuple[str, int, int], tuple[str, str]] = {}


def find_cjk_font() -> tuple[str, int, int]:
    """The first CJK TrueType font of :data:`FONT_CANDIDATES` that is installed."""
    for path, regular, mono in FONT_CANDIDATES:
        if Path(path).is_file():
            return path, regular, mono
    raise FormError("no CJK TrueType font found; install the Debian package fonts-wqy-zenhei "
                    f"(looked for {', '.join(p for p, _, _ in FONT_CANDIDATES)})")


def _register_fonts(font: tuple[str, int, int] | None) -> tuple[str, str]:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    key = font or find_cjk_font()
    with _FONT_LOCK:
        if key in _REGISTERED:
            return _REGISTERED[key]
        path, regular, mono = key
        n = len(_REGISTERED)
        names = (f"ApplianceCJK{n}", f"ApplianceCJKMono{n}")
        try:
            pdfmetrics.registerFont(TTFont(names[0], path, subfontIndex=regular))
            pdfmetrics.registerFont(TTFont(names[1], path, subfontIndex=mono))
        except (TTFError, OSError) as exc:
            raise FormError(f"cannot use the font {path}: {exc}") from exc
        _REGISTERED[key] = names
        return names


def render_pdf(doc: FormDocument, *, font: tuple[str, int, int] | None = None) -> bytes:
    """The form as an A4 PDF with the CJK font embedded (subset). ``font`` is
    ``(path, regular face index, monospaced face index)``; default: :func:`find_cjk_font`."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer,
                                    Table, TableStyle)

    regular, mono = _register_fonts(font)
    esc = html.escape
    s_title = ParagraphStyle("title", fontName=regular, fontSize=16, leading=22, alignment=1)
    s_sub = ParagraphStyle("sub", fontName=regular, fontSize=10, leading=14, alignment=1)
    s_label = ParagraphStyle("label", fontName=regular, fontSize=9, leading=10.5, wordWrap="CJK")
    s_value = ParagraphStyle("value", fontName=regular, fontSize=9.5, leading=12, wordWrap="CJK")
    s_small = ParagraphStyle("small", fontName=regular, fontSize=7, leading=8.5, wordWrap="CJK")
    s_hash = ParagraphStyle("hash", fontName=mono, fontSize=6.2, leading=7.5, wordWrap="CJK")
    s_meta = ParagraphStyle("meta", fontName=regular, fontSize=7.5, leading=9.5, wordWrap="CJK")

    def label(zh: str, en: str) -> Paragraph:
        return Paragraph(f"{esc(zh)}<br/><font size=6.5>{esc(en)}</font>", s_label)

    grid = TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.6, colors.black),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("BACKGROUND", (0, 0), (0, -1), colors.Color(0.95, 0.95, 0.95)),
    ])
    width = A4[0] - 30 * mm
    story: list = []
    for n, form in enumerate(doc.sessions):
        if n:
            story.append(PageBreak())
        story.append(Paragraph(esc(TITLE_ZH), s_title))
        story.append(Paragraph(esc(TITLE_EN), s_sub))
        story.append(Paragraph(f"摄录批次 / Session: {esc(form.session_id)}", s_meta))
        story.append(Spacer(1, 3 * mm))
        rows = [[label(zh, en), Paragraph(esc(v), s_value) if v is not None else ""]
                for (zh, en), v in form.fields]
        heights = [None if v is not None else 8 * mm for _, v in form.fields]
        t = Table(rows, colWidths=[0.3 * width, 0.7 * width], rowHeights=heights)
        t.setStyle(grid)
        story.append(t)
        story.append(Spacer(1, 3 * mm))

        frows = [[Paragraph(h, s_small) for h in
                  ("序号<br/>No.", "文件<br/>File", "大小<br/>Size", "开始时间<br/>Start",
                   "时长<br/>Length", "SHA-256")]]
        for f in form.files:
            frows.append([
                Paragraph(str(f.number), s_small),
                Paragraph(esc(f.disc_path), s_small),
                Paragraph(f"{f.size:,}", s_small),
                Paragraph(esc(f.start), s_small),
                Paragraph(esc(f.length), s_small),
                Paragraph(f"{f.sha256[:32]}<br/>{f.sha256[32:]}", s_hash),
            ])
        ft = Table(frows, colWidths=[w * width for w in (0.06, 0.32, 0.13, 0.15, 0.11, 0.23)],
                   repeatRows=1)
        ft.setStyle(TableStyle([
            ("GRID", (0, 0), (-1, -1), 0.4, colors.black),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.95, 0.95, 0.95)),
        ]))
        story.append(ft)
        story.append(Spacer(1, 3 * mm))
        sig_officers, sig_operator, sig_burner, sig_date, sig_seal = SIGNATURE_LABELS
        srows = [
            [label(*sig_officers), "", label(*sig_operator), ""],
            [label(*sig_burner), "", label(*sig_date), ""],
            [label(*sig_seal), "", "", ""],
        ]
        st = Table(srows, colWidths=[w * width for w in (0.2, 0.3, 0.2, 0.3)],
                   rowHeights=[13 * mm, 13 * mm, 30 * mm])
        st.setStyle(TableStyle([
            ("GRID", (0, 0), (-1, -1), 0.6, colors.black),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("SPAN", (1, 2), (3, 2)),
            ("BACKGROUND", (0, 0), (0, -1), colors.Color(0.95, 0.95, 0.95)),
            ("BACKGROUND", (2, 0), (2, 1), colors.Color(0.95, 0.95, 0.95)),
        ]))
        story.append(KeepTogether([st]))

    footer = [f"光盘 / Disc {doc.label} · {doc.medium} · 制作时间 / made {doc.created_at}"]
    if doc.audit_chain_head:
        footer.append(f"审计日志链头 / audit chain head: {doc.audit_chain_head}")
    if doc.image_sha256:
        footer.append(f"光盘映像 SHA-256 / image SHA-256: {doc.image_sha256}")

    def on_page(canvas, document) -> None:
        canvas.saveState()
        canvas.setFont(regular, 7)
        y = 8 * mm + 9 * (len(footer) - 1)
        for line in footer:
            canvas.drawString(15 * mm, y, line)
            y -= 9
        canvas.drawRightString(A4[0] - 15 * mm, 8 * mm, f"第 {document.page} 页 / page {document.page}")
        canvas.restoreState()

    buf = io.BytesIO()
    pdf = SimpleDocTemplate(
        buf, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=12 * mm,
        bottomMargin=12 * mm + 9 * len(footer),
        title=f"{TITLE_ZH} {doc.label}", author=doc.unit_name, subject=TITLE_EN,
        creator="evidence appliance", initialFontName=regular, initialFontSize=9.5)
    try:
        pdf.build(story, onFirstPage=on_page, onLaterPages=on_page)
    except Exception as exc:  # reportlab raises plain exceptions for layout problems
        raise FormError(f"cannot lay out the PDF form: {exc}") from exc
    return buf.getvalue()
