import pytest

from appliance.burner.errors import UnknownMedium
from appliance.burner.media import MEDIA, SECTOR, from_drive_profile, larger_media, medium


def test_real_sector_counts_and_margin():
    assert MEDIA["cd"].sectors == 359_846
    assert MEDIA["dvd"].capacity == 4_700_372_992
    assert MEDIA["dvd-dl"].capacity == 8_547_991_552
    assert MEDIA["bd25"].capacity == 25_025_314_816
    assert MEDIA["bd50"].capacity == 50_050_629_632
    assert MEDIA["bd100"].capacity == 100_103_356_416
    for m in MEDIA.values():
        assert m.capacity - m.usable >= 4096 * SECTOR            # at least 8 MiB kept free
        assert m.usable >= m.capacity * 0.98


def test_aliases_and_unknown():
    assert medium("BD-R").key == "bd25"
    assert medium("dvd+r").key == "dvd"
    assert medium("bdxl").key == "bd100"
    with pytest.raises(UnknownMedium, match="floppy"):
        medium("floppy")


def test_drive_reported_capacity_wins():
    reported = from_drive_profile("BD-R sequential recording", 24_438_000)
    assert reported.key == "bd50" and reported.reported
    assert reported.sectors == 24_438_000
    dvd = from_drive_profile("DVD+R", 2_295_000)
    assert dvd.key == "dvd" and dvd.sectors == 2_295_000
    assert from_drive_profile("BD-ROM", 1000) is None


def test_larger_media_smallest_first():
    names = [m.key for m in larger_media(MEDIA["dvd"], 6 * 10**9)]
    assert names == ["dvd-dl", "bd25", "bd50", "bd100"]
