"""robosuite imported once with csil-diag's settings: a GL backend chosen, images the right way up, quiet."""

from __future__ import annotations

import sys
import types
from typing import Any

from csil_diag.envs.gl import ensure_gl_backend


def import_robosuite() -> Any:
    """Import robosuite with images the right way up and without its import-time chatter."""
    if "robosuite" not in sys.modules:
        ensure_gl_backend()
        private = types.ModuleType("robosuite.macros_private")
        private.IMAGE_CONVENTION = "opencv"  # robosuite renders upside-down (OpenGL) otherwise
        private.CONSOLE_LOGGING_LEVEL = "ERROR"
        sys.modules.setdefault("robosuite.macros_private", private)
    import robosuite
    from robosuite import macros

    macros.IMAGE_CONVENTION = "opencv"
    return robosuite
