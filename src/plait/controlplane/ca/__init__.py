"""The mesh certificate authority: `Authority` (roots, issuing, rotation) and CSR checks."""

from plait.controlplane.ca.authority import Authority, Issued
from plait.controlplane.ca.csr import IdentityRefused, check_csr

__all__ = ["Authority", "IdentityRefused", "Issued", "check_csr"]
