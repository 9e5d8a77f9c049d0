"""Registers and reports as files: CSV for spreadsheets, PDF for printing and filing.

A document is a title and sections; a section is a title, column headers and rows of text.
The CSV is UTF-8 with a byte-order mark (so that the spreadsheets used in Chinese offices
open it as UTF-8), one block per section. The PDF is A4 landscape with the CJK font the
record form uses (Debian's ``fonts-wqy-zenhei``) embedded, page numbers, the station and
the audit chain's head on every page. Both are built in memory: registers and reports are
small. The PDF is blocking (run it in a thread).
"""

from __future__ import annotations

import csv
import html
import io
import threading
from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from appliance.burner.form import find_cjk_font


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    empty: str = "—"


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section]
    footer: list[str] = field(default_factory=list)


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def to_csv(doc: Document) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([doc.title])
    writer.writerow([doc.subtitle])
    for section in doc.sections:
        writer.writerow([])
        writer.writerow([section.title])
        writer.writerow(section.headers)
        for row in section.rows:
            # a cell that a spreadsheet would run as a formula is written as text
            writer.writerow([("'" + c) if c[:1] in ("=", "+", "-", "@") and not _number(c) else c
                             for c in map(cell, row)])
    for line in doc.footer:
        writer.writerow([line])
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def attachment(body: bytes, filename: str, content_type: str) -> web.Response:
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return web.Response(body=body, content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{ascii_name}"; filename*=UTF-8\'\'{quote(filename, safe="")}'})


def csv_response(doc: Document, filename: str) -> web.Response:
    response = attachment(to_csv(doc), filename, "text/csv")
    response.charset = "utf-8"
    return response


_FONT_LOCK = threading.Lock()
_FONTS: dict[tuple[str, int], str] = {}


def _font() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    path, regular, _mono = find_cjk_font()
    with _FONT_LOCK:
        if (path, regular) not in _FONTS:
            name = f"RegisterCJK{len(_FONTS)}"
            pdfmetrics.registerFont(TTFont(name, path, subfontIndex=regular))
            _FONTS[(path, regular)] = name
        return _FONTS[(path, regular)]


def to_pdf(doc: Document) -> bytes:
    """The document as an A4 landscape PDF with the CJK font embedded."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font = _font()
    esc = html.escape
    s_title = ParagraphStyle("t", fontName=font, fontSize=15, leading=20, alignment=1)
    s_sub = ParagraphStyle("s", fontName=font, fontSize=9, leading=12, alignment=1)
    s_head = ParagraphStyle("h", fontName=font, fontSize=11, leading=15, spaceBefore=6)
    s_cell = ParagraphStyle("c", fontName=font, fontSize=7.5, leading=9.5, wordWrap="CJK")
    s_th = ParagraphStyle("th", parent=s_cell, textColor=colors.Color(0.2, 0.2, 0.2))
    page = landscape(A4)
    width = page[0] - 24 * mm
    story: list = [Paragraph(esc(doc.title), s_title), Paragraph(esc(doc.subtitle), s_sub), Spacer(1, 4 * mm)]
    for section in doc.sections:
        story.append(Paragraph(esc(section.title), s_head))
        if not section.rows:
            story.append(Paragraph(esc(section.empty), s_cell))
            continue
        weights = [max(3, min(40, max([len(h)] + [len(cell(r[i])) for r in section.rows[:200]])))
                   for i, h in enumerate(section.headers)]
        total = sum(weights)
        data = [[Paragraph(esc(h), s_th) for h in section.headers]]
        data += [[Paragraph(esc(cell(v)), s_cell) for v in row] for row in section.rows]
        table = Table(data, colWidths=[width * w / total for w in weights], repeatRows=1)
        table.setStyle(TableStyle([
            ("GRID", (0, 0), (-1, -1), 0.4, colors.black),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.93, 0.93, 0.93)),
        ]))
        story.append(table)

    def on_page(canvas, document) -> None:  # type: ignore[no-untyped-def]
        canvas.saveState()
        canvas.setFont(font, 7)
        y = 7 * mm + 9 * len(doc.footer)
        for line in doc.footer:
            canvas.drawString(12 * mm, y, line)
            y -= 9
        canvas.drawRightString(page[0] - 12 * mm, 7 * mm, f"第 {document.page} 页 / page {document.page}")
        canvas.restoreState()

    buf = io.BytesIO()
    SimpleDocTemplate(buf, pagesize=page, leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm,
                      bottomMargin=12 * mm + 9 * (len(doc.footer) + 1), title=doc.title,
                      creator="evidence appliance").build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buf.getvalue()


def pdf_response(body: bytes, filename: str) -> web.Response:
    response = attachment(body, filename, "application/pdf")
    response.headers["Content-Disposition"] = response.headers["Content-Disposition"].replace("attachment", "inline", 1)
    return response
