"""docs/operations.md's flag table is true: the same flags as `cluster-gateway -h` prints (Go's
usage, generated from the flag table in gateway/cli.cpp), each with the same environment variable
and default."""
import os
import re
import subprocess
import unittest

ROOT = os.environ.get("CG_REPO_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CG_GATEWAY_BIN", os.path.join(ROOT, "build", "bin", "cluster-gateway"))

ZERO = {"": "false", "int": "0", "uint": "0", "float": "0", "string": "", "duration": "0s"}
UNITS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}


def duration_ns(text):
    if text == "0":
        return 0
    parts = re.findall(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError("not a duration: " + text)
    return round(sum(float(a) * UNITS[b] for a, b in parts))


def help_flags():
    """{name: (type, env or None, default text as Go prints it, or None for the zero value)}"""
    p = subprocess.run([BIN, "-h"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "", p.stdout
    flags, name, typ, usage = {}, None, None, []

    def flush():
        if name is None:
            return
        text = " ".join(usage)
        env = re.search(r"\(env ([A-Z0-9_]+)\)", text)
        default = re.search(r"\(default (.*)\)$", text)
        value = default.group(1) if default else None
        if value and value.startswith('"'):
            value = value[1:-1]
        flags[name] = (typ, env.group(1) if env else None, value)

    for line in p.stderr.splitlines()[1:]:
        if line.startswith("  -"):
            flush()
            head, _, rest = line[3:].partition("\t")
            name, _, typ = head.partition(" ")
            usage = [rest] if rest else []
        elif line.startswith("    \t"):
            usage.append(line[5:])
    flush()
    return flags


def doc_flags():
    """{name: (env or None, default cell)} from the table under '## Flags'."""
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        text = f.read()
    section = text[text.index("## Flags\n"):]
    section = section[:section.index("\n## ", 1)]
    flags = {}
    for line in section.splitlines():
        if not line.startswith("| `--"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")[2:]
        env = cells[1].strip("`") if cells[1].startswith("`") else None
        flags[name] = (env, cells[2])
    return flags


class FlagsDocTest(unittest.TestCase):
    def test_operations_md_flag_table_matches_help(self):
        have, doc = help_flags(), doc_flags()
        self.assertGreater(len(have), 30)
        self.assertEqual(sorted(doc), sorted(have), "flags in docs/operations.md vs -h")
        for name, (typ, env, default) in have.items():
            with self.subTest(flag=name):
                doc_env, cell = doc[name]
                self.assertEqual(doc_env, env, f"--{name}: environment variable")
                token = re.match(r"`([^`]*)`", cell)
                if default is None:
                    # The zero value: the docs show it, or say in words what an empty value means.
                    if token and "<" not in token.group(1):
                        self.assertEqual(token.group(1), ZERO[typ], f"--{name}: default")
                    continue
                self.assertTrue(token, f"--{name}: the docs give no default, -h says {default}")
                if typ == "duration":
                    self.assertEqual(duration_ns(token.group(1)), duration_ns(default), f"--{name}: default")
                else:
                    self.assertEqual(token.group(1), default, f"--{name}: default")

    def test_duration_normalisation(self):
        self.assertEqual(duration_ns("90s"), duration_ns("1m30s"))
        self.assertEqual(duration_ns("2m0s"), 120e9)
        with self.assertRaises(ValueError):
            duration_ns("90 s")


if __name__ == "__main__":
    unittest.main()
