"""In-memory object store with kube-apiserver semantics, for the fake API server.

Everything here is synchronous and runs on the server's single asyncio thread, so every operation is
atomic with respect to watches: an event is appended to the history and handed to the listeners in
the same step that changes the object.
"""
import base64
import binascii
import copy
import datetime
import ipaddress
import json
import random
import re
import uuid
from collections import deque

GROUP = "openchoreo.dev"
VERSION = "v1alpha1"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PLANE_ID = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# ObjectMeta fields a typed server keeps; anything else under metadata is dropped.
OBJECT_META_FIELDS = {
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
}
# Metadata fields whose ownership is tracked in managedFields.
TRACKED_META = {"labels", "annotations", "finalizers", "ownerReferences"}
# Lists merged by key (x-kubernetes-list-type: map) in server-side apply; all other lists are atomic.
LIST_MAP_KEYS = {("status", "conditions"): "type"}


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s):
    return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------------------------------------
# Errors rendered as metav1.Status


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.list_meta = {}  # the Status's ListMeta (e.g. "continue" on an expired continue token)

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": dict(self.list_meta), "status": "Failure",
             "message": self.message}
        if self.reason:
            s["reason"] = self.reason
        if self.details is not None:
            s["details"] = self.details
        s["code"] = self.code
        return s


def status_success(details=None):
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details is not None:
        s["details"] = details
    return s


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


class FieldError:
    """One entry of a field.ErrorList; `summary` is what follows the field path, e.g. 'Required value'."""

    def __init__(self, reason, field, summary):
        self.reason, self.field, self.summary = reason, field, summary

    def __str__(self):
        return f"{self.field}: {self.summary}"


def go_quote(v):
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, separators=(",", ":"))


def invalid(field, value, detail):
    return FieldError("FieldValueInvalid", field, f"Invalid value: {go_quote(value)}: {detail}")


def required(field, detail=""):
    return FieldError("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def too_long(field, n):
    return FieldError("FieldValueTooLong", field, f"Too long: may not be more than {n} bytes")


def forbidden(field, detail):
    return FieldError("FieldValueForbidden", field, f"Forbidden: {detail}")


def invalid_error(rt, name, errs):
    msgs = [str(e) for e in errs]
    joined = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    gk = rt.kind + ("." + rt.group if rt.group else "")
    causes = [{"reason": e.reason, "message": e.summary, "field": e.field} for e in errs]
    return ApiError(422, "Invalid", f'{gk} "{name}" is invalid: {joined}',
                    {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})


def not_found(rt, name):
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found',
                    {"name": name, "group": rt.group, "kind": rt.plural})


def already_exists(rt, name):
    return ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists',
                    {"name": name, "group": rt.group, "kind": rt.plural})


def conflict(rt, name, why="the object has been modified; please apply your changes to the latest version and try again"):
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
                    {"name": name, "group": rt.group, "kind": rt.plural})


# ---------------------------------------------------------------------------------------------
# Resource types


class ResourceType:
    def __init__(self, group, version, kind, plural, namespaced, short_names=(), has_status=False,
                 is_crd=False, verbs=None, has_generation=None):
        self.group, self.version, self.kind, self.plural = group, version, kind, plural
        self.singular = kind.lower()
        self.namespaced = namespaced
        self.short_names = list(short_names)
        self.has_status = has_status
        self.is_crd = is_crd
        # metadata.generation: 1 on create, +1 when anything but metadata/status changes (CRs, EndpointSlices).
        self.has_generation = is_crd if has_generation is None else has_generation
        self.verbs = verbs or ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self):
        return self.plural + ("." + self.group if self.group else "")

    @property
    def key(self):
        return (self.group, self.plural)

    def __repr__(self):
        return f"<ResourceType {self.group_resource}>"


def _plane(kind, plural, namespaced, short):
    return ResourceType(GROUP, VERSION, kind, plural, namespaced, short, has_status=True, is_crd=True)


RESOURCE_TYPES = [
    _plane("DataPlane", "dataplanes", True, ["dp", "dps"]),
    _plane("WorkflowPlane", "workflowplanes", True, ["wp", "wps"]),
    _plane("ObservabilityPlane", "observabilityplanes", True, ["op", "ops"]),
    _plane("ClusterDataPlane", "clusterdataplanes", False, ["cdp", "cdps"]),
    _plane("ClusterWorkflowPlane", "clusterworkflowplanes", False, ["cwp", "cwps"]),
    _plane("ClusterObservabilityPlane", "clusterobservabilityplanes", False, ["cop", "cops"]),
    ResourceType("", "v1", "Namespace", "namespaces", False, ["ns"], has_status=True,
                 verbs=["create", "delete", "get", "list", "patch", "update", "watch"]),
    ResourceType("", "v1", "Secret", "secrets", True),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True),
    ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, has_generation=True),
]
BY_KEY = {rt.key: rt for rt in RESOURCE_TYPES}
BY_KIND = {(rt.api_version, rt.kind): rt for rt in RESOURCE_TYPES}
NAMESPACES = BY_KEY[("", "namespaces")]
SECRETS = BY_KEY[("", "secrets")]
LEASES = BY_KEY[("coordination.k8s.io", "leases")]
ENDPOINTSLICES = BY_KEY[("discovery.k8s.io", "endpointslices")]
# The API groups under /apis, in the real server's order (built-in groups first, CRD groups last).
API_GROUPS = [("coordination.k8s.io", "v1"), ("discovery.k8s.io", "v1"), (GROUP, VERSION)]


def lookup(group, version, plural):
    rt = BY_KEY.get((group, plural))
    if rt is None or rt.version != version:
        return None
    return rt


# ---------------------------------------------------------------------------------------------
# Selectors


def _split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VAL = r"[-A-Za-z0-9_.]*"


def parse_label_selector(s):
    """Returns a predicate over a labels dict; raises ApiError(400) when unparsable."""
    if not s:
        return lambda labels: True
    reqs = []
    for raw in _split_top(s):
        r = raw.strip()
        m = re.fullmatch(rf"(!?)\s*({_KEY})", r)
        if m:
            neg, k = m.group(1), m.group(2)
            reqs.append((lambda k, neg: (lambda l: (k in l) != bool(neg)))(k, neg))
            continue
        m = re.fullmatch(rf"({_KEY})\s*(==|=|!=)\s*({_VAL})", r)
        if m:
            k, op, v = m.groups()
            if op == "!=":
                reqs.append((lambda k, v: (lambda l: l.get(k) != v))(k, v))
            else:
                reqs.append((lambda k, v: (lambda l: l.get(k) == v))(k, v))
            continue
        m = re.fullmatch(rf"({_KEY})\s+(in|notin)\s*\(([^)]*)\)", r)
        if m:
            k, op, vals = m.groups()
            vs = {x.strip() for x in vals.split(",") if x.strip()}
            if op == "in":
                reqs.append((lambda k, vs: (lambda l: l.get(k) in vs))(k, vs))
            else:
                reqs.append((lambda k, vs: (lambda l: l.get(k) not in vs))(k, vs))
            continue
        m = re.fullmatch(rf"({_KEY})\s*(<|>)\s*(-?\d+)", r)
        if m:
            k, op, n = m.group(1), m.group(2), int(m.group(3))

            def cmp(l, k=k, op=op, n=n):
                try:
                    x = int(l[k])
                except (KeyError, ValueError):
                    return False
                return x < n if op == "<" else x > n
            reqs.append(cmp)
            continue
        raise bad_request(f"unable to parse requirement: {r!r}: invalid label selector")
    return lambda labels: all(f(labels) for f in reqs)


def field_selector_fields(rt, obj):
    meta = obj.get("metadata", {})
    f = {"metadata.name": meta.get("name", "")}
    if rt.namespaced:
        f["metadata.namespace"] = meta.get("namespace", "")
    if rt is SECRETS:
        f["type"] = obj.get("type", "")
    if rt is NAMESPACES:
        f["status.phase"] = obj.get("status", {}).get("phase", "")
    return f


def parse_field_selector(rt, s):
    if not s:
        return lambda obj: True
    reqs = []
    allowed = sorted(field_selector_fields(rt, {"metadata": {}}).keys())
    for raw in _split_top(s):
        m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*", raw)
        if not m:
            raise bad_request(f"invalid selector: '{s}'; can't understand '{raw}'")
        k, op, v = m.groups()
        if k not in allowed:
            raise bad_request(f'field label not supported: {k}')
        reqs.append((k, op != "!=", v))
    return lambda obj: all((field_selector_fields(rt, obj).get(k) == v) == eq for k, eq, v in reqs)


# ---------------------------------------------------------------------------------------------
# Patches


def json_equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return a == b


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


class JsonPatchError(Exception):
    pass


def _pointer(p):
    if p == "":
        return []
    if not p.startswith("/"):
        raise JsonPatchError(f"JSON pointer must start with '/': {p!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in p[1:].split("/")]


def _resolve_parent(doc, tokens, path):
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise JsonPatchError(f"doc is missing path: \"{path}\": missing value")
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise JsonPatchError(f"doc is missing path: \"{path}\": missing value")
        else:
            raise JsonPatchError(f"doc is missing path: \"{path}\": missing value")
    return cur


def _get(doc, path):
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        try:
            i = int(last)
            if 0 <= i < len(parent):
                return parent[i]
        except ValueError:
            pass
    raise JsonPatchError(f"doc is missing path: \"{path}\": missing value")


def _add(doc, path, value):
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise JsonPatchError(f"add operation does not apply: invalid index {last!r}")
            if i < 0 or i > len(parent):
                raise JsonPatchError(f"add operation does not apply: index out of bounds: {i}")
            parent.insert(i, value)
    else:
        raise JsonPatchError(f"add operation does not apply: doc is missing path: \"{path}\": missing value")
    return doc


def _remove(doc, path, op="remove"):
    tokens = _pointer(path)
    if not tokens:
        raise JsonPatchError(f"{op} operation does not apply: cannot remove the document root")
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            i = int(last)
            if 0 <= i < len(parent):
                return parent.pop(i)
        except ValueError:
            pass
    raise JsonPatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")


def json_patch(doc, ops):
    """RFC 6902 JSON patch. Raises JsonPatchError (-> 422) on an op that does not apply."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise JsonPatchError("invalid JSON patch operation: missing 'op'")
        kind, path = op["op"], op.get("path")
        if path is None:
            raise JsonPatchError(f"{kind} operation does not apply: missing 'path'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            if _pointer(path):
                _remove(doc, path, "replace")
                doc = _add(doc, path, copy.deepcopy(op.get("value")))
            else:
                doc = copy.deepcopy(op.get("value"))
        elif kind == "move":
            v = _remove(doc, op.get("from", ""), "move")
            doc = _add(doc, path, v)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op.get("from", ""))))
        elif kind == "test":
            if not json_equal(_get(doc, path), op.get("value")):
                raise JsonPatchError(f"testing value {path} failed: test failed")
        else:
            raise JsonPatchError(f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------------------------------------
# Field ownership (a small model of server-side apply's managedFields)


def _norm(path):
    return tuple(p for p in path if not isinstance(p, tuple))


def _item_key(field, item):
    return ("k", json.dumps({field: item.get(field)}, separators=(",", ":")))


def leaf_values(obj, prefix=()):
    """{path: value} of the leaves of obj; maps recurse, lists are atomic except LIST_MAP_KEYS."""
    out = {}
    for k, v in obj.items():
        p = prefix + (k,)
        key_field = LIST_MAP_KEYS.get(_norm(p))
        if isinstance(v, dict) and v:
            out.update(leaf_values(v, p))
        elif key_field and isinstance(v, list) and v and all(isinstance(i, dict) and key_field in i for i in v):
            for item in v:
                out.update(leaf_values(item, p + (_item_key(key_field, item),)))
        else:
            out[p] = v
    return out


def tracked_leaves(rt, obj, scope):
    """Leaves owned by writers: main resource (without status when it is a subresource) or status."""
    out = {}
    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if k == "metadata":
            sub = {mk: mv for mk, mv in (v or {}).items() if mk in TRACKED_META}
            out.update(leaf_values({"metadata": sub}) if sub else {})
            continue
        is_status = k == "status" and rt.has_status
        if (scope == "status") != is_status:
            continue
        out.update(leaf_values({k: v}))
    return out


def _find_item(lst, key_token):
    want = json.loads(key_token[1])
    (field, val), = want.items()
    for i, item in enumerate(lst):
        if isinstance(item, dict) and item.get(field) == val:
            return i
    return None


def value_at(obj, path):
    cur = obj
    for p in path:
        if isinstance(p, tuple):
            if not isinstance(cur, list):
                return KeyError
            i = _find_item(cur, p)
            if i is None:
                return KeyError
            cur = cur[i]
        else:
            if not isinstance(cur, dict) or p not in cur:
                return KeyError
            cur = cur[p]
    return cur


def delete_path(obj, path):
    cur = obj
    for p in path[:-1]:
        if isinstance(p, tuple):
            i = _find_item(cur, p) if isinstance(cur, list) else None
            if i is None:
                return
            cur = cur[i]
        else:
            if not isinstance(cur, dict) or p not in cur:
                return
            cur = cur[p]
    last = path[-1]
    if isinstance(last, tuple):
        if isinstance(cur, list):
            i = _find_item(cur, last)
            if i is not None:
                cur.pop(i)
    elif isinstance(cur, dict):
        cur.pop(last, None)


def fields_v1(paths):
    root = {}
    for path in sorted(paths, key=lambda p: [str(x) for x in p]):
        cur = root
        for p in path:
            k = ("k:" + p[1]) if isinstance(p, tuple) else "f:" + p
            cur = cur.setdefault(k, {})
    return root


def apply_merge(live, cfg, path=()):
    """Merge an applied configuration into the live object (maps merge, keyed lists merge by key)."""
    if isinstance(cfg, dict) and isinstance(live, dict):
        out = copy.deepcopy(live)
        for k, v in cfg.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = apply_merge(live.get(k), v, path + (k,))
        return out
    key_field = LIST_MAP_KEYS.get(_norm(path))
    if key_field and isinstance(cfg, list) and isinstance(live, list):
        out = copy.deepcopy(live)
        for item in cfg:
            if not isinstance(item, dict) or key_field not in item:
                return copy.deepcopy(cfg)
            i = _find_item(out, _item_key(key_field, item))
            if i is None:
                out.append(copy.deepcopy(item))
            else:
                out[i] = apply_merge(out[i], item, path)
        return out
    return copy.deepcopy(cfg)


class Manager:
    def __init__(self, manager, operation, subresource, api_version):
        self.manager, self.operation, self.subresource, self.api_version = manager, operation, subresource, api_version
        self.time = now_rfc3339()
        self.paths = set()

    @property
    def ident(self):
        return (self.manager, self.operation, self.subresource)

    def render(self):
        e = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version,
             "time": self.time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(self.paths)}
        if self.subresource:
            e["subresource"] = self.subresource
        return e


def _path_str(path):
    s = ""
    for p in path:
        s += ("[" + p[1].strip("{}").replace('":', '=').replace('"', "") + "]") if isinstance(p, tuple) else "." + p
    return s


# ---------------------------------------------------------------------------------------------
# Schema-lite validation and pruning


DT = {"type": "string", "format": "date-time"}
PLANE_STATUS_SCHEMA = {
    "type": "object",
    "properties": {
        "agentConnection": {
            "type": "object",
            "required": ["connected", "connectedAgents"],
            "properties": {
                "connected": {"type": "boolean"},
                "connectedAgents": {"type": "integer"},
                "lastConnectedTime": DT,
                "lastDisconnectedTime": DT,
                "lastHeartbeatTime": DT,
                "message": {"type": "string"},
            },
        },
        "conditions": {
            "type": "array",
            "listMapKey": "type",
            "items": {
                "type": "object",
                "required": ["lastTransitionTime", "message", "reason", "status", "type"],
                "properties": {
                    "lastTransitionTime": DT,
                    "message": {"type": "string", "maxLength": 32768},
                    "observedGeneration": {"type": "integer", "minimum": 0},
                    "reason": {"type": "string", "maxLength": 1024, "minLength": 1,
                               "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "type": {"type": "string", "maxLength": 316,
                             "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"},
                },
            },
        },
        "observedGeneration": {"type": "integer"},
    },
}
_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _type_ok(v, t):
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "string":
        return isinstance(v, str)
    if t == "array":
        return isinstance(v, list)
    if t == "object":
        return isinstance(v, dict)
    return True


def validate_schema(value, schema, path, errs, pruned):
    """Structural-schema check: type, required, enum, pattern, lengths, list-map keys; prunes unknown fields."""
    t = schema.get("type")
    if not _type_ok(value, t):
        errs.append(invalid(path, _TYPE_NAMES.get(type(value), "null"),
                            f"{path} in body must be of type {t}: {go_quote(_TYPE_NAMES.get(type(value), 'null'))}"))
        return
    if t == "object" and "properties" in schema:
        props = schema["properties"]
        for k in list(value.keys()):
            if k not in props:
                pruned.append(f"{path}.{k}")
                del value[k]
            elif value[k] is None:
                del value[k]
        for r in schema.get("required", []):
            if r not in value:
                errs.append(required(f"{path}.{r}"))
        for k, sub in props.items():
            if k in value:
                validate_schema(value[k], sub, f"{path}.{k}", errs, pruned)
    elif t == "array":
        key = schema.get("listMapKey")
        seen = set()
        for i, item in enumerate(value):
            validate_schema(item, schema["items"], f"{path}[{i}]", errs, pruned)
            if key and isinstance(item, dict) and key in item:
                kv = json.dumps(item[key])
                if kv in seen:
                    errs.append(FieldError("FieldValueDuplicate", f"{path}[{i}]",
                                           f'Duplicate value: map[string]interface {{}}{{"{key}":{kv}}}'))
                seen.add(kv)
    elif t == "string":
        if "enum" in schema and value not in schema["enum"]:
            sup = ", ".join(json.dumps(e) for e in schema["enum"])
            errs.append(FieldError("FieldValueNotSupported", path, f"Unsupported value: {json.dumps(value)}: supported values: {sup}"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(too_long(path, schema["maxLength"]))
        if "minLength" in schema and len(value) < schema["minLength"]:
            errs.append(invalid(path, value, f"{path} in body should be at least {schema['minLength']} chars long"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(invalid(path, value, f"{path} in body should match '{schema['pattern']}'"))
        if schema.get("format") == "date-time" and not RFC3339.match(value):
            errs.append(invalid(path, value, f"{path} in body must be of type date-time: {json.dumps(value)}"))
    elif t == "integer" and "minimum" in schema and value < schema["minimum"]:
        errs.append(invalid(path, value, f"{path} in body should be greater than or equal to {schema['minimum']}"))


def validate_name(rt, name, errs):
    if not name:
        errs.append(required("metadata.name", "name or generateName is required"))
        return
    if rt is NAMESPACES:
        if len(name) > 63:
            errs.append(invalid("metadata.name", name, "must be no more than 63 characters"))
        elif not DNS1123_LABEL.match(name):
            errs.append(invalid("metadata.name", name,
                                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                                "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
                                "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"))
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        errs.append(invalid("metadata.name", name,
                            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                            "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                            "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))


def validate_labels(labels, errs):
    if labels is None:
        return
    if not isinstance(labels, dict):
        errs.append(invalid("metadata.labels", labels, "must be a map of strings"))
        return
    for k, v in labels.items():
        name = k.split("/", 1)[-1]
        prefix = k.split("/", 1)[0] if "/" in k else ""
        if (prefix and not DNS1123_SUBDOMAIN.match(prefix)) or not name or len(name) > 63 or not LABEL_NAME.match(name):
            errs.append(invalid("metadata.labels", k, "name part must consist of alphanumeric characters, '-', '_' or '.', "
                                "and must start and end with an alphanumeric character"))
        if not isinstance(v, str):
            errs.append(invalid("metadata.labels", v, "label values must be strings"))
        elif v and (len(v) > 63 or not LABEL_NAME.match(v)):
            errs.append(invalid("metadata.labels", v, "a valid label must be an empty string or consist of alphanumeric "
                                "characters, '-', '_' or '.', and must start and end with an alphanumeric character"))


# ---------------------------------------------------------------------------------------------
# Built-in typed kinds (Lease, EndpointSlice): what decoding into the Go struct does


OMIT = object()  # an omitempty field: left out when absent
MICRO_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\.(\d{6})(Z|[+-]\d{2}:\d{2})$")
MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"


def _f(name, type_, zero=OMIT, default=OMIT):
    """A struct field: `zero` is what a non-omitempty field is written as when unset (nil slices are
    null), `default` what the defaulting functions fill in."""
    return (name, type_, zero, default)


def _obj(go_name, *fields):
    return ("object", go_name, fields)


OBJECT_REFERENCE = _obj("ObjectReference", _f("kind", "string"), _f("namespace", "string"), _f("name", "string"),
                        _f("uid", "string"), _f("apiVersion", "string"), _f("resourceVersion", "string"),
                        _f("fieldPath", "string"))
# strategy and preferredHolder need the CoordinatedLeaderElection feature gate (off in 1.32): dropped.
LEASE_SPEC = _obj("LeaseSpec", _f("holderIdentity", "string"), _f("leaseDurationSeconds", "int32"),
                  _f("acquireTime", "microtime"), _f("renewTime", "microtime"), _f("leaseTransitions", "int32"),
                  _f("strategy", "dropped"), _f("preferredHolder", "dropped"))
ENDPOINT = _obj("Endpoint",
                _f("addresses", ("array", "string"), None),
                _f("conditions", _obj("EndpointConditions", _f("ready", "bool"), _f("serving", "bool"),
                                      _f("terminating", "bool")), {}),
                _f("hostname", "string"), _f("targetRef", OBJECT_REFERENCE),
                _f("deprecatedTopology", ("map", "string")), _f("nodeName", "string"), _f("zone", "string"),
                _f("hints", _obj("EndpointHints", _f("forZones", ("array", _obj("ForZone", _f("name", "string")))))))
ENDPOINT_PORT = _obj("EndpointPort", _f("name", "string", default=""), _f("protocol", "string", default="TCP"),
                     _f("port", "int32"), _f("appProtocol", "string"))
TYPED_SCHEMAS = {
    LEASES: _obj("Lease", _f("spec", LEASE_SPEC, {})),
    ENDPOINTSLICES: _obj("EndpointSlice", _f("addressType", "string", ""),
                         _f("endpoints", ("array", ENDPOINT), None), _f("ports", ("array", ENDPOINT_PORT), None)),
}
_JSON_TYPE = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object"}


def _go_type(t):
    if isinstance(t, tuple):
        if t[0] == "object":
            return "v1." + t[1]
        if t[0] == "array":
            return "[]" + _go_type(t[1])
        return "map[string]" + _go_type(t[1])
    return {"microtime": "v1.MicroTime"}.get(t, t)


def microtime(v):
    """A MicroTime as the server writes it back (UTC, 6 fractional digits); ValueError like Go's
    time.Parse with RFC3339Micro, which wants exactly 6 fractional digits."""
    m = MICRO_TIME.match(v)
    if not m:
        head = re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", v)
        rest, elem = (v[head.end():], ".000000") if head else (v, "2006")
        raise ValueError(f'parsing time {json.dumps(v)} as "{MICRO_LAYOUT}": cannot parse {json.dumps(rest)} as "{elem}"')
    tz = m.group(3).replace("Z", "+00:00")
    t = datetime.datetime.fromisoformat(f"{m.group(1)}.{m.group(2)}{tz}")
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _DecodeError(Exception):
    pass


def _decode(value, t, struct, jpath, fpath, warnings):
    """One value decoded as type t; `struct`/`jpath` name the Go field for error messages, `fpath` is the
    field path of unknown-field warnings. Returns OMIT for a value that decodes to nothing."""
    if value is None:
        return OMIT
    got = _JSON_TYPE.get(type(value), "null")

    def mismatch():
        where = f"Go struct field {struct}.{jpath}" if struct else "Go value"
        return _DecodeError(f"json: cannot unmarshal {got} into {where} of type {_go_type(t)}")

    if t == "dropped":
        return OMIT
    if t == "string":
        if not isinstance(value, str):
            raise mismatch()
        return value
    if t == "bool":
        if not isinstance(value, bool):
            raise mismatch()
        return value
    if t == "int32":
        if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)
                                        and not -2 ** 31 <= value < 2 ** 31):
            # Go's decoder rejects a fraction (even 80.0) and an out-of-range number for an int32.
            raise _DecodeError(f"json: cannot unmarshal number {value} into Go struct field {struct}.{jpath} of type int32")
        if not isinstance(value, int) or isinstance(value, bool):
            raise mismatch()
        return value
    if t == "microtime":
        if not isinstance(value, str):
            raise _DecodeError(f"json: cannot unmarshal {got} into Go value of type string")
        try:
            return microtime(value)
        except ValueError as e:
            raise _DecodeError(str(e))
    kind = t[0]
    if kind == "array":
        if not isinstance(value, list):
            raise mismatch()
        out = []
        for i, item in enumerate(value):
            d = _decode(item, t[1], struct, jpath, f"{fpath}[{i}]", warnings)
            out.append(_zero_of(t[1]) if d is OMIT else d)
        return out if out else OMIT  # an empty slice comes back from storage as nil
    if kind == "map":
        if not isinstance(value, dict):
            raise mismatch()
        out = {k: _decode(v, t[1], struct, jpath, f"{fpath}.{k}", warnings) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not OMIT} or OMIT
    if not isinstance(value, dict):
        raise mismatch()
    return _decode_struct(value, t, fpath, jpath, warnings)


def _zero_of(t):
    return {} if isinstance(t, tuple) and t[0] == "object" else ("" if t == "string" else 0)


def _decode_struct(value, t, fpath, jpath, warnings):
    _, go_name, fields = t
    known = {f[0] for f in fields}
    for k in value:
        if k not in known:
            warnings.append(f'unknown field "{fpath + "." if fpath else ""}{k}"')
    out = {}
    for name, ft, zero, default in fields:
        sub = f"{jpath}.{name}" if jpath else name
        d = _decode(value.get(name), ft, go_name, sub, f"{fpath}.{name}" if fpath else name, warnings)
        if d is OMIT and default is not OMIT:
            d = copy.deepcopy(default)
        if d is OMIT:
            if zero is OMIT:
                continue
            d = copy.deepcopy(zero)
        out[name] = d
    return out


def decode_typed(rt, obj, opts):
    """Decodes obj (in place) as the real server decodes a built-in kind into its Go struct: unknown
    fields dropped with a warning (400 with fieldValidation=Strict), type mismatches 400, defaults
    filled in, MicroTimes normalized, fields in struct order."""
    schema = TYPED_SCHEMAS[rt]
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    try:
        decoded = _decode_struct(body, schema, "", "", opts.warnings)
    except _DecodeError as e:
        raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {e}')
    for k in list(obj):
        if k not in ("apiVersion", "kind", "metadata"):
            del obj[k]
    obj.update(decoded)


DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                     "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
                     "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


def validate_dns1123_label(value, field, errs):
    if len(value) > 63:
        errs.append(invalid(field, value, "must be no more than 63 characters"))
    if not DNS1123_LABEL.match(value):
        errs.append(invalid(field, value, DNS1123_LABEL_MSG))


def _not_supported(field, value, supported):
    sup = ", ".join(json.dumps(x) for x in supported)
    return FieldError("FieldValueNotSupported", field, f"Unsupported value: {json.dumps(value)}: supported values: {sup}")


def validate_lease(obj, old, errs):
    spec = obj.get("spec") or {}
    d = spec.get("leaseDurationSeconds")
    if d is not None and d <= 0:
        errs.append(invalid("spec.leaseDurationSeconds", d, "must be greater than 0"))
    n = spec.get("leaseTransitions")
    if n is not None and n < 0:
        errs.append(invalid("spec.leaseTransitions", n, "must be greater than or equal to 0"))


def _endpoint_ip_errors(field, addr, family):
    """validation.IsValidIPv{4,6}Address plus ValidateEndpointIP (no unspecified, loopback, link-local)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        ip = None
    if ip is None or ip.version != family:
        return [invalid(field, addr, f"must be a valid IPv{family} address")]
    errs = []
    if ip.is_unspecified:
        errs.append(invalid(field, addr, f"may not be unspecified ({addr})"))
    if ip.is_loopback:
        errs.append(invalid(field, addr, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
    if ip.is_link_local:
        errs.append(invalid(field, addr, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
    if ip in ipaddress.ip_network("224.0.0.0/24") or (family == 6 and ip.packed[0] == 0xFF and ip.packed[1] & 0x0F == 0x02):
        errs.append(invalid(field, addr, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
    return errs


def validate_endpointslice(obj, old, errs):
    at = obj.get("addressType", "")
    types = ["FQDN", "IPv4", "IPv6"]
    if at == "":
        errs.append(required("addressType"))
    elif at not in types:
        errs.append(_not_supported("addressType", at, types))
    for i, ep in enumerate(obj.get("endpoints") or []):
        path = f"endpoints[{i}]"
        addrs = ep.get("addresses") or []
        if not addrs:
            errs.append(required(f"{path}.addresses", "must contain at least 1 address"))
        elif len(addrs) > 100:
            errs.append(FieldError("FieldValueTooMany", f"{path}.addresses", f"Too many: {len(addrs)}: must have at most 100 items"))
        for j, a in enumerate(addrs):
            f = f"{path}.addresses[{j}]"
            if at in ("IPv4", "IPv6"):
                errs.extend(_endpoint_ip_errors(f, a, 4 if at == "IPv4" else 6))
            elif at == "FQDN":
                name = a[:-1] if a.endswith(".") else a
                if len(name.split(".")) < 2:
                    errs.append(invalid(f, a, "should be a domain with at least two segments separated by dots"))
                elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
                    errs.append(invalid(f, a, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                                        "characters, '-' or '.', and must start and end with an alphanumeric character"))
        if "hostname" in ep:
            validate_dns1123_label(ep["hostname"], f"{path}.hostname", errs)
        if "nodeName" in ep and (len(ep["nodeName"]) > 253 or not DNS1123_SUBDOMAIN.match(ep["nodeName"])):
            errs.append(invalid(f"{path}.nodeName", ep["nodeName"], "a lowercase RFC 1123 subdomain must consist of "
                                "lower case alphanumeric characters, '-' or '.', and must start and end with an "
                                "alphanumeric character"))
    names = set()
    for i, p in enumerate(obj.get("ports") or []):
        path = f"ports[{i}]"
        name = p.get("name", "")
        if name:
            validate_dns1123_label(name, f"{path}.name", errs)
        if name in names:
            errs.append(FieldError("FieldValueDuplicate", f"{path}.name", f"Duplicate value: {json.dumps(name)}"))
        names.add(name)
        if p.get("protocol") not in ("SCTP", "TCP", "UDP"):
            errs.append(_not_supported(f"{path}.protocol", p.get("protocol"), ["SCTP", "TCP", "UDP"]))
    if old is not None and at != old.get("addressType", ""):
        errs.append(invalid("addressType", at, "field is immutable"))


TYPED_VALIDATORS = {LEASES: validate_lease, ENDPOINTSLICES: validate_endpointslice}


# ---------------------------------------------------------------------------------------------
# The store


class Event:
    __slots__ = ("rv", "rt", "type", "obj", "prev")

    def __init__(self, rv, rt, type_, obj, prev):
        self.rv, self.rt, self.type, self.obj, self.prev = rv, rt, type_, obj, prev


class Record:
    def __init__(self, obj):
        self.obj = obj
        self.managers = []  # [Manager]


class WriteOptions:
    def __init__(self, manager="unknown", dry_run=False, field_validation="Warn", force=False):
        self.manager = manager
        self.dry_run = dry_run
        self.field_validation = field_validation
        self.force = force
        self.warnings = []


META_ORDER = ["name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
              "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
              "finalizers", "managedFields"]
TYPED_ORDER = ["kind", "apiVersion", "metadata", "spec", "addressType", "endpoints", "ports", "immutable", "data",
               "stringData", "type", "status"]


def _sorted(v):
    if isinstance(v, dict):
        return {k: _sorted(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted(x) for x in v]
    return v


def canonical(rt, obj):
    """Key order of the real server: unstructured CRs come out sorted, typed objects in struct order."""
    if rt.is_crd:
        return _sorted(obj)
    out = {k: obj[k] for k in TYPED_ORDER if k in obj}
    out.update({k: v for k, v in obj.items() if k not in out})
    m = out.get("metadata") or {}
    om = {k: m[k] for k in META_ORDER if k in m}
    om.update({k: v for k, v in m.items() if k not in om})
    out["metadata"] = om
    return out


def _meta(obj):
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


class Store:
    def __init__(self, history_size=1000, initial_rv=1000, status_schema=True, lenient_smp=False):
        self.rv = initial_rv
        self.floor = initial_rv  # a watch from an RV below this gets 410 Gone
        self.history = deque()
        self.history_size = history_size
        self.status_schema = status_schema
        self.lenient_smp = lenient_smp
        self.objects = {rt.key: {} for rt in RESOURCE_TYPES}
        self.listeners = []
        self.terminating_namespaces = []  # namespaces waiting for finalize_namespace()
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(NAMESPACES, None, {"metadata": {"name": ns}}, WriteOptions("fake-apiserver"))

    # -- history -------------------------------------------------------------------------------

    def _next_rv(self):
        self.rv += 1
        return self.rv

    def _emit(self, rt, type_, obj, prev):
        ev = Event(self.rv, rt, type_, copy.deepcopy(obj), copy.deepcopy(prev) if prev is not None else None)
        self.history.append(ev)
        while len(self.history) > self.history_size:
            self.floor = max(self.floor, self.history.popleft().rv)
        for listener in list(self.listeners):
            listener(ev)

    def compact(self, rv=None):
        rv = self.rv if rv is None else min(int(rv), self.rv)
        while self.history and self.history[0].rv <= rv:
            self.history.popleft()
        self.floor = max(self.floor, rv)
        return self.floor

    def set_history_size(self, n):
        self.history_size = max(0, int(n))
        while len(self.history) > self.history_size:
            self.floor = max(self.floor, self.history.popleft().rv)

    def events_since(self, rv):
        """Events after rv, or None when rv is older than the retained window."""
        if rv < self.floor:
            return None
        return [ev for ev in self.history if ev.rv > rv]

    # -- reads ---------------------------------------------------------------------------------

    def get(self, rt, ns, name):
        rec = self.objects[rt.key].get((ns or "", name))
        if rec is None:
            raise not_found(rt, name)
        return copy.deepcopy(rec.obj)

    def list(self, rt, ns=None, label_selector=None, field_selector=None):
        lsel = parse_label_selector(label_selector)
        fsel = parse_field_selector(rt, field_selector)
        items = []
        for (ons, _), rec in sorted(self.objects[rt.key].items()):
            if ns is not None and ons != ns:
                continue
            if lsel(rec.obj.get("metadata", {}).get("labels") or {}) and fsel(rec.obj):
                items.append(copy.deepcopy(rec.obj))
        return items, self.rv

    def list_at(self, rt, rv, ns=None, label_selector=None, field_selector=None):
        """The objects of `rt` as they were at resourceVersion `rv` (what etcd serves for a LIST at an
        older revision), rebuilt from the current state and the retained history; None when `rv` is
        older than the history floor (compacted)."""
        if rv < self.floor:
            return None
        state = {k: rec.obj for k, rec in self.objects[rt.key].items()}
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            if ev.rt is not rt:
                continue
            m = ev.obj["metadata"]
            key = (m.get("namespace", ""), m["name"])
            if ev.type == "ADDED":
                state.pop(key, None)
            else:  # MODIFIED, DELETED: what was stored before
                state[key] = ev.prev
        lsel = parse_label_selector(label_selector)
        fsel = parse_field_selector(rt, field_selector)
        items = []
        for (ons, _), obj in sorted(state.items()):
            if ns is not None and ons != ns:
                continue
            if lsel(obj.get("metadata", {}).get("labels") or {}) and fsel(obj):
                items.append(copy.deepcopy(obj))
        return items

    def all_objects(self):
        for rt in RESOURCE_TYPES:
            for rec in self.objects[rt.key].values():
                yield rt, rec.obj

    # -- helpers -------------------------------------------------------------------------------

    def _check_type_meta(self, rt, body):
        av, kind = body.get("apiVersion"), body.get("kind")
        if av is not None and av != rt.api_version:
            raise bad_request(f"the API version in the data ({av}) does not match the expected API version ({rt.api_version})")
        if kind is not None and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        body["apiVersion"], body["kind"] = rt.api_version, rt.kind

    def _clean_meta(self, obj):
        m = _meta(obj)
        for k in list(m.keys()):
            if k not in OBJECT_META_FIELDS or m[k] is None:
                del m[k]
        m.pop("managedFields", None)
        m.pop("selfLink", None)

    def _normalize(self, rt, obj, opts, old=None):
        """Type-specific defaulting and conversions (before validation)."""
        if rt.is_crd:
            for k in list(obj.keys()):
                if k not in ("apiVersion", "kind", "metadata", "spec", "status"):
                    opts.warnings.append(f'unknown field "{k}"')
                    del obj[k]
        if rt is SECRETS:
            for k in list(obj.keys()):
                if k not in ("apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"):
                    opts.warnings.append(f'unknown field "{k}"')
                    del obj[k]
            data = obj.get("data") or {}
            if not isinstance(data, dict):
                raise bad_request('Secret in version "v1" cannot be handled as a Secret: json: cannot unmarshal into Go struct field Secret.data')
            for k, v in data.items():
                try:
                    if not isinstance(v, str):
                        raise binascii.Error("not a string")
                    base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError) as e:
                    raise bad_request(f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0 ({e})')
            sd = obj.pop("stringData", None) or {}
            for k, v in sd.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            if data:
                obj["data"] = data
            else:
                obj.pop("data", None)
            if not obj.get("type"):
                obj["type"] = "Opaque"
        if rt in TYPED_SCHEMAS:
            decode_typed(rt, obj, opts)
        if rt is NAMESPACES:
            name = _meta(obj).get("name", "")
            labels = _meta(obj).setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = name
            spec = obj.setdefault("spec", {})
            if old is None:
                spec.setdefault("finalizers", ["kubernetes"])
            for k in list(obj.keys()):
                if k not in ("apiVersion", "kind", "metadata", "spec", "status"):
                    del obj[k]

    def _validate(self, rt, obj, old, opts):
        errs = []
        meta = obj["metadata"]
        validate_name(rt, meta.get("name", ""), errs)
        validate_labels(meta.get("labels"), errs)
        if meta.get("annotations") is not None and not (
                isinstance(meta["annotations"], dict) and all(isinstance(v, str) for v in meta["annotations"].values())):
            errs.append(invalid("metadata.annotations", meta["annotations"], "annotation values must be strings"))
        if rt.is_crd:
            spec = obj.get("spec")
            if spec is not None and not isinstance(spec, dict):
                errs.append(invalid("spec", _TYPE_NAMES.get(type(spec), "null"), "spec in body must be of type object"))
            elif isinstance(spec, dict) and "planeID" in spec:
                pid = spec["planeID"]
                if not isinstance(pid, str):
                    errs.append(invalid("spec.planeID", _TYPE_NAMES.get(type(pid), "null"),
                                        f"spec.planeID in body must be of type string: {go_quote(_TYPE_NAMES.get(type(pid), 'null'))}"))
                else:
                    if len(pid) > 63:
                        errs.append(too_long("spec.planeID", 63))
                    if not re.search(PLANE_ID, pid):
                        errs.append(invalid("spec.planeID", pid, f"spec.planeID in body should match '{PLANE_ID}'"))
            if "status" in obj and self.status_schema:
                pruned = []
                validate_schema(obj["status"], PLANE_STATUS_SCHEMA, "status", errs, pruned)
                for p in pruned:
                    opts.warnings.append(f'unknown field "{p}"')
        if rt is SECRETS:
            for k in (obj.get("data") or {}):
                if not CONFIG_KEY.match(k):
                    errs.append(invalid(f"data[{k}]", k, "a valid config key must consist of alphanumeric characters, "
                                        "'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
                                        "for validation is '[-._a-zA-Z0-9]+')"))
            if obj.get("type") == "kubernetes.io/tls":
                for k in ("tls.crt", "tls.key"):
                    if k not in (obj.get("data") or {}):
                        errs.append(required(f"data[{k}]"))
            if old is not None:
                if obj.get("type") != old.get("type"):
                    errs.append(invalid("type", obj.get("type"), "field is immutable"))
                if old.get("immutable"):
                    if obj.get("data") != old.get("data"):
                        errs.append(forbidden("data", "field is immutable when `immutable` is set"))
                    if not obj.get("immutable"):
                        errs.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        if rt in TYPED_VALIDATORS:
            TYPED_VALIDATORS[rt](obj, old, errs)
        if old is not None and old["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                errs.append(forbidden("metadata.finalizers", f"no new finalizers can be added if the object is being deleted, found new finalizers {json.dumps(sorted(added))}"))
        if errs:
            raise invalid_error(rt, meta.get("name", ""), errs)
        if opts.field_validation == "Strict" and opts.warnings:
            raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict decoding error: '
                              + ", ".join(opts.warnings))
        if opts.field_validation == "Ignore":
            opts.warnings.clear()

    def _namespace_usable(self, rt, ns, name):
        if not rt.namespaced:
            return
        rec = self.objects[NAMESPACES.key].get(("", ns))
        if rec is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        if rec.obj.get("status", {}).get("phase") == "Terminating":
            raise ApiError(403, "Forbidden",
                           f'{rt.group_resource} "{name}" is forbidden: unable to create new content in namespace {ns} because it is being terminated',
                           {"name": name, "group": rt.group, "kind": rt.plural, "causes": [{"reason": "NamespaceTerminating",
                                                                       "message": f"namespace {ns} is being terminated",
                                                                       "field": "metadata.namespace"}]})

    def _render_managed(self, rec, obj):
        if rec.managers:
            _meta(obj)["managedFields"] = [m.render() for m in rec.managers]
        else:
            _meta(obj).pop("managedFields", None)

    def _manager(self, rec, rt, name, operation, subresource):
        ident = (name, operation, subresource or None)
        for m in rec.managers:
            if m.ident == ident:
                return m
        m = Manager(name, operation, subresource or None, rt.api_version)
        rec.managers.append(m)
        return m

    def _own_update(self, rec, rt, old, new, opts, subresource):
        """Ownership after a non-apply write: changed leaves go to the writer, removed leaves to nobody."""
        scope = "status" if subresource == "status" else "main"
        before = tracked_leaves(rt, old, scope) if old is not None else {}
        after = tracked_leaves(rt, new, scope)
        changed = {p for p, v in after.items() if p not in before or not json_equal(before[p], v)}
        removed = set(before) - set(after)
        if changed:
            me = self._manager(rec, rt, opts.manager, "Update", subresource)
            me.paths |= changed
            me.time = now_rfc3339()
        for m in rec.managers:
            if m.manager == opts.manager and m.operation == "Update" and m.subresource == (subresource or None):
                m.paths -= removed
            else:
                m.paths -= changed | removed
        rec.managers = [m for m in rec.managers if m.paths]

    # -- writes --------------------------------------------------------------------------------

    def create(self, rt, ns, body, opts, keep_status=False, apply_paths=None):
        obj = copy.deepcopy(body)
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON or YAML object")
        self._check_type_meta(rt, obj)
        self._clean_meta(obj)
        meta = obj["metadata"]
        if rt.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        name = meta.get("name", "")
        key = (meta.get("namespace", ""), name)
        for k in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        if rt.has_status and not keep_status:
            obj.pop("status", None)
        if rt is NAMESPACES:
            obj["status"] = {"phase": "Active"}
        self._normalize(rt, obj, opts)
        self._validate(rt, obj, None, opts)
        if rt.namespaced:
            self._namespace_usable(rt, meta["namespace"], name)
        if key in self.objects[rt.key]:
            raise already_exists(rt, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt.has_generation:
            meta["generation"] = 1
        rec = Record(obj)
        if apply_paths is not None:
            m = self._manager(rec, rt, opts.manager, "Apply", None)
            m.paths = set(apply_paths)
        else:
            self._own_update(rec, rt, None, obj, opts, None)
        if keep_status and rt.has_status and "status" in obj:
            self._own_update(rec, rt, None, obj, opts, "status")
        if opts.dry_run:
            self._render_managed(rec, obj)
            return copy.deepcopy(obj)
        meta["resourceVersion"] = str(self._next_rv())
        self._render_managed(rec, obj)
        obj = rec.obj = canonical(rt, obj)
        self.objects[rt.key][key] = rec
        self._emit(rt, "ADDED", obj, None)
        return copy.deepcopy(obj)

    def _prepare_update(self, rt, rec, new, subresource, require_rv, opts):
        old = rec.obj
        name, ns = old["metadata"]["name"], old["metadata"].get("namespace", "")
        if not isinstance(new, dict):
            raise bad_request("the body of the request must be a JSON or YAML object")
        self._check_type_meta(rt, new)
        nmeta = _meta(new)
        if nmeta.get("name") not in (None, name):
            raise bad_request(f"the name of the object ({nmeta.get('name')}) does not match the name on the URL ({name})")
        if rt.namespaced and nmeta.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        rv = nmeta.get("resourceVersion")
        if rv in (None, ""):
            if require_rv and rt.is_crd:
                raise invalid_error(rt, name, [invalid("metadata.resourceVersion", "0x0", "must be specified for an update")])
        elif str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
            if rt is NAMESPACES and "phase" not in (result.get("status") or {}):
                result.setdefault("status", {})["phase"] = old.get("status", {}).get("phase", "Active")
            return result
        result = copy.deepcopy(new)
        self._clean_meta(result)
        rmeta = result["metadata"]
        for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation"):
            if k in old["metadata"]:
                rmeta[k] = old["metadata"][k]
            else:
                rmeta.pop(k, None)
        rmeta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if rt.has_status:
            if "status" in old:
                result["status"] = copy.deepcopy(old["status"])
            else:
                result.pop("status", None)
        self._normalize(rt, result, opts, old)
        if rt.has_generation:
            strip = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}
            if not json_equal(strip(result), strip(old)):
                rmeta["generation"] = old["metadata"].get("generation", 1) + 1
        return result

    def _commit_update(self, rt, rec, result, subresource, opts, managers_before):
        old = rec.obj
        self._validate(rt, result, old, opts)
        strip_mf = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "managedFields"}}
        owners_same = [(m.ident, m.paths) for m in rec.managers] == managers_before
        if json_equal(strip_mf(result), strip_mf(old)) and owners_same:
            return copy.deepcopy(old)  # no-op: no new resourceVersion, no event
        if opts.dry_run:
            self._render_managed(rec, result)
            return copy.deepcopy(result)
        result["metadata"]["resourceVersion"] = str(self._next_rv())
        self._render_managed(rec, result)
        result = rec.obj = canonical(rt, result)
        meta = result["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(rt, rec, old)
        else:
            self._emit(rt, "MODIFIED", result, old)
        return copy.deepcopy(result)

    def _snapshot_managers(self, rec):
        return [(m.ident, set(m.paths)) for m in rec.managers]

    def _restore_managers(self, rec, snap, times):
        by = {m.ident: m for m in rec.managers}
        rec.managers = []
        for ident, paths in snap:
            m = by.get(ident) or Manager(ident[0], ident[1], ident[2], "")
            m.paths = paths
            m.time = times.get(ident, m.time)
            rec.managers.append(m)

    def _with_rollback(self, rec, fn):
        snap = self._snapshot_managers(rec)
        times = {m.ident: m.time for m in rec.managers}
        try:
            return fn(snap)
        except Exception:
            self._restore_managers(rec, snap, times)
            raise

    def _record(self, rt, ns, name):
        rec = self.objects[rt.key].get((ns or "", name))
        if rec is None:
            raise not_found(rt, name)
        return rec

    def update(self, rt, ns, name, body, opts, subresource=None):
        rec = self._record(rt, ns, name)

        def go(snap):
            result = self._prepare_update(rt, rec, copy.deepcopy(body), subresource, True, opts)
            self._own_update(rec, rt, rec.obj, result, opts, subresource)
            out = self._commit_update(rt, rec, result, subresource, opts, snap)
            if opts.dry_run:
                raise _DryRun(out)
            return out
        return self._run(rec, go)

    def _run(self, rec, go):
        try:
            return self._with_rollback(rec, go)
        except _DryRun as d:
            return d.obj

    def patch(self, rt, ns, name, patch_type, patch, opts, subresource=None):
        """Returns (object, created)."""
        if patch_type == "apply":
            return self.apply(rt, ns, name, patch, opts, subresource)
        rec = self._record(rt, ns, name)
        current = copy.deepcopy(rec.obj)
        if patch_type == "merge" or (patch_type == "strategic" and (not rt.is_crd or self.lenient_smp)):
            if not isinstance(patch, dict):
                raise bad_request("the body of the request was not a JSON object")
            if patch_type == "strategic":
                patch = _strip_directives(patch)
            patched = merge_patch(current, patch)
        elif patch_type == "strategic":
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media types include: "
                           "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        elif patch_type == "json":
            if not isinstance(patch, list):
                raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            try:
                patched = json_patch(current, patch)
            except JsonPatchError as e:
                raise ApiError(422, "Invalid", str(e))
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unknown patch type {patch_type}")

        def go(snap):
            result = self._prepare_update(rt, rec, patched, subresource, False, opts)
            self._own_update(rec, rt, rec.obj, result, opts, subresource)
            out = self._commit_update(rt, rec, result, subresource, opts, snap)
            if opts.dry_run:
                raise _DryRun(out)
            return out
        return self._run(rec, go), False

    def apply(self, rt, ns, name, cfg, opts, subresource=None):
        """Server-side apply, simplified: ownership is tracked per leaf; lists are atomic except status.conditions."""
        if not isinstance(cfg, dict):
            raise bad_request("the body of the request must be a YAML or JSON object")
        cfg = copy.deepcopy(cfg)
        if cfg.get("apiVersion") != rt.api_version or cfg.get("kind") != rt.kind:
            raise bad_request(f"invalid object type: {cfg.get('apiVersion')}, Kind={cfg.get('kind')}; expected "
                              f"{rt.api_version}, Kind={rt.kind}")
        cmeta = _meta(cfg)
        if cmeta.get("name") not in (None, name):
            raise bad_request(f"the name of the object ({cmeta.get('name')}) does not match the name on the URL ({name})")
        cmeta.pop("managedFields", None)
        rec = self.objects[rt.key].get((ns or "", name))
        if rec is None:
            if subresource:
                raise not_found(rt, name)
            cmeta["name"] = name
            if rt.namespaced:
                cmeta["namespace"] = ns
            cwo = WriteOptions(opts.manager, opts.dry_run, opts.field_validation)
            obj = self.create(rt, ns, cfg, cwo, apply_paths=tracked_leaves(rt, cfg, "main"))
            opts.warnings.extend(cwo.warnings)
            return obj, True

        scope = "status" if subresource == "status" else "main"
        cfg_leaves = tracked_leaves(rt, cfg, scope)
        live = rec.obj
        if not opts.force:
            conflicts = []
            for m in rec.managers:
                if m.manager == opts.manager or (m.subresource or None) != (subresource or None):
                    continue
                for p in sorted(m.paths & set(cfg_leaves), key=str):
                    if not json_equal(value_at(live, p), cfg_leaves[p]):
                        who = json.dumps(m.manager)
                        if m.operation == "Update":
                            who += f" using {m.api_version} at {m.time}"
                        conflicts.append((who, _path_str(p)))
            if conflicts:
                causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": f}
                          for who, f in conflicts]
                if len(conflicts) == 1:
                    msg = f"Apply failed with 1 conflict: conflict with {conflicts[0][0]}: {conflicts[0][1]}"
                else:
                    lines = []
                    for who in sorted({w for w, _ in conflicts}):
                        lines.append(f"conflicts with {who}:")
                        lines += [f"- {f}" for w, f in conflicts if w == who]
                    msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
                raise ApiError(409, "Conflict", msg, {"causes": causes})
        merged = apply_merge(live, cfg)
        me_prev = next((m for m in rec.managers if m.ident == (opts.manager, "Apply", subresource or None)), None)
        if me_prev is not None:
            others = set()
            for m in rec.managers:
                if m is not me_prev:
                    others |= m.paths
            for p in me_prev.paths - set(cfg_leaves) - others:
                delete_path(merged, p)
        if scope == "status":
            body = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": name}}
            if "status" in merged:
                body["status"] = merged["status"]
        else:
            body = merged
            body["metadata"]["resourceVersion"] = cmeta.get("resourceVersion") or live["metadata"]["resourceVersion"]

        def go(snap):
            result = self._prepare_update(rt, rec, body, subresource, False, opts)
            me = self._manager(rec, rt, opts.manager, "Apply", subresource)
            me.paths = set(cfg_leaves)
            me.time = now_rfc3339()
            for m in rec.managers:
                if m is not me and opts.force:
                    m.paths -= set(cfg_leaves)
            # Leaves removed by this apply leave every other owner too.
            gone = set(tracked_leaves(rt, live, scope)) - set(tracked_leaves(rt, result, scope))
            for m in rec.managers:
                m.paths -= gone
            rec.managers = [m for m in rec.managers if m.paths]
            out = self._commit_update(rt, rec, result, subresource, opts, snap)
            if opts.dry_run:
                raise _DryRun(out)
            return out
        return self._run(rec, go), False

    def _remove(self, rt, rec, prev):
        meta = rec.obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        self.objects[rt.key].pop(key, None)
        self._emit(rt, "DELETED", rec.obj, prev)

    def delete(self, rt, ns, name, options=None, dry_run=False):
        """Returns (object, deleted_now)."""
        rec = self._record(rt, ns, name)
        options = options or {}
        pre = options.get("preconditions") or {}
        meta = rec.obj["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                                     f"ResourceVersion in object meta: {meta['resourceVersion']}")
        old = rec.obj
        pending = bool(meta.get("finalizers")) or (rt is NAMESPACES)
        if pending:
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(old), False
            new = copy.deepcopy(old)
            nmeta = new["metadata"]
            nmeta["deletionTimestamp"] = now_rfc3339()
            nmeta["deletionGracePeriodSeconds"] = 0
            if nmeta.get("generation"):
                nmeta["generation"] += 1
            if rt is NAMESPACES:
                new.setdefault("status", {})["phase"] = "Terminating"
            if dry_run:
                return new, False
            nmeta["resourceVersion"] = str(self._next_rv())
            new = rec.obj = canonical(rt, new)
            self._emit(rt, "MODIFIED", new, old)
            if rt is NAMESPACES:
                self.terminating_namespaces.append(name)
            return copy.deepcopy(new), False
        if dry_run:
            return copy.deepcopy(old), True
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        rec.obj = gone
        self._remove(rt, rec, old)
        return copy.deepcopy(gone), True

    def finalize_namespace(self, name):
        """What the namespace controller does: delete the contents, then the namespace itself."""
        for rt in RESOURCE_TYPES:
            if not rt.namespaced:
                continue
            for key in [k for k in self.objects[rt.key] if k[0] == name]:
                rec = self.objects[rt.key][key]
                gone = copy.deepcopy(rec.obj)
                gone["metadata"]["resourceVersion"] = str(self._next_rv())
                prev, rec.obj = rec.obj, gone
                self._remove(rt, rec, prev)
        rec = self.objects[NAMESPACES.key].get(("", name))
        if rec is not None:
            gone = copy.deepcopy(rec.obj)
            gone["spec"]["finalizers"] = []
            gone["metadata"]["resourceVersion"] = str(self._next_rv())
            prev, rec.obj = rec.obj, gone
            self._remove(NAMESPACES, rec, prev)

    def delete_collection(self, rt, ns, label_selector, field_selector, options=None, dry_run=False):
        items, _ = self.list(rt, ns, label_selector, field_selector)
        out = []
        for it in items:
            m = it["metadata"]
            obj, _ = self.delete(rt, m.get("namespace"), m["name"], options, dry_run)
            out.append(obj)
        return out

    def clear(self):
        """Drop every object (no events) and forget the history: old RVs become 410."""
        for rt in RESOURCE_TYPES:
            self.objects[rt.key].clear()
        self._next_rv()
        self.compact()
        self.terminating_namespaces.clear()
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(NAMESPACES, None, {"metadata": {"name": ns}}, WriteOptions("fake-apiserver"))


class _DryRun(Exception):
    def __init__(self, obj):
        self.obj = obj


def _strip_directives(p):
    if isinstance(p, dict):
        return {k: _strip_directives(v) for k, v in p.items() if not k.startswith("$")}
    return p
