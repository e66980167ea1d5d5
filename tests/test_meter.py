"""Price.cost: integer micro-USD, prompt split into plain input, cache reads and cache writes."""

from __future__ import annotations

from polyrelay.billing.meter import Price, Usage, usd_to_micros

CLAUDE = Price(
    input_per_mtok=usd_to_micros(3),
    output_per_mtok=usd_to_micros(15),
    cached_input_per_mtok=usd_to_micros(0.30),
    cache_write_per_mtok=usd_to_micros(3.75),
)


def test_cache_reads_and_writes_each_at_their_own_price() -> None:
    usage = Usage(prompt_tokens=1_000_000 + 200_000 + 40_000, cached_tokens=200_000, cache_write_tokens=40_000,
                  completion_tokens=10_000)
    # 1M plain x 3 + 200k reads x 0.30 + 40k writes x 3.75 + 10k output x 15 USD per Mtok
    assert CLAUDE.cost(usage) == 3_000_000 + 60_000 + 150_000 + 150_000


def test_rounded_once_not_per_part() -> None:
    # 1 read x 0.30 + 1 write x 3.75 + 1 plain x 3 = 7.05 micro-USD -> 7.
    # 1 read x 0.30 + 3 writes x 3.75 = 11.55 -> 12 (rounding each part would give 0 + 11 = 11).
    assert CLAUDE.cost(Usage(prompt_tokens=3, cached_tokens=1, cache_write_tokens=1)) == 7
    assert CLAUDE.cost(Usage(prompt_tokens=4, cached_tokens=1, cache_write_tokens=3)) == 12


def test_absent_cache_prices_fall_back_to_the_input_price() -> None:
    plain = Price(input_per_mtok=usd_to_micros(2), output_per_mtok=usd_to_micros(8))
    usage = Usage(prompt_tokens=1_000, cached_tokens=300, cache_write_tokens=200, completion_tokens=100)
    assert plain.cost(usage) == plain.cost(Usage(prompt_tokens=1_000, completion_tokens=100)) == 2_000 + 800
    reads_only = Price(input_per_mtok=usd_to_micros(2), cached_input_per_mtok=usd_to_micros(0.5))
    assert reads_only.cost(usage) == (500 * 2 + 300 * 0.5 + 200 * 2)  # writes at the input price


def test_cache_tokens_never_exceed_the_prompt() -> None:
    # Inconsistent upstream numbers cannot bill more tokens than the prompt holds: reads first, then writes.
    assert CLAUDE.cost(Usage(prompt_tokens=10, cached_tokens=4, cache_write_tokens=100)) == round(4 * 0.3 + 6 * 3.75)
    assert CLAUDE.cost(Usage(prompt_tokens=10, cached_tokens=100, cache_write_tokens=100)) == 3


def test_price_fields_include_the_cache_write_price() -> None:
    assert "cache_write_per_mtok" in Price.field_names()
