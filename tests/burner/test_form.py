"""The record form of article 15.2: Chinese labels in the PDF text, blanks never invented."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone

from appliance.burner import form
from appliance.burner.media import MEDIA
from appliance.burner.model import RecordSession
from appliance.burner.plan import plan_discs

from .conftest import require

CREATED = datetime(2024, 5, 2, 1, 0, tzinfo=timezone.utc)


def _disc(make_recordings):
    recs = make_recordings([("S1/DCIM/执法记录仪_0001.MP4", 1000), ("S1/DCIM/FILE0002.MP4", 2000)],
                           session="S1")
    recs += make_recordings([("S2/<script>alert(1)</script>.mp4", 500)], session="S2", officer="李四",
                            serial="DSJ0002")
    return plan_discs(recs, MEDIA["cd"], station="demo", serial=7, year=2024).discs[0]


def _pdf_text(tmp_path, data: bytes) -> str:
    require("pdftotext")
    pdf = tmp_path / "form.pdf"
    pdf.write_bytes(data)
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], check=True,
                          capture_output=True).stdout.decode("utf-8")


def test_pdf_has_the_chinese_field_labels_and_facts(tmp_path, make_recordings):
    disc = _disc(make_recordings)
    sessions = {"S1": RecordSession("S1", officers=("张三", "王五"), camera_operator="张三",
                                    case_number="农执罚〔2024〕12号", case_name="销售假劣种子案")}
    doc = form.form_document(disc, sessions, unit_name="某县农业综合执法大队", created_at=CREATED,
                             audit_chain_head="ab" * 32)
    text = _pdf_text(tmp_path, form.render_pdf(doc))
    for zh, en in form.FIELD_LABELS + form.SIGNATURE_LABELS:
        assert zh in text, zh
    assert form.TITLE_ZH in text and form.TITLE_EN in text
    for fact in ("张三、王五", "农执罚〔2024〕12号", "某县农业综合执法大队", "华德安 DSJ-V9",
                 "MP4 H.264 1920x1080", "demo-2024-0007-1/1", "2024-05-01 16:40:00"):
        assert fact in text, fact
    # Chinese first, English second
    assert text.index("执法人员姓名") < text.index("Names of the enforcement officers")


def test_pdf_embeds_the_cjk_font(tmp_path, make_recordings):
    require("pdffonts")
    doc = form.form_document(_disc(make_recordings), {}, unit_name="站", created_at=CREATED)
    pdf = tmp_path / "f.pdf"
    pdf.write_bytes(form.render_pdf(doc))
    fonts = subprocess.run(["pdffonts", str(pdf)], check=True, capture_output=True, text=True).stdout
    cjk = [line for line in fonts.splitlines() if "WenQuanYi" in line]
    assert cjk and all(" yes yes yes " in line for line in cjk)


def test_unknown_facts_are_blank_never_invented(make_recordings):
    disc = _disc(make_recordings)
    doc = form.form_document(disc, {}, unit_name="站", created_at=CREATED)
    s2 = next(s for s in doc.sessions if s.session_id == "S2")
    fields = dict(s2.fields)
    for label in (form.L_PLACE, form.L_OFFICERS, form.L_OPERATOR, form.L_CASE_NO, form.L_NOTES):
        assert fields[label] is None
    # facts that come from the recordings are filled in
    assert fields[form.L_DEVICE] == "华德安 DSJ-V9"
    assert "DSJ0002（李四）" == fields[form.L_HOLDER]
    html = form.render_html(doc)
    assert '<td class="blank"></td>' in html


def test_html_escapes_names_and_has_every_label(make_recordings):
    doc = form.form_document(_disc(make_recordings), {}, unit_name="站", created_at=CREATED)
    html = form.render_html(doc)
    assert "<script>" not in html and "&lt;script&gt;" in html
    for zh, en in form.FIELD_LABELS + form.SIGNATURE_LABELS:
        assert zh in html and en in html


def test_partly_unknown_length_says_so(make_recordings):
    disc = _disc(make_recordings)
    from dataclasses import replace
    recs = list(disc.recordings)
    recs[0] = replace(recs[0], duration_s=None)
    disc = replace(disc, recordings=tuple(recs))
    doc = form.form_document(disc, {}, unit_name="站", created_at=CREATED)
    s1 = dict(next(s for s in doc.sessions if s.session_id == "S1").fields)
    assert "另有 1 个文件时长未知" in s1[form.L_LENGTH]
