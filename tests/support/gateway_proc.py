"""Shared by the Python tests that drive the real cluster-gateway binary: bounded polling, and
starting the gateway until its "cluster-gateway started" log line (which names the chosen ports)."""
import json
import subprocess
import threading
import time


def wait_for(pred, timeout=10.0, step=0.05):
    """Polls `pred` until it returns a truthy value or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def start_gateway(cmd, log=None, timeout=20.0):
    """Starts the gateway; returns (process, the "cluster-gateway started" event). Its output keeps
    being read afterwards (into `log`, a text file, when given) so that a full pipe never blocks it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, started = [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and started is None:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("msg") == "cluster-gateway started":
            started = ev
    if log is not None:
        log.writelines(lines)
    if started is None:
        proc.kill()
        proc.wait()
        raise AssertionError("gateway did not start:\n" + "".join(lines))

    def pump():
        for line in proc.stdout:
            if log is not None:
                log.write(line)
                log.flush()
    threading.Thread(target=pump, daemon=True).start()
    return proc, started
