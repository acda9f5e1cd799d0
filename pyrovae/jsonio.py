"""Strict JSON for every file pyrovae writes, and a tolerant reader of ``metrics.jsonl``.

JSON has no infinity or NaN. A non-finite number in a report (a PSIS k-hat of ``inf`` from
too few importance samples, a standard error of one example) is written as ``null``, and the
report gains ``"non_finite": {"path.to.key": "inf"}`` saying what the value was, so nothing
is silently dropped. Files are written atomically (see :mod:`pyrovae.runs.checkpoint`).
"""

import json
import math
import os
import warnings

from pyrovae.errors import CheckpointError

__all__ = ["strict", "dumps", "write_json", "read_jsonl"]


def strict(obj, path="", replaced=None):
    """``obj`` with non-finite floats replaced by None; ``replaced`` (a dict, if given) gains
    ``{path: "inf" | "-inf" | "nan"}`` for each replacement."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if replaced is not None:
            replaced[path or "value"] = str(obj)
        return None
    if isinstance(obj, dict):
        return {k: strict(v, f"{path}.{k}" if path else str(k), replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v, f"{path}[{i}]", replaced) for i, v in enumerate(obj)]
    return obj


def dumps(obj, indent=2):
    """Strict JSON text of ``obj``. A dict at the top gains ``non_finite`` (see the module doc)."""
    replaced = {}
    clean = strict(obj, replaced=replaced)
    if replaced and isinstance(clean, dict):
        clean["non_finite"] = {**clean.get("non_finite", {}), **replaced}
    return json.dumps(clean, indent=indent, allow_nan=False)


def write_json(path, obj):
    """Write ``obj`` to ``path`` as strict JSON, atomically."""
    from pyrovae.runs.checkpoint import (
        atomic_write_text,  # torch is not needed to read JSON
    )

    atomic_write_text(path, dumps(obj) + "\n")


def read_jsonl(path):
    """The records of a JSON-lines file (one object per line).

    A torn last line, which a crash in the middle of an append leaves, is dropped with a
    warning; the lines before it are kept.

    :raises CheckpointError: if a line other than the last is not a JSON object, naming the line.
    """
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", errors="replace").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if number == len(lines):
                warnings.warn(f"{path}: ignored a torn last line ({number}), left by a crash in the middle of a "
                              "write", stacklevel=2)
                break
            raise CheckpointError(f"{path}, line {number}: not a JSON object ({line[:40]!r}); repair or delete "
                                  "the line") from None
        records.append(record)
    return records
