"""Every bridged caller dialect, by the kind of call it serves.

Adding a dialect = one module under ``dialects/`` and one entry here.
"""

from __future__ import annotations

from polyrelay.dialects.base import Dialect
from polyrelay.dialects.claude import ClaudeDialect
from polyrelay.dialects.gemini import GeminiDialect
from polyrelay.dialects.gemini_embed import GeminiEmbedDialect
from polyrelay.dialects.responses import ResponsesDialect

DIALECTS: dict[str, Dialect] = {
    dialect.kind: dialect for dialect in (ClaudeDialect(), GeminiDialect(), GeminiEmbedDialect(), ResponsesDialect())}
