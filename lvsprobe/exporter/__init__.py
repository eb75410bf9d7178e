"""The Prometheus exporter (`lvsprobe export`): one snapshot per namespace per scrape, rendered
to the text exposition format. Never imports pandas, scapy or pyshark: the sidecar stays small."""
