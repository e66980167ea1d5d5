"""Every upstream protocol polyrelay speaks, by channel type: its relay adaptor, its task adaptors, its kinds.

Adding a provider = one module under ``providers/`` and one entry here.
"""

from __future__ import annotations

from polyrelay.providers.anthropic import AnthropicAdaptor
from polyrelay.providers.azure import AzureAdaptor
from polyrelay.providers.base import Adaptor, TaskAdaptor
from polyrelay.providers.flux import FluxAdaptor
from polyrelay.providers.flux_tasks import FluxTasks
from polyrelay.providers.gemini import GeminiAdaptor
from polyrelay.providers.ideogram import IdeogramAdaptor
from polyrelay.providers.kling import KlingTasks
from polyrelay.providers.luma import LumaTasks
from polyrelay.providers.midjourney import MidjourneyTasks
from polyrelay.providers.openai import OpenAIAdaptor
from polyrelay.providers.recraft import RecraftAdaptor
from polyrelay.providers.rerank import CohereAdaptor, JinaAdaptor
from polyrelay.providers.stability import StabilityAdaptor
from polyrelay.providers.stability_video import StabilityVideoTasks
from polyrelay.providers.suno import SunoTasks

ADAPTORS: dict[str, Adaptor] = {adaptor.type: adaptor for adaptor in (
    OpenAIAdaptor(), AzureAdaptor(), GeminiAdaptor(), AnthropicAdaptor(), IdeogramAdaptor(), FluxAdaptor(),
    RecraftAdaptor(), StabilityAdaptor(), JinaAdaptor(), CohereAdaptor())}
TASK_ADAPTORS: dict[str, TaskAdaptor] = {adaptor.family: adaptor for adaptor in (
    MidjourneyTasks(), SunoTasks(), LumaTasks(), KlingTasks(), FluxTasks(), StabilityVideoTasks())}

# Channel types only task families use: they have no relay adaptor, so no chat call can test them.
TASK_ONLY_CHANNEL_TYPES = frozenset(a.channel_type for a in TASK_ADAPTORS.values()) - set(ADAPTORS)
CHANNEL_TYPES = frozenset(ADAPTORS) | TASK_ONLY_CHANNEL_TYPES


def _kinds_by_type() -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for adaptor in ADAPTORS.values():
        found.setdefault(adaptor.type, set()).update(adaptor.kinds)
    for task_adaptor in TASK_ADAPTORS.values():
        found.setdefault(task_adaptor.channel_type, set()).update(task_adaptor.kinds)
    return {channel_type: frozenset(kinds) for channel_type, kinds in found.items()}


_KINDS = _kinds_by_type()


def kinds_of(channel_type: str) -> frozenset[str]:
    """What channels of ``channel_type`` can serve; empty for a type polyrelay does not know."""
    return _KINDS.get(channel_type, frozenset())


def adaptor_for(channel_type: str) -> Adaptor:
    """The relay adaptor of a type that serves some synchronous kind (routing guarantees one exists)."""
    return ADAPTORS[channel_type]
