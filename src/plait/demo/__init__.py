"""Demos that show the mesh at work on one machine, in a terminal.

`python -m plait.demo` runs the single-sidecar demo: a demo app, one `plait sidecar` in
front of it, paced traffic through the sidecar, and a live view of what the client sees
beside the sidecar's own counters. The pieces are separate so a larger demo (control plane,
several services, a canary walk) can reuse them:

- `app`: the demo HTTP service (`python -m plait.demo.app`);
- `procs`: a supervisor that starts children, waits for their ready lines, stops them all;
- `bootstrap`: sidecar bootstrap files for chosen ports;
- `traffic`: a paced traffic generator and the statistics it keeps;
- `view`: the live terminal view and the reader of the sidecar's Prometheus stats.
"""
