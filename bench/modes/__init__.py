"""One module per benchmark mode, in the order bench/run runs them. Each has NAME, TITLE, SIZES ({"full": {...},
"tiny": {...}}), run(env) -> results (JSON-able), summary(results, size) -> rows of report.SUMMARY_COLUMNS and
tables(results, size) -> [report.Table]."""
from modes import handshake, idle, mesh, micro, status, storm, tunnel

ALL = [handshake, idle, tunnel, storm, status, micro, mesh]
BY_NAME = {m.NAME: m for m in ALL}
