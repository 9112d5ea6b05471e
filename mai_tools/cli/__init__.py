"""``mai-image``: generate and edit images with MAI Image 2.5 from the shell.

Commands: ``generate``, ``edit``, ``status``, ``wait`` and ``emulator``; ``--emulator`` runs
any of the first four against an in-process offline emulator. Exit codes are
:class:`ExitCode` (0 ok, 1 internal error, 2 bad input, 3 configuration/key/balance,
4 job failed, 5 timed out, 6 gateway or connection error, 7 saving failed, 130 interrupted).
"""

from __future__ import annotations

from ._app import CliState, cli, main
from ._errors import ExitCode

__all__ = ["CliState", "ExitCode", "cli", "main"]
