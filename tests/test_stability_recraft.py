"""Native Stability (v2beta, v1, bare and under /sd) and Recraft (/recraft/v1) paths end to end."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest

from polyrelay.billing.meter import usd_to_micros
from tests.conftest import Gateway
from tests.fakes import forms, stability_upstream
from tests.image_setup import JPEG, RECRAFT_KEY, STABILITY_KEY, WEBP, ImageSetup, png, start


@pytest.fixture(scope="module")
def setup(gateway_factory: Callable[..., Gateway]) -> Iterator[ImageSetup]:
    yield from start(gateway_factory)


def _ultra(setup: ImageSetup):  # type: ignore[no-untyped-def]
    return setup.post("/v2beta/stable-image/generate/ultra", files={"prompt": (None, "a fox")})


@pytest.mark.parametrize("prefix", ["", "/sd"])
@pytest.mark.parametrize(("endpoint", "model", "price"),
                         [("ultra", "stable-image-ultra", 0.08), ("core", "stable-image-core", 0.03),
                          ("sd3", "sd3.5-large", 0.065)])
def test_v2beta_raw_bytes_with_headers(setup: ImageSetup, prefix: str, endpoint: str, model: str, price: float) -> None:
    response = setup.post(f"{prefix}/v2beta/stable-image/generate/{endpoint}",
                          files={"prompt": (None, "a fox"), "seed": (None, "99"), "output_format": (None, "png")},
                          headers={"accept": "image/*"})
    assert response.status_code == 200, response.text
    assert response.content == stability_upstream.IMAGE and response.headers["content-type"] == "image/png"
    assert response.headers["finish-reason"] == "SUCCESS" and response.headers["seed"] == "99"
    sent = setup.stability.last(f"/v2beta/stable-image/generate/{endpoint}")
    assert sent.headers["Authorization"] == f"Bearer {STABILITY_KEY}"
    row = setup.row(response)
    assert (row.family, row.model, row.images, row.cost_micros) == ("stability", model, 1, usd_to_micros(price))


def test_v2beta_json_image_to_image(setup: ImageSetup) -> None:
    response = setup.post("/sd/v2beta/stable-image/generate/sd3", headers={"accept": "application/json"},
                          files={"prompt": (None, "a fox"), "model": (None, "sd3-large"), "mode": (None, "image-to-image"),
                                 "strength": (None, "0.5"), "image": ("in.png", png(), "image/png")})
    assert response.status_code == 200, response.text
    assert base64.b64decode(response.json()["image"]) == stability_upstream.IMAGE
    sent = setup.stability.last("/v2beta/stable-image/generate/sd3")
    assert forms.parse(sent.headers["Content-Type"], sent.body).get("image").data == png()  # type: ignore[union-attr]
    assert setup.row(response).model == "sd3-large"


@pytest.mark.parametrize("model", ["sd3-medium", None])  # None: the default sd3.5-large
def test_sd3_model_mapping_around_a_large_upload(setup: ImageSetup, model: str | None) -> None:
    """The mapped model replaces the form's, or is added when the caller relied on the default; the image,
    near the 10 MiB limit, goes upstream byte for byte."""
    image = png(padding=9 * 1024 * 1024)
    files = {"prompt": (None, "a fox"), "mode": (None, "image-to-image"), "strength": (None, "0.5"),
             "image": ("in.png", image, "image/png"), **({"model": (None, model)} if model else {})}
    response = setup.post("/v2beta/stable-image/generate/sd3", files=files, headers={"accept": "application/json"})
    assert response.status_code == 200, response.text
    sent = setup.stability.last("/v2beta/stable-image/generate/sd3")
    form = forms.parse(sent.headers["Content-Type"], sent.body)
    assert form.get("image").data == image  # type: ignore[union-attr]
    assert (form.text("model"), form.text("prompt"), form.text("strength")) == ("sd3-large", "a fox", "0.5")
    row = setup.row(response)
    assert (row.model, row.upstream_model, row.images) == (model or "sd3.5-large", "sd3-large", 1)


@pytest.mark.parametrize("prefix", ["", "/sd"])
def test_v1_text_to_image(setup: ImageSetup, prefix: str) -> None:
    engine = "stable-diffusion-xl-1024-v1-0"
    body = {"text_prompts": [{"text": "a fox", "weight": 1}, {"text": "blurry", "weight": -1}], "samples": 2}
    response = setup.post(f"{prefix}/v1/generation/{engine}/text-to-image", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["artifacts"]) == 2
    assert json.loads(setup.stability.last(f"/v1/generation/{engine}/text-to-image").body) == body
    row = setup.row(response)
    assert (row.model, row.images, row.cost_micros) == (engine, 2, 2 * usd_to_micros(0.01))
    png_answer = setup.post(f"{prefix}/v1/generation/{engine}/text-to-image", json=body, headers={"accept": "image/png"})
    assert png_answer.content == stability_upstream.IMAGE
    assert png_answer.headers["finish-reason"] == "SUCCESS" and png_answer.headers["seed"] == "77"


def test_stability_errors_keep_their_shapes(setup: ImageSetup) -> None:
    moderated = setup.post("/v2beta/stable-image/generate/core", files={"prompt": (None, "forbidden things")})
    assert moderated.status_code == 403 and moderated.json()["name"] == "content_moderation"
    assert set(moderated.json()) == {"id", "name", "errors"}
    bad_key = setup.post("/v2beta/stable-image/generate/core", key="sk-nobody", files={"prompt": (None, "x")})
    assert bad_key.status_code == 401 and set(bad_key.json()) == {"id", "name", "errors"}
    with setup.nothing_relayed_or_billed(lambda: _ultra(setup)):
        no_prompt = setup.post("/v2beta/stable-image/generate/ultra", files={"seed": (None, "1")})
        assert no_prompt.status_code == 400 and "prompt" in no_prompt.json()["errors"][0]
        not_image = setup.post("/v2beta/stable-image/generate/ultra",
                               files={"prompt": (None, "x"), "image": ("a.png", b"%PDF-1.4", "image/png")})
        assert not_image.status_code == 400 and "image" in not_image.json()["errors"][0]
        too_large = setup.post("/v2beta/stable-image/generate/ultra",
                               files={"prompt": (None, "x"), "image": ("a.jpg", JPEG + bytes(10 * 1024 * 1024), "image/jpeg")})
        assert too_large.status_code == 413 and too_large.json()["name"] == "payload_too_large"
        v1 = setup.post("/v1/generation/stable-diffusion-v1-6/text-to-image", json={"samples": 1})
        assert v1.status_code == 400 and set(v1.json()) == {"id", "name", "message"}


def test_recraft_native_generations(setup: ImageSetup) -> None:
    body = {"prompt": "a logo", "style": "vector_illustration", "n": 2, "model": "recraftv3", "size": "1024x1024"}
    response = setup.post("/recraft/v1/images/generations", json=body)
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    assert json.loads(setup.recraft.last("/v1/images/generations").body) == body
    row = setup.row(response)
    assert (row.family, row.images, row.cost_micros) == ("recraft", 2, 2 * usd_to_micros(0.04))


@pytest.mark.parametrize(("name", "upstream"), [("vectorize", "vectorize"), ("removeBackground", "removeBackground"),
                                                ("crispUpscale", "crispUpscale"), ("clarityUpscale", "crispUpscale"),
                                                ("creativeUpscale", "creativeUpscale"),
                                                ("generativeUpscale", "creativeUpscale")])
def test_recraft_tools_and_their_older_names(setup: ImageSetup, name: str, upstream: str) -> None:
    response = setup.post(f"/recraft/v1/images/{name}", files={"image": ("in.webp", WEBP, "image/webp")},
                          data={"response_format": "url"})
    assert response.status_code == 200, response.text
    assert response.json()["image"]["url"]
    sent = setup.recraft.last(f"/v1/images/{upstream}")
    assert sent.headers["Authorization"] == f"Bearer {RECRAFT_KEY}"
    assert forms.parse(sent.headers["Content-Type"], sent.body).get("image").data == WEBP  # type: ignore[union-attr]
    row = setup.row(response)
    assert (row.model, row.images, row.cost_micros) == (f"recraft-{upstream}", 1, usd_to_micros(0.01))


def test_recraft_styles(setup: ImageSetup) -> None:
    response = setup.post("/recraft/v1/styles", data={"style": "digital_illustration"},
                          files=[("images", ("a.png", png(), "image/png")), ("images", ("b.jpg", JPEG, "image/jpeg"))])
    assert response.status_code == 200 and response.json()["style"] == "digital_illustration"
    row = setup.row(response)
    assert (row.model, row.images, row.cost_micros) == ("recraft-styles", 0, usd_to_micros(0.04))


def test_recraft_limits_and_errors(setup: ImageSetup) -> None:
    rejected = setup.post("/recraft/v1/images/generations", json={"prompt": "x", "bogus": 1})
    assert rejected.status_code == 422 and "unknown fields" in rejected.json()["error"]["message"]
    with setup.nothing_relayed_or_billed(lambda: setup.post("/recraft/v1/images/vectorize",
                                                            files={"image": ("a.png", png(), "image/png")})):
        huge = setup.post("/recraft/v1/images/crispUpscale", files={"image": ("big.png", png(5000, 4000), "image/png")})
        assert huge.status_code == 413 and "pixels" in huge.json()["error"]["message"]
        wrong = setup.post("/recraft/v1/images/vectorize", files={"image": ("a.png", b"<svg/>", "image/png")})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "image"
        missing = setup.post("/recraft/v1/images/removeBackground", files={"file": ("a.png", png(), "image/png")})
        assert missing.status_code == 400 and "'image'" in missing.json()["error"]["message"]
