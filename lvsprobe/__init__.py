"""lvsprobe: observability and traffic-replay testing for Linux Virtual Server (IPVS)."""

__version__ = "0.1.0"
