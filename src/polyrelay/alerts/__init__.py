"""Alerts: a watch loop, off the hot path, that notices what an operator must know (a channel out of
rotation or back, errors, low balances, a task backlog, a writer that cannot commit) and tells them by
webhook (generic JSON, Slack, Feishu, DingTalk) and email. See docs/operations.md, "Alerts"."""
