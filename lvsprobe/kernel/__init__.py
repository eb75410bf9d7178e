"""Kernel readers: /proc files (`procfs`) and the generic netlink family IPVS (`genl`)."""
