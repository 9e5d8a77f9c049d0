"""Evidence discs (regulation art. 14 and 15.2): plan, build, burn, verify, record form.

The burner is a library that knows nothing of the catalog: the caller hands it
:class:`DiscRecording` and :class:`RecordSession` objects and records what comes back.

* :mod:`~appliance.burner.media`: the kinds of disc and their real capacities;
* :mod:`~appliance.burner.plan`: pack a selection onto as few discs as possible;
* :mod:`~appliance.burner.layout`: names in the UDF, Rock Ridge, Joliet and ISO 9660 trees;
* :mod:`~appliance.burner.form`: the 《同步录音录像摄录情况记录表》 as HTML and PDF;
* :mod:`~appliance.burner.content`: MANIFEST.json, SHA256SUMS, index.html, README.txt;
* :mod:`~appliance.burner.image`: the image (pycdlib), streamed from the vault and hashed;
* :mod:`~appliance.burner.drive`: xorriso: blank checks, burning, read-back, verification;
* :mod:`~appliance.burner.bench`: the image-build benchmark against xorriso.
"""

from appliance.burner.drive import (Drive, burn, burn_and_verify, check_ready, eject, probe,
                                    read_back, verify_disc)
from appliance.burner.errors import (BuildCancelled, BurnerError, BurnFailed, DriveError, FormError,
                                     ImageError, InvalidDiscPath, MediumTooSmall, NoMedia, NotBlank,
                                     PlanError, RecordingTooLarge, SourceMismatch, UnknownMedium,
                                     VerifyFailed, WrongMedia)
from appliance.burner.form import form_document, render_html, render_pdf
from appliance.burner.image import build_image, build_image_async
from appliance.burner.media import MEDIA, Medium, medium
from appliance.burner.model import (BurnProgress, DiscLabel, DiscPlan, DiscRecording,
                                    DiscVerifyReport, DriveStatus, FileCheck, ImageResult,
                                    PlannedDisc, RecordSession)
from appliance.burner.plan import plan_discs

__all__ = [
    "MEDIA", "BuildCancelled", "BurnFailed", "BurnProgress", "BurnerError", "DiscLabel", "DiscPlan",
    "DiscRecording", "DiscVerifyReport", "Drive", "DriveError", "DriveStatus", "FileCheck",
    "FormError", "ImageError", "ImageResult", "InvalidDiscPath", "Medium", "MediumTooSmall",
    "NoMedia", "NotBlank", "PlanError", "PlannedDisc", "RecordSession", "RecordingTooLarge",
    "SourceMismatch", "UnknownMedium", "VerifyFailed", "WrongMedia", "build_image",
    "build_image_async", "burn", "burn_and_verify", "check_ready", "eject", "form_document",
    "medium", "plan_discs", "probe", "read_back", "render_html", "render_pdf", "verify_disc",
]
