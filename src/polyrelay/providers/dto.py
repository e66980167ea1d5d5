"""new-api's TaskDto: the task object its Suno fetch, relays' Luma batch query and its video fetch answer.

``{task_id, action, status, fail_reason, submit_time, start_time, finish_time, progress, data}``,
times in Unix seconds (0 when not reached), ``data`` the family's own result object.
"""

from __future__ import annotations

from typing import Any

from polyrelay.providers.base import TaskView


def seconds(ms: int | None) -> int:
    return ms // 1000 if ms else 0


def task_dto(task: TaskView, data: Any, status: str | None = None) -> dict[str, Any]:
    """The TaskDto of ``task`` with polyrelay's id; ``status`` overrides the engine's when the family says more."""
    return {
        "task_id": task.id,
        "action": task.action,
        "status": status or task.status,
        "fail_reason": task.fail_reason,
        "submit_time": seconds(task.submit_time),
        "start_time": seconds(task.start_time),
        "finish_time": seconds(task.finish_time),
        "progress": task.progress,
        "data": data,
    }
