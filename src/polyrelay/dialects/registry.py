"""Every bridged caller dialect, by the kind of call it serves.

Adding a dialect = one module under ``dialects/`` and one entry here.
"""

from __future__ import annotations

from polyrelay.dialects.base import Dialect

DIALECTS: dict[str, Dialect] = {dialect.kind: dialect for dialect in ()}
