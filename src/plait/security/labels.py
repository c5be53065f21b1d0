"""Names the sidecar and the control plane agree on for workload identity and auto mTLS.

A sidecar that holds a workload certificate registers its instances with `TLS_LABEL`
"true" and its namespace in `NAMESPACE_LABEL`, and says the same in its xDS node metadata
(`mtls`, `namespace`, `service_account`). The control plane then marks such endpoints in
EDS with `TRANSPORT_SOCKET_MATCH` metadata, which callers' clusters match to choose mTLS
(Istio's `tlsMode: istio`, here `tlsMode: plait`).
"""

TLS_LABEL = "security.plait.io/tls"
NAMESPACE_LABEL = "security.plait.io/namespace"
TLS_MODE_KEY = "tlsMode"
TLS_MODE_VALUE = "plait"
