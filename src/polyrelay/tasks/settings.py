"""Operator settings of the task engine (the ``tasks:`` section of the config file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TaskSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    poll_interval_s: float = Field(default=5.0, gt=0, description="Poll period of a young task; older ones back off.")
    timeout_s: float = Field(default=3600.0, gt=0, description="A task unfinished after this long fails and is refunded.")
    lease_s: float = Field(
        default=10.0, ge=0.3,
        description="How long a claimed task stays with one poller unless renewed; the holder renews it every "
                    "lease_s/3 while it works, so a crashed node's tasks are claimed again about lease_s later.")
    claim_batch: int = Field(default=200, ge=1, description="Most tasks one poll round claims.")
    claim_parallel: int = Field(
        default=4, ge=1,
        description="Most poll rounds a node runs at once; it holds at most claim_batch * claim_parallel leases, "
                    "so several nodes share the due tasks.")
    channel_concurrency: int = Field(default=4, ge=1, description="Concurrent poll requests per channel.")
    notify_allow_private: bool = Field(default=False, description="Allow callbacks to private/loopback hosts.")
    notify_attempts: int = Field(default=5, ge=1)
    notify_backoff_s: float = Field(default=1.0, ge=0, description="First retry delay; doubles each attempt.")
    notify_timeout_s: float = Field(default=10.0, gt=0)
