"""Count (and optionally limit) the bytes of a ``zfs send`` stream on its way to headquarters.

zfs-autobackup runs this as a ``--send-pipe`` between ``zfs send`` and ``ssh``::

    python3 -I -S sendmeter.py METER_DIR [BYTES_PER_SECOND]

It copies standard input to standard output and keeps the running total in
``METER_DIR/<pid>`` (rewritten about twice a second and at the end), so a run that is cut
or stopped still says how much it sent. With a rate it sleeps to stay under it: the
bandwidth limit for thin links (zfs-autobackup's own ``--rate`` needs mbuffer, which the
image does not carry).

Standard library only, and started by path with ``-I -S``: it imports nothing of the
appliance, so it starts in milliseconds, once per snapshot sent.
"""

from __future__ import annotations

import os
import sys
import time

CHUNK = 128 * 1024
REPORT_EVERY_S = 0.5


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: sendmeter.py METER_DIR [BYTES_PER_SECOND]", file=sys.stderr)
        return 2
    meter = os.path.join(argv[1], str(os.getpid()))
    rate = int(argv[2]) if len(argv) == 3 else 0
    chunk = min(CHUNK, max(4096, rate // 8)) if rate else CHUNK
    fd = os.open(meter, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    total = 0
    started = last_report = time.monotonic()

    def report() -> None:
        data = f"{total}\n".encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    try:
        report()
        while True:
            block = os.read(0, chunk)
            if not block:
                break
            view = memoryview(block)
            while view:
                written = os.write(1, view)
                view = view[written:]
            total += len(block)
            now = time.monotonic()
            if rate:
                # Ahead of the allowed average since the start: wait until we are not.
                ahead = total / rate - (now - started)
                if ahead > 0:
                    time.sleep(ahead)
                    now = time.monotonic()
                elif ahead < -1:
                    # After a stall (zfs send reading a slow disk), allow at most one second
                    # of catching up at full speed, not a burst of everything missed.
                    started -= ahead + 1
            if now - last_report >= REPORT_EVERY_S:
                report()
                last_report = now
    except BrokenPipeError:
        # ssh went away (link cut, run stopped): the count so far stays in the meter file.
        report()
        return 1
    finally:
        try:
            report()
        finally:
            os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
