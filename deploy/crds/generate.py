#!/usr/bin/env python3
"""Generates the six OpenChoreo plane CRDs in this folder from one shared schema.

The six kinds (DataPlane, ClusterDataPlane, WorkflowPlane, ClusterWorkflowPlane, ObservabilityPlane,
ClusterObservabilityPlane) share spec.planeID, spec.clusterAgent.clientCA and the whole status block, so
they are written from one place here rather than edited six times by hand.

    python3 deploy/crds/generate.py          # rewrite the YAML files
    python3 deploy/crds/generate.py --check  # exit 1 if a file differs from what would be written

tests/deploy/test_manifests.py runs --check, so edit this script, not the YAML.
"""
import copy
import os
import sys

import yaml

GROUP = "openchoreo.dev"
VERSION = "v1alpha1"
HERE = os.path.dirname(os.path.abspath(__file__))

DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# kind -> facts. "plane" is the plane type agents send on the wire (?planeType=...).
KINDS = {
    "DataPlane": {"plural": "dataplanes", "scope": "Namespaced", "short": ["dp", "dps"], "plane": "dataplane"},
    "ClusterDataPlane": {"plural": "clusterdataplanes", "scope": "Cluster", "short": ["cdp", "cdps"],
                         "plane": "dataplane"},
    "WorkflowPlane": {"plural": "workflowplanes", "scope": "Namespaced", "short": [], "plane": "workflowplane"},
    "ClusterWorkflowPlane": {"plural": "clusterworkflowplanes", "scope": "Cluster", "short": ["cwp", "cwps"],
                             "plane": "workflowplane"},
    "ObservabilityPlane": {"plural": "observabilityplanes", "scope": "Namespaced", "short": [],
                           "plane": "observabilityplane"},
    "ClusterObservabilityPlane": {"plural": "clusterobservabilityplanes", "scope": "Cluster",
                                  "short": ["cop", "cops"], "plane": "observabilityplane"},
}

ONE_OF_RULE = "has(self.value) != has(self.secretKeyRef)"
ONE_OF_MESSAGE = "exactly one of value or secretKeyRef must be set"
# "namespace" is a CEL reserved word: in rules a field of that name is written __namespace__.
CLUSTER_NS_RULE = "!has(self.secretKeyRef) || has(self.secretKeyRef.__namespace__)"
CLUSTER_NS_MESSAGE = "secretKeyRef.namespace is required on cluster-scoped planes"


def plane_id_schema(kind, scope):
    where = "this cluster-scoped resource" if scope == "Cluster" else "this resource (in its namespace)"
    return {
        "description": (
            "PlaneID identifies the logical plane this CR connects to. Agents dial the cluster gateway with\n"
            "?planeID=<id>&planeType=" + KINDS[kind]["plane"] + " and are matched against every "
            + kind + " (and its\nnamespaced/cluster-scoped counterpart) whose effective planeID equals <id>; "
            "several CRs may share one\nplaneID (one agent deployment serving several tenants, each verified "
            "against its own clientCA).\nMust match the clusterAgent.planeId Helm value of the agent.\n"
            "Defaults to the CR name: when omitted, the effective planeID of " + where + " is\n"
            "metadata.name (backwards compatible with CRs created before planeID existed).\n"
            "Lowercase RFC 1123 label: at most 63 characters, [a-z0-9] and '-', starting and ending alphanumeric."
        ),
        "type": "string",
        "maxLength": 63,
        "pattern": DNS_LABEL,
    }


def value_from_schema(scope):
    ns_desc = ("Namespace of the Secret. Required on cluster-scoped planes (they have no namespace to "
               "default to)." if scope == "Cluster" else
               "Namespace of the Secret. Defaults to the namespace of this CR.")
    rules = [{"rule": ONE_OF_RULE, "message": ONE_OF_MESSAGE}]
    if scope == "Cluster":
        rules.append({"rule": CLUSTER_NS_RULE, "message": CLUSTER_NS_MESSAGE})
    return {
        "description": (
            "ClientCA is the CA bundle (PEM) that the agent's client certificate must chain to, with extended\n"
            "key usage clientAuth. Every CERTIFICATE block is a trust anchor for this CR only.\n"
            "Exactly one of value (inline PEM) or secretKeyRef must be set."
        ),
        "type": "object",
        "properties": {
            "value": {
                "description": "Inline PEM CA bundle.",
                "type": "string",
                "minLength": 1,
            },
            "secretKeyRef": {
                "description": "Reference to a key of a Secret that holds the PEM CA bundle.",
                "type": "object",
                "properties": {
                    "name": {"description": "Name of the Secret.", "type": "string", "minLength": 1,
                             "maxLength": 253},
                    "namespace": {"description": ns_desc, "type": "string", "minLength": 1, "maxLength": 63},
                    "key": {"description": "Key within the Secret, e.g. ca.crt.", "type": "string",
                            "minLength": 1, "maxLength": 253},
                },
                "required": ["name", "key"],
            },
        },
        "x-kubernetes-validations": rules,
    }


def observability_ref_schema(scope):
    if scope == "Cluster":
        kinds, default = ["ClusterObservabilityPlane"], "ClusterObservabilityPlane"
        desc = ("Reference to a ClusterObservabilityPlane for monitoring and logging. Cluster-scoped planes can only\n"
                "reference cluster-scoped observability planes. When omitted, a ClusterObservabilityPlane named\n"
                "\"default\" is used if it exists.")
    else:
        kinds, default = ["ObservabilityPlane", "ClusterObservabilityPlane"], "ObservabilityPlane"
        desc = ("Reference to an ObservabilityPlane (same namespace) or a ClusterObservabilityPlane for monitoring\n"
                "and logging.")
    return {
        "description": desc,
        "type": "object",
        "properties": {
            "kind": {"description": "Kind of the referenced observability plane.", "type": "string",
                     "enum": kinds, "default": default},
            "name": {"description": "Name of the referenced observability plane.", "type": "string",
                     "minLength": 1, "maxLength": 63, "pattern": DNS_LABEL},
        },
        "required": ["name"],
    }


def spec_schema(kind, scope):
    props = {
        "planeID": plane_id_schema(kind, scope),
        "clusterAgent": {
            "description": (
                "ClusterAgent configures agent-based communication: the cluster agent in the remote cluster dials\n"
                "the control plane's cluster gateway (wss://.../ws) with a client certificate."
            ),
            "type": "object",
            "properties": {"clientCA": value_from_schema(scope)},
            "required": ["clientCA"],
        },
        "secretStoreRef": {
            "description": "Reference to an External Secrets Operator ClusterSecretStore in the plane's cluster.",
            "type": "object",
            "properties": {"name": {"description": "Name of the ClusterSecretStore.", "type": "string",
                                    "minLength": 1}},
            "required": ["name"],
        },
    }
    plane = KINDS[kind]["plane"]
    if plane != "observabilityplane":
        props["observabilityPlaneRef"] = observability_ref_schema(scope)
    else:
        props["observerURL"] = {"description": "Base URL of the Observer API in the observability plane cluster.",
                                "type": "string"}
    if plane == "dataplane":
        props["imagePullSecretRefs"] = {
            "description": "Names of Secrets (in the plane's cluster) used to pull workload images.",
            "type": "array",
            "items": {"type": "string", "minLength": 1},
        }
    return {
        "description": kind + "Spec defines the desired state of " + kind + ".",
        "type": "object",
        "properties": props,
        "required": ["clusterAgent"],
    }


def condition_schema():
    return {
        "description": "Condition contains details for one aspect of the current state of this API Resource.",
        "type": "object",
        "properties": {
            "lastTransitionTime": {
                "description": "lastTransitionTime is the last time the condition transitioned from one status to another.",
                "type": "string", "format": "date-time"},
            "message": {"description": "message is a human readable message indicating details about the transition.",
                        "type": "string", "maxLength": 32768},
            "observedGeneration": {
                "description": "observedGeneration represents the .metadata.generation that the condition was set based upon.",
                "type": "integer", "format": "int64", "minimum": 0},
            "reason": {"description": "reason contains a programmatic identifier indicating the reason for the "
                                      "condition's last transition.",
                       "type": "string", "maxLength": 1024, "minLength": 1,
                       "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
            "status": {"description": "status of the condition, one of True, False, Unknown.", "type": "string",
                       "enum": ["True", "False", "Unknown"]},
            "type": {"description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
                     "type": "string", "maxLength": 316,
                     "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                                "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"},
        },
        "required": ["lastTransitionTime", "message", "reason", "status", "type"],
    }


def status_schema(kind):
    return {
        "description": kind + "Status defines the observed state of " + kind + ".",
        "type": "object",
        "properties": {
            "observedGeneration": {"description": "The generation observed by the controller.", "type": "integer",
                                   "format": "int64"},
            "conditions": {
                "description": "Standard Kubernetes conditions (e.g. Ready, AgentConnected).",
                "type": "array",
                "items": condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "agentConnection": {
                "description": ("Status of the cluster agent connection(s), written by the cluster gateway through "
                                "the status\nsubresource."),
                "type": "object",
                "properties": {
                    "connected": {"description": "Whether any cluster agent is currently connected.",
                                  "type": "boolean"},
                    "connectedAgents": {"description": "Number of cluster agents currently connected.",
                                        "type": "integer", "minimum": 0},
                    "lastConnectedTime": {"description": "When an agent last successfully connected.",
                                          "type": "string", "format": "date-time"},
                    "lastDisconnectedTime": {"description": "When the last agent disconnected.", "type": "string",
                                             "format": "date-time"},
                    "lastHeartbeatTime": {
                        "description": "When the gateway last received any communication from an agent.",
                        "type": "string", "format": "date-time"},
                    "message": {"description": "Additional information about the agent connection status.",
                                "type": "string"},
                },
                "required": ["connected", "connectedAgents"],
            },
        },
    }


def printer_columns():
    return [
        {"name": "PlaneID", "type": "string", "jsonPath": ".spec.planeID",
         "description": "Logical plane ID (empty: defaults to the CR name)"},
        {"name": "Connected", "type": "boolean", "jsonPath": ".status.agentConnection.connected"},
        {"name": "Agents", "type": "integer", "jsonPath": ".status.agentConnection.connectedAgents"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def kind_description(kind, scope):
    plane = KINDS[kind]["plane"]
    base = {"dataplane": "a data plane cluster that runs application workloads",
            "workflowplane": "a workflow plane cluster that executes workflow (CI/build) workloads",
            "observabilityplane": "an observability plane cluster that collects logs, metrics and traces"}[plane]
    scope_txt = ("Cluster-scoped: suitable for shared plane infrastructure referenced from many namespaces."
                 if scope == "Cluster" else "Namespace-scoped.")
    return (
        kind + " represents " + base + " connected to the control plane\nthrough a cluster agent "
        "(outbound WebSocket to the cluster gateway, authenticated by client certificate).\n" + scope_txt +
        "\nspec.planeID defaults to the CR name (metadata.name) when omitted.\n"
        "Annotations: openchoreo.dev/display-name (human-readable name), openchoreo.dev/description."
    )


def crd(kind):
    facts = KINDS[kind]
    scope = facts["scope"]
    names = {
        "kind": kind,
        "listKind": kind + "List",
        "plural": facts["plural"],
        "singular": kind.lower(),
    }
    if facts["short"]:
        names["shortNames"] = list(facts["short"])
    names["categories"] = ["openchoreo", "planes"]
    schema = {
        "description": kind_description(kind, scope),
        "type": "object",
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an "
                                          "object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.",
                     "type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(kind, scope),
            "status": status_schema(kind),
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": facts["plural"] + "." + GROUP,
            "labels": {"app.kubernetes.io/part-of": "openchoreo"},
        },
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": scope,
            # Unknown fields are pruned: no schema node sets x-kubernetes-preserve-unknown-fields (the API
            # server only accepts true or unset there; "false" is expressed by leaving it out).
            "preserveUnknownFields": False,
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": printer_columns(),
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def render(kind):
    header = ("# Generated by deploy/crds/generate.py -- edit the generator, not this file.\n"
              "# OpenChoreo " + kind + " (" + GROUP + "/" + VERSION + ").\n")
    body = yaml.dump(crd(kind), Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=False)
    return header + "---\n" + body


def file_name(kind):
    return GROUP + "_" + KINDS[kind]["plural"] + ".yaml"


def main(argv):
    check = "--check" in argv
    stale = []
    for kind in KINDS:
        path = os.path.join(HERE, file_name(kind))
        text = render(kind)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(path)
            except FileNotFoundError:
                stale.append(path)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("out of date (run deploy/crds/generate.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
