"""`zfs diff -H -F` read back, and the rule for letting one snapshot stand in for older ones."""

from __future__ import annotations

from appliance.vault import zfsdiff
from appliance.vault.zfsdiff import Change


def _escaped(name: str) -> str:
    """How OpenZFS's stream_bytes prints a name: printable ASCII as is, every other byte,
    the space and the backslash as \\NNNN."""
    return "".join(chr(b) if 32 < b < 127 and b != 92 else f"\\{b:04o}" for b in name.encode())


def test_chinese_names_and_spaces_come_back_as_written():
    name = "执法记录仪 片段\\01.MP4"
    assert zfsdiff.unescape(_escaped(name)) == name


def test_lines_become_vault_relative_changes():
    clip = "2026/11/27/DSJ1001/S1/files/DCIM/执法_0001.MP4"
    out = "\n".join([
        f"-\tF\t/tank/ev/media/{_escaped(clip)}",
        "M\t/\t/tank/ev/media/2026/11/27/DSJ1001/S1/files/DCIM",
        "+\tF\t/tank/ev/media/2026/11/28/DSJ1002/S2/manifest.json",
        "R\tF\t/tank/ev/media/2026/11/28/DSJ1002/S2/.partial-ab12\t/tank/ev/media/2026/11/28/DSJ1002/S2/x.MP4",
        "M\tF\t/tank/ev/media/2026/11/28/DSJ1002/S2/y.MP4\t(+1)",
        "M\t/\t/tank/ev/media",
    ]) + "\n"
    changes = zfsdiff.parse(out, "/tank/ev/media", "media")
    assert changes == [
        Change("-", "F", f"media/{clip}"),
        Change("M", "/", "media/2026/11/27/DSJ1001/S1/files/DCIM"),
        Change("+", "F", "media/2026/11/28/DSJ1002/S2/manifest.json"),
        Change("R", "F", "media/2026/11/28/DSJ1002/S2/.partial-ab12", "media/2026/11/28/DSJ1002/S2/x.MP4"),
        Change("M", "F", "media/2026/11/28/DSJ1002/S2/y.MP4"),
        Change("M", "/", "media"),
    ]


def test_what_the_vault_does_passes_and_changed_files_are_handed_back_to_check():
    purged = {"media/a/old.MP4"}
    changes = [
        Change("+", "F", "media/b/new.MP4"), Change("+", "/", "media/b"),
        Change("M", "/", "media/a"),
        Change("-", "F", "media/a/old.MP4"),
        Change("-", "F", "media/b/.partial-1"), Change("M", "F", "media/b/.partial-2"),
        Change("R", "F", "media/b/.partial-3", "media/b/c.MP4"),
        Change("M", "F", "media/b/d.MP4"),
        Change("-", "F", "media/b/manifest.json"), Change("+", "F", "media/b/manifest.json"),
    ]
    problems, modified = zfsdiff.judge(changes, purged.__contains__)
    assert problems == [] and modified == ["media/b/d.MP4", "media/b/manifest.json"]


def test_a_removal_without_a_purge_a_rename_or_a_link_is_refused():
    changes = [
        Change("-", "F", "media/a/kept.MP4"),
        Change("R", "F", "media/a/x.MP4", "media/a/y.MP4"),
        Change("-", "@", "media/a/link"),
    ]
    problems, modified = zfsdiff.judge(changes, lambda path: False)
    assert len(problems) == 3 and modified == []
    assert "media/a/kept.MP4: removed, but no approved purge removed it" in problems
    assert any("renamed to media/a/y.MP4" in p for p in problems)
