"""Workload identity for both planes: keys, CSRs, SPIFFE IDs, mTLS contexts, renewal.

Why a package of its own: the sidecar (which holds a private key and presents a
certificate) and the control plane (which issues certificates) must agree on what an
identity is and how it is checked, yet neither plane may import the other. Everything
here depends only on the standard library and `cryptography`.

- `spiffe`: `SpiffeId` and reading it from a certificate.
- `files`: private files written atomically with mode 0600.
- `keys`: generate a key, build a CSR.
- `tls`: `ssl.SSLContext`s for mTLS that trust only the mesh bundle, and the peer's ID.
- `renewal`: when to renew (half of the lifetime).
- `workload`: the files a sidecar keeps and how it reads the CA's answer.
- `sm`: SM3 and SM4 (see docs/national-crypto.md for what is and is not possible).
"""
