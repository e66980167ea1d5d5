"""Single sign-on: OpenID Connect providers and GitHub sign users in to the console (see docs/platform.md)."""
