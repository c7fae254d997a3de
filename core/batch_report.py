"""The batch report: ``OUTDIR/chopshop-batch.json`` and ``.csv`` (one row per input) and the summary table.

Rows (see ``batch_task.new_row``): input, name, output, bytes_in, bytes_out, retention (energy-weighted, resize
only), outcome (done / skipped / below threshold / failed), seconds, error (one line), note.
Both files are replaced atomically at the end of every run, so a resumed run's report lists every input.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

REPORT_NAME = "chopshop-batch"
CSV_COLUMNS = ("input", "output", "bytes_in", "bytes_out", "retention", "outcome", "seconds", "error", "note")
OK_OUTCOMES = ("done", "skipped", "below threshold")


def summarize(rows: list[dict], seconds: float) -> dict:
    counts = {o: 0 for o in ("done", "skipped", "below threshold", "failed")}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return {"files": len(rows), **counts,
            "bytes_in": sum(r["bytes_in"] or 0 for r in rows),
            "bytes_out": sum(r["bytes_out"] or 0 for r in rows if r["outcome"] in ("done", "skipped")),
            "seconds": round(seconds, 3),
            "ok": all(r["outcome"] in OK_OUTCOMES for r in rows)}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_reports(outdir: Path, report: dict) -> tuple[Path, Path]:
    """Write the JSON and CSV reports into ``outdir``; returns their paths."""
    jpath, cpath = outdir / f"{REPORT_NAME}.json", outdir / f"{REPORT_NAME}.csv"
    _atomic_write(jpath, json.dumps(report, indent=1) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in report["files"]:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    _atomic_write(cpath, buf.getvalue())
    return jpath, cpath


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2 ** 20:.2f}"


def render_table(report: dict, width: int = 48) -> str:
    """The summary table printed at the end of a batch."""
    rows = report["files"]
    w = min(width, max((len(r["name"]) for r in rows), default=4))
    lines = [f"{'file':<{w}}  {'outcome':<15} {'in MiB':>8} {'out MiB':>8} {'retain':>7} {'sec':>7}  error"]
    for r in rows:
        name = r["name"] if len(r["name"]) <= w else "…" + r["name"][-(w - 1):]
        ret = "-" if r["retention"] is None else f"{100 * r['retention']:.1f}%"
        lines.append(f"{name:<{w}}  {r['outcome']:<15} {_mib(r['bytes_in']):>8} {_mib(r['bytes_out']):>8} "
                     f"{ret:>7} {r['seconds']:>7.2f}  {r['error'] or r['note']}")
    s = report["summary"]
    lines.append(f"{s['files']} files: {s['done']} done, {s['skipped']} skipped, {s['below threshold']} below "
                 f"threshold, {s['failed']} failed; {_mib(s['bytes_in'])} MiB in, {_mib(s['bytes_out'])} MiB out, "
                 f"{s['seconds']:.1f} s")
    return "\n".join(lines)
