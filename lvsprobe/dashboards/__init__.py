"""Grafana dashboards for lvsprobe's exporter, generated with grafana-foundation-sdk.

`lvsprobe dashboards generate` writes them to `dashboards/`; `render.render_all()` is the API.
Every query uses only metric and label names from `lvsprobe.exporter.metrics.SPECS`.
"""
