"""ctest_main's exit codes: 0 when everything ran and passed, 77 (ctest's SKIP_RETURN_CODE) when a test
was skipped, 1 on a failure, and 1 on a skip when CI=true."""
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

MODULE = textwrap.dedent("""\
    import os, sys, unittest
    sys.path.insert(0, {here!r})
    import ctest_main

    class T(unittest.TestCase):
        def test_runs(self):
            pass

        @unittest.skipIf(os.environ.get("DEMO") == "skip", "no tool here")
        def test_maybe_skipped(self):
            pass

        def test_maybe_failing(self):
            self.assertNotEqual(os.environ.get("DEMO"), "fail")

    if __name__ == "__main__":
        sys.exit(ctest_main.main())
    """)


class CtestMainTest(unittest.TestCase):
    def run_demo(self, demo, ci=None):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "demo_test.py")
            with open(path, "w") as f:
                f.write(MODULE.format(here=HERE))
            env = {k: v for k, v in os.environ.items() if k != "CI"}
            env["DEMO"] = demo
            if ci is not None:
                env["CI"] = ci
            p = subprocess.run([sys.executable, path], env=env, capture_output=True, text=True, timeout=60)
            return p.returncode, p.stderr

    def test_all_passed_is_0(self):
        self.assertEqual(self.run_demo("pass")[0], 0)

    def test_a_skip_is_77_and_named(self):
        rc, err = self.run_demo("skip")
        self.assertEqual(rc, 77)
        self.assertIn("test_maybe_skipped", err)
        self.assertIn("no tool here", err)

    def test_a_skip_fails_with_ci_true(self):
        rc, err = self.run_demo("skip", ci="true")
        self.assertEqual(rc, 1)
        self.assertIn("CI=true", err)

    def test_a_failure_is_1(self):
        self.assertEqual(self.run_demo("fail")[0], 1)
        self.assertEqual(self.run_demo("fail", ci="true")[0], 1)


if __name__ == "__main__":
    unittest.main()
