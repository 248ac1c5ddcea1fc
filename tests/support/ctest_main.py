"""Runs a unittest module for ctest so that a skip is not reported as a pass.

    if __name__ == "__main__":
        sys.exit(ctest_main.main())

Exit codes: 0 when every test ran and passed; 1 on a failure or an error; SKIP_RETURN_CODE (77)
when everything that ran passed but some test was skipped, which ctest shows as "Skipped" when the
test has `SKIP_RETURN_CODE 77` among its properties. With CI=true in the environment a skip is a
failure (exit 1): in CI every test must run. The skipped tests and their reasons are printed."""
import os
import sys
import unittest

SKIP_RETURN_CODE = 77


def main(module="__main__", argv=None):
    prog = unittest.main(module=module, argv=argv, exit=False, verbosity=2)
    result = prog.result
    if not result.wasSuccessful():
        return 1
    if result.testsRun == 0 and not result.skipped:
        print("ctest_main: no test ran", file=sys.stderr)
        return 1
    if result.skipped:
        print(f"ctest_main: {len(result.skipped)} test(s) skipped:", file=sys.stderr)
        for test, reason in result.skipped:
            print(f"  {test.id()}: {reason}", file=sys.stderr)
        if os.environ.get("CI") == "true":
            print("ctest_main: CI=true, so a skipped test fails the run", file=sys.stderr)
            return 1
        return SKIP_RETURN_CODE
    return 0
