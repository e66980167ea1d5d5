"""What a caller learns when upstreams fail: that they failed, never the operator's channel names."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.conftest import Gateway, free_port

CALLER = "sk-pr-upstream-errors-0123456789abcdef"
SECRET_NAME = "acme-internal-east-2"


def test_a_failed_upstream_is_reported_without_channel_names(gateway_factory: Callable[..., Gateway]) -> None:
    gateway = gateway_factory({
        "channels": [{"name": SECRET_NAME, "type": "openai", "base_url": f"http://127.0.0.1:{free_port()}",
                      "keys": ["sk-upstream-0123456789"], "models": ["gpt-4o-mini"]}],
        "tokens": [{"name": "caller", "key": CALLER}],
    })
    client = openai.OpenAI(base_url=gateway.v1, api_key=CALLER, max_retries=0)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert failed.value.status_code == 502
    assert "unreachable" in failed.value.message and SECRET_NAME not in str(failed.value.body)
    row = gateway.usage_row(failed.value.response.headers["x-request-id"])
    assert SECRET_NAME not in row.error  # users read this column at /api/me/logs
    assert row.channel_name == SECRET_NAME  # the operator's view keeps it
