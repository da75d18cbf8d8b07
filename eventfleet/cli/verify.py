"""``eventfleet verify``: fold every stream, compare with snapshots, outcomes and invariants."""

from __future__ import annotations

import sys
from itertools import groupby
from pathlib import Path

import click

from eventfleet.cli.context import EXIT_DIFFERENCES, EXIT_USAGE, UserError, user_errors
from eventfleet.cli.options import common, ctx_of, emit_json, json_option
from eventfleet.cli.progress import bar
from eventfleet.ops.verify import Report, stream_lengths, verify


@click.command("verify")
@common
@json_option
@click.option(
    "--archive",
    "archive_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="an `eventfleet archive` directory: fold each shard from its first event ever",
)
def verify_cmd(
    redis_url: str | None, namespace: str | None, as_json: bool, archive_dir: Path | None
) -> None:
    """Recompute every shard from its log; exit 3 with a diff when Redis disagrees
    (1 when Redis cannot be read)."""
    from eventfleet.ops.archive import Archive, ArchiveError

    c = ctx_of(redis_url, namespace)
    with user_errors(c.settings):
        counts = c.counts()
        total = stream_lengths(c.redis, c.keys, counts)
        try:  # an archive that is not there or not this namespace's: bad input
            archive = None if archive_dir is None else Archive(archive_dir, c.keys.ns, counts)
        except ArchiveError as exc:
            raise UserError(f"archive: {exc}", EXIT_USAGE) from None
        try:
            with bar("verifying", total) as advance:
                report = verify(c.redis, c.keys, counts, on_chunk=advance, archive=archive)
        except ArchiveError as exc:
            raise UserError(f"archive: {exc}") from None
    if as_json:
        emit_json(report.as_json())
    else:
        for line in render(report):
            click.echo(line)
    sys.exit(0 if report.ok else EXIT_DIFFERENCES)


def render(report: Report) -> list[str]:
    t = report.totals
    folds = report.folds.values()
    from_snap = sum(1 for f in folds if not f.complete)
    snaps = [f.snapshot for f in folds]
    lines = [
        f"folded {len(report.folds)}/{len(report.counts.all_shards())} shards, "
        f"{t['entries']} entries ({from_snap} from a snapshot, the rest from the first entry)",
        f"  applied {t['applied']}, duplicates dropped {t['duplicates_dropped']}, "
        f"dead letters {t['dead_letters']}",
        f"  snapshots compared {snaps.count('match') + snaps.count('differs')}, "
        f"differing {snaps.count('differs')}, none {snaps.count('none')}",
        f"  money: topups {t['topups']} = balances {t['balances']} + confirmed "
        f"{t['confirmed_amount']}",
        f"  stock: added {t['added']} = remain {t['remain']} + confirmed qty {t['confirmed_qty']}",
        f"  orders {t['orders']}, outcomes "
        + ", ".join(f"{k} {v}" for k, v in t["outcomes"].items()),
    ]
    lines += [f"not checked: {u}" for u in report.unchecked]
    if report.ok:
        lines.append("OK: state, snapshots, outcomes and emitted events match the log")
        return lines
    lines.append(
        f"FAILED: {report.count('mismatch')} mismatches, {report.count('lost')} lost, "
        f"{report.count('duplicate')} duplicates applied, "
        f"{report.count('invariant')} invariant violations"
    )
    shown = sorted(report.findings.shown, key=lambda f: (f.shard, f.what))
    for (shard, what), group in groupby(shown, key=lambda f: (f.shard, f.what)):
        total = report.findings.per_place[(shard, what)]
        lines.append(f"{shard} {what}:")
        items = list(group)
        lines += [f"  {f.kind}: {f.detail}" for f in items]
        if total > len(items):
            lines.append(f"  ... and {total - len(items)} more")
    return lines
