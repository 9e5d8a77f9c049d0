"""Errors of the burner: one class per thing that can go wrong, docstring = message.

They follow :mod:`appliance.errors` (BorgBackup's pattern): the first docstring line is the
message template, filled with the constructor's arguments; the command line catches
:class:`~appliance.errors.ApplianceError` once at the top. Every message is Chinese first,
English second, because the device manager reads it on the local web page.
"""

from __future__ import annotations

from appliance.errors import ApplianceError


class BurnerError(ApplianceError):
    """刻录错误 / burner error: {}"""

    exit_code = 5


# --- planning -------------------------------------------------------------------------

class PlanError(BurnerError):
    """无法规划光盘 / cannot plan the discs: {}"""


class RecordingTooLarge(PlanError):
    """录像文件大于光盘容量 / recording larger than the medium: {}"""


class UnknownMedium(PlanError):
    """未知的光盘类型 / unknown medium: {}"""


class InvalidDiscPath(PlanError):
    """光盘内路径无效 / invalid path on disc: {}"""


# --- image ----------------------------------------------------------------------------

class ImageError(BurnerError):
    """无法生成光盘映像 / cannot build the disc image: {}"""


class SourceMismatch(ImageError):
    """证据库文件与登记的哈希不一致，已停止 / vault file does not match its catalogued hash, stopped: {}"""

    exit_code = 4


class BuildCancelled(ImageError):
    """已取消生成映像 / image build cancelled: {}"""


class FormError(BurnerError):
    """无法生成记录表 / cannot produce the record form: {}"""


# --- drives ---------------------------------------------------------------------------

class DriveError(BurnerError):
    """刻录机错误 / drive error: {}"""


class NoMedia(DriveError):
    """刻录机中没有可写光盘 / no writable disc in the drive: {}"""


class WrongMedia(DriveError):
    """光盘类型不对 / wrong kind of disc: {}"""


class NotBlank(DriveError):
    """光盘不是空白盘 / the disc is not blank: {}"""


class MediumTooSmall(DriveError):
    """光盘容量不足 / the disc is too small: {}"""


class BurnFailed(DriveError):
    """刻录失败 / burning failed: {}"""


class VerifyFailed(DriveError):
    """光盘回读校验失败，此盘作废，请换一张空白盘 / read-back verification failed, disc rejected, insert a new blank: {}"""

    exit_code = 4
