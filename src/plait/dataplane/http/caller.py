"""Who is calling: the identity headers an outbound sidecar puts on what it forwards.

A sidecar whose bootstrap names its app (`node.metadata.app`) adds
`x-plait-caller-app: <app>` and `x-plait-caller: <node id>` to every request its
OUTBOUND listeners forward, replacing any value the app itself sent, so one app cannot
pass for another inside the mesh. The callee's sidecar reads them for rate-limit keys
(`app`, `caller`) and governance matches. Until mTLS identities replace them, they are
only as trustworthy as the network between sidecars: a workload that bypasses its
sidecar can still write them.
"""

from __future__ import annotations

from plait.dataplane.config import Direction

CALLER_APP = b"x-plait-caller-app"
CALLER = b"x-plait-caller"
NAMES = frozenset((CALLER_APP, CALLER))


def caller_headers(direction: Direction, app: str, node_id: str) -> tuple:
    """The header pairs a listener appends to forwarded requests (empty: none)."""
    if direction is not Direction.OUTBOUND or not app:
        return ()
    out = [(CALLER_APP, app.encode())]
    if node_id:
        out.append((CALLER, node_id.encode()))
    return tuple(out)
