"""Caller dialects that reach channels through a pivot protocol (OpenAI chat or embeddings).

A dialect module translates its requests to the pivot and the pivot's replies and
streams back, as pure functions; ``registry`` lists them by the kind they serve.
"""
