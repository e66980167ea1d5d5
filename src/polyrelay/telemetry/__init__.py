"""Prometheus metrics and structured request logs: the lowest layer, importing nothing else of polyrelay.

The hot path feeds it plain values (the usage row ``relay.settlement`` builds, channel names);
everything it knows about channels, leases, the writer and tasks is read at scrape time
through callables the app hands it (``exposition.Gauges``).
"""
