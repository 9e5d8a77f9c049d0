"""Error classes of the appliance.

Following BorgBackup's pattern: an error is a class whose docstring is its message
template and whose ``exit_code`` is what the command line returns for it. They are
caught once, at the top (``appliance.cli``), and turned into one clear line.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Error: {}"""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.args = args

    def message(self) -> str:
        doc = (type(self).__doc__ or "{}").strip().splitlines()[0]
        try:
            return doc.format(*self.args)
        except (IndexError, KeyError):
            return " ".join(str(a) for a in self.args) or doc

    def __str__(self) -> str:
        return self.message()


class ConfigError(ApplianceError):
    """配置无效 / invalid configuration: {}"""

    exit_code = 3


class CatalogError(ApplianceError):
    """目录数据库错误 / catalog error: {}"""


class VaultError(ApplianceError):
    """证据库错误 / vault error: {}"""


class VaultFullError(VaultError):
    """证据库空间不足 / vault full: {}"""


class VerifyMismatch(VaultError):
    """校验不一致 / verification mismatch: {}"""


class MountError(ApplianceError):
    """无法挂载记录仪 / cannot mount camera: {}"""


class SourceReadError(ApplianceError):
    """读取记录仪文件失败 / read error on camera: {}"""


class DeviceGone(SourceReadError):
    """记录仪已拔出 / camera removed: {}"""


class AuditChainBroken(ApplianceError):
    """审计日志链已损坏 / audit chain broken: {}"""

    exit_code = 4
