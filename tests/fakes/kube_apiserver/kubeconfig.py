"""Writes a kubeconfig for the fake API server (usable by kubectl and by client libraries)."""
import base64
import os

import yaml


def kubeconfig_dict(server, ca_pem=None, token=None, namespace="default", insecure=False, name="fake"):
    cluster = {"server": server}
    if server.startswith("https://"):
        if ca_pem and not insecure:
            if isinstance(ca_pem, str):
                ca_pem = ca_pem.encode()
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
        else:
            cluster["insecure-skip-tls-verify"] = True
    user = {"token": token} if token else {}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
    }


def write_kubeconfig(path, server, ca_pem=None, token=None, namespace="default", insecure=False):
    """Atomically writes a kubeconfig (mode 0600) pointing at `server` with the CA bundle and bearer token."""
    doc = kubeconfig_dict(server, ca_pem, token, namespace, insecure)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write a kubeconfig for the fake API server.")
    ap.add_argument("path")
    ap.add_argument("--server", required=True, help="e.g. https://127.0.0.1:6443")
    ap.add_argument("--ca", help="CA bundle (PEM) to embed as certificate-authority-data")
    ap.add_argument("--token")
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--insecure", action="store_true")
    a = ap.parse_args()
    ca = open(a.ca, "rb").read() if a.ca else None
    write_kubeconfig(a.path, a.server, ca, a.token, a.namespace, a.insecure or (ca is None))
