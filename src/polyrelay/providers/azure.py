"""Azure OpenAI channels: the OpenAI protocol under per-deployment URLs and an ``api-key`` header.

Everything but the request line and the key header is the OpenAI pass-through
adaptor's (body rewriting, usage reading, stream handling, error mapping).

Channel options: ``api_version`` (default ``2024-10-21``) and ``deployments``, a map
from upstream model name (after ``model_mapping``) to deployment name; a model not in
the map is its own deployment name.
"""

from __future__ import annotations

from urllib.parse import quote

from polyrelay import kinds
from polyrelay.providers.base import Call, Target, UpstreamRequest
from polyrelay.providers.openai import OpenAIAdaptor

DEFAULT_API_VERSION = "2024-10-21"


class AzureAdaptor(OpenAIAdaptor):
    type = "azure"
    # Azure moderates with its separate Content Safety API; its Responses API lives outside the deployment
    # URLs, so its channels serve Responses through the chat bridge.
    kinds = OpenAIAdaptor.kinds - {kinds.MODERATIONS, kinds.RESPONSES}

    def build_request(self, call: Call, target: Target) -> UpstreamRequest:
        options = target.channel.options
        deployment = (options.get("deployments") or {}).get(target.upstream_model, target.upstream_model)
        operation = call.path.removeprefix("/v1")  # "/chat/completions", "/embeddings", ...
        version = quote(str(options.get("api_version", DEFAULT_API_VERSION)), safe="")
        url = f"{target.channel.base_url}/openai/deployments/{quote(deployment, safe='')}{operation}?api-version={version}"
        return UpstreamRequest(
            method="POST",
            url=url,
            headers={"api-key": target.key, "Content-Type": call.content_type},
            body=self._body(call, target),
        )
