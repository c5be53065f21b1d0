"""Demos that show the mesh at work on one machine, in a terminal.

`python -m plait.demo` runs the mesh demo (`mesh`: a control plane, several services
behind sidecars, a canary walk); `python -m plait.demo single` the single-sidecar demo
(`single`: a demo app, one `plait sidecar` in front of it, paced traffic through it, and a
live view of what the client sees beside the sidecar's own counters). Both are built from
the same pieces:

- `app`: the demo HTTP service (`python -m plait.demo.app`);
- `procs`: a supervisor that starts children, waits for their ready lines, stops them all;
- `bootstrap`: sidecar bootstrap files for chosen ports;
- `traffic`: a paced traffic generator and the statistics it keeps;
- `view`: the live terminal view and the reader of the sidecar's Prometheus stats.
"""
