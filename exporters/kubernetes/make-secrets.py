#!/usr/bin/env python3
"""Print the Secrets the manifests here expect, with a fresh random password per namespace.

    python3 exporters/kubernetes/make-secrets.py | kubectl apply -f -

lvsprobe-export-web: the exporter's web config, basic_auth_users with the password's bcrypt hash
(the exporter mounts it); lvsprobe-export-scrape: the username and the password itself (the
PodMonitor's and ServiceMonitor's basicAuth). Running it again rotates the passwords; restart
the exporters afterwards (the web config is read at start). Needs bcrypt and PyYAML, which
lvsprobe installs.
"""

from __future__ import annotations

import argparse
import secrets
import sys

import bcrypt
import yaml

NAMESPACES = ("kube-system", "lvs")  # daemonset.yaml, sidecar.yaml
USERNAME = "prometheus"
BCRYPT_COST = 12


def secrets_for(namespace: str, password: str) -> list[dict[str, object]]:
    """The two Secrets of one namespace, for this password."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    web_config = yaml.safe_dump({"basic_auth_users": {USERNAME: hashed}})
    labels = {"app.kubernetes.io/part-of": "lvsprobe"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "lvsprobe-export-web", "namespace": namespace, "labels": labels},
            "type": "Opaque",
            "stringData": {"web-config.yml": web_config},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "lvsprobe-export-scrape",
                "namespace": namespace,
                "labels": labels,
            },
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": USERNAME, "password": password},
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--namespace",
        action="append",
        help=f"namespace to write the Secrets for (repeatable; default: {' '.join(NAMESPACES)})",
    )
    args = parser.parse_args()
    docs = [
        doc
        for namespace in args.namespace or NAMESPACES
        for doc in secrets_for(namespace, secrets.token_urlsafe(24))
    ]
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
