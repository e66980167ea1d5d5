"""What a request consumed and what that costs, in integer micro-USD."""

from __future__ import annotations

from dataclasses import dataclass, fields

MICROS_PER_USD = 1_000_000


def usd_to_micros(usd: float) -> int:
    """Convert an operator-written USD amount; rounding at the micro-dollar keeps 0.15 exact."""
    return round(usd * MICROS_PER_USD)


@dataclass(slots=True)
class Usage:
    """Billable quantities of one request, as reported upstream or counted locally."""

    # prompt_tokens is the whole prompt, as OpenAI counts it: cache reads (cached_tokens) and
    # cache writes (cache_write_tokens, Anthropic's cache_creation_input_tokens) are parts of it.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    images: int = 0
    seconds: float = 0.0
    characters: int = 0
    # Cohere bills rerank in search units (one query over up to 100 documents); each is one ``per_request``.
    search_units: int = 0
    source: str = "upstream"  # "upstream" | "counted" (local tokenizer) | "request" (from the call itself)


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price; every amount is micro-USD per unit named by the field."""

    input_per_mtok: int | None = None
    output_per_mtok: int | None = None
    cached_input_per_mtok: int | None = None  # cache reads; None: input_per_mtok
    cache_write_per_mtok: int | None = None  # cache writes (creation); None: input_per_mtok
    per_request: int | None = None  # per search unit where the upstream counts them (see ``Usage``)
    per_image: int | None = None
    per_second: int | None = None
    per_mchar: int | None = None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def cost(self, usage: Usage) -> int:
        """Exact cost, rounded once per request to the nearest micro-dollar (half up).

        Rounding to nearest rather than up keeps the long-run sum unbiased for cheap
        models whose single requests cost fractions of a micro-dollar.
        """
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        cached_rate = self.cached_input_per_mtok if self.cached_input_per_mtok is not None else self.input_per_mtok
        write_rate = self.cache_write_per_mtok if self.cache_write_per_mtok is not None else self.input_per_mtok
        # Per-million rates: accumulate in micro-micro-USD and divide once, so no float enters.
        per_million = (
            (usage.prompt_tokens - cached - written) * (self.input_per_mtok or 0)
            + cached * (cached_rate or 0)
            + written * (write_rate or 0)
            + usage.completion_tokens * (self.output_per_mtok or 0)
            + usage.characters * (self.per_mchar or 0)
        )
        total = (per_million + 500_000) // 1_000_000
        total += (self.per_request or 0) * max(1, usage.search_units)
        total += usage.images * (self.per_image or 0)
        if self.per_second and usage.seconds:
            total += (round(usage.seconds * 1000) * self.per_second + 500) // 1000
        return total
