"""The one secret scrubber: upstream echoes of our keys never reach a caller, a log or a row."""

from __future__ import annotations

from polyrelay.errors import RelayError
from polyrelay.scrub import scrub, scrub_bytes, scrub_json

KEY = "sk-UPSTREAM-0123456789abcdef"
KEYS = (KEY, "second-key-9876543210")


def test_a_key_echoed_in_any_case_is_replaced_by_its_hint() -> None:
    for echo in (KEY, KEY.lower(), KEY.upper()):
        cleaned = scrub(f"invalid api key {echo}!", KEYS)
        assert echo not in cleaned and "0123456789" not in cleaned.lower()
        assert "...cdef" in cleaned.lower()


def test_bearer_values_and_jwts_are_hidden_whoever_minted_them() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJhY2Nlc3MifQ.c2lnbmF0dXJlLWJ5dGVz"
    cleaned = scrub(f"invalid key Bearer sk-someone-elses-key, token {jwt}", KEYS)
    assert "sk-someone-elses-key" not in cleaned and jwt not in cleaned
    assert "Bearer ***" in cleaned


def test_results_keep_their_signed_urls_but_lose_our_keys() -> None:
    url = "https://cdn.example.com/v.mp4?token=eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJjZG4ifQ.c2lnbmF0dXJl"
    result = {"video": {"url": url}, "debug": f"called with {KEY}"}
    assert scrub_json(result, KEYS, credentials=False) == {"video": {"url": url}, "debug": "called with sk-UPS...cdef"}


def test_relayed_bodies_and_messages_of_an_error_are_both_scrubbed() -> None:
    error = RelayError(401, f"Upstream said: bad key {KEY}").with_raw("suno", f'{{"message":"Bearer {KEY}"}}'.encode())
    error.scrub(KEYS)
    assert KEY not in error.message and KEY.encode() not in error.raw_body
    assert error.raw_body.startswith(b'{"message":"Bearer ***')


def test_bytes_that_are_not_utf8_survive_and_clean_bodies_are_not_copied() -> None:
    body = b"\xff\xfe binary " + KEY.encode()
    assert scrub_bytes(body, KEYS) == b"\xff\xfe binary sk-UPS...cdef"
    clean = b'{"error": "model overloaded"}'
    assert scrub_bytes(clean, KEYS) is clean


def test_short_placeholder_keys_do_not_garble_ordinary_words() -> None:
    assert scrub("the key was refused", ("key",)) == "the key was refused"
