"""Top-up by payment: orders priced in credit, two providers (Stripe Checkout, Epay), crediting once.

``quote`` prices an order (rate and bonus tier, fixed on the order), ``orders`` keeps the order
table and credits a paid order in one transaction, ``stripe_checkout`` and ``epay`` speak the
providers' protocols behind the small interface in ``base``. See docs/platform.md, "Payments".
"""
