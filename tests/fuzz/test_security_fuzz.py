"""Untrusted input at the security edge gets its own error, never another exception:
CSR bodies (ConfigError or IdentityRefused), presented tokens (TokenRejected), SPIFFE IDs
(ValueError), sealed SM4 messages (DecryptError)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from plait.core.errors import ConfigError
from plait.controlplane.auth import Role
from plait.controlplane.auth.db import open_db
from plait.controlplane.auth.tokens import TokenRejected, TokenStore
from plait.controlplane.ca import IdentityRefused, check_csr
from plait.security import keys, sm
from plait.security.spiffe import SpiffeId

ME = "spiffe://cluster.local/ns/default/sa/reviews"
GOOD_CSR = keys.build_csr(keys.new_key())


def mutations():
    def mutate(data: tuple[int, int, bytes]) -> bytes:
        at, cut, insert = data
        at %= len(GOOD_CSR)
        return GOOD_CSR[:at] + insert + GOOD_CSR[at + cut % 8:]

    return st.tuples(st.integers(0, 10_000), st.integers(0, 7), st.binary(max_size=4)).map(mutate)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), mutations()))
def test_any_csr_body_is_accepted_or_refused_with_a_reason(body):
    try:
        check_csr(body, spiffe_uri=ME)
    except (ConfigError, IdentityRefused):
        pass


def test_tokens_and_ids(tmp_path):
    db = open_db(tmp_path)
    store = TokenStore(db)
    text, _ = store.create_operator(Role.ADMIN, created_by="fuzz")

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(max_size=120), st.text(alphabet="plt_0123456789abcdef.ABC-", max_size=80),
                     st.integers(0, len(text) - 1).map(lambda i: text[:i] + "x" + text[i + 1:])))
    def presented(candidate):
        try:
            store.verify(candidate)
        except TokenRejected:
            pass
        try:
            SpiffeId.parse(candidate)
        except ValueError:
            pass

    try:
        presented()
    finally:
        db.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_sealed_messages_decrypt_or_are_refused(data):
    key = b"k" * 16
    for open_ in (sm.sm4_gcm_decrypt, sm.sm4_cbc_decrypt):
        try:
            open_(key, data)
        except sm.DecryptError:
            pass
