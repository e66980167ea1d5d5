"""The asynchronous task engine shared by every task family (Midjourney first).

``store`` holds the durable table operations (compare-and-set transitions, leases,
exactly-once settlement), ``poller`` advances due tasks through their family's
``TaskAdaptor``, ``notify`` delivers callbacks, ``engine`` ties them together.
See docs/tasks.md.
"""
