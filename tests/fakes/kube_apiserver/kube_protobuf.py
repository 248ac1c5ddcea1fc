"""Decoding of Kubernetes protobuf request bodies for Secrets and Namespaces (other kinds: 415).

kubectl sends typed objects (e.g. `kubectl create namespace`, `kubectl create secret generic`) as
application/vnd.kubernetes.protobuf: the bytes "k8s\\x00" followed by a runtime.Unknown message whose
`raw` field is the object encoded per k8s.io/api/core/v1/generated.proto. Only the fields a client
can meaningfully set are decoded; server-owned metadata is ignored anyway.
"""
import base64

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """[(field_number, wire_type, value)] of one message; value is int or bytes."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


def _s(v):
    return v.decode("utf-8")


def _map(entries, value=_s):
    out = {}
    for e in entries:
        k, val = "", b""
        for n, _, x in fields(e):
            if n == 1:
                k = _s(x)
            elif n == 2:
                val = x
        out[k] = value(val)
    return out


def _owner_ref(buf):
    names = {1: "kind", 3: "name", 4: "uid", 5: "apiVersion"}
    o = {}
    for n, _, v in fields(buf):
        if n in names:
            o[names[n]] = _s(v)
        elif n == 6:
            o["controller"] = bool(v)
        elif n == 7:
            o["blockOwnerDeletion"] = bool(v)
    return o


def object_meta(buf):
    strings = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    m, labels, annotations, finalizers, owners = {}, [], [], [], []
    for n, _, v in fields(buf):
        if n in strings:
            if v:
                m[strings[n]] = _s(v)
        elif n == 11:
            labels.append(v)
        elif n == 12:
            annotations.append(v)
        elif n == 13:
            owners.append(_owner_ref(v))
        elif n == 14:
            finalizers.append(_s(v))
    if labels:
        m["labels"] = _map(labels)
    if annotations:
        m["annotations"] = _map(annotations)
    if owners:
        m["ownerReferences"] = owners
    if finalizers:
        m["finalizers"] = finalizers
    return m


def _secret(raw):
    o, data, string_data = {}, [], []
    for n, _, v in fields(raw):
        if n == 1:
            o["metadata"] = object_meta(v)
        elif n == 2:
            data.append(v)
        elif n == 3:
            o["type"] = _s(v)
        elif n == 4:
            string_data.append(v)
        elif n == 5:
            o["immutable"] = bool(v)
    if data:
        o["data"] = _map(data, lambda b: base64.b64encode(b).decode())
    if string_data:
        o["stringData"] = _map(string_data)
    return o


def _namespace(raw):
    o = {}
    for n, _, v in fields(raw):
        if n == 1:
            o["metadata"] = object_meta(v)
        elif n == 2:
            fin = [_s(x) for m, _, x in fields(v) if m == 1]
            o["spec"] = {"finalizers": fin} if fin else {}
    return o


DECODERS = {("v1", "Secret"): _secret, ("v1", "Namespace"): _namespace}


def decode(body):
    """Returns the JSON-shaped object of a protobuf-encoded Secret or Namespace."""
    if not body.startswith(MAGIC):
        raise ProtobufError("provided data does not have the Kubernetes protobuf prefix")
    api_version = kind = ""
    raw = b""
    for n, _, v in fields(body[len(MAGIC):]):
        if n == 1:
            for m, _, x in fields(v):
                if m == 1:
                    api_version = _s(x)
                elif m == 2:
                    kind = _s(x)
        elif n == 2:
            raw = v
    dec = DECODERS.get((api_version, kind))
    if dec is None:
        raise ProtobufError(f"protobuf decoding of {api_version}/{kind} is not supported by the fake")
    obj = {"apiVersion": api_version, "kind": kind}
    obj.update(dec(raw))
    return obj
