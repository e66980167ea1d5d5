"""Fast unit tests of pure code: no servers, no network, no database."""
