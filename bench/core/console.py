"""What a run prints on the console: the one-line result of a case, and the summary table."""

from __future__ import annotations


def progress_text(row: dict) -> str:
    if row["status"] == "ok":
        return f"{row['case_id']}: {row['images_per_s']:.1f} images/s, median {row['median_ms']:.2f} ms/batch"
    return f"{row['case_id']}: {row['status']} ({row['reason']})"


def summary_table(rows: list[dict], limit: int = 60) -> str:
    """A short fixed-width table of the rows for the console."""
    header = f"{'case':<62} {'status':<11} {'images/s':>10} {'median ms':>10} {'peak MiB':>9} {'MFU':>6}"
    lines = [header, "-" * len(header)]
    for row in rows[:limit]:
        peak = row.get("reserved_peak_mib") or row.get("tensor_peak_mib") or row.get("rss_peak_mib")  # CPU: live tensors
        if row["status"] == "ok":
            lines.append(f"{row['case_id'][:62]:<62} {'ok':<11} {row['images_per_s']:>10.1f} {row['median_ms']:>10.2f} "
                         f"{(peak or 0):>9.0f} {(row['mfu'] or 0) * 100:>5.1f}%")
        else:
            lines.append(f"{row['case_id'][:62]:<62} {row['status']:<11} {'':>10} {'':>10} {'':>9} {'':>6}")
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more rows (see results.csv)")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines.append("rows: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)
