"""Task families the engine can poll, by family name. Adding a family = one line here."""

from __future__ import annotations

from polyrelay.providers.flux_tasks import FluxTasks
from polyrelay.providers.kling import KlingTasks
from polyrelay.providers.luma import LumaTasks
from polyrelay.providers.midjourney import MidjourneyTasks
from polyrelay.providers.stability_video import StabilityVideoTasks
from polyrelay.providers.suno import SunoTasks
from polyrelay.tasks.base import TaskAdaptor


def task_adaptors() -> dict[str, TaskAdaptor]:
    return {adaptor.family: adaptor for adaptor in (MidjourneyTasks(), SunoTasks(), LumaTasks(), KlingTasks(),
                                                          FluxTasks(), StabilityVideoTasks())}
