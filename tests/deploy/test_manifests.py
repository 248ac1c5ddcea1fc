"""Checks the Kubernetes manifests under deploy/ without a cluster.

  (a) `kubectl kustomize deploy/` renders, with the expected objects: six CRDs, RBAC with exactly the
      least-privilege rules, the Deployment's security context / probes / args, Services, cert-manager PKI,
      and the three-replica mesh (issue 15): replicas, rolling update, downward-API env, mesh args/port/
      certificate volume, topology spread, graceful termination, headless Service, PodDisruptionBudget,
      namespaced Lease/EndpointSlice Role, mesh CA and peer certificate.
  (b) every deploy/examples/*.yaml is valid against its CRD's openAPIV3Schema (converted to JSON Schema;
      the CRDs' CEL x-kubernetes-validations rules are re-implemented in Python), and every file in
      deploy/examples/invalid/ is rejected, each for its expected reason only.
  (c) printer columns, short names, scope and structural-schema rules of the six CRDs.

Run: cd tests/deploy && CG_REPO_ROOT=../.. /usr/bin/python3 -m unittest -v test_manifests
Needs python3-yaml and python3-jsonschema; part (a) needs kubectl (skipped, with a message, without it).
"""
import copy
import glob
import os
import re
import shutil
import subprocess
import sys
import unittest

import jsonschema
import yaml

REPO = os.path.abspath(os.environ.get("CG_REPO_ROOT") or os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")
CRD_DIR = os.path.join(DEPLOY, "crds")
EXAMPLES = os.path.join(DEPLOY, "examples")
INVALID = os.path.join(EXAMPLES, "invalid")
NAMESPACE = "openchoreo-control-plane"
GROUP = "openchoreo.dev"
VERSION = "v1alpha1"
PLANEID_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
POD_SELECTOR = {"app.kubernetes.io/name": "cluster-gateway", "app.kubernetes.io/component": "cluster-gateway"}
MESH_SERVICE = "cluster-gateway-mesh"
MESH_PORT = 8445
MESH_SECRET = "cluster-gateway-mesh-tls"
SHUTDOWN_TIMEOUT_DEFAULT = 30  # the gateway's --shutdown-timeout default, seconds

# kind -> (plural, scope, short names)
KINDS = {
    "DataPlane": ("dataplanes", "Namespaced", ["dp", "dps"]),
    "ClusterDataPlane": ("clusterdataplanes", "Cluster", ["cdp", "cdps"]),
    "WorkflowPlane": ("workflowplanes", "Namespaced", []),
    "ClusterWorkflowPlane": ("clusterworkflowplanes", "Cluster", ["cwp", "cwps"]),
    "ObservabilityPlane": ("observabilityplanes", "Namespaced", []),
    "ClusterObservabilityPlane": ("clusterobservabilityplanes", "Cluster", ["cop", "cops"]),
}


def find_kubectl():
    return shutil.which("kubectl") or ("/usr/bin/kubectl" if os.access("/usr/bin/kubectl", os.X_OK) else None)


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_one(path):
    docs = load_docs(path)
    assert len(docs) == 1, "%s: expected one YAML document, found %d" % (path, len(docs))
    return docs[0]


def load_crds():
    crds = {}
    for path in sorted(glob.glob(os.path.join(CRD_DIR, "*.yaml"))):
        for doc in load_docs(path):
            if doc.get("kind") == "CustomResourceDefinition":
                crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def crd_version(crd):
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    return version


def crd_schema(crd):
    return crd_version(crd)["schema"]["openAPIV3Schema"]


# ---- structural schema -> JSON Schema ------------------------------------------------------------

def to_json_schema(node, top=True):
    """Converts a CRD structural schema node into JSON Schema (draft 7).

    x-kubernetes-* keys are dropped (CEL rules are evaluated separately by check_cel). Objects with
    declared properties get additionalProperties: false, as the API server with strict field validation
    (kubectl's default) rejects unknown fields; metadata stays open (the API server validates ObjectMeta).
    """
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub, top=False) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = to_json_schema(value, top=False) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub, top=False) for sub in value]
        else:
            out[key] = value
    if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if top:
        out["$schema"] = "http://json-schema.org/draft-07/schema#"
    return out


# ---- CEL rules, re-implemented in Python -------------------------------------------------------------
# Every x-kubernetes-validations rule found in a CRD must have an implementation here, so a new rule
# cannot slip in untested.
CEL_IMPLEMENTATIONS = {
    "has(self.value) != has(self.secretKeyRef)":
        lambda s: ("value" in s) != ("secretKeyRef" in s),
    "!has(self.secretKeyRef) || has(self.secretKeyRef.__namespace__)":
        lambda s: "secretKeyRef" not in s or "namespace" in s["secretKeyRef"],
}


def check_cel(schema, instance, path=()):
    """Yields (path, message) for every CEL rule of `schema` that `instance` violates."""
    if instance is None or not isinstance(schema, dict):
        return
    for rule in schema.get("x-kubernetes-validations", []):
        impl = CEL_IMPLEMENTATIONS.get(rule["rule"])
        if impl is None:
            raise AssertionError("no Python implementation for CEL rule %r" % rule["rule"])
        if not impl(instance):
            yield path, rule.get("message", rule["rule"])
    if isinstance(instance, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in instance:
                yield from check_cel(sub, instance[name], path + (name,))
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(instance):
            yield from check_cel(schema["items"], item, path + (i,))


def iter_schema_nodes(node, path=()):
    yield path, node
    if not isinstance(node, dict):
        return
    for name, sub in node.get("properties", {}).items():
        yield from iter_schema_nodes(sub, path + ("properties", name))
    if isinstance(node.get("items"), dict):
        yield from iter_schema_nodes(node["items"], path + ("items",))
    if isinstance(node.get("additionalProperties"), dict):
        yield from iter_schema_nodes(node["additionalProperties"], path + ("additionalProperties",))


class Validator:
    """Validates a custom resource the way the API server would (schema + CEL + scope rules)."""

    def __init__(self, crds):
        self.crds = crds
        self.validators = {}
        for kind, crd in crds.items():
            schema = to_json_schema(crd_schema(crd))
            jsonschema.Draft7Validator.check_schema(schema)
            self.validators[kind] = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())

    def errors(self, obj):
        """List of (path tuple, kind of failure, message)."""
        kind = obj.get("kind")
        if obj.get("apiVersion") != GROUP + "/" + VERSION:
            return [((), "apiVersion", "apiVersion must be %s/%s" % (GROUP, VERSION))]
        if kind not in self.crds:
            return [((), "kind", "unknown kind %r" % kind)]
        out = []
        for err in self.validators[kind].iter_errors(obj):
            out.append((tuple(err.absolute_path), err.validator, err.message))
        for path, message in check_cel(crd_schema(self.crds[kind]), obj):
            out.append((path, "x-kubernetes-validations", message))
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name) or len(name) > 253:
            out.append((("metadata", "name"), "name", "invalid object name %r" % name))
        scope = self.crds[kind]["spec"]["scope"]
        if scope == "Cluster" and "namespace" in meta:
            out.append((("metadata", "namespace"), "scope", "cluster-scoped %s must not have a namespace" % kind))
        return out


# ---- (b) examples ---------------------------------------------------------------------------------

# file -> the only error it may produce: (path, failure kind, substring of the message)
EXPECTED_REJECTIONS = {
    "cwp-bad-planeid.yaml": (("spec", "planeID"), "pattern", "does not match"),
    "cwp-wrong-observability-kind.yaml": (("spec", "observabilityPlaneRef", "kind"), "enum", "is not one of"),
    "cwp-missing-clientca.yaml": (("spec", "clusterAgent"), "required", "'clientCA' is a required property"),
    "cwp-planeid-too-long.yaml": (("spec", "planeID"), "maxLength", "is too long"),
}

# What the demo script relies on: (file, kind, name, namespace, effective planeID, secretKeyRef, display name)
EXPECTED_EXAMPLES = {
    "clusterworkflowplane-tenant-a.yaml": dict(
        kind="ClusterWorkflowPlane", name="tenant-a-ci", namespace=None, plane_id="shared-ci",
        secret={"name": "tenant-a-agent-ca", "namespace": "openchoreo-system", "key": "ca.crt"},
        display="Tenant A CI"),
    "clusterworkflowplane-tenant-b.yaml": dict(
        kind="ClusterWorkflowPlane", name="tenant-b-ci", namespace=None, plane_id="shared-ci",
        secret={"name": "tenant-b-agent-ca", "namespace": "openchoreo-system", "key": "ca.crt"},
        display="Tenant B CI"),
    "workflowplane-team-a.yaml": dict(
        kind="WorkflowPlane", name="team-a-builds", namespace="team-a", plane_id=None,
        secret={"name": "team-a-agent-ca", "key": "ca.crt"}, display="Team A builds"),
    "clusterobservabilityplane-default.yaml": dict(
        kind="ClusterObservabilityPlane", name="default", namespace=None, plane_id="observability",
        secret={"name": "observability-agent-ca", "namespace": "openchoreo-system", "key": "ca.crt"},
        display="Default observability"),
}


class ExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.crds = load_crds()
        cls.validator = Validator(cls.crds)

    def test_valid_examples_pass_their_crd_schema(self):
        files = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))
        self.assertEqual(sorted(os.path.basename(f) for f in files), sorted(EXPECTED_EXAMPLES))
        for path in files:
            with self.subTest(example=os.path.basename(path)):
                errors = self.validator.errors(load_one(path))
                self.assertEqual(errors, [], "%s should be valid" % path)

    def test_examples_have_the_names_the_demo_uses(self):
        for file, exp in EXPECTED_EXAMPLES.items():
            with self.subTest(example=file):
                obj = load_one(os.path.join(EXAMPLES, file))
                meta, spec = obj["metadata"], obj["spec"]
                self.assertEqual(obj["kind"], exp["kind"])
                self.assertEqual(meta["name"], exp["name"])
                self.assertEqual(meta.get("namespace"), exp["namespace"])
                self.assertEqual(spec.get("planeID"), exp["plane_id"])
                self.assertEqual(spec["clusterAgent"]["clientCA"], {"secretKeyRef": exp["secret"]})
                self.assertEqual(meta["annotations"]["openchoreo.dev/display-name"], exp["display"])
                self.assertTrue(meta["annotations"].get("openchoreo.dev/description"))
        a = load_one(os.path.join(EXAMPLES, "clusterworkflowplane-tenant-a.yaml"))["spec"]
        self.assertEqual(a["observabilityPlaneRef"], {"kind": "ClusterObservabilityPlane", "name": "default"})
        b = load_one(os.path.join(EXAMPLES, "clusterworkflowplane-tenant-b.yaml"))["spec"]
        self.assertEqual(b["secretStoreRef"], {"name": "vault-backend"})

    def test_invalid_examples_are_rejected_for_the_expected_reason(self):
        files = sorted(os.path.basename(f) for f in glob.glob(os.path.join(INVALID, "*.yaml")))
        self.assertEqual(files, sorted(EXPECTED_REJECTIONS), "every invalid example needs an expected reason")
        for file in files:
            with self.subTest(example=file):
                path_exp, kind_exp, msg_exp = EXPECTED_REJECTIONS[file]
                errors = self.validator.errors(load_one(os.path.join(INVALID, file)))
                self.assertEqual(len(errors), 1, "%s: expected exactly one error, got %r" % (file, errors))
                path, failure, message = errors[0]
                self.assertEqual((path, failure), (path_exp, kind_exp), message)
                self.assertIn(msg_exp, message)

    def test_planeid_boundaries(self):
        base = load_one(os.path.join(EXAMPLES, "clusterworkflowplane-tenant-a.yaml"))
        for plane_id, ok in [("a" * 63, True), ("a" * 64, False), ("a", True), ("ci-2", True), ("-ci", False),
                             ("ci-", False), ("CI", False), ("c.i", False), ("", False)]:
            with self.subTest(planeID=plane_id):
                obj = copy.deepcopy(base)
                obj["spec"]["planeID"] = plane_id
                self.assertEqual(self.validator.errors(obj) == [], ok, self.validator.errors(obj))

    def test_cel_client_ca_exactly_one_of_value_and_secret_key_ref(self):
        for kind in KINDS:
            with self.subTest(kind=kind):
                obj = minimal(kind)
                self.assertEqual(self.validator.errors(obj), [])
                ca = obj["spec"]["clusterAgent"]["clientCA"]
                ca["value"] = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
                errs = self.validator.errors(obj)
                self.assertEqual([(p, f) for p, f, _ in errs],
                                 [(("spec", "clusterAgent", "clientCA"), "x-kubernetes-validations")])
                self.assertIn("exactly one of value or secretKeyRef", errs[0][2])
                del ca["secretKeyRef"]
                self.assertEqual(self.validator.errors(obj), [])  # value alone is fine
                del ca["value"]
                errs = self.validator.errors(obj)  # neither
                self.assertEqual([(p, f) for p, f, _ in errs],
                                 [(("spec", "clusterAgent", "clientCA"), "x-kubernetes-validations")])

    def test_secret_namespace_required_only_on_cluster_kinds(self):
        for kind, (_, scope, _) in KINDS.items():
            with self.subTest(kind=kind):
                obj = minimal(kind)
                del obj["spec"]["clusterAgent"]["clientCA"]["secretKeyRef"]["namespace"]
                errs = self.validator.errors(obj)
                if scope == "Cluster":
                    self.assertEqual(len(errs), 1, errs)
                    self.assertIn("namespace is required", errs[0][2])
                else:
                    self.assertEqual(errs, [])

    def test_unknown_spec_fields_are_rejected(self):
        obj = minimal("ClusterWorkflowPlane")
        obj["spec"]["planeId"] = "typo"  # wrong case: not a field
        errs = self.validator.errors(obj)
        self.assertEqual([(p, f) for p, f, _ in errs], [(("spec",), "additionalProperties")])

    def test_observability_ref_kinds_by_scope(self):
        for kind, (_, scope, _) in KINDS.items():
            schema = crd_schema(self.crds[kind])["properties"]["spec"]["properties"]
            with self.subTest(kind=kind):
                if "Observability" in kind:
                    self.assertNotIn("observabilityPlaneRef", schema)
                    continue
                ref = schema["observabilityPlaneRef"]
                expected = ["ClusterObservabilityPlane"] if scope == "Cluster" else \
                    ["ObservabilityPlane", "ClusterObservabilityPlane"]
                self.assertEqual(ref["properties"]["kind"]["enum"], expected)
                self.assertEqual(ref["required"], ["name"])
                obj = minimal(kind)
                for ref_kind in ("ObservabilityPlane", "ClusterObservabilityPlane"):
                    obj["spec"]["observabilityPlaneRef"] = {"kind": ref_kind, "name": "default"}
                    self.assertEqual(self.validator.errors(obj) == [], ref_kind in expected)

    def test_status_as_the_gateway_writes_it_is_valid(self):
        for kind in KINDS:
            with self.subTest(kind=kind):
                obj = minimal(kind)
                obj["status"] = {
                    "observedGeneration": 3,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "AgentConnected",
                                    "message": "1 agent connected", "lastTransitionTime": "2026-01-02T03:04:05Z",
                                    "observedGeneration": 3}],
                    "agentConnection": {"connected": True, "connectedAgents": 1,
                                        "lastConnectedTime": "2026-01-02T03:04:05Z",
                                        "lastHeartbeatTime": "2026-01-02T03:05:05Z",
                                        "message": "1 agent connected"},
                }
                self.assertEqual(self.validator.errors(obj), [])
                obj["status"]["agentConnection"]["connectedAgents"] = -1
                self.assertEqual([f for _, f, _ in self.validator.errors(obj)], ["minimum"])
                obj["status"]["agentConnection"]["connectedAgents"] = 0
                obj["status"]["conditions"][0]["status"] = "Yes"
                self.assertEqual([f for _, f, _ in self.validator.errors(obj)], ["enum"])

    def test_examples_readme_mentions_every_example(self):
        with open(os.path.join(EXAMPLES, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        for path in glob.glob(os.path.join(EXAMPLES, "*.yaml")) + glob.glob(os.path.join(INVALID, "*.yaml")):
            self.assertIn(os.path.basename(path), readme)


def minimal(kind):
    obj = {"apiVersion": GROUP + "/" + VERSION, "kind": kind, "metadata": {"name": "p1"},
           "spec": {"clusterAgent": {"clientCA": {"secretKeyRef": {"name": "ca", "namespace": "ns", "key": "ca.crt"}}}}}
    if KINDS[kind][1] == "Namespaced":
        obj["metadata"]["namespace"] = "team-a"
    return obj


# ---- (c) CRD shape --------------------------------------------------------------------------------

class CrdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.crds = load_crds()

    def test_generated_files_are_up_to_date(self):
        proc = subprocess.run([sys.executable, os.path.join(CRD_DIR, "generate.py"), "--check"],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_six_kinds_names_scope_short_names(self):
        self.assertEqual(sorted(self.crds), sorted(KINDS))
        for kind, (plural, scope, short) in KINDS.items():
            with self.subTest(kind=kind):
                crd = self.crds[kind]
                self.assertEqual(crd["apiVersion"], "apiextensions.k8s.io/v1")
                self.assertEqual(crd["metadata"]["name"], plural + "." + GROUP)
                spec = crd["spec"]
                self.assertEqual(spec["group"], GROUP)
                self.assertEqual(spec["scope"], scope)
                self.assertEqual(spec["names"]["plural"], plural)
                self.assertEqual(spec["names"]["singular"], kind.lower())
                self.assertEqual(spec["names"]["listKind"], kind + "List")
                self.assertEqual(spec["names"].get("shortNames", []), short)
                self.assertIs(spec.get("preserveUnknownFields"), False)
                self.assertEqual([v["name"] for v in spec["versions"]], [VERSION])
                version = crd_version(crd)
                self.assertTrue(version["served"] and version["storage"])
                self.assertEqual(version["subresources"], {"status": {}})

    def test_printer_columns(self):
        expected = [
            ("PlaneID", "string", ".spec.planeID"),
            ("Connected", "boolean", ".status.agentConnection.connected"),
            ("Agents", "integer", ".status.agentConnection.connectedAgents"),
            ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
        for kind, crd in self.crds.items():
            with self.subTest(kind=kind):
                cols = crd_version(crd)["additionalPrinterColumns"]
                self.assertEqual([(c["name"], c["type"], c["jsonPath"]) for c in cols], expected)

    def test_spec_schema(self):
        for kind, (_, scope, _) in KINDS.items():
            with self.subTest(kind=kind):
                root = crd_schema(self.crds[kind])
                self.assertIn("CR name", root["description"])
                self.assertIn("openchoreo.dev/display-name", root["description"])
                spec = root["properties"]["spec"]
                self.assertEqual(spec["required"], ["clusterAgent"])
                plane_id = spec["properties"]["planeID"]
                self.assertEqual((plane_id["type"], plane_id["maxLength"], plane_id["pattern"]),
                                 ("string", 63, PLANEID_PATTERN))
                self.assertIn("Defaults to the CR name", plane_id["description"])
                self.assertNotIn("planeID", spec.get("required", []))
                agent = spec["properties"]["clusterAgent"]
                self.assertEqual(agent["required"], ["clientCA"])
                ca = agent["properties"]["clientCA"]
                self.assertEqual(sorted(ca["properties"]), ["secretKeyRef", "value"])
                ref = ca["properties"]["secretKeyRef"]
                self.assertEqual(sorted(ref["properties"]), ["key", "name", "namespace"])
                self.assertEqual(sorted(ref["required"]), ["key", "name"])
                rules = [r["rule"] for r in ca["x-kubernetes-validations"]]
                self.assertIn("has(self.value) != has(self.secretKeyRef)", rules)
                self.assertEqual(spec["properties"]["secretStoreRef"]["required"], ["name"])

    def test_status_schema(self):
        for kind in KINDS:
            with self.subTest(kind=kind):
                status = crd_schema(self.crds[kind])["properties"]["status"]["properties"]
                self.assertEqual((status["observedGeneration"]["type"], status["observedGeneration"]["format"]),
                                 ("integer", "int64"))
                conds = status["conditions"]
                self.assertEqual(conds["x-kubernetes-list-type"], "map")
                self.assertEqual(conds["x-kubernetes-list-map-keys"], ["type"])
                self.assertEqual(sorted(conds["items"]["required"]),
                                 ["lastTransitionTime", "message", "reason", "status", "type"])
                self.assertEqual(conds["items"]["properties"]["status"]["enum"], ["True", "False", "Unknown"])
                ac = status["agentConnection"]["properties"]
                self.assertEqual({k: (v["type"], v.get("format")) for k, v in ac.items()}, {
                    "connected": ("boolean", None), "connectedAgents": ("integer", None),
                    "lastConnectedTime": ("string", "date-time"), "lastDisconnectedTime": ("string", "date-time"),
                    "lastHeartbeatTime": ("string", "date-time"), "message": ("string", None)})

    def test_structural_schema_rules(self):
        """A subset of what the API server enforces on CRD schemas, which kubectl cannot check offline."""
        reserved = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
                    "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}
        for kind, crd in self.crds.items():
            root = crd_schema(crd)
            self.assertEqual(sorted(root["properties"]), ["apiVersion", "kind", "metadata", "spec", "status"])
            self.assertEqual(root["properties"]["metadata"], {"type": "object"})
            for path, node in iter_schema_nodes(root):
                where = "%s %s" % (kind, "/".join(path))
                with self.subTest(node=where):
                    self.assertIn("type", node, "structural schemas need a type on every node")
                    # The API server only accepts true or unset; pruning is the default.
                    self.assertNotIn("x-kubernetes-preserve-unknown-fields", node)
                    if "default" in node:
                        jsonschema.validate(node["default"], to_json_schema(node))
                    if node.get("x-kubernetes-list-type") == "map":
                        item = node["items"]
                        for key in node["x-kubernetes-list-map-keys"]:
                            self.assertTrue(key in item.get("required", []) or "default" in item["properties"][key])
                    for rule in node.get("x-kubernetes-validations", []):
                        self.assertIn(rule["rule"], CEL_IMPLEMENTATIONS)
                        for field in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", rule["rule"]):
                            self.assertNotIn(field, reserved, "CEL reserved word %r must be escaped as __%s__"
                                             % (field, field))


# ---- (a) kustomize render -------------------------------------------------------------------------

def index(objs):
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


class RenderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kubectl = find_kubectl()
        if not cls.kubectl:
            raise unittest.SkipTest("kubectl not found (PATH or /usr/bin/kubectl): skipping the "
                                    "`kubectl kustomize deploy/` render checks")
        cls.objs = cls.render(DEPLOY)
        cls.by = index(cls.objs)

    @classmethod
    def render(cls, path):
        proc = subprocess.run([cls.kubectl, "kustomize", path], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError("kubectl kustomize %s failed:\n%s" % (path, proc.stderr))
        return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]

    def test_kinds_and_counts(self):
        counts = {}
        for o in self.objs:
            counts[o["kind"]] = counts.get(o["kind"], 0) + 1
        self.assertEqual(counts, {"CustomResourceDefinition": 6, "Namespace": 1, "ServiceAccount": 1,
                                  "ClusterRole": 1, "ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 1,
                                  "Deployment": 1, "PodDisruptionBudget": 1, "Service": 3,
                                  "Issuer": 4, "Certificate": 7})
        self.assertNotIn("PodMonitor", counts)  # optional, not in the default kustomization

    def test_namespaces(self):
        cluster_kinds = {"CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding"}
        for o in self.objs:
            with self.subTest(obj=(o["kind"], o["metadata"]["name"])):
                if o["kind"] in cluster_kinds:
                    self.assertNotIn("namespace", o["metadata"])
                else:
                    self.assertEqual(o["metadata"].get("namespace"), NAMESPACE)
        self.assertIn(("Namespace", NAMESPACE), self.by)

    def test_rendered_crds_match_sources(self):
        rendered = {o["spec"]["names"]["kind"]: o for o in self.objs if o["kind"] == "CustomResourceDefinition"}
        self.assertEqual(rendered, load_crds())

    def test_rbac_least_privilege(self):
        sa = self.by[("ServiceAccount", "cluster-gateway")]
        self.assertEqual(sa["metadata"]["namespace"], NAMESPACE)
        (role,) = [o for o in self.objs if o["kind"] == "ClusterRole"]
        plurals = [p for p, _, _ in KINDS.values()]
        expected = set()
        for p in plurals:
            expected |= {(GROUP, p, v) for v in ("get", "list", "watch")}
            expected |= {(GROUP, p + "/status", v) for v in ("get", "patch")}
        expected |= {("", "secrets", v) for v in ("get", "list", "watch")}
        self.assertEqual(self.granted(role), expected)
        (binding,) = [o for o in self.objs if o["kind"] == "ClusterRoleBinding"]
        self.assertEqual(binding["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                              "name": role["metadata"]["name"]})
        self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": "cluster-gateway",
                                                "namespace": NAMESPACE}])

    def granted(self, role):
        """The (apiGroup, resource, verb) triples a Role/ClusterRole grants; no wildcards, no resourceNames."""
        granted = set()
        for rule in role["rules"]:
            self.assertEqual(set(rule) - {"apiGroups", "resources", "verbs"}, set(), "no resourceNames/nonResourceURLs")
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        self.assertNotIn("*", (g, r, v))
                        granted.add((g, r, v))
        return granted

    def test_mesh_rbac_is_namespaced_least_privilege(self):
        (role,) = [o for o in self.objs if o["kind"] == "Role"]
        self.assertEqual(role["metadata"]["name"], "cluster-gateway-mesh")
        self.assertEqual(role["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(self.granted(role), {
            ("coordination.k8s.io", "leases", "get"), ("coordination.k8s.io", "leases", "list"),
            ("coordination.k8s.io", "leases", "watch"), ("coordination.k8s.io", "leases", "create"),
            ("coordination.k8s.io", "leases", "update"),
            ("discovery.k8s.io", "endpointslices", "list"), ("discovery.k8s.io", "endpointslices", "watch")})
        (binding,) = [o for o in self.objs if o["kind"] == "RoleBinding"]
        self.assertEqual(binding["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(binding["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                              "name": "cluster-gateway-mesh"})
        self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": "cluster-gateway",
                                                "namespace": NAMESPACE}])
        # Nothing cluster-wide about Leases or EndpointSlices.
        for o in self.objs:
            if o["kind"] == "ClusterRole":
                groups = {g for g, _, _ in self.granted(o)}
                self.assertEqual(groups & {"coordination.k8s.io", "discovery.k8s.io"}, set())

    def deployment(self):
        return self.by[("Deployment", "cluster-gateway")]

    def pod_spec(self):
        return self.deployment()["spec"]["template"]["spec"]

    def pod_labels(self):
        return self.deployment()["spec"]["template"]["metadata"]["labels"]

    def arg(self, name):
        """The value of --name=VALUE in the container's args (None when absent); one occurrence at most."""
        values = [a.split("=", 1)[1] for a in self.container()["args"] if a.startswith("--%s=" % name)]
        self.assertLessEqual(len(values), 1, name)
        return values[0] if values else None

    def container(self):
        (c,) = self.deployment()["spec"]["template"]["spec"]["containers"]
        return c

    def test_deployment_basics(self):
        dep = self.deployment()
        pod = dep["spec"]["template"]["spec"]
        self.assertEqual(dep["spec"]["replicas"], 3)
        self.assertEqual(pod["serviceAccountName"], "cluster-gateway")
        c = self.container()
        self.assertEqual(c["image"], "cluster-gateway:latest")
        self.assertEqual(c["args"], ["--port=8443", "--health-port=8080", "--server-cert=/certs/tls.crt",
                                     "--server-key=/certs/tls.key", "--heartbeat-interval=30s",
                                     "--heartbeat-timeout=90s", "--log-level=info", "--internal-port=8444",
                                     "--internal-client-ca-cert=/internal-ca/ca.crt",
                                     "--mesh=true", "--mesh-port=8445", "--mesh-service=cluster-gateway-mesh",
                                     "--mesh-ca-cert=/mesh-certs/ca.crt", "--mesh-cert=/mesh-certs/tls.crt",
                                     "--mesh-key=/mesh-certs/tls.key"])
        self.assertEqual(c["resources"], {"requests": {"cpu": "100m", "memory": "64Mi"},
                                          "limits": {"cpu": "500m", "memory": "256Mi"}})
        self.assertEqual(dep["spec"]["selector"]["matchLabels"], POD_SELECTOR)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        for k, v in dep["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(labels.get(k), v)

    def test_rolling_update_never_below_the_replica_count(self):
        self.assertEqual(self.deployment()["spec"]["strategy"],
                         {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})

    def test_pod_name_and_namespace_from_the_downward_api(self):
        self.assertEqual(self.container()["env"], [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE",
             "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}}])
        self.assertIsNone(self.arg("replica-id"))  # defaults to POD_NAME: one Lease per pod

    def test_mesh_port_and_peer_certificate_are_wired(self):
        c = self.container()
        self.assertEqual(self.arg("mesh"), "true")
        self.assertEqual(int(self.arg("mesh-port")), MESH_PORT)
        self.assertIn({"name": "mesh", "containerPort": MESH_PORT, "protocol": "TCP"}, c["ports"])
        self.assertEqual(len({p["containerPort"] for p in c["ports"]}), len(c["ports"]), "ports are distinct")
        self.assertIn({"name": "mesh-certs", "mountPath": "/mesh-certs", "readOnly": True}, c["volumeMounts"])
        vols = {v["name"]: v for v in self.pod_spec()["volumes"]}
        self.assertEqual(vols["mesh-certs"]["secret"], {
            "secretName": MESH_SECRET,
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"},
                      {"key": "ca.crt", "path": "ca.crt"}]})
        self.assertEqual((self.arg("mesh-ca-cert"), self.arg("mesh-cert"), self.arg("mesh-key")),
                         ("/mesh-certs/ca.crt", "/mesh-certs/tls.crt", "/mesh-certs/tls.key"))
        # The peer certificate the volume mounts is the one cert-manager issues for the mesh.
        certs = [o for o in self.objs if o["kind"] == "Certificate" and o["spec"]["secretName"] == MESH_SECRET]
        self.assertEqual([o["metadata"]["name"] for o in certs], ["cluster-gateway-mesh"])

    def test_topology_spread_over_nodes_and_zones(self):
        selector = {"matchLabels": POD_SELECTOR}
        self.assertEqual(self.pod_spec()["topologySpreadConstraints"], [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": selector},
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": selector}])
        for k, v in POD_SELECTOR.items():
            self.assertEqual(self.pod_labels().get(k), v)

    def test_termination_leaves_room_for_the_drain(self):
        pod, c = self.pod_spec(), self.container()
        self.assertEqual(pod["terminationGracePeriodSeconds"], 45)
        self.assertEqual(c["lifecycle"], {"preStop": {"exec": {"command": ["/bin/sleep", "5"]}}})
        self.assertIsNone(self.arg("shutdown-timeout"))  # the gateway's default, 30 s
        pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        # The grace period runs from the start of preStop: preStop + the drain + at least 5 s to spare.
        self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], pre_stop + SHUTDOWN_TIMEOUT_DEFAULT + 5)
        self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], 40)

    def test_headless_mesh_service(self):
        svc = self.by[("Service", MESH_SERVICE)]
        self.assertEqual(self.arg("mesh-service"), MESH_SERVICE)
        self.assertEqual(svc["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(svc["spec"], {
            "clusterIP": "None", "publishNotReadyAddresses": False, "selector": POD_SELECTOR,
            "ports": [{"name": "mesh", "port": MESH_PORT, "targetPort": "mesh", "protocol": "TCP"}]})
        self.assertEqual(self.container_port("mesh"), MESH_PORT)
        # The mesh port is published by the headless Service only.
        for name in ("cluster-gateway", "cluster-gateway-external"):
            ports = self.by[("Service", name)]["spec"]["ports"]
            self.assertNotIn(MESH_PORT, [p["port"] for p in ports])
            self.assertNotIn("mesh", [p["targetPort"] for p in ports])

    def test_pod_disruption_budget(self):
        pdb = self.by[("PodDisruptionBudget", "cluster-gateway")]
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        self.assertEqual(pdb["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(pdb["spec"], {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                                       "selector": {"matchLabels": POD_SELECTOR}})
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], self.deployment()["spec"]["selector"]["matchLabels"])
        # With maxUnavailable 1 a node drain may proceed at any replica count, also replicas: 1, while
        # with the default 3 replicas two keep serving.
        for replicas in (1, 2, 3, 5):
            self.assertEqual(min(pdb["spec"]["maxUnavailable"], replicas), 1)
        self.assertEqual(self.deployment()["spec"]["replicas"] - pdb["spec"]["maxUnavailable"], 2)

    def test_internal_api_port_and_ca_are_wired(self):
        c = self.container()
        self.assertIn({"name": "internal-api", "containerPort": 8444, "protocol": "TCP"}, c["ports"])
        self.assertIn({"name": "internal-ca", "mountPath": "/internal-ca", "readOnly": True}, c["volumeMounts"])
        vols = {v["name"]: v for v in self.deployment()["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(vols["internal-ca"]["secret"]["secretName"], "cluster-gateway-internal-ca")

    def test_deployment_security_context(self):
        pod = self.deployment()["spec"]["template"]["spec"]
        psc, csc = pod["securityContext"], self.container()["securityContext"]
        self.assertIs(psc["runAsNonRoot"], True)
        self.assertEqual(psc["runAsUser"], 1000)
        self.assertEqual(psc["seccompProfile"], {"type": "RuntimeDefault"})
        self.assertIs(csc["runAsNonRoot"], True)
        self.assertEqual(csc["runAsUser"], 1000)
        self.assertIs(csc["readOnlyRootFilesystem"], True)
        self.assertIs(csc["allowPrivilegeEscalation"], False)
        self.assertEqual(csc["capabilities"], {"drop": ["ALL"]})
        self.assertNotIn("add", csc["capabilities"])
        self.assertEqual(csc["seccompProfile"], {"type": "RuntimeDefault"})
        self.assertNotIn("privileged", csc)
        self.assertFalse(pod.get("hostNetwork", False))

    def container_port(self, port):
        ports = self.container()["ports"]
        if isinstance(port, int):
            return port
        (p,) = [p["containerPort"] for p in ports if p["name"] == port]
        return p

    def test_probes(self):
        c = self.container()
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            with self.subTest(probe=probe):
                get = c[probe]["httpGet"]
                self.assertEqual(get["path"], path)
                self.assertEqual(self.container_port(get["port"]), 8080)
                self.assertEqual(get.get("scheme", "HTTP"), "HTTP")

    def test_tls_volume(self):
        pod = self.deployment()["spec"]["template"]["spec"]
        (vol,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "cluster-gateway-tls"]
        (mount,) = [m for m in self.container()["volumeMounts"] if m["name"] == vol["name"]]
        self.assertEqual(mount["mountPath"], "/certs")
        self.assertIs(mount.get("readOnly"), True)
        # Every volume mounted exists.
        names = {v["name"] for v in pod["volumes"]}
        for m in self.container()["volumeMounts"]:
            self.assertIn(m["name"], names)

    def test_services(self):
        pod_labels = self.deployment()["spec"]["template"]["metadata"]["labels"]
        svc = self.by[("Service", "cluster-gateway")]
        ext = self.by[("Service", "cluster-gateway-external")]
        self.assertEqual(svc["spec"]["type"], "ClusterIP")
        self.assertEqual({p["name"]: p["port"] for p in svc["spec"]["ports"]}, {"websocket": 8443, "internal-api": 8444})
        self.assertEqual([(p["name"], p["port"]) for p in ext["spec"]["ports"]], [("websocket", 8443)])
        for s in (svc, ext):
            with self.subTest(service=s["metadata"]["name"]):
                for k, v in s["spec"]["selector"].items():
                    self.assertEqual(pod_labels.get(k), v)
                for p in s["spec"]["ports"]:
                    self.assertEqual(self.container_port(p["targetPort"]), p["port"])

    def test_cert_manager_pki(self):
        issuers = {n: o for (k, n), o in self.by.items() if k == "Issuer"}
        certs = {n: o for (k, n), o in self.by.items() if k == "Certificate"}
        self.assertEqual(issuers["cluster-gateway-ca-issuer"]["spec"], {"selfSigned": {}})
        self.assertEqual(issuers["cluster-gateway-selfsigned-issuer"]["spec"], {"ca": {"secretName": "cluster-gateway-ca"}})
        self.assertEqual(issuers["cluster-gateway-internal-ca-issuer"]["spec"],
                         {"ca": {"secretName": "cluster-gateway-internal-ca"}})
        self.assertEqual(sorted(issuers), ["cluster-gateway-ca-issuer", "cluster-gateway-internal-ca-issuer",
                                           "cluster-gateway-mesh-ca-issuer", "cluster-gateway-selfsigned-issuer"])
        self.assertEqual(sorted(certs), ["cluster-gateway-ca", "cluster-gateway-internal-ca", "cluster-gateway-mesh",
                                         "cluster-gateway-mesh-ca", "cluster-gateway-tls",
                                         "controller-manager-cluster-gateway-client",
                                         "openchoreo-api-cluster-gateway-client"])
        for name in ("cluster-gateway-ca", "cluster-gateway-internal-ca", "cluster-gateway-mesh-ca"):
            with self.subTest(ca=name):
                spec = certs[name]["spec"]
                self.assertIs(spec["isCA"], True)
                self.assertEqual(spec["secretName"], name)
                self.assertEqual((spec["privateKey"]["algorithm"], spec["privateKey"]["size"]), ("RSA", 4096))
                self.assertEqual(spec["issuerRef"]["name"], "cluster-gateway-ca-issuer")
        self.assertEqual(certs["cluster-gateway-internal-ca"]["spec"]["privateKey"]["rotationPolicy"], "Never")
        tls = certs["cluster-gateway-tls"]["spec"]
        self.assertEqual(tls["secretName"], "cluster-gateway-tls")
        self.assertEqual(tls["issuerRef"]["name"], "cluster-gateway-selfsigned-issuer")
        self.assertEqual(tls["dnsNames"], ["cluster-gateway.openchoreo-control-plane.svc",
                                           "cluster-gateway.openchoreo-control-plane.svc.cluster.local"])
        self.assertEqual((tls["duration"], tls["renewBefore"]), ("2160h", "360h"))
        self.assertIn("server auth", tls["usages"])
        for name, cn, secret in (("controller-manager-cluster-gateway-client", "openchoreo-controller-manager",
                                  "controller-manager-cluster-gateway-client-tls"),
                                 ("openchoreo-api-cluster-gateway-client", "openchoreo-api",
                                  "openchoreo-api-cluster-gateway-client-tls")):
            with self.subTest(client=name):
                spec = certs[name]["spec"]
                self.assertEqual((spec["commonName"], spec["secretName"]), (cn, secret))
                self.assertEqual(spec["issuerRef"]["name"], "cluster-gateway-internal-ca-issuer")
                self.assertIn("client auth", spec["usages"])
                self.assertNotIn("server auth", spec["usages"])
        for cert in certs.values():
            self.assertIn(cert["spec"]["issuerRef"]["name"], issuers)

    def test_mesh_pki(self):
        issuers = {n: o for (k, n), o in self.by.items() if k == "Issuer"}
        certs = {n: o for (k, n), o in self.by.items() if k == "Certificate"}
        # self-signed bootstrap Issuer -> mesh CA Certificate -> mesh CA Issuer -> peer Certificate
        ca = certs["cluster-gateway-mesh-ca"]["spec"]
        self.assertEqual(ca["issuerRef"], {"kind": "Issuer", "name": "cluster-gateway-ca-issuer",
                                           "group": "cert-manager.io"})
        self.assertEqual(issuers[ca["issuerRef"]["name"]]["spec"], {"selfSigned": {}})
        self.assertEqual((ca["commonName"], ca["duration"], ca["renewBefore"]),
                         ("openchoreo-cluster-gateway-mesh-ca", "87600h", "720h"))
        self.assertEqual(ca["privateKey"]["rotationPolicy"], "Never")
        self.assertEqual(issuers["cluster-gateway-mesh-ca-issuer"]["spec"], {"ca": {"secretName": "cluster-gateway-mesh-ca"}})
        peer = certs["cluster-gateway-mesh"]["spec"]
        self.assertEqual(peer["secretName"], MESH_SECRET)
        self.assertEqual(peer["issuerRef"], {"kind": "Issuer", "name": "cluster-gateway-mesh-ca-issuer",
                                             "group": "cert-manager.io"})
        self.assertEqual(peer["usages"], ["server auth", "client auth", "digital signature", "key encipherment"])
        self.assertNotIn("isCA", peer)
        svc, ns = MESH_SERVICE, NAMESPACE
        self.assertEqual(peer["dnsNames"], [svc, "%s.%s.svc" % (svc, ns), "%s.%s.svc.cluster.local" % (svc, ns),
                                            "*.%s.%s.svc" % (svc, ns), "*.%s.%s.svc.cluster.local" % (svc, ns)])
        self.assertEqual(peer["commonName"], "%s.%s.svc" % (svc, ns))
        self.assertEqual((peer["duration"], peer["renewBefore"]), ("2160h", "360h"))
        self.assertEqual((peer["privateKey"]["algorithm"], peer["privateKey"]["size"],
                          peer["privateKey"]["rotationPolicy"]), ("RSA", 2048, "Always"))
        # The mesh CA signs peer certificates only: any certificate it issued is accepted as a peer.
        signed_by_mesh_ca = [n for n, c in certs.items() if c["spec"]["issuerRef"]["name"] == "cluster-gateway-mesh-ca-issuer"]
        self.assertEqual(signed_by_mesh_ca, ["cluster-gateway-mesh"])
        self.assertNotIn(ca["secretName"], {"cluster-gateway-ca", "cluster-gateway-internal-ca"})

    def test_gateway_only_kustomization_has_no_crds_or_namespace(self):
        objs = self.render(os.path.join(DEPLOY, "gateway"))
        kinds = {o["kind"] for o in objs}
        self.assertNotIn("CustomResourceDefinition", kinds)
        self.assertNotIn("Namespace", kinds)
        self.assertIn("Deployment", kinds)
        # Everything but the CRDs and the Namespace, the mesh objects included.
        self.assertEqual(sorted((o["kind"], o["metadata"]["name"]) for o in objs),
                         sorted(k for k in self.by if k[0] not in ("CustomResourceDefinition", "Namespace")))

    def test_readme_replicas_section(self):
        with open(os.path.join(DEPLOY, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        m = re.search(r"^## Replicas\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
        self.assertIsNotNone(m, "deploy/README.md needs a '## Replicas' section")
        section = m.group(1)
        for needle in ("replicas: 1", MESH_SERVICE, "PodDisruptionBudget", "Role", "Lease", "EndpointSlice",
                       "cluster-gateway-status-writer", MESH_SECRET, "topologySpreadConstraints",
                       "scale deployment/cluster-gateway"):
            self.assertIn(needle, section)

    def test_optional_podmonitor(self):
        pm = load_one(os.path.join(DEPLOY, "optional", "podmonitor.yaml"))
        self.assertEqual((pm["apiVersion"], pm["kind"]), ("monitoring.coreos.com/v1", "PodMonitor"))
        self.assertEqual(pm["metadata"]["namespace"], NAMESPACE)
        pod_labels = self.deployment()["spec"]["template"]["metadata"]["labels"]
        for k, v in pm["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(pod_labels.get(k), v)
        (ep,) = pm["spec"]["podMetricsEndpoints"]
        self.assertEqual(self.container_port(ep["port"]), 8080)
        self.assertEqual(ep["path"], "/metrics")


class DockerfileTest(unittest.TestCase):
    def test_dockerfile_shape(self):
        with open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8") as f:
            text = f.read()
        froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
        self.assertEqual([f[0] for f in froms], ["debian:bookworm", "debian:bookworm-slim"])
        self.assertEqual(froms[0][1], "build")
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
        build, runtime = re.split(r"^FROM\s+debian:bookworm-slim", code, flags=re.M)
        self.assertIn("scripts/bootstrap", build)  # the very same package list developers and CI use
        self.assertIn("-G Ninja", build)
        self.assertRegex(runtime, r"(?m)^USER 1000(:1000)?$")
        self.assertRegex(runtime, r'(?m)^ENTRYPOINT \["/usr/local/bin/cluster-gateway"\]$')
        self.assertNotRegex(runtime, r"-dev\b")  # runtime libraries only
        self.assertTrue(os.path.exists(os.path.join(REPO, "scripts", "bootstrap")))

    def test_runtime_packages_cover_the_built_binary(self):
        """Every shared library of a locally built gateway comes from a package the runtime stage installs."""
        binary = os.environ.get("CG_GATEWAY_BINARY") or os.path.join(REPO, "build", "bin", "cluster-gateway")
        if not (os.access(binary, os.X_OK) and shutil.which("ldd") and shutil.which("dpkg")):
            self.skipTest("no built %s (or no ldd/dpkg): runtime library check skipped" % binary)
        with open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8") as f:
            runtime = re.split(r"^FROM\s+debian:bookworm-slim", f.read(), flags=re.M)[1]
        installed = set(re.findall(r"\b(lib[a-z0-9.+-]+|ca-certificates)\b", runtime))
        base = {"libc6", "libstdc++6", "libgcc-s1"}  # in debian:bookworm-slim already
        ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        for lib in re.findall(r"=>\s+(/\S+)", ldd):
            if re.search(r"/lib(asan|ubsan|tsan|lsan)\.so", lib):
                continue  # a sanitizer build's runtime (build-asan/, build-tsan/): never in an image
            candidates = {lib, os.path.realpath(lib)}
            candidates |= {c.replace("/lib/", "/usr/lib/", 1) for c in list(candidates) if c.startswith("/lib/")}
            owner = None
            for c in candidates:
                proc = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
                if proc.returncode == 0:
                    owner = proc.stdout.split(":")[0].strip()
                    break
            with self.subTest(lib=lib):
                self.assertIsNotNone(owner, "no package owns %s" % lib)
                self.assertIn(owner, installed | base, "%s (from %s) missing in the runtime stage" % (owner, lib))


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(REPO, "tests", "support"))
    import ctest_main  # noqa: E402
    sys.exit(ctest_main.main())  # a skip exits 77 (ctest: Skipped), or 1 with CI=true
