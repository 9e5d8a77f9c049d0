"""Names in the three trees: originals in UDF/Rock Ridge, deterministic Joliet short names."""

import re

import pytest

from appliance.burner.errors import InvalidDiscPath
from appliance.burner.layout import JOLIET_MAX_BYTES, DiscLayout, check_disc_path, joliet_ok

LONG = "执法记录仪现场取证录像" * 3 + ".MP4"          # 33 characters, 99 bytes in UTF-8


def test_originals_kept_and_joliet_shortened_deterministically():
    a = DiscLayout()
    p = a.add(f"S1/DCIM/{LONG}")
    q = a.add("S1/DCIM/a:b?.mp4")
    r = a.add("S1/DCIM/短名.MP4")
    assert p.udf_path == f"/S1/DCIM/{LONG}" and p.rr_name == LONG
    assert r.joliet_path == "/S1/DCIM/短名.MP4"                      # Joliet holds it as is
    short = p.joliet_path.rsplit("/", 1)[1]
    assert short != LONG and short.endswith(".MP4") and joliet_ok(short)
    assert re.search(r"~[0-9a-f]{8}\.MP4$", short)
    assert q.joliet_path.endswith(".mp4") and ":" not in q.joliet_path and "?" not in q.joliet_path
    # the same names give the same short names on another disc
    b = DiscLayout()
    assert b.add(f"S1/DCIM/{LONG}").joliet_path == p.joliet_path
    assert a.joliet_renamed == {f"S1/DCIM/{LONG}": p.joliet_path[1:], "S1/DCIM/a:b?.mp4": q.joliet_path[1:]}


def test_joliet_is_case_insensitive_so_case_twins_get_distinct_names():
    a = DiscLayout()
    one = a.add("S1/FILE.MP4")
    two = a.add("S1/file.mp4")
    assert one.joliet_path == "/S1/FILE.MP4"
    assert two.joliet_path.lower() != one.joliet_path.lower()
    assert two.udf_path == "/S1/file.mp4"


def test_long_folder_names_shorten_every_child_path():
    a = DiscLayout()
    folder = "案件" * 20
    p = a.add(f"{folder}/x.mp4")
    assert p.joliet_path.startswith("/案件") and len(p.joliet_path.split("/")[1].encode()) <= JOLIET_MAX_BYTES
    assert folder in a.joliet_renamed


def test_iso9660_names_are_valid_level3_and_unique():
    a = DiscLayout()
    names = [a.add(f"S-1/{n}") for n in ("执法1.MP4", "执法2.MP4", "a b-c.mov", "noext", ".hidden")]
    for p in names:
        for part in p.iso_path.strip("/").split("/"):
            assert re.fullmatch(r"[A-Z0-9_]{1,8}(\.[A-Z0-9_]{0,8};1)?", part), part
    assert len({p.iso_path for p in names}) == len(names)


@pytest.mark.parametrize("path,reason", [
    ("", "empty"),
    ("/abs/x.mp4", "relative"),
    ("a/../b.mp4", "'..'"),
    ("a//b.mp4", "empty"),
    ("a/b\nc.mp4", "control"),
    ("a\\b.mp4", "backslash"),
    ("a/b\udcff.mp4", "UTF-8"),
    ("a/😀.mp4", "Basic Multilingual"),
    ("/".join("abcdefgh"), "levels deep"),
    ("a/" + "名" * 90 + ".mp4", "255 bytes"),
    ("a/" + "x" * 254, "UDF allows"),
])
def test_bad_paths_refused_with_reason(path, reason):
    with pytest.raises(InvalidDiscPath, match=re.escape(reason)):
        check_disc_path(path, owner="recording 9")


def test_reserved_names_and_conflicts():
    a = DiscLayout()
    with pytest.raises(InvalidDiscPath, match="reserved"):
        a.add("manifest.JSON", owner="recording 1")
    a.add("S1/x.mp4")
    with pytest.raises(InvalidDiscPath, match="already a file"):
        a.add("S1/x.mp4", owner="recording 2")
    with pytest.raises(InvalidDiscPath, match="is a file on this disc"):
        a.add("S1/x.mp4/y.mp4", owner="recording 3")
