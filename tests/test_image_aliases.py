"""DALL·E-format aliases: the OpenAI SDK's images.generate reaching BFL (flux), Recraft and Stability."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from polyrelay.billing.meter import usd_to_micros
from tests.conftest import Gateway, wait_until
from tests.fakes import bfl_upstream, forms, stability_upstream
from tests.image_setup import BFL_KEY, RECRAFT_KEY, STABILITY_KEY, ImageSetup, start


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[ImageSetup]:
    yield from start(gateway_factory)


def test_flux_submits_polls_and_answers_with_the_sample_url(setup: ImageSetup) -> None:
    raw = setup.client().images.with_raw_response.generate(
        model="flux-pro-1.1", prompt="a lighthouse", size="1024x768", extra_body={"seed": 7, "safety_tolerance": 2}
    )
    images = raw.parse()
    assert images.data is not None and images.data[0].url is not None
    assert images.data[0].url.startswith(setup.bfl.url + "/samples/")
    sent = setup.bfl.last("/v1/flux-pro-1.1")
    assert sent.headers["x-key"] == BFL_KEY
    assert json.loads(sent.body) == {"prompt": "a lighthouse", "seed": 7, "safety_tolerance": 2,
                                     "width": 1024, "height": 768}
    polls = [r for r in setup.bfl.requests if r.path == "/v1/get_result"]
    assert len(polls) >= 2 and all(r.headers["x-key"] == BFL_KEY for r in polls)
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.images, row.cost_micros) == ("bfl", 1, usd_to_micros(0.04))


def test_flux_b64_json_downloads_the_sample(setup: ImageSetup) -> None:
    images = setup.client().images.generate(model="flux-pro-1.1", prompt="a lighthouse", response_format="b64_json",
                                            extra_body={"aspect_ratio": "16:9"})
    assert images.data is not None and base64.b64decode(images.data[0].b64_json or "") == bfl_upstream.SAMPLE_PNG
    assert json.loads(setup.bfl.last("/v1/flux-pro-1.1").body)["aspect_ratio"] == "16:9"


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize(
    ("prompt", "exception", "code"),
    [("please moderate-me", openai.BadRequestError, "content_policy_violation"),
     ("fail-me", openai.InternalServerError, "upstream_task_failed")],
)
def test_flux_moderation_and_failure_are_clear_errors_and_free(
    setup: ImageSetup, prompt: str, exception: type[openai.APIStatusError], code: str, n: int
) -> None:
    with pytest.raises(exception) as info:
        setup.client().images.generate(model="flux-pro-1.1", prompt=prompt, n=n)
    assert info.value.code == code  # type: ignore[attr-defined]
    rows = wait_until(lambda: setup.gateway.query(
        "SELECT cost_micros FROM usage_logs WHERE model = 'flux-pro-1.1' AND status_code = :s",
        s=info.value.status_code))
    assert all(r.cost_micros == 0 for r in rows)


def _submits(setup: ImageSetup, prompt: str) -> int:
    return sum(r.path == "/v1/flux-pro-1.1" and json.loads(r.body)["prompt"] == prompt for r in setup.bfl.requests)


def test_flux_makes_n_images_at_once_and_bills_each(setup: ImageSetup) -> None:
    """BFL makes one image per job: n jobs run together, so n images take about the time of one."""
    setup.bfl.knobs["hold"] = True  # every job stays Pending until all three were submitted
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(setup.client().images.with_raw_response.generate, model="flux-pro-1.1",
                                  prompt="three lighthouses", n=3)
            wait_until(lambda: _submits(setup, "three lighthouses") == 3, what="three jobs submitted together")
            setup.bfl.knobs["hold"] = False
            raw = pending.result(timeout=30)
    finally:
        setup.bfl.knobs["hold"] = False
    images = raw.parse()
    assert images.data is not None and len(images.data) == 3
    assert len({image.url for image in images.data}) == 3
    assert all((image.url or "").startswith(setup.bfl.url + "/samples/") for image in images.data)
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.status_code, row.images, row.cost_micros) == (200, 3, 3 * usd_to_micros(0.04))


def test_flux_partial_failure_answers_and_bills_the_images_made(setup: ImageSetup) -> None:
    setup.bfl.knobs["failing_tasks"] = 1
    raw = setup.client().images.with_raw_response.generate(model="flux-pro-1.1", prompt="two of three", n=3)
    images = raw.parse()
    assert _submits(setup, "two of three") == 3
    assert images.data is not None and len(images.data) == 2 and all(image.url for image in images.data)
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.status_code, row.images, row.cost_micros) == (200, 2, 2 * usd_to_micros(0.04))
    assert row.error.startswith("1 of 3 jobs failed")  # the operator sees why two images were billed


def test_n_above_ten_is_refused_before_any_upstream_call(setup: ImageSetup) -> None:
    def good() -> httpx.Response:
        return setup.post("/v1/images/generations", json={"model": "flux-pro-1.1", "prompt": "x"})

    with setup.nothing_relayed_or_billed(good):
        with pytest.raises(openai.BadRequestError, match="between 1 and 10"):
            setup.client().images.generate(model="flux-pro-1.1", prompt="x", n=11)


def test_recraft_alias(setup: ImageSetup) -> None:
    raw = setup.client().images.with_raw_response.generate(model="recraftv3", prompt="a logo", n=2, size="1024x1024",
                                                           style="vivid", quality="hd")
    images = raw.parse()
    assert images.data is not None and len(images.data) == 2 and all(d.url for d in images.data)
    sent = setup.recraft.last("/v1/images/generations")
    assert sent.headers["Authorization"] == f"Bearer {RECRAFT_KEY}"
    assert json.loads(sent.body) == {"model": "recraftv3", "prompt": "a logo", "n": 2, "size": "1024x1024"}
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.channel_name, row.images, row.cost_micros) == ("recraft", 2, 2 * usd_to_micros(0.04))


@pytest.mark.parametrize(("model", "upstream_model"), [("sd3-large", "sd3-large"), ("stable-diffusion-3.5", None)])
def test_stable_diffusion_alias_answers_b64_json(setup: ImageSetup, model: str, upstream_model: str | None) -> None:
    raw = setup.client().images.with_raw_response.generate(
        model=model, prompt="a castle", size="1792x1024", extra_body={"negative_prompt": "fog", "seed": 5}
    )
    images = raw.parse()
    assert images.data is not None and base64.b64decode(images.data[0].b64_json or "") == stability_upstream.IMAGE
    sent = setup.stability.last("/v2beta/stable-image/generate/sd3")
    assert sent.headers["Authorization"] == f"Bearer {STABILITY_KEY}" and sent.headers.get("Accept") == "application/json"
    form = forms.parse(sent.headers["Content-Type"], sent.body)
    assert form.text("prompt") == "a castle" and form.text("negative_prompt") == "fog"
    assert form.text("aspect_ratio") == "16:9" and form.text("seed") == "5" and form.text("model") == upstream_model
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    price = 0.065 if model.startswith("sd3") else 0.01
    assert (row.channel_name, row.images, row.cost_micros) == ("stability", 1, usd_to_micros(price))


def test_stable_diffusion_n_images_with_one_refused(setup: ImageSetup) -> None:
    """Stability makes one image per call: n calls; one refused (429) leaves the caller two images, billed two."""
    calls_before = len(setup.stability.requests)
    setup.stability.knobs["refusals"] = [(429, "rate_limit_exceeded", "You have exceeded the rate limit")]
    raw = setup.client().images.with_raw_response.generate(model="sd3-large", prompt="three castles", n=3)
    images = raw.parse()
    assert len(setup.stability.requests) == calls_before + 3
    assert images.data is not None and len(images.data) == 2
    assert all(base64.b64decode(image.b64_json or "") == stability_upstream.IMAGE for image in images.data)
    row = setup.gateway.usage_row(raw.headers["x-request-id"])
    assert (row.status_code, row.images, row.cost_micros) == (200, 2, 2 * usd_to_micros(0.065))


def test_stability_refusal_reaches_the_sdk(setup: ImageSetup) -> None:
    with pytest.raises(openai.PermissionDeniedError, match="content moderation"):
        setup.client().images.generate(model="sd3-large", prompt="something forbidden")
