"""Task families the engine can poll, by family name. Adding a family = one line here."""

from __future__ import annotations

from polyrelay.providers import ADAPTORS
from polyrelay.providers import flux_tasks, kling, luma, midjourney, stability_video, suno
from polyrelay.providers.flux_tasks import FluxTasks
from polyrelay.providers.kling import KlingTasks
from polyrelay.providers.luma import LumaTasks
from polyrelay.providers.midjourney import MidjourneyTasks
from polyrelay.providers.stability_video import StabilityVideoTasks
from polyrelay.providers.suno import SunoTasks
from polyrelay.tasks.base import TaskAdaptor

# Channel types only task families use: they have no relay adaptor, so no chat call can test them.
TASK_ONLY_CHANNEL_TYPES = frozenset(
    {m.TYPE for m in (midjourney, suno, luma, kling, flux_tasks, stability_video)} - set(ADAPTORS)
)


def task_adaptors() -> dict[str, TaskAdaptor]:
    return {adaptor.family: adaptor for adaptor in (MidjourneyTasks(), SunoTasks(), LumaTasks(), KlingTasks(),
                                                          FluxTasks(), StabilityVideoTasks())}


def channel_types() -> frozenset[str]:
    """Every channel type an operator may create."""
    return frozenset(ADAPTORS) | TASK_ONLY_CHANNEL_TYPES
