from appliance.dock.slots import SlotMap

PORT = "pci-0000:00:14.0-usb-0:3:1.0"


def test_port_maps_to_slot_with_or_without_scsi_suffix():
    slots = SlotMap({1: "pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0", 2: PORT})
    assert slots.slot_for("pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0") == 1
    assert slots.slot_for(PORT + "-scsi-0:0:0:0") == 2
    assert slots.slot_for(PORT) == 2


def test_unknown_or_missing_port_has_no_slot():
    slots = SlotMap({2: PORT})
    assert slots.slot_for("pci-0000:00:14.0-usb-0:9:1.0-scsi-0:0:0:0") is None
    assert slots.slot_for(None) is None
    assert slots.slot_for("") is None
    assert slots.slots == [2]
