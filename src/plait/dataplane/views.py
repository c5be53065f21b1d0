"""What the admin endpoint shows of the config in force and of the clusters."""

from __future__ import annotations

from plait.dataplane.config import Snapshot


def config_dump(snapshot: Snapshot, xds=None) -> dict:
    out = {
        "version": snapshot.version,
        "node_id": snapshot.node_id,
        "listeners": [{"name": l.name, "address": f"{l.host}:{l.port}",
                       "direction": l.direction.value,
                       "route_config": l.route_table.name if l.route_table else l.rds_name,
                       "http_filters": [name for name, _ in l.http_filters],
                       "virtual_hosts": [{"name": vh.name, "domains": list(vh.domains),
                                          "routes": [r.name for r in vh.routes],
                                          "route_filters": {r.name: sorted(r.per_filter)
                                                            for r in vh.routes
                                                            if r.per_filter}}
                                         for vh in (l.route_table.virtual_hosts
                                                    if l.route_table else ())]}
                      for l in snapshot.listeners],
        "clusters": [{"name": c.name, "lb_policy": c.lb_policy.value,
                      "endpoints": [e.key for e in c.endpoints]}
                     for c in snapshot.clusters.values()],
        "source": snapshot.raw,
    }
    if xds is not None:
        st = xds.status
        out["xds"] = {"target": xds.target, "connected": st.connected,
                      "connected_since": st.connected_since, "versions": st.versions,
                      "applied_version": st.applied_version, "acks": st.acks,
                      "nacks": st.nacks, "last_nack": st.last_nack,
                      "last_error": st.last_error, "waiting": st.waiting}
    return out


def clusters_view(worker, merged: dict) -> list:
    counters, gauges = merged["counters"], merged["gauges"]
    out = []
    for c in worker.clusters.clusters.values():
        endpoints = []
        for h in c.hosts:
            key = (("cluster", c.name), ("host", h.key))
            endpoints.append({
                "address": h.key, "weight": h.endpoint.weight,
                "health": ("failed_active_hc" if h.hc_failed else
                           "ejected" if h.ejected else "healthy"),
                "zone": h.endpoint.zone,
                "priority": h.endpoint.priority,  # 0 first; locality failover's order
                "rq_total": counters.get(("upstream_host_rq_total", key), 0),
                "cx_active": gauges.get(("upstream_host_cx_active", key), 0),
            })
        out.append({"name": c.name, "lb_policy": c.config.lb_policy.value,
                    "endpoints": endpoints})
    return out
