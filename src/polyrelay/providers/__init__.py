"""Provider adaptors, one module per upstream protocol; ``registry`` finds them by channel type."""
