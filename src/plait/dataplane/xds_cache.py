"""The last good xDS config, kept on disk so a sidecar can start without its control plane.

Written after every applied snapshot (to a temporary file, then renamed, so a crash never
leaves half a file); read at start when the control plane does not answer in time.
Resources are stored as serialized protobuf, base64 in a small JSON envelope.
"""

from __future__ import annotations

import base64
import json
import os

from plait.core.errors import ConfigError
from plait.xds.resources import MESSAGE_TYPES


def save(path: str, resources: dict[str, list], version: str) -> None:
    doc = {"version": version,
           "resources": {t: [base64.b64encode(m.SerializeToString()).decode() for m in msgs]
                         for t, msgs in resources.items()}}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


def load(path: str) -> tuple[dict[str, list], str] | None:
    """(resources by type URL, version), or None if there is no cache. Raises ConfigError
    for a cache that cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(path, f"unreadable xDS cache: {exc}") from None
    out: dict[str, list] = {}
    try:
        for type_url, blobs in doc["resources"].items():
            cls = MESSAGE_TYPES[type_url]
            out[type_url] = [cls.FromString(base64.b64decode(b)) for b in blobs]
        return out, str(doc.get("version", ""))
    except Exception as exc:  # any corruption means: no usable cache
        raise ConfigError(path, f"corrupt xDS cache: {exc}") from None
