"""Names the sidecar and the control plane agree on for workload identity and auto mTLS.

A sidecar that holds a workload certificate says so in its xDS node metadata (`mtls`,
`namespace`, `service_account`) and registers its instances with `TLS_LABEL` "true" and
its namespace in `NAMESPACE_LABEL`. The control plane believes those labels only from a
caller it could not authenticate (`--insecure-dev`): from an authenticated one it drops
every label under `SECURITY_PREFIX` and records the caller's own SPIFFE ID on the
instance instead (secure naming). EDS then marks mTLS endpoints with
`TRANSPORT_SOCKET_MATCH` metadata, `TLS_MODE_KEY: TLS_MODE_VALUE` (Istio's
`tlsMode: istio`, here `tlsMode: plait`) plus `IDENTITY_KEY: <SPIFFE ID>` when the
identity is known, which callers' clusters match to choose mTLS and the name to expect.
"""

SECURITY_PREFIX = "security.plait.io/"
TLS_LABEL = SECURITY_PREFIX + "tls"
NAMESPACE_LABEL = SECURITY_PREFIX + "namespace"
TLS_MODE_KEY = "tlsMode"
TLS_MODE_VALUE = "plait"
IDENTITY_KEY = "identity"
