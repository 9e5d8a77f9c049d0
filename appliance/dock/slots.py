"""The slot map: which USB port (udev ``ID_PATH``) is which numbered slot of the dock."""

from __future__ import annotations


class SlotMap:
    """Port path → slot number, from ``dock.slots`` in the configuration."""

    def __init__(self, slots: dict[int, str]) -> None:
        self._by_port = {port.strip(): slot for slot, port in slots.items()}
        self.slots = sorted(slots)

    def slot_for(self, port_path: str | None) -> int | None:
        """The slot of a port, or None for a port the dock's map does not name.

        A USB mass-storage partition's ID_PATH ends in the SCSI LUN (``...-scsi-0:0:0:0``);
        a map may name the port with or without that suffix.
        """
        if not port_path:
            return None
        if port_path in self._by_port:
            return self._by_port[port_path]
        base = port_path.split("-scsi-")[0]
        return self._by_port.get(base)
