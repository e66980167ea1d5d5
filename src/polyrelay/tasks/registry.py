"""Task families the engine can poll, by family name. Adding a family = one line here."""

from __future__ import annotations

from polyrelay.providers.midjourney import MidjourneyTasks
from polyrelay.tasks.base import TaskAdaptor


def task_adaptors() -> dict[str, TaskAdaptor]:
    return {adaptor.family: adaptor for adaptor in (MidjourneyTasks(),)}
